"""`nsupctl`: drive a running nsup, the way supervisorctl drives supervisord.

    nsupctl --state-dir DIR status [--diagram FILE]|pause|resume|flatten|stop [--wait]|restart|abort|events|tail|version
    nsupctl --endpoint tcp://HOST:PORT --server-key S.key --client-key C.key_secret status
    nsupctl keygen DIR [--name NAME]
    nsupctl --redis URL nodes | --node NAME status|tail [-n N] [-f]   (any node mirrored to Redis; reads only)

Exit codes: 0 done; 1 refused (nsup said no, and why); 2 usage error; 3 nsup not reachable;
4 `stop --wait` ended with nsup stuck in HALTING; 5 an answer nsup should never give;
6 `stop --wait` ended with nsup ABORTED.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from pathlib import Path

import msgspec

from supervisor import __version__
from supervisor.control.client import ControlClient, CurveKeys, NotReachable, ProtocolViolation, endpoints_in
from supervisor.control.security import make_keys
from supervisor.journal import read_journal

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_STUCK, EXIT_PROTOCOL, EXIT_ABORTED = 0, 1, 2, 3, 4, 5, 6
SIMPLE = ("status", "pause", "resume", "flatten", "restart", "version")
SLOW_COMMAND_TIMEOUT_SECS = 180.0  # a restart stops a node and builds and runs a new one


class Refusal(Exception):
    pass


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except NotReachable as exc:
        _complain(args, f"not reachable: {exc}", "not_reachable")
        return EXIT_UNREACHABLE
    except Refusal as exc:
        _complain(args, f"refused: {exc}", "refused")
        return EXIT_REFUSED
    except ProtocolViolation as exc:
        _complain(args, str(exc), "protocol")
        return EXIT_PROTOCOL
    except (OSError, ValueError) as exc:
        print(f"nsupctl: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_OK


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nsupctl", description="Control a running nsup.")
    parser.add_argument("--state-dir", type=Path, help="the node's state dir (finds its sockets and journal)")
    parser.add_argument("--endpoint", help="control endpoint, e.g. tcp://127.0.0.1:7400 (tcp needs the keys)")
    parser.add_argument("--events-endpoint", help="events endpoint for tcp (default: as nsup reports it)")
    parser.add_argument("--server-key", type=Path, help="the server's public key file (tcp)")
    parser.add_argument("--client-key", type=Path, help="this client's key_secret file (tcp)")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for an answer")
    parser.add_argument("--redis", metavar="URL", help="read status and journal from Redis instead ([redis] in nsup's config)")
    parser.add_argument("--node", help="with --redis: the node's name in Redis (see `nodes`)")
    parser.add_argument("--json", action="store_true", help="print JSON, for scripts")
    commands = parser.add_subparsers(dest="command", required=True)
    for name in SIMPLE:
        simple = commands.add_parser(name)
        if name == "status":
            simple.add_argument("--diagram", type=Path, metavar="FILE",
                                help="also write the lifecycle (Mermaid) with the current state highlighted to FILE")
    stop = commands.add_parser("stop", help="the graceful stop")
    stop.add_argument("--wait", action="store_true", help="follow rounds and counts until STOPPED or stuck")
    for name, help_text in (("abort", "stop with positions open: needs a typed confirmation"),
                            ("recover", "kill a hung worker with positions open, for a replacement: the same")):
        approved = commands.add_parser(name, help=help_text)
        approved.add_argument("--confirm", help="the trader id, when there is no terminal to type it at")
        approved.add_argument("--reason", help="why, for the journal")
    commands.add_parser("events", help="follow the event stream")
    commands.add_parser("nodes", help="with --redis: every node mirrored there, and its state")
    tail = commands.add_parser("tail", help="the journal")
    tail.add_argument("-n", type=int, default=20, help="how many records")
    tail.add_argument("-f", action="store_true", help="follow")
    keygen = commands.add_parser("keygen", help="make a CURVE key pair")
    keygen.add_argument("directory", type=Path)
    keygen.add_argument("--name", default="nsup")
    return parser


def _run(args) -> int:
    if args.command == "keygen":
        public, secret = make_keys(args.directory, args.name)
        _say(args, f"public key: {public}\nsecret key: {secret} (keep it; mode 0600)", {"public": str(public), "secret": str(secret)})
        return EXIT_OK
    if args.redis or args.command == "nodes":
        return _from_redis(args)
    if args.command == "tail":
        return _tail(args)
    client = _client(args)
    try:
        if args.command == "stop":
            return _stop(client, args)
        if args.command in ("abort", "recover"):
            return _with_approval(client, args, args.command)
        if args.command == "events":
            return _follow_events(client, args)
        data = _call(client, args.command, timeout_secs=SLOW_COMMAND_TIMEOUT_SECS if args.command == "restart" else None)
        if args.command == "version":
            data = {"nsupctl": __version__, **data}
        _say(args, _describe(args.command, data), data)
        if getattr(args, "diagram", None) is not None:
            _write_diagram(args, data["state"])
        return EXIT_OK
    finally:
        client.close()


def _write_diagram(args, state: str) -> None:
    from supervisor.diagram import lifecycle_mermaid

    args.diagram.write_text(lifecycle_mermaid(highlight=state))
    if not args.json:  # one more line of the status table; --json output stays one object
        print(f"diagram        {args.diagram} (the lifecycle, {state} highlighted)", flush=True)


def _client(args) -> ControlClient:
    if args.endpoint:
        curve = None
        if args.endpoint.startswith("tcp://"):
            if not (args.server_key and args.client_key):
                raise ValueError("tcp needs --server-key and --client-key (plain TCP is never used)")
            curve = CurveKeys(args.server_key, args.client_key)
        return ControlClient(args.endpoint, args.timeout, curve)
    if args.state_dir is None:
        raise ValueError("give --state-dir DIR (or --endpoint)")
    return ControlClient.from_state_dir(args.state_dir, args.timeout)


def _call(client: ControlClient, command: str, timeout_secs: float | None = None, **fields) -> dict:
    reply = client.call(command, timeout_secs, **fields)
    if reply.status == "ok":
        return reply.data or {}
    if reply.status == "error":
        raise Refusal(f"{reply.reason} (errno {reply.errno})")
    raise ProtocolViolation(f"a reply with status {reply.status!r}")


def _stop(client: ControlClient, args) -> int:
    if not args.wait:
        data = _call(client, "stop")
        _say(args, f"{data['result']} (state {data['state']})", data)
        return EXIT_OK
    events = client.subscribe(_events_endpoint(client, args))
    time.sleep(0.2)  # let the subscription reach nsup before the first event it must not miss
    data = _call(client, "stop")
    _say(args, f"{data['result']} (state {data['state']})", data)
    last_counts, next_check = None, time.monotonic() + 1.0
    while True:
        if time.monotonic() >= next_check:  # on a clock: heartbeats keep the stream busy, never silent
            next_check = time.monotonic() + 1.0
            try:
                current = _call(client, "status")
                state, stuck = current["state"], current["stuck"]
            except NotReachable:
                state, stuck = _final_state(args), False  # nsup has exited: the journal says how
            if stuck:
                _say(args, "nsup is stuck in HALTING: not flat after its rounds", {"kind": "end", "state": state, "stuck": True})
                return EXIT_STUCK
            if state in ("STOPPED", "ABORTED"):
                _say(args, f"nsup is {state}", {"kind": "end", "state": state})
                return EXIT_OK if state == "STOPPED" else EXIT_ABORTED
        if not events.poll(max(0, int((next_check - time.monotonic()) * 1000))):
            continue
        topic, payload = events.recv_multipart()
        event = json.loads(payload)
        if topic == b"heartbeat":
            counts = event["status"]["counts"]
            if counts != last_counts:
                last_counts = counts
                _say(args, f"  [{event['state']}] {_counts(counts)}", event)
        elif topic in (b"transition", b"flatten_round", b"flat_seen", b"halt_stuck", b"fault", b"refusal"):
            _say(args, f"  {_record_line(event)}", event)
            if topic == b"halt_stuck":
                return EXIT_STUCK
            if topic == b"transition" and event["dest"] in ("STOPPED", "ABORTED"):
                return EXIT_OK if event["dest"] == "STOPPED" else EXIT_ABORTED


WARNINGS = {
    "abort": "ABORT stops the node WITH EXPOSURE.",
    "recover": "RECOVER kills the hung worker WITH EXPOSURE; a new one reconciles and takes over.",
}


def _with_approval(client: ControlClient, args, action: str) -> int:
    """abort and recover: the positions first, then the trader id typed and a reason given."""
    interactive = sys.stdin.isatty() and args.confirm is None
    if not interactive and (args.confirm is None or args.reason is None):
        raise Refusal("no terminal to confirm at: give --confirm TRADER_ID and --reason TEXT")
    challenge = _call(client, action)
    positions = challenge.get("positions", [])
    lines = [f"{WARNINGS[action]} Trader {challenge['trader_id']}, open positions:"]
    lines += [f"  {p['instrument_id']} {p['side']} {p['quantity']} unrealized {p['unrealized_pnl']}" for p in positions] or ["  (none reported)"]
    lines.append(f"challenge {challenge['nonce']} is good for {challenge['expires_in_secs']:g}s")
    if interactive:
        print("\n".join(lines), file=sys.stderr)
        try:
            confirmation = input(f"Type the trader id ({challenge['trader_id']}) to confirm: ").strip()
            reason = input("Reason (for the journal): ").strip()
        except (EOFError, KeyboardInterrupt):
            raise Refusal(f"{action} cancelled at the prompt; nothing was approved") from None
    else:
        confirmation, reason = args.confirm, args.reason
    data = _call(client, f"{action}_confirm", nonce=challenge["nonce"], confirmation=confirmation, reason=reason or "")
    _say(args, data["result"], {**data, "challenge": challenge})
    return EXIT_OK


def _follow_events(client: ControlClient, args) -> int:
    events = client.subscribe(_events_endpoint(client, args))
    while True:
        topic, payload = events.recv_multipart()
        event = json.loads(payload)
        if args.json:
            print(json.dumps({"topic": topic.decode(), "event": event}), flush=True)
        elif topic == b"heartbeat":
            print(f"{topic.decode():<12} [{event['state']}] {_counts(event['status']['counts'])}", flush=True)
        else:
            print(f"{topic.decode():<12} {_record_line(event)}", flush=True)


def _events_endpoint(client: ControlClient, args) -> str:
    if args.events_endpoint:
        return args.events_endpoint
    if args.state_dir is not None:
        return endpoints_in(args.state_dir)["events"][0]
    reported = _call(client, "status")["events_endpoints"]
    return next((e for e in reported if e.startswith("tcp://")), reported[0])


def _tail(args) -> int:
    if args.state_dir is None:
        raise ValueError("tail reads the journal file: give --state-dir DIR")
    path = args.state_dir / "journal.jsonl"
    if not path.exists():
        raise NotReachable(f"no journal at {path}")
    with open(path, "rb") as journal:
        last_lines = collections.deque(journal, maxlen=max(args.n, 0))  # memory for n lines, not the file
    for line in last_lines:
        try:
            _print_record(args, msgspec.json.decode(line))
        except msgspec.DecodeError:
            continue  # a torn line
    if not args.f:
        return EXIT_OK
    with open(path, "rb") as journal:
        journal.seek(0, 2)
        while True:
            line = journal.readline()
            if not line.endswith(b"\n"):
                time.sleep(0.2)
                journal.seek(journal.tell() - len(line))
                continue
            try:
                _print_record(args, msgspec.json.decode(line))
            except msgspec.DecodeError:
                continue


REDIS_READS = ("nodes", "status", "tail")


def _from_redis(args) -> int:
    """Reads only: what the nodes' mirrors wrote. Changing a node goes through its control socket."""
    from supervisor.control.redis_reader import NodeUnknown, RedisReader, RedisUnreachable

    if not args.redis:
        raise ValueError("nodes reads Redis: give --redis URL")
    if args.command not in REDIS_READS:
        raise ValueError(f"with --redis nsupctl only reads ({', '.join(REDIS_READS)}); {args.command} goes to the "
                         "node itself: give --state-dir DIR or --endpoint")
    if args.command != "nodes" and not args.node:
        raise ValueError(f"{args.command} from Redis needs --node NAME (see `nsupctl --redis URL nodes`)")
    reader = RedisReader(args.redis, args.timeout)
    try:
        if args.command == "nodes":
            fleet = reader.nodes()
            _say(args, "\n".join(_fleet_line(node) for node in fleet) or "no node has mirrored to this Redis", fleet)
        elif args.command == "status":
            data = reader.status(args.node)
            _say(args, _describe_mirrored(data), data)
        else:
            entries = reader.tail(args.node, args.n)
            for _stream_id, record in entries:
                _print_record(args, record)
            if args.f:
                after = entries[-1][0] if entries else ("$" if args.n <= 0 else "0-0")
                for record in reader.follow(args.node, after=after):
                    _print_record(args, record)
    except RedisUnreachable as exc:
        raise NotReachable(str(exc)) from None
    except NodeUnknown as exc:
        raise Refusal(str(exc)) from None
    return EXIT_OK


