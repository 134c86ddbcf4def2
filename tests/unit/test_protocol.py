"""The wire protocol: round trips, garbage in -> ProtocolError only, frame size limit, error codes."""

from __future__ import annotations

import json

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from _statuses import node_statuses, status
from supervisor import protocol as p

text = st.text(max_size=30)
finite = st.floats(allow_nan=False, allow_infinity=False)
ints = st.integers(min_value=-(2**63), max_value=2**63 - 1)

commands = st.one_of(
    st.builds(p.GetStatus),
    st.builds(p.RunNode, timeout_secs=finite),
    st.builds(p.SetTradingState, trading_state=st.sampled_from(["ACTIVE", "REDUCING", "HALTED"]) | text),
    st.builds(p.MarketExit),
    st.builds(p.StopNode, require_flat=st.booleans()),
)
requests = st.builds(p.Request, request_id=ints, command=commands)
worker_messages = st.one_of(
    st.builds(p.Hello, version=ints, pid=ints, trader_id=text, status=node_statuses()),
    st.builds(p.BuildFailed, version=ints, pid=ints, reason=text),
    st.builds(p.Heartbeat, status=node_statuses()),
    st.builds(p.Notice, text=text),
    st.builds(p.ComponentStateChange, component=text, component_type=text, source=text, dest=text),
    st.builds(
        p.Reply, request_id=ints, ok=st.booleans(), status=st.none() | node_statuses(), error=st.none() | text,
        code=st.none() | st.sampled_from(list(p.ErrorCode)),
    ),
)

EVERY_MESSAGE = [
    p.Request(1, p.GetStatus()),
    p.Request(2, p.RunNode(60.0)),
    p.Request(3, p.SetTradingState("REDUCING")),
    p.Request(4, p.MarketExit()),
    p.Request(5, p.StopNode()),
    p.Request(6, p.StopNode(require_flat=False)),
    p.Hello(p.PROTOCOL_VERSION, 4242, "TRADER-001", status(positions=1, trading_state="ACTIVE")),
    p.BuildFailed(p.PROTOCOL_VERSION, 4242, "ImportError: no module named my_node"),
    p.Heartbeat(status(exiting=True)),
    p.Notice("ignored SIGTERM: nsup decides"),
    p.ComponentStateChange("EMACross-001", "EMACross", "RUNNING", "FAULTED"),
    p.Heartbeat(msgspec.structs.replace(status(), components={"EMACross-001": "FAULTED"}, components_heard=9)),
    p.Reply(7, ok=True, status=status()),
    p.Reply(8, ok=False, status=status(open_=1), error="refused to stop: not flat", code=p.ErrorCode.NODE_ERROR),
    p.Reply(9, ok=False),
]
SUPERVISOR_TYPES = (p.Request,)


def decode_for(message):
    return p.decode_from_supervisor if isinstance(message, SUPERVISOR_TYPES) else p.decode_from_worker


@pytest.mark.parametrize("message", EVERY_MESSAGE, ids=lambda m: type(m).__name__ + getattr(
    getattr(m, "command", None), "__class__", type(None)).__name__)
def test_round_trip_of_every_message_type(message):
    frame = p.encode(message)
    assert isinstance(frame, bytes)
    decoded = decode_for(message)(frame)
    assert decoded == message and type(decoded) is type(message)
    obj = json.loads(frame)
    assert isinstance(obj, dict) and obj["type"] == message.__struct_config__.tag


def test_every_message_and_command_type_is_covered():
    seen = {type(m) for m in EVERY_MESSAGE} | {type(m.command) for m in EVERY_MESSAGE if isinstance(m, p.Request)}
    assert seen == {p.Request, p.GetStatus, p.RunNode, p.SetTradingState, p.MarketExit, p.StopNode,
                    p.Hello, p.BuildFailed, p.Heartbeat, p.Notice, p.ComponentStateChange, p.Reply}


def test_tags_are_the_wire_names():
    tags = {cls: cls.__struct_config__.tag for cls in (p.GetStatus, p.RunNode, p.SetTradingState, p.MarketExit,
                                                       p.StopNode, p.Request, p.Hello, p.BuildFailed, p.Heartbeat,
                                                       p.Notice, p.ComponentStateChange, p.Reply)}
    assert tags == {p.GetStatus: "status", p.RunNode: "run", p.SetTradingState: "set_trading_state",
                    p.MarketExit: "market_exit", p.StopNode: "stop", p.Request: "request", p.Hello: "hello",
                    p.BuildFailed: "build_failed", p.Heartbeat: "heartbeat", p.Notice: "notice",
                    p.ComponentStateChange: "component_state", p.Reply: "reply"}
    assert p.StopNode().require_flat is True  # the default is the safe one


