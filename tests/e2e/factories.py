"""Node factories for fault drills: the demo node, built slowly, or asking to shut itself down."""

import time
from datetime import timedelta

import msgspec

from node_worker.demo.demo_strategy import DemoStrategy
from node_worker.demo.node import demo_node


def slow_demo_node(build_delay_secs: float, **params):
    time.sleep(build_delay_secs)
    return demo_node(**params)


class GivesUp(DemoStrategy):
    """The demo strategy, which asks the node to shut down once it holds a position: a component's
    shutdown_system(), as NautilusTrader's engines call it on an exception they cannot handle."""

    def on_order_filled(self, event) -> None:
        super().on_order_filled(event)
        if self.portfolio.is_net_long(event.instrument_id) or self.portfolio.is_net_short(event.instrument_id):
            self.shutdown_system("the strategy gave up")


def giving_up_node(**params):
    recipe = demo_node(**params)
    recipe.strategies = [GivesUp(strategy.config) for strategy in recipe.strategies]
    return recipe


def unreachable_exchange_node(port: int, **_):
    """A node on NautilusTrader's own Binance adapter, pointed at a port where nothing listens: the
    exchange refuses every connection, as one that is down or firewalled does."""
    from nautilus_trader.adapters.binance import (BinanceAccountType, BinanceDataClientConfig, BinanceExecClientConfig,
                                                  BinanceLiveDataClientFactory, BinanceLiveExecClientFactory)
    from nautilus_trader.config import LoggingConfig, TradingNodeConfig

    from node_worker.recipe import NodeRecipe

    where = {"api_key": "nsup-test-key", "api_secret": "nsup-test-secret", "account_type": BinanceAccountType.SPOT,
             "base_url_http": f"http://127.0.0.1:{port}", "base_url_ws": f"ws://127.0.0.1:{port}"}
    config = TradingNodeConfig(trader_id="UNREACH-001", logging=LoggingConfig(log_colors=False),
                               data_clients={"BINANCE": BinanceDataClientConfig(**where)},
                               exec_clients={"BINANCE": BinanceExecClientConfig(**where)})
    return NodeRecipe(config=config, data_client_factories={"BINANCE": BinanceLiveDataClientFactory},
                      exec_client_factories={"BINANCE": BinanceLiveExecClientFactory})


def two_sided_node(**params):
    """The demo node on one instrument with two strategies, one always long and one always short: on a
    NETTING account the venue nets them to flat while the node keeps a position for each."""
    recipe = demo_node(**params)
    config = recipe.strategies[0].config
    recipe.strategies = [
        DemoStrategy(msgspec.structs.replace(config, side=side, order_id_tag=tag, external_order_claims=None))
        for side, tag in (("BUY", "001"), ("SELL", "002"))
    ]
    return recipe


class Troubled(DemoStrategy):
    """The demo strategy, which once it holds a position degrades, resumes a second later and faults a
    second after that, still holding it: NautilusTrader's own degrade(), resume() and fault(), the
    last two from timers (on NautilusTrader's own thread)."""

    def on_order_filled(self, event) -> None:
        super().on_order_filled(event)
        if self.state.name == "RUNNING" and not self.clock.timer_names and self.cache.positions_open(strategy_id=self.id):
            self.degrade()
            self.clock.set_time_alert("nsup-test-resume", self.clock.utc_now() + timedelta(seconds=1), self._come_back)

    def _come_back(self, _event) -> None:
        self.resume()
        self.clock.set_time_alert("nsup-test-fault", self.clock.utc_now() + timedelta(seconds=1), lambda _: self.fault())


class FaultsInItsExit(DemoStrategy):
    """The demo strategy, which faults the moment its market exit begins: the exit's closes go out, and
    NautilusTrader then never finishes the exit (it checks it only while RUNNING), so `is_exiting()`
    stays set for good."""

    def on_market_exit(self) -> None:
        self.fault()


def troubled_node(**params):
    """The demo node with a strategy per instrument: one degrades, resumes and faults while holding a
    position; the other faults as its market exit begins."""
    recipe = demo_node(**params)
    config = recipe.strategies[0].config
    recipe.strategies = [
        cls(msgspec.structs.replace(config, instrument_ids=(instrument,), order_id_tag=tag, external_order_claims=None))
        for cls, instrument, tag in ((Troubled, config.instrument_ids[0], "001"), (FaultsInItsExit, config.instrument_ids[1], "002"))
    ]
    return recipe