def _fleet_line(node: dict) -> str:
    age = f"{node['age_secs']:g}s ago" if "age_secs" in node else "no live status"
    return (f"{node['node']:<20} {node.get('state') or '?':<10} {_counts(node)}  health={node.get('health')}  "
            f"{node.get('host', '')} ({age})")


def _describe_mirrored(data: dict) -> str:
    try:
        header = f"node           {data['node']} on {data['host']}, as of {data['updated_at']} ({data['age_secs']:g}s ago)"
        return header + "\n" + _describe("status", data)
    except (KeyError, TypeError, ValueError):  # only the persisted state, or a status nsupctl cannot read
        state = data.get("persisted") or {}
        return (f"state          {data.get('state')} (persisted, version {state.get('version')}, written on "
                f"{state.get('host') or '?'}; no readable live status in Redis)")


def _final_state(args) -> str | None:
    if args.state_dir is None or not (args.state_dir / "journal.jsonl").exists():
        raise NotReachable("nsup stopped answering")
    transitions = [r for r in read_journal(args.state_dir / "journal.jsonl") if r["kind"] == "transition"]
    last = transitions[-1]["dest"] if transitions else None
    if last not in ("STOPPED", "ABORTED"):
        raise NotReachable(f"nsup stopped answering in {last}, without finishing: see its journal")
    return last


