"""systemd's notify protocol (sd_notify(3)) for `Type=notify` units, without libsystemd.

One datagram per call to the unix socket named by $NOTIFY_SOCKET (a path, or '@name' in the abstract
namespace), newline-separated `KEY=VALUE` lines. Outside systemd (no $NOTIFY_SOCKET) every call is a
no-op. Nothing here ever raises into the caller: a systemd hiccup must not break a flatten or a
shutdown, so a failed send is logged (once, until a send succeeds again) and nsup carries on.

What nsup says, and when (the policy lives in the pure functions below, so it can be tested):

- READY=1 on entering RUNNING (the first time, and again after a recovery: systemd ignores a repeat),
  and on re-attaching to a worker that is already RUNNING or stopping (before any STOPPING=1).
- STATUS=<state> positions=N inflight=N open=N on every transition (`systemctl status` shows it).
- STOPPING=1 on entering HALTING, unless the stop can still be cancelled with `nsupctl resume`. systemd
  takes STOPPING=1 as "the service is going down": it arms TimeoutStopSec= and has no way back to
  active, so a stop an operator may resume must not send it. A stop from a signal cannot be resumed.
- EXTEND_TIMEOUT_USEC every KEEPALIVE_SECS while nsup is where systemd may be timing it: starting
  (lifecycle.STARTING) or stopping (lifecycle.STOPPING). A node that cannot be flattened keeps nsup
  STUCK for as long as it takes, and systemd must never kill nsup mid-flatten on a timer. Only
  nsup's own loop sends it, so a wedged nsup still times out (and only nsup dies: KillMode=process).
- WATCHDOG=1 every KEEPALIVE_SECS (at most half of WatchdogSec=, the sd_watchdog_enabled convention).
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable, Mapping

from loguru import logger

from supervisor.lifecycle import HALTING, RUNNING, STARTING, STOPPING

NOTIFY_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")

# A fixed extension, independent of the config: 60 s, re-sent every 10 s, so a tick or two can be late
# or lost before systemd's stop (or start) timer could fire. Fixed rather than a multiple of the heartbeat:
# heartbeat_interval_secs may be anything from milliseconds to hours, and what this guards against is
# nsup's own event loop being wedged, not the worker being slow (nsup handles that itself).
EXTEND_WHILE_HALTING_USEC = 60_000_000
KEEPALIVE_SECS = 10.0
EXTEND_STATES = frozenset({*STARTING, *STOPPING})  # where systemd may be timing a start or a stop
STATUS_TEXT_MAX = 3000  # systemd ignores a STATUS= longer than 3 KiB


def status_text(state: str, counts: Mapping[str, int | None], note: str | None = None) -> str:
    """`HALTING positions=2 inflight=0 open=1`, from the journal's count fields (None: '?')."""
    def count(name: str) -> str:
        value = counts.get(name)
        return "?" if value is None else str(value)

    text = f"{state} positions={count('positions_open')} inflight={count('orders_inflight')} open={count('orders_open')}"
    return f"{text}: {note}" if note else text


def messages_for_transition(source: str, dest: str, counts: Mapping[str, int | None], *,
                            resumable: bool = False, note: str | None = None) -> list[str]:
    """What nsup tells systemd on the lifecycle transition source -> dest. `resumable`: the stop that
    led into HALTING may still be cancelled by an operator (`nsupctl stop`, not a signal). `note`:
    what else STATUS says (e.g. "degraded: journal not durable (...)")."""
    messages = []
    if dest == RUNNING:
        messages.append("READY=1")
    if dest == HALTING and not resumable:
        messages.append("STOPPING=1")
    messages.append(f"STATUS={status_text(dest, counts, note)}")
    return messages


def messages_on_reattach(state: str, counts: Mapping[str, int | None], *, resumable: bool = False) -> list[list[str]]:
    """A restarted nsup found its worker in `state` and carries on: no transition, but systemd is
    waiting for READY=1 (in CREATED, BUILT or RECOVERING it comes with the transition into RUNNING).
    Datagrams, not lines: READY=1 and STOPPING=1 must not share one, as systemd reads STOPPING=1 first
    and then ignores READY=1, which would leave the unit 'activating'."""
    datagrams = [[*(["READY=1"] if state == RUNNING or state in STOPPING else []),
                  f"STATUS={status_text(state, counts, 're-attached')}"]]
    if state in STOPPING and not resumable:
        datagrams.append(["STOPPING=1"])
    return datagrams


