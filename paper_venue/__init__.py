"""The paper venue: a broker of our own in its own process, so positions outlive a killed node.

It holds the account, the orders and the positions, moves the synthetic quotes, and matches market
and limit orders against them. It never imports nautilus_trader; node_worker/paper/ is the
NautilusTrader adapter that speaks to it.
"""
