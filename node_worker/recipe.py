"""What a node factory returns, and how the worker finds the factory named in the config."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field

from nautilus_trader.common.actor import Actor
from nautilus_trader.config import TradingNodeConfig
from nautilus_trader.execution.algorithm import ExecAlgorithm
from nautilus_trader.live.factories import LiveDataClientFactory, LiveExecClientFactory
from nautilus_trader.trading.strategy import Strategy


@dataclass
class NodeRecipe:
    """Everything needed to construct a TradingNode; the worker constructs it.

    It holds what a NautilusTrader live script would hand its node: the config (which may name
    strategies, actors and execution algorithms itself, as importable configs), the client
    factories (`node.add_*_client_factory`), and the instances it would add to `node.trader`.

    The worker, not the factory, calls the TradingNode constructor so that it can enforce what nsup
    depends on: construction on the main thread, a short `timeout_post_stop` (nsup has verified flat
    before it ever stops the node), and its own signal handlers.
    """

    config: TradingNodeConfig
    data_client_factories: dict[str, type[LiveDataClientFactory]] = field(default_factory=dict)
    exec_client_factories: dict[str, type[LiveExecClientFactory]] = field(default_factory=dict)
    strategies: list[Strategy] = field(default_factory=list)
    exec_algorithms: list[ExecAlgorithm] = field(default_factory=list)
    actors: list[Actor] = field(default_factory=list)


def build_node(recipe: NodeRecipe, timeout_post_stop: float | None, cache_database: dict | None = None,
               scope: list[str] = ()):
    """A built TradingNode from a recipe, on the calling (main) thread, as NautilusTrader requires.
    `timeout_post_stop`: the kernel's fixed sleep in stop; None keeps the recipe's own.
    `cache_database`: DatabaseConfig fields to keep the node's cache in (nsup's [redis] node_cache),
    with bounded timeouts; the recipe's other cache settings stay.
    `scope`: nsup's [node] scope, the node's instruments on a shared account. It becomes the exec
    engine's reconciliation_instrument_ids, NautilusTrader's own list of what the node reconciles,
    which the venue check and the closer then read: the one place the scope lives in the worker."""
    import msgspec
    from nautilus_trader.config import CacheConfig, DatabaseConfig, LiveExecEngineConfig
    from nautilus_trader.live.node import TradingNode
    from nautilus_trader.model.identifiers import InstrumentId

    from node_worker.closer import NsupCloser

    config = recipe.config
    if timeout_post_stop is not None:
        config = msgspec.structs.replace(config, timeout_post_stop=timeout_post_stop)
    if cache_database is not None:
        if config.cache is not None and config.cache.database is not None:
            raise ValueError("the recipe keeps its cache in a database of its own, and nsup's [redis] node_cache "
                             "would replace it: set one of the two")
        cache = msgspec.structs.replace(config.cache or CacheConfig(), database=DatabaseConfig(**cache_database))
        config = msgspec.structs.replace(config, cache=cache)
    if scope:
        exec_engine = config.exec_engine or LiveExecEngineConfig()
        own = exec_engine.reconciliation_instrument_ids
        instruments = [InstrumentId.from_str(text) for text in scope]
        if own and set(own) != set(instruments):
            raise ValueError(f"the recipe reconciles {sorted(map(str, own))} and nsup's [node] scope says "
                             f"{sorted(scope)}: set one of the two")
        exec_engine = msgspec.structs.replace(exec_engine, reconciliation_instrument_ids=instruments)
        config = msgspec.structs.replace(config, exec_engine=exec_engine)
    node = TradingNode(config=config)
    for name, factory in recipe.data_client_factories.items():
        node.add_data_client_factory(name, factory)
    for name, factory in recipe.exec_client_factories.items():
        node.add_exec_client_factory(name, factory)
    # One at a time: the trader's add_* of a list refuses an empty one.
    for actor in recipe.actors:
        node.trader.add_actor(actor)
    for exec_algorithm in recipe.exec_algorithms:
        node.trader.add_exec_algorithm(exec_algorithm)
    for strategy in recipe.strategies:
        node.trader.add_strategy(strategy)
    node.trader.add_strategy(NsupCloser())  # nsup's own: cancels and closes what the strategies leave
    node.build()
    return node


def load_factory(spec: str) -> Callable[..., NodeRecipe]:
    """Resolve "package.module:function"; raises ValueError with a one-line reason."""
    module_name, sep, function_name = spec.partition(":")
    if not sep or not module_name or not function_name:
        raise ValueError(f"factory {spec!r} is not of the form 'module:function'")
    module = importlib.import_module(module_name)
    factory = getattr(module, function_name, None)
    if not callable(factory):
        raise ValueError(f"factory {spec!r}: {module_name} has no callable {function_name!r}")
    return factory
