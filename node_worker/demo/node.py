"""The demo node factory: `node_worker.demo.node:demo_node`, as a config file would name it."""

from __future__ import annotations

from nautilus_trader.config import LiveExecEngineConfig, LoggingConfig, TradingNodeConfig

from node_worker.demo.demo_strategy import DemoStrategy, DemoStrategyConfig
from node_worker.demo.sandbox_venue import DemoSandboxConfig, SandboxLiveExecClientFactory
from node_worker.demo.synthetic_feed import DEMO_VENUE, SyntheticFeedConfig, SyntheticFeedFactory
from node_worker.recipe import NodeRecipe


def demo_node(
    symbols: list[str] = ["EUR/USD", "GBP/USD"],  # noqa: B006 (read only)
    hold_secs: float = 4.0,
    flat_secs: float = 1.0,
    quote_interval_ms: int = 100,
    reject_reduce_only: bool = False,
    exit_max_attempts: int = 30,
    seed: int | None = None,
    trader_id: str = "DEMO-001",
    log_level: str = "INFO",
) -> NodeRecipe:
    config = TradingNodeConfig(
        trader_id=trader_id,
        logging=LoggingConfig(log_level=log_level, log_colors=False),
        exec_engine=LiveExecEngineConfig(reconciliation=True),
        data_clients={"SYNTH": SyntheticFeedConfig(symbols=tuple(symbols), interval_ms=quote_interval_ms, seed=seed)},
        exec_clients={
            DEMO_VENUE: DemoSandboxConfig(
                venue=DEMO_VENUE,
                starting_balances=["10000000 USD"],
                oms_type="NETTING",
                account_type="MARGIN",
                reject_reduce_only=reject_reduce_only,
            )
        },
    )
    strategy = DemoStrategy(
        DemoStrategyConfig(
            instrument_ids=tuple(f"{s}.{DEMO_VENUE}" for s in symbols),
            hold_secs=hold_secs,
            flat_secs=flat_secs,
            seed=seed,
            market_exit_max_attempts=exit_max_attempts,
        )
    )
    return NodeRecipe(
        config=config,
        data_client_factories={"SYNTH": SyntheticFeedFactory},
        exec_client_factories={DEMO_VENUE: SandboxLiveExecClientFactory},
        strategies=[strategy],
    )
