"""nsup: a position-safe supervisor for NautilusTrader live trading nodes.

This package never imports nautilus_trader (tests/unit/test_supervisor_is_light.py keeps it so):
it must start fast and stay small. Only node_worker/ does.
"""

__version__ = "0.1.0"
