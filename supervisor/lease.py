"""The node's lease in Redis: one node, one place (docs/design.md, "Lease and fencing").

Two hosts must never run the same node: that trades twice. With [redis] configured, nsup holds a
lease on its node name before it spawns or adopts a worker, and renews it while it runs:

    nsup:NAME:lease        who holds the node (JSON: host, boot, state dir, pid, start id, token), with
                           an expiry of `lease_secs` (PX); taken only if absent (or left by an earlier
                           nsup on this very state dir and boot, whose lock we now hold)
    nsup:NAME:lease_token  the fencing token: INCR'd on every take, so every take has a larger one

Taking and renewing are Lua scripts, so each is one atomic step in Redis: a renewal extends the
lease only if it still holds our exact value (never someone else's), and a take increments the token
and sets the lease together. A new take always gets a new token, also when nsup takes back a lease
it lost: the token then says whether anyone else took the node in between (ours + 1: nobody did).

An expiry alone does not fence: an nsup frozen (a pause, a partition) past its lease still believes
it holds it and may act when it wakes. So nsup's own belief ends at the lease's start as nsup sent
it plus `lease_secs` (less a drift margin), whatever Redis says later, and the token travels with
every command to the worker; the worker refuses a command whose token is older than the newest it
has seen, and with it until when the lease holds: past that the worker goes closing-only by itself
and opens nothing on that command's word (`refused_by_worker`, below). nsup and its worker share a
host, hence CLOCK_MONOTONIC, so the worker needs no other clock. Without [redis] there is no lease,
and the token and deadline are 0: no fencing.

`LeaseView.after` is the decision, pure (tests/unit/test_lease_stateful.py holds it to its
invariants); `Lease` is the Redis part: the take at start, and the renewal loop that hands every
change to the daemon, which journals it and acts.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import msgspec
from loguru import logger

from supervisor.persisted_state import boot_id

PREFIX = "nsup"
RENEW_FRACTION = 1 / 3  # renewed this far into the expiry: two renewals may fail before it lapses
CLOCK_DRIFT = 0.01  # nsup's belief ends this much of the expiry early (Redlock's factor): clocks run at slightly different rates
CLOCK_DRIFT_MS = 2

# KEYS: lease, token counter. ARGV: our holder (JSON, no token), expiry ms, the value of an earlier
# nsup of ours that may be taken over ("" for none). Returns {1, value, ms} taken, {0, value, ms} held.
_TAKE = """
local current = redis.call('GET', KEYS[1])
if current and current ~= ARGV[3] then
  return {0, current, redis.call('PTTL', KEYS[1])}
end
local holder = cjson.decode(ARGV[1])
holder['token'] = redis.call('INCR', KEYS[2])
local value = cjson.encode(holder)
redis.call('SET', KEYS[1], value, 'PX', ARGV[2])
return {1, value, tonumber(ARGV[2])}
"""

# KEYS: lease. ARGV: our value, expiry ms. Extends the lease only while it is still exactly ours.
_RENEW = """
local current = redis.call('GET', KEYS[1])
if current == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {1, current, tonumber(ARGV[2])}
end
if current then
  return {0, current, redis.call('PTTL', KEYS[1])}
end
return {0, false, 0}
"""

# KEYS: lease. ARGV: our value. Gone only if still ours.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class Holder(msgspec.Struct, frozen=True, kw_only=True):
    """Who holds a node's lease: enough to name it for an operator, and to know an earlier self."""

    host: str
    boot_id: str
    state_dir: str
    pid: int
    start_id: str  # this nsup's start: a restarted nsup with the same pid is another holder
    token: int = 0

    @classmethod
    def me(cls, state_dir: Path) -> Holder:
        return cls(host=socket.gethostname(), boot_id=boot_id(), state_dir=str(state_dir.resolve()), pid=os.getpid(),
                   start_id=secrets.token_hex(4))

    def is_on_the_state_dir_of(self, me: Holder) -> bool:
        """An nsup on this very state dir, on this boot of this host: an earlier one is gone (a crash:
        we hold the state dir's lock now), so its lease is ours to take over; so is our own. Another
        boot (a pod rescheduled on another machine, with the same name and path) is someone else."""
        return (self.host, self.boot_id, self.state_dir) == (me.host, me.boot_id, me.state_dir)

    def describe(self) -> str:
        return f"nsup pid {self.pid} on {self.host} ({self.state_dir}), token {self.token}"


def decode_holder(raw) -> Holder | None:
    try:
        return msgspec.json.decode(raw, type=Holder) if raw else None
    except msgspec.MsgspecError:
        return None  # not ours to read: it is someone's all the same, and never taken over


# What Redis answered, as the decision reads it -------------------------------------------------

