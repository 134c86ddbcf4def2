"""The wire protocol between nsup and its node worker, in one screen.

Both sides import this module; it imports only msgspec, never nautilus_trader and never the FSM.
Frames are JSON objects tagged by "type". The supervisor owns a ROUTER socket; the worker connects a
DEALER. Every request carries an id and gets exactly one Reply with the same id; every Reply carries
the worker's status at the moment it answered, so the supervisor never acts on counts older than
its last answer.
"""

from __future__ import annotations

import enum

import msgspec

PROTOCOL_VERSION = 1
MAX_FRAME_BYTES = 1 << 20  # anything larger is refused unread


class Counts(msgspec.Struct, frozen=True):
    positions_open: int
    orders_inflight: int
    orders_open: int

    def all_zero(self) -> bool:
        return self.positions_open == 0 and self.orders_inflight == 0 and self.orders_open == 0


class PositionView(msgspec.Struct, frozen=True):
    instrument_id: str
    side: str
    quantity: str
    unrealized_pnl: str


class OrderView(msgspec.Struct, frozen=True):
    client_order_id: str
    instrument_id: str
    side: str
    quantity: str  # what is left of it
    order_type: str
    status: str
    owner: str  # the strategy (EXTERNAL: found at the venue, no strategy claims it), and its exec algorithm


class StrategyView(msgspec.Struct, frozen=True):
    strategy_id: str
    state: str
    is_exiting: bool


class NodeStatus(msgspec.Struct, frozen=True):
    node_state: str  # "BUILT", "RUNNING", "STOPPED", ... (the trader's ComponentState)
    trading_state: str  # "ACTIVE", "REDUCING" or "HALTED"
    counts: Counts  # the node's own cache
    strategies: list[StrategyView]
    positions: list[PositionView]
    ts: float  # worker's wall clock, seconds since the epoch
    venue_counts: Counts | None = None  # what the venues themselves report; only in a CheckVenues reply
    venue_unavailable: list[str] = []  # in a CheckVenues reply: each venue that could not say what it holds, and why
    data_age_secs: float | None = None  # since the newest quote the node has; None before the first
    clients: dict[str, bool] = {}  # data and execution client ids: connected?
    faults: list[str] = []  # recent faults the worker saw (rejected orders, unsupported requests), oldest first
    orders: list[OrderView] = []  # open and in-flight orders: with `positions`, what keeps the node from flat
    log_problem: str | None = None  # worker.log cannot be written: why, and how much of the log was dropped
    components: dict[str, str] = {}  # NautilusTrader components DEGRADED or FAULTED now: id -> state
    components_heard: int = 0  # components whose state the worker has heard change (all, once the node ran)

    def is_flat(self) -> bool:
        """One read that says flat; docs/design.md requires two of these some interval apart."""
        return self.counts.all_zero() and self.is_settled()

    def is_settled(self) -> bool:
        """No order open or in flight and no strategy exiting: nothing left that could still trade. A
        position the node's cache shows then is the venue's to confirm (docs/design.md, disagreement)."""
        c = self.counts
        return c.orders_inflight == 0 and c.orders_open == 0 and not any(s.is_exiting for s in self.strategies)

    def venue_says_flat(self) -> bool:
        """In a CheckVenues reply: every venue answered, and none holds anything."""
        return self.venue_counts is not None and self.venue_counts.all_zero() and not self.venue_unavailable

    def health(self, feed_silent_after_secs: float, in_session: bool = True) -> str:
        """Beyond liveness: a live worker can still be blind, cut off or missing a part. None of these
        restarts anything. A FAULTED component is first: NautilusTrader cannot bring it back. Outside
        the trading session (supervisor/schedule.py) a silent feed is the market being closed."""
        if "FAULTED" in self.components.values():
            return "component_faulted"
        if not all(self.clients.values()):
            return "venue_disconnected"
        if "DEGRADED" in self.components.values():
            return "component_degraded"
        if self.faults:
            return "degraded"
        if self.data_age_secs is None:
            return "waiting_for_data"
        if self.data_age_secs <= feed_silent_after_secs:
            return "ok"
        return "feed_silent" if in_session else "idle_market_closed"


# Supervisor -> worker: the commands, each one request.
class GetStatus(msgspec.Struct, frozen=True, tag="status"):
    pass


class RunNode(msgspec.Struct, frozen=True, tag="run"):
    timeout_secs: float


class SetTradingState(msgspec.Struct, frozen=True, tag="set_trading_state"):
    trading_state: str  # "ACTIVE" | "REDUCING" | "HALTED"


class MarketExit(msgspec.Struct, frozen=True, tag="market_exit"):
    pass


class CheckVenues(msgspec.Struct, frozen=True, tag="check_venues"):
    """Ask every venue what is open there; the reply's status carries venue_counts (and
    venue_unavailable, for a venue that could not say)."""


class CloseAll(msgspec.Struct, frozen=True, tag="close_all"):
    """nsup's closer: cancel every open order of the node, whoever owns it (emulated, held by an
    execution algorithm, contingent, found at reconciliation), and close every position no strategy
    closed, with reduce-only orders, at the venue's granularity (the net on a NETTING account, each
    position on a HEDGING one). The node reconciles with the venues first, so that what only they
    hold is closed too. The reply's `actions` say what was sent, with order and position ids.
    Answered within ANSWER_SECS: a reconciliation (at most 10 s), then passes of at most 5 s."""

    ANSWER_SECS = 20.0


