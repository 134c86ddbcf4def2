"""The demo node factory: `node_worker.demo.node:demo_node`, as a config file would name it.

With `venue="paper"` (the default for `nsup demo`) the node trades on the paper venue in its own
process, whose books outlive the node; with `venue="sandbox"` it trades on NautilusTrader's
in-process sandbox, fed by the synthetic quote feed, and everything dies with the worker.
"""

from __future__ import annotations

from nautilus_trader.config import LiveExecEngineConfig, LoggingConfig, TradingNodeConfig

from node_worker.demo.demo_strategy import DemoStrategy, DemoStrategyConfig
from node_worker.demo.sandbox_venue import DemoSandboxConfig, SandboxLiveExecClientFactory
from node_worker.demo.synthetic_feed import DEMO_VENUE, SyntheticFeedConfig, SyntheticFeedFactory
from node_worker.paper.data import PaperDataClientConfig, PaperDataClientFactory
from node_worker.paper.execution import PaperExecClientConfig, PaperExecClientFactory
from node_worker.recipe import NodeRecipe


def demo_node(
    symbols: list[str] = ["EUR/USD", "GBP/USD"],  # noqa: B006 (read only)
    venue: str = "sandbox",
    venue_endpoint: str | None = None,
    quotes_endpoint: str | None = None,
    hold_secs: float = 4.0,
    flat_secs: float = 1.0,
    quote_interval_ms: int = 100,
    reject_reduce_only: bool = False,
    exit_max_attempts: int = 30,
    seed: int | None = None,
    trader_id: str = "DEMO-001",
    log_level: str = "INFO",
    account_id: str = "SIM-001",
    oms_type: str = "NETTING",
) -> NodeRecipe:
    instrument_ids = tuple(f"{s}.{DEMO_VENUE}" for s in symbols)
    if venue == "paper":
        if not (venue_endpoint and quotes_endpoint):
            raise ValueError("venue 'paper' needs venue_endpoint and quotes_endpoint")
        data = {"PAPER": PaperDataClientConfig(endpoint=venue_endpoint, quotes_endpoint=quotes_endpoint)}
        data_factories = {"PAPER": PaperDataClientFactory}
        execution = {DEMO_VENUE: PaperExecClientConfig(endpoint=venue_endpoint, account_id=account_id, oms_type=oms_type)}
        exec_factories = {DEMO_VENUE: PaperExecClientFactory}
    elif venue == "sandbox":
        data = {"SYNTH": SyntheticFeedConfig(symbols=tuple(symbols), interval_ms=quote_interval_ms, seed=seed)}
        data_factories = {"SYNTH": SyntheticFeedFactory}
        execution = {
            DEMO_VENUE: DemoSandboxConfig(
                venue=DEMO_VENUE, starting_balances=["10000000 USD"], oms_type="NETTING", account_type="MARGIN",
                reject_reduce_only=reject_reduce_only,
            )
        }
        exec_factories = {DEMO_VENUE: SandboxLiveExecClientFactory}
    else:
        raise ValueError(f"venue must be 'paper' or 'sandbox', not {venue!r}")
    config = TradingNodeConfig(
        trader_id=trader_id,
        logging=LoggingConfig(log_level=log_level, log_colors=False),
        exec_engine=LiveExecEngineConfig(reconciliation=True),
        data_clients=data,
        exec_clients=execution,
    )
    strategy = DemoStrategy(
        DemoStrategyConfig(
            instrument_ids=instrument_ids,
            hold_secs=hold_secs,
            flat_secs=flat_secs,
            seed=seed,
            market_exit_max_attempts=exit_max_attempts,
            # What reconciliation finds at the venue after a restart is this strategy's to manage
            # (and to flatten), not an orphan that market_exit would never touch.
            external_order_claims=list(instrument_ids),
        )
    )
    return NodeRecipe(config=config, data_client_factories=data_factories, exec_client_factories=exec_factories,
                      strategies=[strategy])
