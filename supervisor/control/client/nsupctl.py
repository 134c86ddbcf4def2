"""`nsupctl`: drive a running nsup, the way supervisorctl drives supervisord.

    nsupctl --state-dir DIR status [--diagram FILE]|pause|resume|flatten|stop [--wait]|restart|abort|recover|version
    nsupctl --state-dir DIR events | tail [-n N] [-f]
    nsupctl --endpoint tcp://HOST:PORT --server-key S.key --client-key C.key_secret status
    nsupctl keygen DIR [--name NAME]
    nsupctl --redis URL nodes | --node NAME status|tail [-n N] [-f]   (any node mirrored to Redis; reads only)

The commands nsup answers are supervisor/control/commands/ (one module each: what it sends, how its
answer is shown); this module adds what nsupctl does on its own (events, tail, keygen, Redis reads).
`--json` may stand before or after the command.

Exit codes: 0 done; 1 refused (nsup said no, and why); 2 usage error; 3 nsup not reachable;
4 `stop --wait` ended with nsup STUCK; 5 an answer nsup should never give; 6 `stop --wait` ended ABORTED.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from pathlib import Path

from supervisor.control.client.client import ControlClient, CurveKeys, NotReachable, ProtocolViolation, endpoints_in
from supervisor.control.commands import COMMANDS
from supervisor.control.commands.base import EXIT_OK, EXIT_PROTOCOL, EXIT_REFUSED, EXIT_UNREACHABLE, EXIT_USAGE, Refusal
from supervisor.control.commands.status import counts

LOCAL = {
    "events": "follow the event stream: transitions, commands, refusals, heartbeats",
    "tail": "the journal",
    "keygen": "make a CURVE key pair",
    "nodes": "with --redis: every node mirrored there, and its state",
}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    ctl = Ctl(args)
    try:
        return ctl.run()
    except NotReachable as exc:
        ctl.complain(f"not reachable: {exc}", "not_reachable")
        return EXIT_UNREACHABLE
    except Refusal as exc:
        ctl.complain(f"refused: {exc}", "refused")
        return EXIT_REFUSED
    except ProtocolViolation as exc:
        ctl.complain(str(exc), "protocol")
        return EXIT_PROTOCOL
    except (OSError, ValueError) as exc:
        print(f"nsupctl: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_OK
    except Exception as exc:  # noqa: BLE001 (no traceback on an operator's terminal: one line, and exit 5)
        print(f"nsupctl: unexpected {type(exc).__name__}: {exc} (an answer nsupctl cannot read, or a bug of its own)",
              file=sys.stderr)
        return EXIT_PROTOCOL
    finally:
        ctl.close()


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
    subcommands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS.values():
        command.add_arguments(_subparser(subcommands, command.name, command.help))
    for name, help_text in LOCAL.items():
        sub = _subparser(subcommands, name, help_text)
        if name == "tail":
            sub.add_argument("-n", type=int, default=20, help="how many records")
            sub.add_argument("-f", action="store_true", help="follow")
        elif name == "keygen":
            sub.add_argument("directory", type=Path)
            sub.add_argument("--name", default="nsup")
    return parser


def _subparser(subcommands, name: str, help_text: str) -> argparse.ArgumentParser:
    sub = subcommands.add_parser(name, help=help_text, description=help_text)
    sub.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON, for scripts")
    return sub


class Ctl:
    """What a command's nsupctl side works with: the arguments, the connection, and the output."""

    def __init__(self, args):
        self.args = args
        self._client: ControlClient | None = None

    def run(self) -> int:
        args = self.args
        if args.command == "keygen":
            from supervisor.control.client.keys import make_keys

            public, secret = make_keys(args.directory, args.name)
            self.say(f"public key: {public}\nsecret key: {secret} (keep it; mode 0600)", {"public": str(public), "secret": str(secret)})
            return EXIT_OK
        if args.redis or args.command == "nodes":
            return self._from_redis()
        if args.command == "tail":
            return self._tail()
        if args.command == "events":
            return self._follow_events()
        return COMMANDS[args.command].client(self)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    @property
    def client(self) -> ControlClient:
        if self._client is None:
            args = self.args
            if args.endpoint:
                curve = None
                if args.endpoint.startswith("tcp://"):
                    if not (args.server_key and args.client_key):
                        raise ValueError("tcp needs --server-key and --client-key (plain TCP is never used)")
                    curve = CurveKeys(args.server_key, args.client_key)
                self._client = ControlClient(args.endpoint, args.timeout, curve)
            elif args.state_dir is None:
                raise ValueError("give --state-dir DIR (or --endpoint)")
            else:
                self._client = ControlClient.from_state_dir(args.state_dir, args.timeout)
        return self._client

    def call(self, command: str, timeout_secs: float | None = None, **fields) -> dict:
        reply = self.client.call(command, timeout_secs, **fields)
        if reply.status == "ok":
            return reply.data or {}
        if reply.status == "error":
            raise Refusal(f"{reply.reason} (errno {reply.errno})")
        raise ProtocolViolation(f"a reply with status {reply.status!r}")

    def subscribe(self):
        """The event stream (a SUB socket), every topic."""
        return self.client.subscribe(self._events_endpoint())

    def current_state(self) -> str | None:
        """nsup's state now; once it has exited, the last state its journal records."""
        try:
            return self.call("status")["state"]
        except NotReachable:
            return self._final_state()

    def say(self, text: str, data) -> None:
        print(json.dumps(data, default=str) if self.args.json else text, flush=True)

    def complain(self, text: str, kind: str) -> None:
        """Errors go to stderr for a person, and as one JSON object on stdout for a script."""
        if getattr(self.args, "json", False):
            print(json.dumps({"status": "error", "error": kind, "reason": text}), flush=True)
        else:
            print(f"nsupctl: {text}", file=sys.stderr)

    @staticmethod
    def record_line(record: dict) -> str:
        rest = {k: v for k, v in record.items() if k not in ("ts", "kind")}
        if record.get("kind") == "transition":
            return f"{record['ts']} {record['source']} -> {record['dest']} ({record['trigger']}, {record.get('actor')}) {counts(record)}"
        fields = " ".join(f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in rest.items() if v is not None)
        return f"{record.get('ts', '')} {record.get('kind', '')} {fields}".strip()

    # What nsupctl does on its own ----------------------------------------------------------------

    def _events_endpoint(self) -> str:
        if self.args.events_endpoint:
            return self.args.events_endpoint
        if self.args.state_dir is not None:
            return endpoints_in(self.args.state_dir)["events"][0]
        reported = self.call("status")["events_endpoints"]
        return next((e for e in reported if e.startswith("tcp://")), reported[0])

    def _follow_events(self) -> int:
        events = self.subscribe()
        while True:
            topic, payload = events.recv_multipart()
            event = json.loads(payload)
            if self.args.json:
                print(json.dumps({"topic": topic.decode(), "event": event}), flush=True)
            elif topic == b"heartbeat":
                print(f"{topic.decode():<12} [{event['state']}] {counts(event['status']['counts'])}", flush=True)
            else:
                print(f"{topic.decode():<12} {self.record_line(event)}", flush=True)

    def _journal_path(self) -> Path:
        if self.args.state_dir is None:
            raise ValueError("tail reads the journal file: give --state-dir DIR")
        return self.args.state_dir / "journal.jsonl"

    def _tail(self) -> int:
        path = self._journal_path()
        if not path.exists():
            raise NotReachable(f"no journal at {path}")
        with open(path, "rb") as journal:
            last_lines = collections.deque(journal, maxlen=max(self.args.n, 0))  # memory for n lines, not the file
        for line in last_lines:
            self._print_line(line)
        if not self.args.f:
            return EXIT_OK
        with open(path, "rb") as journal:
            journal.seek(0, 2)
            while True:
                line = journal.readline()
                if not line.endswith(b"\n"):
                    time.sleep(0.2)
                    journal.seek(journal.tell() - len(line))
                    continue
                self._print_line(line)

    def _print_line(self, line: bytes) -> None:
        try:
            self._print_record(json.loads(line))
        except ValueError:
            pass  # a torn line

    def _print_record(self, record: dict) -> None:
        print(json.dumps(record) if self.args.json else self.record_line(record), flush=True)

    def _final_state(self) -> str:
        from supervisor.journal import read_journal

        if self.args.state_dir is None or not self._journal_path().exists():
            raise NotReachable("nsup stopped answering")
        transitions = [r for r in read_journal(self._journal_path()) if r["kind"] == "transition"]
        last = transitions[-1]["dest"] if transitions else None
        if last not in ("STOPPED", "ABORTED"):
            raise NotReachable(f"nsup stopped answering in {last}, without finishing: see its journal")
        return last

    def _from_redis(self) -> int:
        """Reads only: what the nodes' mirrors wrote. Changing a node goes through its control socket."""
        from supervisor.control.client.redis_reader import NodeUnknown, RedisReader, RedisUnreachable

        args, reads = self.args, ("nodes", "status", "tail")
        if not args.redis:
            raise ValueError("nodes reads Redis: give --redis URL")
        if args.command not in reads:
            raise ValueError(f"with --redis nsupctl only reads ({', '.join(reads)}); {args.command} goes to the "
                             "node itself: give --state-dir DIR or --endpoint")
        if args.command != "nodes" and not args.node:
            raise ValueError(f"{args.command} from Redis needs --node NAME (see `nsupctl --redis URL nodes`)")
        reader = RedisReader(args.redis, args.timeout)
        try:
            if args.command == "nodes":
                fleet = reader.nodes()
                self.say("\n".join(_fleet_line(node) for node in fleet) or "no node has mirrored to this Redis", fleet)
            elif args.command == "status":
                data = reader.status(args.node)
                self.say(_describe_mirrored(data), data)
            else:
                entries = reader.tail(args.node, args.n)
                for _stream_id, record in entries:
                    self._print_record(record)
                if args.f:
                    after = entries[-1][0] if entries else ("$" if args.n <= 0 else "0-0")
                    for record in reader.follow(args.node, after=after):
                        self._print_record(record)
        except RedisUnreachable as exc:
            raise NotReachable(str(exc)) from None
        except NodeUnknown as exc:
            raise Refusal(str(exc)) from None
        return EXIT_OK


def _fleet_line(node: dict) -> str:
    age = f"{node['age_secs']:g}s ago" if "age_secs" in node else "no live status"
    return (f"{node['node']:<20} {node.get('state') or '?':<10} {counts(node)}  health={node.get('health')}  "
            f"{node.get('host', '')} ({age})")


def _describe_mirrored(data: dict) -> str:
    try:
        header = f"node           {data['node']} on {data['host']}, as of {data['updated_at']} ({data['age_secs']:g}s ago)"
        return header + "\n" + COMMANDS["status"].render(data)
    except (KeyError, TypeError, ValueError):  # only the persisted state, or a status nsupctl cannot read
        state = data.get("persisted") or {}
        return (f"state          {data.get('state')} (persisted, version {state.get('version')}, written on "
                f"{state.get('host') or '?'}; no readable live status in Redis)")


if __name__ == "__main__":
    sys.exit(main())
