"""What operators ask for, in the values the lifecycle's guards read: a stop, an approval.

A stop is one value. It is kept (and persisted) until nsup has stopped, so that a worker replaced
meanwhile starts closing-only and the stop goes on; an operator's `resume` clears it, unless it came
from a signal: systemd and a terminal's Ctrl-C expect nsup to exit, so such a stop is `final`.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec


class StopRequest(msgspec.Struct, frozen=True):
    actor: str  # "alice@desk", "signal:SIGTERM", "duration:30s"
    final: bool = False


@dataclass(frozen=True)
class Approval:
    """An operator's approval, on record in the journal, for exactly one action ("abort", "recover")."""

    action: str
    operator: str
    reason: str
    approval_id: str


class Refused(Exception):
    """An operator request that cannot be carried out now; the message says why."""