def extends_timeout(state: str) -> bool:
    """Whether the keep-alive extends systemd's start/stop timeout in this lifecycle state."""
    return state in EXTEND_STATES


def watchdog_interval_secs(environ: Mapping[str, str] | None = None, pid: int | None = None) -> float | None:
    """How often to send WATCHDOG=1: half of $WATCHDOG_USEC (sd_watchdog_enabled's convention). None
    when the watchdog is off, malformed, or meant for another process ($WATCHDOG_PID)."""
    env = os.environ if environ is None else environ
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    watchdog_pid = env.get("WATCHDOG_PID")
    if watchdog_pid:
        try:
            if int(watchdog_pid) != (os.getpid() if pid is None else pid):
                return None
        except ValueError:
            return None
    return usec / 2 / 1_000_000


class SdNotifier:
    """Sends to one notify socket; with `address=None` every call does nothing and says so (False)."""

    def __init__(self, address: str | None, watchdog_secs: float | None = None):
        self.address = address  # the kernel's spelling: a leading NUL for the abstract namespace
        self.watchdog_secs = watchdog_secs
        self._sock: socket.socket | None = None
        self._failing = False

    @classmethod
    def from_environment(cls, unset_environment: bool = True) -> SdNotifier:
        """The notifier systemd asked for, or a no-op one. By default the variables are then removed
        from this process's environment (sd_notify's unset_environment), so the worker nsup spawns
        does not inherit a socket and a watchdog that are nsup's alone."""
        raw = os.environ.get("NOTIFY_SOCKET") or None
        watchdog = watchdog_interval_secs()
        if unset_environment:
            for name in NOTIFY_ENV:
                os.environ.pop(name, None)
        if raw is None:
            return cls(None)
        if raw.startswith("@"):
            address = "\0" + raw[1:]
        elif raw.startswith("/"):
            address = raw
        else:  # vsock: and relative paths are not for nsup
            logger.warning("NOTIFY_SOCKET={!r} is not a unix socket path: systemd will not hear from nsup", raw)
            return cls(None)
        return cls(address, watchdog)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *messages: str) -> bool:
        """One datagram with these lines; True if it was handed to the kernel. Never raises, never
        blocks: a full socket buffer loses the message rather than stalling nsup's loop."""
        if self.address is None or not messages:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)
            self._sock.sendto("\n".join(messages).encode(), self.address)
        except OSError as exc:
            if not self._failing:
                logger.warning("systemd notify failed ({}): {}; nsup carries on", exc, ", ".join(messages))
            self._failing = True
            return False
        if self._failing:
            logger.info("systemd notify works again")
        self._failing = False
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        one_line = " ".join(text.split("\n"))  # a newline would start a bogus KEY=VALUE line
        return self.send(f"STATUS={one_line.encode()[:STATUS_TEXT_MAX].decode(errors='ignore')}")

    def stopping(self) -> bool:
        return self.send("STOPPING=1")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def extend_timeout(self, usec: int) -> bool:
        return self.send(f"EXTEND_TIMEOUT_USEC={int(usec)}")

    def reattached(self, state: str, counts: Mapping[str, int | None], *, resumable: bool = False) -> None:
        for datagram in messages_on_reattach(state, counts, resumable=resumable):
            self.send(*datagram)

    def keepalive(self, state: str) -> bool:
        """The periodic message: WATCHDOG=1 if systemd watches nsup, and the timeout extension in the
        states that need it; nothing if neither applies."""
        messages = (["WATCHDOG=1"] if self.watchdog_secs else []) + (
            [f"EXTEND_TIMEOUT_USEC={EXTEND_WHILE_HALTING_USEC}"] if extends_timeout(state) else [])
        return self.send(*messages) if messages else False

    @property
    def keepalive_secs(self) -> float:
        return min(KEEPALIVE_SECS, self.watchdog_secs or KEEPALIVE_SECS)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


async def keep_alive(notifier: SdNotifier, state: Callable[[], str]) -> None:
    """Run for the life of nsup's loop (cancel it at exit): the keep-alive on every tick. A loop that
    stops ticking is exactly what the watchdog and the timeouts are there to catch."""
    if not notifier.enabled:
        return
    while True:
        notifier.keepalive(state())
        await asyncio.sleep(notifier.keepalive_secs)
