"""A NodeRecipe carries what a live script adds to node.trader: actors, execution algorithms and
strategies; build_node adds them all to a real TradingNode. One node per test process: NautilusTrader
initialises its logging once per process."""

from __future__ import annotations

import asyncio

from nautilus_trader.common.actor import Actor
from nautilus_trader.config import LoggingConfig, TradingNodeConfig
from nautilus_trader.examples.algorithms.twap import TWAPExecAlgorithm
from nautilus_trader.examples.strategies.blank import MyStrategy, MyStrategyConfig
from nautilus_trader.model.identifiers import InstrumentId

from node_worker.closer import users_strategies
from node_worker.recipe import NodeRecipe, build_node


def config() -> TradingNodeConfig:
    return TradingNodeConfig(trader_id="RECIPE-001", logging=LoggingConfig(log_level="ERROR"))


def test_actors_exec_algorithms_and_strategies_all_reach_the_trader():
    strategy = MyStrategy(MyStrategyConfig(instrument_id=InstrumentId.from_str("EUR/USD.SIM")))
    recipe = NodeRecipe(config=config(), actors=[Actor()], exec_algorithms=[TWAPExecAlgorithm()], strategies=[strategy])
    loop = asyncio.new_event_loop()  # the node takes the current one, as the worker's main thread has it
    asyncio.set_event_loop(loop)
    node = build_node(recipe, timeout_post_stop=0.1)
    try:
        assert [type(a).__name__ for a in node.trader.actors()] == ["Actor"]
        assert [str(a.id) for a in node.trader.exec_algorithms()] == ["TWAP"]
        assert users_strategies(node) == [strategy]
        assert [type(s).__name__ for s in node.trader.strategies()] == ["MyStrategy", "NsupCloser"]  # nsup's own
    finally:
        node.dispose()
        asyncio.set_event_loop(None)
        loop.close()
