"""The node worker: one real NautilusTrader TradingNode and the control server that serves nsup.

This is the only package that imports nautilus_trader.
"""
