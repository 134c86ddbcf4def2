"""The node never ends itself: every way NautilusTrader has for a node to stop on its own becomes a
request to nsup, which stops it the safe way (flatten, verify flat, then stop).

The ways, as read in nautilus_trader 1.231:
- any component's `shutdown_system(reason)` publishes a ShutdownSystem command on
  "commands.system.shutdown", which the kernel answers with `stop_async()`
  (NautilusKernel._setup_shutdown_handling, _on_shutdown_system);
- the live engines call `shutdown_system()` on an unexpected exception in their queues when
  `graceful_shutdown_on_exception` is set (without it they call `os._exit(1)`: a crash, which nsup
  sees as a lost worker and recovers from);
- anything calling the kernel's or the node's `stop()` or `stop_async()` itself (the kernel's own
  signal handlers do; the worker has replaced them, see worker.py).

The guard takes the kernel's subscription for the shutdown topic and stands in front of the four stop
methods. A request becomes `request_stop(component, reason)` (told to nsup once per reason); the
real stop runs only inside `allowed()`, which the worker enters for nsup's StopNode.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from loguru import logger
from nautilus_trader.live.node import TradingNode

SHUTDOWN_TOPIC = "commands.system.shutdown"


class ShutdownGuard:
    def __init__(self, node: TradingNode, request_stop: Callable[[str, str], None]):
        self._request_stop = request_stop
        self._allowed = False
        self._asked: set[tuple[str, str]] = set()
        kernel = node.kernel
        kernel.msgbus.unsubscribe(SHUTDOWN_TOPIC, kernel._on_shutdown_system)
        kernel.msgbus.subscribe(SHUTDOWN_TOPIC, self._on_shutdown_system)
        for owner, name in ((kernel, "stop"), (kernel, "stop_async"), (node, "stop"), (node, "stop_async")):
            setattr(owner, name, self._guarded(getattr(owner, name), f"{type(owner).__name__}.{name}()"))

    @contextlib.contextmanager
    def allowed(self):
        """nsup's StopNode: the one stop that goes through."""
        self._allowed = True
        try:
            yield
        finally:
            self._allowed = False

    def _guarded(self, stop: Callable, caller: str) -> Callable:
        def guarded(*args, **kwargs):
            if self._allowed:
                return stop(*args, **kwargs)
            self._refuse("node", f"{caller} was called on the node")
            return _done() if caller.endswith("stop_async()") else None

        return guarded

    def _on_shutdown_system(self, command) -> None:
        self._refuse(str(command.component_id), command.reason or "shutdown_system() without a reason")

    def _refuse(self, component: str, reason: str) -> None:
        logger.warning("the node asked to stop ({}: {}): nsup decides, and stops it flat", component, reason)
        if (component, reason) not in self._asked:
            self._asked.add((component, reason))
            self._request_stop(component, reason)


async def _done() -> None:
    """What a refused stop_async() returns: an awaitable that does nothing."""
