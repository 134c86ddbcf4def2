"""What `nsup preflight` should know of a built node that the config does not say: facts only; what
they mean for this config is preflight's to judge (supervisor/preflight.py)."""

from __future__ import annotations

from nautilus_trader.live.node import TradingNode

from node_worker.venue_check import unsayable


def facts_of(node: TradingNode) -> dict:
    return {
        # Their stop runs market_exit() by itself: a second exit beside nsup's, racing its closer.
        "manage_stop": [str(s.id) for s in node.trader.strategies() if s.config.manage_stop],
        # Venues whose adapter cannot say what they hold: flat there is only the node's own word.
        "cannot_say": unsayable(node),
    }