@dataclass(frozen=True)
class Granted:
    holder: Holder  # ours, with its token
    value: bytes = b""  # exactly as Redis holds it: what a renewal compares


@dataclass(frozen=True)
class HeldBy:
    holder: Holder | None  # None: a value that is not a holder's, or no lease at all (on a renewal)
    expires_in_ms: int

    def until(self) -> str:
        at = datetime.now(timezone.utc).timestamp() + max(self.expires_in_ms, 0) / 1000
        return datetime.fromtimestamp(at, timezone.utc).isoformat(timespec="seconds")

    def describe(self) -> str:
        who = self.holder.describe() if self.holder else "someone nsup cannot name"
        return f"{who}, until {self.until()} unless renewed"

    def why_lost(self) -> str:
        if self.holder is None and self.expires_in_ms <= 0:  # a renewal that found no lease at all
            return "the lease had expired in Redis before its renewal ran"
        return f"the lease is held by {self.describe()}"


@dataclass(frozen=True)
class Unanswered:
    reason: str


Answer = Granted | HeldBy | Unanswered


# The decision, pure ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Change:
    """What the daemon is told: the lease was taken (`token`, and whether another took the node since
    our last token), or lost (`reason`)."""

    held: bool
    token: int
    reason: str
    others_took_it: bool = False


@dataclass(frozen=True)
class LeaseView:
    """What nsup believes of its lease: the token of its last take (kept after a loss: it is still
    what nsup's commands carry), and until when, on its monotonic clock, it may act as the holder."""

    ttl_secs: float
    token: int = 0
    value: bytes | None = None  # the holder's JSON as Redis holds it, while we hold it
    valid_until: float = 0.0

    def held(self, now: float) -> bool:
        return self.value is not None and now < self.valid_until

    def believed_until(self, sent_at: float) -> float:
        """A lease set by a command sent at `sent_at` lasts in Redis at least `ttl` from then; nsup
        believes in it a drift margin less."""
        return sent_at + self.ttl_secs * (1 - CLOCK_DRIFT) - CLOCK_DRIFT_MS / 1000

    def after(self, now: float, sent_at: float, answer: Answer | None) -> tuple[LeaseView, Change | None]:
        """The view after Redis answered a take or renewal sent at `sent_at` (None: no answer yet, the
        clock moved on), and what changed. The belief ends at `valid_until` whatever Redis says later;
        an answer that comes later proves the lease from its own sending only, and one that comes past
        that is not acted on (the next take makes a new token)."""
        was_held = self.held(now)
        match answer:
            case Granted(holder=holder, value=value):
                view = replace(self, token=holder.token, value=value, valid_until=self.believed_until(sent_at))
                if not view.held(now):
                    return replace(view, value=None), self._lost("Redis answered only after the lease would have expired")
                if was_held:
                    return view, None  # renewed
                return view, Change(True, holder.token, "taken", others_took_it=self.token != 0 and holder.token > self.token + 1)
            case HeldBy() as held_by:
                lost = replace(self, value=None, valid_until=min(self.valid_until, now))
                return lost, self._lost(held_by.why_lost())
            case Unanswered(reason=reason) if not was_held:
                return replace(self, value=None), self._lost(f"Redis did not answer before the lease expired ({reason})")
            case None if not was_held:
                return replace(self, value=None), self._lost(
                    "Redis did not answer before the lease expired (or nsup itself could not renew it in time: frozen, starved)")
        return self, None

    def _lost(self, reason: str) -> Change | None:
        """A loss to report, if nsup held the lease (a lease never held is not lost)."""
        return Change(False, self.token, reason) if self.value is not None else None


def refused_by_worker(newest_token: int, fence: int, lease_until: float, now: float, opens: bool) -> str | None:
    """The worker's rule: why it refuses a command carrying `fence` and `lease_until`, or None. A token
    older than the newest it has seen is another nsup's past; and nothing is opened on the word of a
    lease that has expired by the time the command arrives (a command delayed in a pause or a queue).
    Token 0 and lease_until 0 are no lease: nothing to check."""
    if fence < newest_token:
        return (f"fenced: the command carries lease token {fence}, older than {newest_token}, which the worker has "
                "seen: another nsup has taken this node since; refused")
    if opens and lease_until and now >= lease_until:
        return (f"the lease this command was sent under (token {fence}) expired {now - lease_until:.3f}s before it "
                "arrived: nothing is opened on its word; refused")
    return None


# The Redis part -------------------------------------------------------------------------------

def lease_keys(name: str) -> tuple[str, str]:
    return f"{PREFIX}:{name}:lease", f"{PREFIX}:{name}:lease_token"


