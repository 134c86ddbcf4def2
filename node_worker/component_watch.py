"""NautilusTrader's own component states (a strategy, actor, engine or client DEGRADED or FAULTED, and
back), told to nsup as they change.

Every NautilusTrader Component publishes a ComponentStateChanged on `events.system.<component id>` at
each step of its state machine (common/component.pyx, `_trigger_fsm`), from whatever thread called
degrade(), fault() or resume(). So the worker subscribes once instead of sampling each component in
every heartbeat: nothing is missed between beats (a DEGRADED that resumes within the second is still
on record), a heartbeat pays nothing for it, and components the worker could not list (clients, the
emulator, the trader) are covered as well. The portfolio is no Component and has no state.

nsup cares about trouble: DEGRADED and FAULTED. A change into or out of one is told at once (the
protocol's ComponentStateChange, journaled as `component_state`); those in one now are in every
status (`components`), which makes the health and a restarted nsup's picture. The node's own start
and stop (READY, RUNNING, STOPPED) are nsup's doing and are not told again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

SUBSCRIPTION = "events.system.*"
TROUBLE = frozenset({"DEGRADED", "FAULTED"})
# Transitional states: a change is told at the state it settles in (DEGRADING leads to DEGRADED).
PASSING = frozenset({"STARTING", "STOPPING", "RESUMING", "RESETTING", "DISPOSING", "DEGRADING", "FAULTING"})
UNKNOWN = "UNKNOWN"  # a component not heard from before (it was built before the worker subscribed)

Tell = Callable[[str, str, str, str], None]  # (component, component type, source, dest)


def change_to_tell(last: str | None, state: str) -> tuple[str, str] | None:
    """(source, dest) when a component settling in `state` after `last` enters or leaves trouble."""
    if state in PASSING or state == last or not ({state, last} & TROUBLE):
        return None
    return last or UNKNOWN, state


class ComponentWatch:
    def __init__(self, msgbus, loop: asyncio.AbstractEventLoop, tell: Tell):
        self._loop = loop
        self._tell = tell
        self._settled: dict[str, str] = {}  # component id -> the state it last settled in
        msgbus.subscribe(SUBSCRIPTION, self._on_change)

    def troubled(self) -> dict[str, str]:
        """The components DEGRADED or FAULTED now, by id."""
        return {component: state for component, state in self._settled.items() if state in TROUBLE}

    def heard(self) -> int:
        """How many components have changed state since the worker subscribed (all of them, once the node ran)."""
        return len(self._settled)

    def _on_change(self, event) -> None:
        # Called inside the component's own degrade()/fault(), on any thread: only the loop talks to
        # nsup, and nothing raised here may reach the component's state machine.
        try:
            self._loop.call_soon_threadsafe(self._record, str(event.component_id), event.component_type, event.state.name)
        except RuntimeError:
            pass  # the loop is closed: the worker is exiting, nobody is left to tell

    def _record(self, component: str, component_type: str, state: str) -> None:
        change = change_to_tell(self._settled.get(component), state)
        if state not in PASSING:
            self._settled[component] = state
        if change is not None:
            self._tell(component, component_type, *change)