class Reconcile(msgspec.Struct, frozen=True, tag="reconcile"):
    """Reconcile the node's cache with the venues now (what they hold, open and filled); answered
    within ANSWER_SECS."""

    ANSWER_SECS = 15.0


class StopNode(msgspec.Struct, frozen=True, tag="stop"):
    """Stop and dispose the node, then exit 0. Only supervisor.stop_gate sends it.

    With require_flat the worker refuses unless its own status, read on its loop, is flat.
    """

    require_flat: bool = True


Command = GetStatus | RunNode | SetTradingState | MarketExit | CheckVenues | CloseAll | Reconcile | StopNode


def opens_trading(command: Command) -> bool:
    """The commands that let the node open new risk: running it, and ACTIVE. Everything else only
    reads, closes or stops."""
    return isinstance(command, RunNode) or (isinstance(command, SetTradingState) and command.trading_state == "ACTIVE")


class Request(msgspec.Struct, frozen=True, tag="request"):
    request_id: int
    command: Command
    # The lease's fencing token of the nsup that sent it (supervisor/lease.py): the worker refuses a
    # command whose token is older than the newest it has seen. 0: no lease (no Redis), no fencing.
    fence: int = 0
    # Until when that nsup may act as the lease's holder, on CLOCK_MONOTONIC, which nsup and its worker
    # share (one host): past it the worker goes closing-only by itself, and opens nothing on this
    # command's word. 0: no lease.
    lease_until: float = 0.0


class Ping(msgspec.Struct, frozen=True, tag="ping"):
    """nsup's heartbeat to the worker, so that the worker knows when its supervisor is gone; it
    carries the fencing token too, so that the worker learns of a newer holder at once."""

    fence: int = 0
    lease_until: float = 0.0


# Worker -> supervisor.
class Hello(msgspec.Struct, frozen=True, tag="hello"):
    version: int
    pid: int
    trader_id: str
    status: NodeStatus


class BuildFailed(msgspec.Struct, frozen=True, tag="build_failed"):
    """The worker could not import the factory or build the node; it exits non-zero after this."""

    version: int
    pid: int
    reason: str


class Heartbeat(msgspec.Struct, frozen=True, tag="heartbeat"):
    status: NodeStatus
    pid: int = 0  # so that a restarted nsup can tell its worker from a stranger before any hello


class Notice(msgspec.Struct, frozen=True, tag="notice"):
    """Something the worker wants on the record, e.g. a signal it received and ignored."""

    text: str


class StopRequested(msgspec.Struct, frozen=True, tag="stop_requested"):
    """The node tried to stop itself (a component's shutdown_system(), or a stop() called on it): the
    worker did not let it, and asks nsup for the graceful stop instead."""

    component: str
    reason: str


class ComponentStateChange(msgspec.Struct, frozen=True, tag="component_state"):
    """A NautilusTrader component (strategy, actor, engine, client) went into DEGRADED or FAULTED, or
    out of it (node_worker/component_watch.py). UNKNOWN as the source: not heard from before."""

    component: str  # its id, e.g. "EMACross-001", "RiskEngine"
    component_type: str  # its class, e.g. "EMACross", "RiskEngine"
    source: str
    dest: str


class ErrorCode(enum.IntEnum):
    BAD_FRAME = 1  # not JSON, not an object, wrong types, too large
    UNKNOWN_COMMAND = 2
    NODE_ERROR = 3  # the node raised or refused
    FENCED = 4  # the command's fencing token is older than one the worker has seen: another nsup holds the node


class Reply(msgspec.Struct, frozen=True, tag="reply"):
    request_id: int
    ok: bool
    status: NodeStatus | None = None
    error: str | None = None
    code: ErrorCode | None = None
    actions: list[str] = []  # what a CloseAll sent


Said = Notice | StopRequested | ComponentStateChange  # what the worker says unasked, besides its heartbeat
WorkerMessage = Hello | BuildFailed | Heartbeat | Said | Reply
SupervisorMessage = Request | Ping

_encoder = msgspec.json.Encoder()
_worker_decoder = msgspec.json.Decoder(WorkerMessage)
_supervisor_decoder = msgspec.json.Decoder(SupervisorMessage)


class ProtocolError(ValueError):
    """A frame that is not a valid message; carries the code to answer with."""

    def __init__(self, reason: str, code: ErrorCode = ErrorCode.BAD_FRAME):
        super().__init__(reason)
        self.code = code


def encode(message: WorkerMessage | SupervisorMessage) -> bytes:
    return _encoder.encode(message)


def _decode(frame: bytes, decoder: msgspec.json.Decoder):
    if len(frame) > MAX_FRAME_BYTES:
        raise ProtocolError(f"frame of {len(frame)} bytes exceeds {MAX_FRAME_BYTES}")
    try:
        return decoder.decode(frame)
    except msgspec.ValidationError as exc:
        unknown_command = str(exc).startswith("Invalid value") and str(exc).endswith("`$.command.type`")
        code = ErrorCode.UNKNOWN_COMMAND if unknown_command else ErrorCode.BAD_FRAME
        raise ProtocolError(str(exc), code) from None
    except msgspec.DecodeError as exc:
        raise ProtocolError(f"malformed JSON: {exc}") from None


def decode_from_worker(frame: bytes) -> WorkerMessage:
    return _decode(frame, _worker_decoder)


def decode_from_supervisor(frame: bytes) -> SupervisorMessage:
    return _decode(frame, _supervisor_decoder)
