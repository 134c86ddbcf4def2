"""The lease and its fencing as invariants, over any interleaving (supervisor/lease.py, docs/design.md).

Hypothesis drives two nsups for one node on one clock: each takes and renews the lease through the
real decision (`LeaseView.after`), against a model of Redis that runs the Lua scripts' rules (the real
scripts are held to the same against a real redis-server in test_lease.py). Anything can be slow:
a request to Redis runs some time after it was sent, its answer arrives later still or never, and an
nsup may not run at all for a while (frozen, partitioned). Each nsup reacts as the daemon does: on a
loss it sends its worker REDUCING, on a take back with nobody between it sends ACTIVE, it spawns a
worker only while it holds the lease, an operator may unpause it at any time, and it may ask to stop
its worker through the real stop gate rule (`stop_gate.decide`). A crashed nsup's worker may be
adopted by the holder. Every command and ping to a worker carries the sender's token and deadline and
is delivered after any delay, in any order; the worker applies the real rule (`refused_by_worker`),
goes closing-only by itself at its holder's deadline, opens positions only while ACTIVE, and stops
only when flat or under an approval (the model never has one).

After every step:
- at most one nsup believes it holds the lease;
- at most one worker of the node is trading (ACTIVE: it may open new risk);
- no worker carried out a command whose token was older than one it had seen;
- no worker was stopped while it held exposure.

Measured, not assumed: with the ci profile (derandomized, 600 examples of up to 50 steps, about 12 s)
each of these mutations is caught: no self-reduce at the worker's deadline, no expiry check of an
opening command, no token check, nsup believing its lease from the answer instead of the sending,
believing it 20% longer than Redis keeps it, and a gate that stops whatever it is asked to. With the
token check gone the deadline alone still keeps one worker trading (nsup and worker share a clock);
the token keeps a stale nsup from being obeyed at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from supervisor import protocol as p
from supervisor.lease import Answer, Change, Granted, HeldBy, Holder, LeaseView, Unanswered, refused_by_worker
from supervisor.stop_gate import decide

TTL = 10.0


class RedisModel:
    """The lease key and its token counter, as _TAKE, _RENEW and their PX expiry behave, on the model's clock."""

    def __init__(self):
        self.value: bytes | None = None
        self.expires_at = 0.0
        self.counter = 0

    def current(self, now: float) -> bytes | None:
        return self.value if self.value is not None and now < self.expires_at else None

    def take(self, now: float, me: Holder) -> Answer:
        current = self.current(now)
        held = msgspec.json.decode(current, type=Holder) if current else None
        if held is not None and held.start_id != me.start_id:  # another nsup's (each has a state dir of its own)
            return HeldBy(held, round((self.expires_at - now) * 1000))
        self.counter += 1
        self.value, self.expires_at = msgspec.json.encode(msgspec.structs.replace(me, token=self.counter)), now + TTL
        return Granted(msgspec.json.decode(self.value, type=Holder), self.value)

    def renew(self, now: float, value: bytes) -> Answer:
        current = self.current(now)
        if current == value:
            self.expires_at = now + TTL
            return Granted(msgspec.json.decode(value, type=Holder), value)
        return HeldBy(msgspec.json.decode(current, type=Holder) if current else None, 0)