@settings(max_examples=200, deadline=None)
@given(message=requests)
def test_round_trip_requests(message):
    assert p.decode_from_supervisor(p.encode(message)) == message


@settings(max_examples=200, deadline=None)
@given(message=worker_messages)
def test_round_trip_worker_messages(message):
    assert p.decode_from_worker(p.encode(message)) == message


def test_messages_do_not_cross_directions():
    with pytest.raises(p.ProtocolError):
        p.decode_from_supervisor(p.encode(p.Heartbeat(status())))
    with pytest.raises(p.ProtocolError):
        p.decode_from_worker(p.encode(p.Request(1, p.GetStatus())))


# Garbage -----------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=10),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
type_names = st.sampled_from(["request", "status", "run", "stop", "set_trading_state", "market_exit", "hello",
                              "build_failed", "heartbeat", "notice", "reply", "bogus", ""])


@st.composite
def plausible_objects(draw):
    """Objects that look like messages: the right keys with wrong or random values."""
    obj = draw(st.dictionaries(st.sampled_from(["type", "request_id", "command", "status", "ok", "error", "code",
                                                "version", "pid", "text", "reason", "require_flat", "timeout_secs"]),
                               json_values, max_size=6))
    if draw(st.booleans()):
        obj["type"] = draw(type_names)
    if draw(st.booleans()):
        obj["command"] = {"type": draw(type_names), **draw(st.dictionaries(st.text(max_size=8), json_values, max_size=2))}
    return obj


@st.composite
def mutated_messages(draw):
    """A valid message with one field, somewhere in it, replaced by a random JSON value."""
    message = draw(st.sampled_from(EVERY_MESSAGE))
    obj = json.loads(p.encode(message))
    target = obj
    while True:
        key = draw(st.sampled_from(sorted(target)))
        if isinstance(target[key], dict) and target[key] and draw(st.booleans()):
            target = target[key]
            continue
        target[key] = draw(json_values)
        return obj


def assert_only_protocol_error(frame: bytes) -> None:
    for decode in (p.decode_from_supervisor, p.decode_from_worker):
        try:
            decode(frame)
        except p.ProtocolError as exc:
            assert isinstance(exc.code, p.ErrorCode)
            assert str(exc)
        # any other exception escapes and fails the test


@settings(max_examples=200, deadline=None)
@given(frame=st.binary(max_size=200))
def test_garbage_bytes_raise_only_protocol_error(frame):
    assert_only_protocol_error(frame)


@settings(max_examples=200, deadline=None)
@given(value=json_values | plausible_objects())
def test_random_json_raises_only_protocol_error(value):
    assert_only_protocol_error(json.dumps(value).encode())


@settings(max_examples=200, deadline=None)
@given(obj=mutated_messages())
def test_mutated_messages_raise_only_protocol_error(obj):
    assert_only_protocol_error(json.dumps(obj).encode())


@pytest.mark.parametrize(
    "frame",
    [
        b"", b"\x00", b"\xff\xfe", b"null", b"[]", b"42", b'"request"', b"{", b'{"type":', b"{}",
        b"[" * 100_000, b'{"type":"request","request_id":1,"command":' + b"[" * 100_000,
        b'{"type":"request","request_id":1e400,"command":{"type":"status"}}',
        b'{"type":"request","request_id":' + b"9" * 5000 + b',"command":{"type":"status"}}',
        b'{"type":"request","request_id":1,"command":{"type":"run","timeout_secs":NaN}}',
        b'{"type":"heartbeat","status":{"node_state":"RUNNING"}}',
        b'{"type":"reply","request_id":1,"ok":false,"code":99}',
        "\udcff".encode("utf-8", "surrogatepass"),
    ],
)
def test_known_nasty_frames_raise_only_protocol_error(frame):
    assert_only_protocol_error(frame)


# Frame size --------------------------------------------------------------------------------------


def padded(message, size: int) -> bytes:
    frame = p.encode(message)
    return frame + b" " * (size - len(frame))  # trailing whitespace: still valid JSON


def test_oversized_frames_are_refused_even_when_valid():
    big = padded(p.Request(1, p.GetStatus()), p.MAX_FRAME_BYTES + 1)
    msgspec.json.decode(big)  # it is valid JSON
    with pytest.raises(p.ProtocolError) as err:
        p.decode_from_supervisor(big)
    assert err.value.code == p.ErrorCode.BAD_FRAME and str(p.MAX_FRAME_BYTES) in str(err.value)
    with pytest.raises(p.ProtocolError) as err:
        p.decode_from_worker(padded(p.Notice("x"), p.MAX_FRAME_BYTES + 1))
    assert err.value.code == p.ErrorCode.BAD_FRAME