def _print_record(args, record: dict) -> None:
    print(json.dumps(record) if args.json else _record_line(record), flush=True)


def _record_line(record: dict) -> str:
    rest = {k: v for k, v in record.items() if k not in ("ts", "kind")}
    if record.get("kind") == "transition":
        return f"{record['ts']} {record['source']} -> {record['dest']} ({record['trigger']}, {record.get('actor')}) {_counts(record)}"
    fields = " ".join(f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in rest.items() if v is not None)
    return f"{record.get('ts', '')} {record.get('kind', '')} {fields}".strip()


def _counts(counts: dict) -> str:
    return f"positions={counts.get('positions_open')} inflight={counts.get('orders_inflight')} open={counts.get('orders_open')}"


def _describe(command: str, data: dict) -> str:
    if command != "status":
        return " ".join(f"{k}={v}" for k, v in data.items())
    lines = [
        f"state          {data['state']}  (trading {data['trading_state']}{', paused' if data['paused'] else ''}"
        f"{', stop requested' if data['shutdown_requested'] else ''})",
        f"counts         {_counts(data)}",
        f"worker         pid {data['worker_pid']}, up {data['worker_uptime_secs']}s, heartbeat {data['heartbeat_age_secs']}s ago, restarts {data['restarts']}",
        f"supervisor     pid {data['supervisor_pid']}, up {data['supervisor_uptime_secs']}s",
    ]
    if data["last_transition"]:
        t = data["last_transition"]
        lines.append(f"last           {t['source']} -> {t['dest']} ({t['trigger']}) at {t['ts']}")
    lines += [f"position       {p['instrument_id']} {p['side']} {p['quantity']} unrealized {p['unrealized_pnl']}" for p in data["positions"]]
    return "\n".join(lines)


def _say(args, text: str, data) -> None:
    print(json.dumps(data, default=str) if args.json else text, flush=True)


def _complain(args, text: str, kind: str) -> None:
    """Errors go to stderr for a person, and as one JSON object on stdout for a script."""
    if args.json:
        print(json.dumps({"status": "error", "error": kind, "reason": text}), flush=True)
    else:
        print(f"nsupctl: {text}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
