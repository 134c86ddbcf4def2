"""A node factory for NautilusTrader's own example strategies, unmodified, on the paper venue: what a
quant's live script becomes when nsup runs it (README, "Bringing your own strategies")."""

from __future__ import annotations

from decimal import Decimal

from nautilus_trader.config import LiveExecEngineConfig, LoggingConfig, TradingNodeConfig
from nautilus_trader.examples.algorithms.twap import TWAPExecAlgorithm
from nautilus_trader.examples.strategies.ema_cross import EMACross, EMACrossConfig
from nautilus_trader.examples.strategies.ema_cross_bracket import EMACrossBracket, EMACrossBracketConfig
from nautilus_trader.examples.strategies.ema_cross_hedge_mode import EMACross as EMACrossHedgeMode
from nautilus_trader.examples.strategies.ema_cross_hedge_mode import EMACrossConfig as EMACrossHedgeModeConfig
from nautilus_trader.examples.strategies.ema_cross_twap import EMACrossTWAP, EMACrossTWAPConfig
from nautilus_trader.examples.strategies.subscribe import SubscribeStrategy, SubscribeStrategyConfig
from nautilus_trader.examples.strategies.volatility_market_maker import (
    VolatilityMarketMaker,
    VolatilityMarketMakerConfig,
)
from nautilus_trader.model.data import BarType
from nautilus_trader.model.enums import BookType
from nautilus_trader.model.identifiers import InstrumentId

from node_worker.paper.data import PaperDataClientConfig, PaperDataClientFactory
from node_worker.paper.execution import PaperExecClientConfig, PaperExecClientFactory
from node_worker.recipe import NodeRecipe


def _strategies(example: str, instrument: str, bar: str, size: str, bracket_distance_atr: float, claim_external: bool,
                twap_horizon_secs: float):
    instrument_id, bar_type, trade_size = InstrumentId.from_str(instrument), BarType.from_str(bar), Decimal(size)
    # What reconciliation finds at the venue after a crash is the strategy's to manage and to flatten;
    # without the claim it is nobody's, and nsup's closer's.
    common = {"instrument_id": instrument_id, "bar_type": bar_type, "trade_size": trade_size,
              "external_order_claims": [instrument_id] if claim_external else None}
    match example:
        case "ema_cross":
            return [EMACross(EMACrossConfig(**common))], []
        case "ema_cross_bracket":
            return [EMACrossBracket(EMACrossBracketConfig(**common, bracket_distance_atr=bracket_distance_atr))], []
        case "volatility_market_maker":
            return [VolatilityMarketMaker(VolatilityMarketMakerConfig(**common, atr_period=10, atr_multiple=0.2))], []
        case "ema_cross_twap":
            config = EMACrossTWAPConfig(**common, twap_horizon_secs=twap_horizon_secs, twap_interval_secs=0.5)
            return [EMACrossTWAP(config)], [TWAPExecAlgorithm()]
        case "ema_cross_hedge_mode":
            return [EMACrossHedgeMode(EMACrossHedgeModeConfig(**common))], []
        case "subscribe":  # asks for what the paper venue does not have: an order book, index prices
            config = SubscribeStrategyConfig(instrument_id=instrument_id, book_type=BookType.L2_MBP, index_prices=True,
                                             quote_ticks=True)
            return [SubscribeStrategy(config)], []
    raise ValueError(f"unknown example {example!r}")


def example_node(example: str, venue_endpoint: str, account_id: str, instrument: str, bar_type: str, trade_size: str,
                 oms_type: str = "NETTING", trader_id: str = "EXAMPLE-001", bracket_distance_atr: float = 3.0,
                 claim_external: bool = True, twap_horizon_secs: float = 2.0) -> NodeRecipe:
    strategies, exec_algorithms = _strategies(example, instrument, bar_type, trade_size, bracket_distance_atr,
                                              claim_external, twap_horizon_secs)
    config = TradingNodeConfig(
        trader_id=trader_id,
        logging=LoggingConfig(log_level="INFO", log_colors=False),
        exec_engine=LiveExecEngineConfig(reconciliation=True),
        data_clients={"PAPER": PaperDataClientConfig(endpoint=venue_endpoint)},
        exec_clients={"SIM": PaperExecClientConfig(endpoint=venue_endpoint, account_id=account_id, oms_type=oms_type)},
    )
    return NodeRecipe(config=config, data_client_factories={"PAPER": PaperDataClientFactory},
                      exec_client_factories={"SIM": PaperExecClientFactory}, strategies=strategies,
                      exec_algorithms=exec_algorithms)