def test_a_frame_at_the_limit_is_accepted():
    assert p.decode_from_supervisor(padded(p.Request(1, p.GetStatus()), p.MAX_FRAME_BYTES)) == p.Request(1, p.GetStatus())
    assert p.decode_from_worker(padded(p.Notice("x"), p.MAX_FRAME_BYTES)) == p.Notice("x")


def test_an_oversized_garbage_frame_is_refused_by_size():
    with pytest.raises(p.ProtocolError, match="exceeds"):
        p.decode_from_supervisor(b"[" * (p.MAX_FRAME_BYTES + 1))


# Error codes -------------------------------------------------------------------------------------


def test_unknown_command_is_unknown_command():
    frame = b'{"type":"request","request_id":7,"command":{"type":"self_destruct"}}'
    with pytest.raises(p.ProtocolError) as err:
        p.decode_from_supervisor(frame)
    # msgspec says: Invalid value 'self_destruct' - at `$.command.type`
    assert "Invalid value 'self_destruct'" in str(err.value) and "$.command.type" in str(err.value)
    assert err.value.code == p.ErrorCode.UNKNOWN_COMMAND


@pytest.mark.parametrize("tag", ["bogus", "type", "Status", "STOP", "stop ", "", "invalid value"])
def test_every_unknown_command_tag_is_unknown_command(tag):
    frame = json.dumps({"type": "request", "request_id": 7, "command": {"type": tag}}).encode()
    with pytest.raises(p.ProtocolError) as err:
        p.decode_from_supervisor(frame)
    assert err.value.code == p.ErrorCode.UNKNOWN_COMMAND


@pytest.mark.parametrize(
    "frame",
    [
        b"not json",
        b"[1, 2]",
        b'{"type":"request","request_id":"7","command":{"type":"status"}}',  # wrong type
        b'{"type":"request","request_id":7}',  # missing command
        b'{"type":"request","request_id":7,"command":{}}',  # command without a type
        b'{"type":"request","request_id":7,"command":{"type":7}}',  # tag not a string
        b'{"type":"request","request_id":7,"command":{"type":"run"}}',  # missing timeout_secs
        b'{"type":"request","request_id":7,"command":{"type":"run","timeout_secs":"60"}}',
        b'{"type":"request","request_id":7,"command":{"type":"stop","require_flat":"no"}}',
        b'{"type":"request","request_id":7,"command":{"type":"set_trading_state","trading_state":1}}',
    ],
)
def test_malformed_frames_are_bad_frame(frame):
    with pytest.raises(p.ProtocolError) as err:
        p.decode_from_supervisor(frame)
    assert err.value.code == p.ErrorCode.BAD_FRAME


def test_unknown_fields_are_tolerated_for_forward_compatibility():
    frame = b'{"type":"request","request_id":7,"future":1,"command":{"type":"stop","require_flat":true,"why":"x"}}'
    assert p.decode_from_supervisor(frame) == p.Request(7, p.StopNode(require_flat=True))


def test_stop_node_defaults_to_require_flat_on_the_wire():
    frame = b'{"type":"request","request_id":7,"command":{"type":"stop"}}'
    assert p.decode_from_supervisor(frame).command.require_flat is True


def test_protocol_error_defaults_to_bad_frame():
    assert p.ProtocolError("x").code == p.ErrorCode.BAD_FRAME
    assert isinstance(p.ProtocolError("x"), ValueError)


def test_is_flat():
    assert status().is_flat()
    assert not status(positions=1).is_flat()
    assert not status(inflight=1).is_flat()
    assert not status(open_=1).is_flat()
    assert not status(exiting=True).is_flat()
    assert status(trading_state="ACTIVE").is_flat()  # one read: counts and exiting only


def test_every_request_and_ping_carries_the_lease_token_and_deadline_and_older_frames_mean_no_lease():
    request = p.Request(7, p.SetTradingState("ACTIVE"), fence=3, lease_until=1234.5)
    assert p.decode_from_supervisor(p.encode(request)) == request
    assert p.decode_from_supervisor(p.encode(p.Ping(3, 1234.5))) == p.Ping(3, 1234.5)
    bare = p.decode_from_supervisor(b'{"type":"request","request_id":1,"command":{"type":"status"}}')
    assert (bare.fence, bare.lease_until) == (0, 0.0), "an nsup without a lease: no fencing"
    assert p.decode_from_supervisor(b'{"type":"ping"}') == p.Ping(0, 0.0)


def test_only_running_the_node_and_active_open_trading():
    opening = [p.RunNode(30.0), p.SetTradingState("ACTIVE")]
    others = [p.SetTradingState("REDUCING"), p.SetTradingState("HALTED"), p.MarketExit(), p.CloseAll(), p.StopNode(),
              p.GetStatus(), p.CheckVenues(), p.Reconcile()]
    assert all(p.opens_trading(c) for c in opening) and not any(p.opens_trading(c) for c in others)