@dataclass
class Worker:
    name: str
    owner: int  # the nsup that spawned or adopted it
    trading_state: str = "BUILT"  # until RunNode: then ACTIVE or REDUCING
    exposure: bool = False
    alive: bool = True
    newest_token: int = 0
    lease_until: float = 0.0
    obeyed_older_token: bool = False  # carried out a command whose token was older than one it had seen

    def status(self) -> p.NodeStatus:
        n = int(self.exposure)
        return p.NodeStatus(node_state="RUNNING", trading_state=self.trading_state, counts=p.Counts(n, 0, 0),
                            strategies=[], positions=[], ts=0.0)

    def hear(self, now: float, message: Message) -> None:
        """control_server.py: a message not older than the newest token updates the holder's deadline;
        a request is then checked by the real rule, and carried out."""
        if not self.alive:
            return
        newest_before = self.newest_token
        if message.fence >= self.newest_token:
            if message.fence > self.newest_token or message.until > self.lease_until:
                self.newest_token, self.lease_until = message.fence, message.until
        if message.command is None:  # a ping
            return
        opens = message.command in ("run", "active")
        if refused_by_worker(self.newest_token, message.fence, message.until, now, opens) is not None:
            return
        self.obeyed_older_token |= message.fence < newest_before
        match message.command:
            case "run":
                self.trading_state = "REDUCING" if message.reducing else "ACTIVE"
            case "active":
                self.trading_state = "ACTIVE"
            case "reducing":
                self.trading_state = "REDUCING"
            case "stop":  # StopNode(require_flat=True): the worker's own check, on its loop
                if not self.exposure:
                    self.alive = False

    def clock(self, now: float) -> None:
        """The deadline's timer: past it with no renewal heard, closing-only by itself."""
        if self.alive and self.lease_until and now >= self.lease_until and self.trading_state == "ACTIVE":
            self.trading_state = "REDUCING"


@dataclass
class Message:
    worker: Worker
    fence: int
    until: float
    command: str | None  # None: a ping
    reducing: bool = False


@dataclass
class Nsup:
    index: int
    me: Holder
    view: LeaseView = field(default_factory=lambda: LeaseView(TTL))
    fenced: bool = False  # the daemon's `_fenced`: set by a loss, cleared by a take
    paused: bool = False  # an operator's pause
    worker: Worker | None = None
    crashed: bool = False
    request: tuple[bytes | None, float] | None = None  # a take (None) or renewal (of this value) on its way to Redis, sent at
    answer: tuple[Answer, float] | None = None  # Redis's answer on its way back, and when it was sent


