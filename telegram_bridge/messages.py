"""What an operator reads on Telegram for each journal record of a node: pure, no I/O.

`message_for` maps a record (as the event stream carries it: the kind is the topic) to a coalescing
key and a short text naming the node, or to None for what operators need not be told. `KINDS` is
what the bridge subscribes to. `Coalescer` keeps a flapping feed to one message a window.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from supervisor.control.commands.status import counts, order_line, position_line

BAD_COMPONENT_STATES = frozenset({"DEGRADED", "FAULTED"})
SHOWN_AT_MOST = 5  # positions or orders listed in one message; the rest counted


def _transition(r: dict) -> tuple[str, str] | None:
    dest, actor, reason = r.get("dest"), r.get("actor"), r.get("reason")
    why = f": {reason}" if reason else ""
    match dest:
        case "RUNNING" if r.get("source") == "BUILT":
            return dest, f"🟢 up and reconciled, RUNNING ({counts(r)})"
        case "RUNNING":
            return dest, f"🟢 RUNNING again after {r.get('source')} ({r.get('trigger')} by {actor}; {counts(r)})"
        case "HALTING":
            return dest, f"🟠 HALTING: stop asked by {actor}{why} ({counts(r)})"
        case "STOPPED":
            return dest, "✅ flat and stopped cleanly (STOPPED)"
        case "ABORTED":
            return dest, f"🔴 ABORTED ({r.get('trigger')} by {actor}){why} ({counts(r)})"
        case "RECOVERING" if r.get("trigger") != "restart":
            return dest, f"🟠 worker lost, RECOVERING{why}"
    return None  # STUCK has halt_stuck (with what keeps it from flat); the rest are steps on the way


def _halt_stuck(r: dict) -> tuple[str, str]:
    lines = [f"🔴 STUCK in HALTING, not flat ({counts(r)}); nsup keeps trying and will not stop it. "
             "/flatten NODE to try again, /abort NODE to stop with exposure"]
    lines += _listed("position", [position_line(p) for p in r.get("positions") or []])
    lines += _listed("order", [order_line(o) for o in r.get("orders") or []])
    return "", "\n".join(lines)


def _listed(what: str, lines: list[str]) -> list[str]:
    more = len(lines) - SHOWN_AT_MOST
    return [f"  {what} {line}" for line in lines[:SHOWN_AT_MOST]] + ([f"  (and {more} more {what}s)"] if more > 0 else [])


def _component_state(r: dict) -> tuple[str, str]:
    component, dest = r.get("component", "?"), r.get("dest", "?")
    mark = "🔴" if dest == "FAULTED" else "🟠" if dest in BAD_COMPONENT_STATES else "🟢"
    return component, f"{mark} component {component} {r.get('source', '?')} -> {dest}"


def _health(r: dict) -> tuple[str, str]:
    mark = "🟢" if r.get("health") == "ok" else "🟠"
    return "", f"{mark} health {r.get('was')} -> {r.get('health')}"


def _fault(r: dict) -> tuple[str, str] | None:
    if r.get("exit_code") is not None:
        return None  # a lost worker: its RECOVERING (or ABORTED) transition says so, with the same reason
    return "", f"🟠 fault: {r.get('reason')}"


MESSAGES: dict[str, Callable[[dict], tuple[str, str] | None]] = {
    "transition": _transition,
    "halt_stuck": _halt_stuck,
    "component_state": _component_state,  # the worker's component state changes (NautilusTrader's own)
    "health": _health,
    "fault": _fault,
    "hung": lambda r: ("", f"🟠 worker hung ({r.get('silent_secs')}s silent), flat when last heard: killed, to be replaced"),
    "hung_with_exposure": lambda r: ("", f"🔴 worker hung WITH EXPOSURE ({r.get('silent_secs')}s silent, {counts(r)}): "
                                         "nsup will not kill it; /recover NODE if it does not come back"),
    "worker_answering": lambda r: ("", f"🟢 worker answering again after {r.get('silent_secs')}s silent"),
    "restart_scheduled": lambda r: ("", f"🟠 worker restart {r.get('restarts')} in {r.get('in_secs')}s"),
    "reconciliation_mismatch": lambda r: ("", "🟠 reconciliation mismatch: " + "; ".join(r.get("differences") or [])
                                          + (" (held closing-only until /resume)" if r.get("held_closing_only") else "")),
    "approval": lambda r: (r.get("nonce", ""), f"🟠 {r.get('action')} approved by {r.get('actor')}: {r.get('reason')}"),
    "journal_degraded": lambda r: ("", f"🔴 journal degraded: {r.get('reason')}"),
    "journal_restored": lambda r: ("", f"🟢 journal restored: {r.get('reason')}"),
    "state_not_durable": lambda r: ("", f"🟠 state.json not durable: {r.get('reason')}"),
}
KINDS = tuple(MESSAGES)


def message_for(node: str, kind: str, record: dict) -> tuple[tuple[str, str, str], str] | None:
    """(coalescing key, text) for a record of `node`, or None."""
    make = MESSAGES.get(kind)
    said = make(record) if make else None
    if said is None:
        return None
    subkey, text = said
    return (node, kind, subkey), f"{node}: {text}"


class Coalescer:
    """Per key, the first message of a window goes at once; the rest are counted, and when the window
    ends the last of them goes with the count: a feed that flaps sends one message, not hundreds."""

    def __init__(self, window_secs: float, clock: Callable[[], float] = time.monotonic):
        self.window_secs = window_secs
        self._clock = clock
        self._open: dict[object, list] = {}  # key -> [window ends at, repeats, last text]

    def offer(self, key: object, text: str) -> str | None:
        """The text to send now, or None: counted, for the end of the window."""
        now = self._clock()
        window = self._open.get(key)
        if window is not None and now < window[0]:
            window[1] += 1
            window[2] = text
            return None
        self._open[key] = [now + self.window_secs, 0, text]
        return text

    def due(self) -> list[tuple[object, str]]:
        """The windows that have ended: (key, message) for each with repeats, which opens the next
        window (a feed that keeps flapping sends one message a window)."""
        now = self._clock()
        texts = []
        for key, (ends, repeats, last) in list(self._open.items()):
            if now < ends:
                continue
            if not repeats:
                del self._open[key]
                continue
            texts.append((key, last if repeats == 1 else
                          f"{last} (and {repeats - 1} more like this in {self.window_secs:g}s; this is the last)"))
            self._open[key] = [now + self.window_secs, 0, last]
        return texts
