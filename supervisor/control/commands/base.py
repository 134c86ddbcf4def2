"""What every operator command is made of; each command module fills it in.

A command is one object: the request(s) it answers on the wire, what it does inside nsup (`run`,
which asks the lifecycle's table through the Supervisor and raises Refused with the reason when the
answer is no), how nsupctl presents the answer (`render`), and, where one request and one answer are
not the whole of it, what nsupctl does around them (`client`: a challenge to answer, a stop to follow).
Nothing here imports the daemon, msgspec, pyzmq or asyncio, nor typing or dataclasses (inspect with
it), and what only nsup's side needs is imported inside `run`: nsupctl loads these modules too, and
must start fast. The annotations are for readers and type checkers only.
"""

from __future__ import annotations

import argparse

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing

# nsupctl's exit codes
EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_STUCK, EXIT_PROTOCOL, EXIT_ABORTED = 0, 1, 2, 3, 4, 5, 6


class Refusal(Exception):
    """nsup said no (or nsupctl cannot ask it): the reason is shown, and nsupctl exits 1."""


if TYPE_CHECKING:
    from typing import Any, ClassVar, Protocol

    from supervisor.control.server.challenges import Challenges
    from supervisor.daemon import Supervisor

    class Ctl(Protocol):
        """What a command's nsupctl side works with (client/nsupctl.py provides it)."""

        args: argparse.Namespace

        def call(self, command: str, timeout_secs: float | None = None, **fields) -> dict: ...
        def say(self, text: str, data) -> None: ...
        def subscribe(self): ...
        def current_state(self) -> str | None: ...
        def ended(self) -> str | None: ...
        def record_line(self, record: dict) -> str: ...


class Context:
    """What a command may use inside nsup."""

    def __init__(self, nsup: Supervisor, challenges: Challenges, events_endpoints: list[str]):
        self.nsup = nsup
        self.challenges = challenges
        self.events_endpoints = events_endpoints


class Command:
    name: ClassVar[str]  # the nsupctl subcommand, and the wire tag of its first request
    requests: ClassVar[tuple[str, ...]]  # the wire tags of the requests it answers (control/protocol.py)
    help: ClassVar[str]
    changes: ClassVar[bool] = True  # journaled with its actor; status and version only read (`read`)
    timeout_secs: ClassVar[float | None] = None  # how long nsupctl waits for the answer (None: its --timeout)
    nodes: ClassVar[str] = "one"  # "many": nsupctl sends it to several nodes at once (NAME... or all)

    async def run(self, ctx: Context, request, actor: str) -> dict[str, Any]:
        return self.read(ctx, request)

    def read(self, ctx: Context, request) -> dict[str, Any]:
        """A command that only reads answers here, at once: the control socket calls it in its reader,
        without a task (`changes` is False)."""
        raise NotImplementedError(f"{self.name} has no server side")

    def record(self, data: dict[str, Any]) -> dict[str, Any]:
        """What the journal's `command` record says of the answer."""
        return {"result": data.get("result", "done")}

    def render(self, data: dict[str, Any]) -> str:
        return " ".join(f"{k}={v}" for k, v in data.items())

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """nsupctl's options for this command, if it has any."""

    def client(self, ctl: Ctl) -> int:
        """nsupctl: one request, its answer shown; exit 0 (a refusal raises and exits 1)."""
        data = ctl.call(self.name, timeout_secs=self.timeout_secs)
        ctl.say(self.render(data), data)
        return 0