class LeaseAndFencing(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.now = 100.0
        self.redis = RedisModel()
        self.nsups = [Nsup(i, Holder(host=f"h{i}", boot_id="b", state_dir=f"/s{i}", pid=i, start_id=f"s{i}")) for i in (0, 1)]
        self.workers: list[Worker] = []
        self.in_flight: list[Message] = []

    @initialize()
    def the_first_nsup_runs_its_node(self):
        """Where the trouble starts: one nsup holds the lease, and its worker trades."""
        self._round_trip(self.nsups[0])
        self._spawn(self.nsups[0])

    # Who can do what now: rules are drawn only where they do something -------------------------

    def _up(self) -> list[Nsup]:
        return [n for n in self.nsups if not n.crashed]

    def _asking(self) -> list[Nsup]:
        return [n for n in self._up() if n.request is None and n.answer is None]

    def _may_spawn(self) -> list[Nsup]:
        return [n for n in self._up() if n.view.held(self.now) and (n.worker is None or not n.worker.alive)]

    def _orphans(self) -> list[Worker]:
        return [w for w in self.workers if w.alive and self.nsups[w.owner].crashed]

    def _with_worker(self) -> list[Nsup]:
        return [n for n in self._up() if n.worker is not None and n.worker.alive]

    # The clock ---------------------------------------------------------------------------------

    @rule(secs=st.sampled_from([0.05, 1.0, 3.0, 6.0, 11.0]))
    def time_passes(self, secs):
        self.now += secs
        for worker in self.workers:
            worker.clock(self.now)

    # nsup and Redis ----------------------------------------------------------------------------

    @precondition(lambda self: self._asking())
    @rule(data=st.data())
    def lease_round_trip(self, data):
        """Lease.keep: a take, or a renewal while it has a lease's value, answered at once."""
        self._round_trip(data.draw(st.sampled_from(self._asking())))

    def _round_trip(self, nsup: Nsup) -> None:
        self._ask(nsup)
        self._run(nsup)
        self._answer(nsup, lost=False)

    @precondition(lambda self: self._asking())
    @rule(data=st.data(), secs=st.sampled_from([1.0, 3.0, 6.0, 11.0]), late=st.sampled_from(["request", "answer"]))
    def a_slow_round_trip(self, data, secs, late):
        """A take or renewal whose request reaches Redis late, or whose answer comes back late."""
        nsup = data.draw(st.sampled_from(self._asking()))
        self._ask(nsup)
        if late == "request":
            self.time_passes(secs)
        self._run(nsup)
        if late == "answer":
            self.time_passes(secs)
        self._answer(nsup, lost=False)

    @precondition(lambda self: self._asking())
    @rule(data=st.data())
    def nsup_asks_redis(self, data):
        """The same, taken apart: the request is on its way, Redis runs it later, its answer comes later still."""
        self._ask(data.draw(st.sampled_from(self._asking())))

    def _ask(self, nsup: Nsup) -> None:
        nsup.request = (nsup.view.value, self.now)

    @precondition(lambda self: any(n.request for n in self.nsups))
    @rule(data=st.data())
    def redis_runs_the_request(self, data):
        self._run(data.draw(st.sampled_from([n for n in self.nsups if n.request])))

    def _run(self, nsup: Nsup) -> None:
        renewing, sent_at = nsup.request
        nsup.request = None
        answer = self.redis.take(self.now, nsup.me) if renewing is None else self.redis.renew(self.now, renewing)
        nsup.answer = (answer, sent_at)

    @precondition(lambda self: any(n.request or n.answer for n in self._up()))
    @rule(data=st.data(), lost=st.booleans())
    def the_answer_arrives(self, data, lost):
        """...or is lost on the way, or the request never got there: the call times out, Unanswered."""
        self._answer(data.draw(st.sampled_from([n for n in self._up() if n.request or n.answer])), lost)

    def _answer(self, nsup: Nsup, lost: bool) -> None:
        if nsup.answer is not None:
            (answer, sent_at), nsup.answer = nsup.answer, None
        else:
            (_, sent_at), nsup.request, answer = nsup.request, None, None
        self._apply(nsup, *nsup.view.after(self.now, sent_at, Unanswered("timeout") if lost or answer is None else answer))

    @precondition(lambda self: any(n.view.value is not None for n in self._up()))
    @rule(data=st.data())
    def the_lease_expires_while_waiting(self, data):
        """Lease.keep's wait for an answer ends at the expiry: the belief ends then, answer or not."""
        nsup = data.draw(st.sampled_from([n for n in self._up() if n.view.value is not None]))
        self._apply(nsup, *nsup.view.after(self.now, self.now, None))

    def _apply(self, nsup: Nsup, view: LeaseView, change: Change | None) -> None:
        """The daemon's `_lease_changed`: closing-only on a loss; trading again on a take back with
        nobody between, unless an operator paused it."""
        nsup.view = view
        if change is None:
            return
        if not change.held:
            nsup.fenced = True
            self._send(nsup, "reducing")
            return
        was_fenced, nsup.fenced = nsup.fenced, False
        if was_fenced and change.others_took_it:
            nsup.paused = True
        elif was_fenced and not nsup.paused:
            self._send(nsup, "active")

    # What the daemon and its operators do -------------------------------------------------------

    def _send(self, nsup: Nsup, command: str | None, at_once: bool = False) -> None:
        """On its way to the worker: it arrives when `a_message_arrives` says, or now."""
        if nsup.worker is not None and nsup.worker.alive:
            token, until = nsup.view.token, nsup.view.valid_until
            self.in_flight.append(Message(nsup.worker, token, until, command, reducing=nsup.fenced or nsup.paused))
            if at_once:
                self._arrives(len(self.in_flight) - 1)

    @precondition(lambda self: self._may_spawn())
    @rule(data=st.data(), at_once=st.booleans())
    def nsup_spawns_a_worker(self, data, at_once):
        """Only while it holds the lease (`_lease_held`); the node runs closing-only if paused or fenced."""
        self._spawn(data.draw(st.sampled_from(self._may_spawn())), at_once)

    def _spawn(self, nsup: Nsup, at_once: bool = True) -> None:
        nsup.worker = Worker(f"w{len(self.workers)}", nsup.index)
        self.workers.append(nsup.worker)
        self._send(nsup, "run", at_once)

    @precondition(lambda self: self._may_spawn() and self._orphans())
    @rule(data=st.data(), at_once=st.booleans())
    def nsup_adopts_an_orphan(self, data, at_once):
        """A worker whose nsup crashed, re-attached by the holder; trading as intended (the re-attach)."""
        nsup, orphan = data.draw(st.sampled_from(self._may_spawn())), self._orphans()[0]
        nsup.worker, orphan.owner = orphan, nsup.index
        self._send(nsup, "reducing" if nsup.fenced or nsup.paused else "active", at_once)

    @precondition(lambda self: self._with_worker())
    @rule(data=st.data(), paused=st.booleans(), at_once=st.booleans())
    def operator_pauses_or_unpauses(self, data, paused, at_once):
        """set_paused: the trading state the intent means, closing-only while fenced."""
        nsup = data.draw(st.sampled_from(self._with_worker()))
        nsup.paused = paused
        self._send(nsup, "reducing" if paused or nsup.fenced else "active", at_once)

    @precondition(lambda self: self._with_worker())
    @rule(data=st.data())
    def nsup_pings(self, data):
        self._send(data.draw(st.sampled_from(self._with_worker())), None)

    @precondition(lambda self: self._with_worker())
    @rule(data=st.data())
    def nsup_asks_to_stop_its_worker(self, data):
        """Through the gate's rule on a fresh status; the StopNode may then wait in flight while the node trades."""
        nsup = data.draw(st.sampled_from(self._with_worker()))
        if decide(nsup.worker.status(), None, worker_alive=True, node_ever_ran=True).allowed:
            self._send(nsup, "stop")

    @precondition(lambda self: self._up())
    @rule(data=st.data())
    def nsup_crashes(self, data):
        """Gone for good (its messages in flight still arrive); its lease lapses; its worker trades on."""
        nsup = data.draw(st.sampled_from(self._up()))
        nsup.crashed, nsup.request, nsup.answer, nsup.view = True, None, None, LeaseView(TTL)

    # The workers and the wire ------------------------------------------------------------------

    @precondition(lambda self: self.in_flight)
    @rule(data=st.data())
    def a_message_arrives(self, data):
        """Any of those in flight: from two nsups, or delayed, they come in any order."""
        self._arrives(data.draw(st.integers(0, len(self.in_flight) - 1)))

    def _arrives(self, index: int) -> None:
        message = self.in_flight.pop(index)
        message.worker.hear(self.now, message)

    @precondition(lambda self: any(w.alive for w in self.workers))
    @rule(data=st.data())
    def a_node_trades(self, data):
        """Opens risk only while ACTIVE; closes it in any state."""
        worker = data.draw(st.sampled_from([w for w in self.workers if w.alive]))
        worker.exposure = worker.trading_state == "ACTIVE" or (worker.exposure and data.draw(st.booleans()))

    # The invariants ----------------------------------------------------------------------------

    @invariant()
    def at_most_one_nsup_believes_it_holds_the_lease(self):
        believers = [n.index for n in self.nsups if not n.crashed and n.view.held(self.now)]
        assert len(believers) <= 1, (believers, self.now)

    @invariant()
    def at_most_one_worker_trades(self):
        trading = [w.name for w in self.workers if w.alive and w.trading_state == "ACTIVE"]
        assert len(trading) <= 1, (trading, self.now, self.workers)

    @invariant()
    def no_worker_obeyed_an_older_token(self):
        assert not any(w.obeyed_older_token for w in self.workers), self.workers

    @invariant()
    def no_worker_was_stopped_with_exposure(self):
        for worker in self.workers:
            assert worker.alive or not worker.exposure, worker


LeaseAndFencing.TestCase.settings = settings(
    max_examples=600, stateful_step_count=50, deadline=None, suppress_health_check=[HealthCheck.too_slow],
)
test_lease_and_fencing = LeaseAndFencing.TestCase

