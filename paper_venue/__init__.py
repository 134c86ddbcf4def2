"""The paper venue: a broker of our own in its own process, so positions outlive a killed node.

It holds accounts, orders and positions, moves a synthetic market and matches orders with
NautilusTrader's own matching engine (paper_venue/account.py). node_worker/paper/ is the
NautilusTrader adapter that speaks to it. The wire protocol (protocol.py), the launcher and the
command line need no NautilusTrader, so nsup's own tools use them without importing it.
"""