class Lease:
    """The lease of node `name`: taken once at start (`take_at_start`), then kept by `keep`, which
    reports every change to the daemon. `token` is what every command to the worker carries."""

    def __init__(self, url: str, name: str, state_dir: Path, ttl_secs: float, timeout_secs: float):
        self.url, self.name = url, name
        self.key, self.counter = lease_keys(name)
        self.me = Holder.me(state_dir)
        self.view = LeaseView(ttl_secs)
        # Each call must be answered well within a renewal's interval, or the next one is late.
        self._timeout = min(timeout_secs, ttl_secs * RENEW_FRACTION / 2)
        self._client = None

    @property
    def token(self) -> int:
        return self.view.token

    def fence(self) -> tuple[int, float]:
        """What every command and ping to the worker carries: the token, and until when (CLOCK_MONOTONIC)
        nsup may act as the holder (in the past once the lease is lost)."""
        return self.view.token, self.view.valid_until

    def held(self) -> bool:
        return self.view.held(time.monotonic())

    def take_at_start(self) -> Change | HeldBy | Unanswered:
        """The first take, before anything starts: HeldBy says who holds the node (nsup refuses to
        start); Unanswered: Redis cannot say now, and the daemon takes the lease before any worker."""
        sent_at = time.monotonic()
        answer = self._call(self._take)
        change = self._apply(sent_at, answer)
        return change if change is not None else answer

    async def keep(self, on_change: Callable[[Change], None]) -> None:
        """Takes the lease while it is not held, renews it while it is, every third of its expiry
        (at once after a refusal or no answer, with that same interval); a lease that lapses while
        Redis is silent is lost at its expiry, not at the answer."""
        interval = self.view.ttl_secs * RENEW_FRACTION
        loop = asyncio.get_running_loop()
        while True:
            sent_at = time.monotonic()
            value = self.view.value  # what this renewal extends: the view may lose it before the call runs
            call = loop.run_in_executor(None, self._call, self._take if value is None else lambda client: self._renew(client, value))
            if value is not None:
                done, _ = await asyncio.wait([call], timeout=max(0.0, self.view.valid_until - sent_at))
                if not done:  # its expiry came first: the belief ends now, the answer is judged when it comes
                    self._report(on_change, self._apply(sent_at, None))
            answer = await call
            self._report(on_change, self._apply(sent_at, answer))
            await asyncio.sleep(max(0.0, sent_at + interval - time.monotonic()))

    def release(self) -> None:
        """At exit, with no worker left: the next nsup need not wait for the expiry. On a connection of
        its own (a renewal cancelled at exit may still be using the keeper's, in its thread), and never
        raising: a release that fails only makes the next nsup wait for the expiry."""
        from supervisor.redis_mirror import connect

        value = self.view.value
        if value is None:
            return
        self.view = replace(self.view, value=None)
        try:
            client = connect(self.url, self._timeout)
            try:
                client.eval(_RELEASE, 1, self.key, value)
            finally:
                client.close()
        except Exception as exc:  # noqa: BLE001 (best effort at exit: the expiry frees the node anyway)
            logger.warning("the lease on {} was not released ({}: {}); the next nsup waits for its expiry ({:g}s)",
                           self.key, type(exc).__name__, exc, self.view.ttl_secs)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def _report(self, on_change: Callable[[Change], None], change: Change | None) -> None:
        if change is not None:
            on_change(change)

    def _apply(self, sent_at: float, answer: Answer | None) -> Change | None:
        self.view, change = self.view.after(time.monotonic(), sent_at, answer)
        return change

    def _take(self, client) -> Answer:
        current = client.get(self.key)
        holder = decode_holder(current)
        # An earlier nsup's of this state dir, or our own whose answer came too late to act on: taken over.
        earlier = current if holder is not None and holder.is_on_the_state_dir_of(self.me) else b""
        mine = msgspec.json.encode(self.me)  # token 0: the script sets it
        return self._read(client.eval(_TAKE, 2, self.key, self.counter, mine, self._ttl_ms, earlier))

    def _renew(self, client, value: bytes) -> Answer:
        return self._read(client.eval(_RENEW, 1, self.key, value, self._ttl_ms))

    @property
    def _ttl_ms(self) -> int:
        return round(self.view.ttl_secs * 1000)

    def _read(self, reply) -> Answer:
        taken, value, expires_in_ms = reply
        holder = decode_holder(value)
        if taken and holder is not None:
            return Granted(holder, value)
        return HeldBy(holder, int(expires_in_ms or 0))

    def _call(self, step) -> Answer:
        from supervisor.redis_mirror import connect, redis_errors

        try:
            if self._client is None:
                self._client = connect(self.url, self._timeout)
            return step(self._client)
        except redis_errors() as exc:
            if self._client is not None:
                self._client.close()
                self._client = None  # a new connection next time: an answer late on this one must not be read as the next
            return Unanswered(f"{type(exc).__name__}: {exc}")

