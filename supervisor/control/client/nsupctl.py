"""`nsupctl`: drive a running nsup, the way supervisorctl drives supervisord.

    nsupctl status                                   every node of this host, one line each (as supervisorctl)
    nsupctl status NAME [--diagram FILE] | resume|flatten|restart|abort|recover|version|events|tail NAME
    nsupctl stop [--wait] NAME... | all              pause NAME... | all      (each node through its own gate)
    nsupctl --state-dir DIR COMMAND                  one node by its state dir, named or not
    nsupctl --endpoint tcp://HOST:PORT --server-key S.key --client-key C.key_secret status
    nsupctl keygen DIR [--name NAME]
    nsupctl --redis URL nodes | status|tail NAME [-n N] [-f]   (any node mirrored to Redis; reads only)

A node's NAME is the NAME of its nsup@NAME unit: its state dir is ROOT/NAME (host.py; ROOT is --root,
else $NSUP_ROOT, else /var/lib/nsup). The commands nsup answers are supervisor/control/commands/ (one
module each: what it sends, how its answer is shown); this module adds what nsupctl does on its own
(events, tail, keygen, Redis reads), and host_view.py what it does over several nodes. `--json` may
stand before or after the command.

Exit codes: 0 done; 1 refused (nsup said no, and why); 2 usage error; 3 nsup not reachable;
4 `stop --wait` ended with nsup STUCK; 5 an answer nsup should never give; 6 `stop --wait` ended ABORTED.
Over several nodes: the highest of theirs.
"""

from __future__ import annotations

import _thread
import argparse
import collections
import json
import sys
import time
from pathlib import Path

from supervisor.control.client import host, host_view
from supervisor.control.client.client import (ENDPOINTS_FILE, ControlClient, CurveKeys, NotReachable, ProtocolViolation,
                                              endpoints_in)
from supervisor.control.commands import COMMANDS
from supervisor.control.commands.base import EXIT_OK, EXIT_PROTOCOL, EXIT_REFUSED, EXIT_UNREACHABLE, EXIT_USAGE, Refusal
from supervisor.control.commands.status import counts

# nsupctl's own subcommands: their one-line help, and which nodes they take (None: no node at all)
LOCAL = {
    "events": ("follow the event stream: transitions, commands, refusals, heartbeats", "one"),
    "tail": ("the journal (-n N records; -f follows it)", "one"),
    "keygen": ("make a CURVE key pair for the control socket over TCP", None),
    "nodes": ("with --redis: every node mirrored there, and its state", None),
}
NAMES_HELP = {
    "one": "the node, by its name under the root",
    "many": "nodes by name under the root, or all",
}
_OUTPUT = _thread.allocate_lock()  # several nodes answer at once: whole lines, never interleaved ones


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    ctl = Ctl(args)
    return ctl.answer(ctl.run)


def failure(exc: BaseException) -> tuple[int, str, str]:
    """What went wrong, as nsupctl reports it: the exit code, the JSON error kind, the one line."""
    match exc:
        case NotReachable():
            return EXIT_UNREACHABLE, "not_reachable", f"not reachable: {exc}"
        case Refusal():
            return EXIT_REFUSED, "refused", f"refused: {exc}"
        case ProtocolViolation():
            return EXIT_PROTOCOL, "protocol", str(exc)
        case OSError() | ValueError():
            return EXIT_USAGE, "usage", str(exc)
        case _:  # no traceback on an operator's terminal: one line, and exit 5
            return (EXIT_PROTOCOL, "unexpected", f"unexpected {type(exc).__name__}: {exc} (an answer nsupctl cannot "
                    "read, or a bug of its own)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nsupctl", description="Control a running nsup: a node by its name (nsup@NAME, state dir ROOT/NAME), "
        "several, or all; `nsupctl status` shows every node of the host. Or one node by --state-dir or --endpoint.")
    parser.add_argument("--state-dir", type=Path, help="the node's state dir (finds its sockets and journal)")
    parser.add_argument("--endpoint", help="control endpoint, e.g. tcp://127.0.0.1:7400 (tcp needs the keys)")
    parser.add_argument("--events-endpoint", help="events endpoint for tcp (default: as nsup reports it)")
    parser.add_argument("--server-key", type=Path, help="the server's public key file (tcp)")
    parser.add_argument("--client-key", type=Path, help="this client's key_secret file (tcp)")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for an answer")
    parser.add_argument("--redis", metavar="URL", help="read status and journal from Redis instead ([redis] in nsup's config)")
    parser.add_argument("--root", type=Path, help=f"where the nodes' state dirs are, ROOT/NAME (default "
                        f"${host.ROOT_ENV}, else {host.DEFAULT_ROOT})")
    parser.add_argument("--node", help=argparse.SUPPRESS)  # a name before the command: the same as after it
    parser.add_argument("--json", action="store_true", help="print JSON, for scripts")
    subcommands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS.values():
        command.add_arguments(_subparser(subcommands, command.name, command.help, command.nodes))
    for name, (help_text, nodes) in LOCAL.items():
        sub = _subparser(subcommands, name, help_text, nodes)
        if name == "tail":
            sub.add_argument("-n", type=int, default=20, help="how many records")
            sub.add_argument("-f", action="store_true", help="follow")
        elif name == "keygen":
            sub.add_argument("directory", type=Path)
            sub.add_argument("--name", default="nsup")
    return parser


def _subparser(subcommands, name: str, help_text: str, nodes: str | None) -> argparse.ArgumentParser:
    sub = subcommands.add_parser(name, help=help_text, description=help_text)
    sub.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON, for scripts")
    if nodes is not None:
        sub.add_argument("names", nargs="*" if nodes == "many" else "?", metavar="NAME", help=NAMES_HELP[nodes])
    return sub


class Ctl:
    """What a command's nsupctl side works with: the arguments, the connection, and the output."""

    def __init__(self, args, node: str | None = None, label: str | None = None):
        self.args = args
        self.node, self._label = node, label  # one of several nodes: every line and object says whose
        self._client: ControlClient | None = None

    def answer(self, action) -> int:
        """`action()`'s exit code; what went wrong in it, said in one line (failure's)."""
        try:
            return action()
        except KeyboardInterrupt:
            return EXIT_OK
        except Exception as exc:  # noqa: BLE001 (failure() says what each one is)
            code, kind, text = failure(exc)
            self.complain(text, kind)
            return code
        finally:
            self.close()

    def for_node(self, name: str, state_dir: Path, label: str | None = None) -> Ctl:
        """The same command, on node NAME."""
        return Ctl(argparse.Namespace(**{**vars(self.args), "state_dir": state_dir}), name, label)

    @property
    def names(self) -> list[str]:
        named = getattr(self.args, "names", None) or []
        return ([named] if isinstance(named, str) else named) + ([self.args.node] if self.args.node else [])

    def run(self) -> int:
        args = self.args
        if args.command == "keygen":
            from supervisor.control.client.keys import make_keys

            public, secret = make_keys(args.directory, args.name)
            self.say(f"public key: {public}\nsecret key: {secret} (keep it; mode 0600)", {"public": str(public), "secret": str(secret)})
            return EXIT_OK
        if args.redis or args.command == "nodes":
            return self._from_redis()
        if args.state_dir or args.endpoint:
            if self.names:
                raise ValueError("name a node or give --state-dir/--endpoint, not both")
            return self._on_this_node()
        if not self.names:
            if args.command == "status":
                return self._host_status(host.nodes(args.root))
            raise ValueError(f"{args.command} needs a node: `nsupctl {args.command} NAME` (`nsupctl status` lists "
                             f"this host's), or --state-dir DIR")
        nodes = host.select(self.names, args.root)
        if len(self.names) == 1 and self.names != [host.ALL]:
            args.state_dir = nodes[self.names[0]]
            return self._on_this_node()
        if args.command == "status":
            return self._host_status(nodes)
        if getattr(COMMANDS.get(args.command), "nodes", "one") != "many":
            raise ValueError(f"{args.command} acts on one node at a time: name it")
        return self._on_each(nodes)

    def _on_this_node(self) -> int:
        if self.args.command == "tail":
            return self._tail()
        if self.args.command == "events":
            return self._follow_events()
        return COMMANDS[self.args.command].client(self)

    def _host_status(self, nodes: dict[str, Path]) -> int:
        """`supervisorctl status`: one row per node; one that does not answer is a row saying why."""
        if getattr(self.args, "diagram", None) is not None:
            raise ValueError("--diagram draws one node's lifecycle: name the node")

        def ask(name: str, state_dir: Path) -> tuple[dict, int]:
            node = self.for_node(name, state_dir)
            try:
                return {"node": name, "reachable": True, **node.call("status")}, EXIT_OK
            except Exception as exc:  # noqa: BLE001 (a row that says why; the others are still shown)
                code, _, text = failure(exc)
                return host_view.unreachable_row(name, state_dir, text), code
            finally:
                node.close()

        answers = host_view.on_every_node(nodes, ask) if nodes else []
        rows = [row for row, _ in answers]
        self.say(host_view.render_table(rows) if rows else self._no_nodes(), rows)
        return host_view.worst([code for _, code in answers])

    def _no_nodes(self) -> str:
        root = host.host_root(self.args.root)
        if host.is_node_dir(root):  # a container's layout: the root is the one node's state dir
            return f"no nsup node under {root}, which is itself a node's state dir: nsupctl --state-dir {root} status"
        return f"no nsup node under {root} (set --root or ${host.ROOT_ENV})"

    def _on_each(self, nodes: dict[str, Path]) -> int:
        """The command on every node at once, each its own request to its own nsup; every line of
        progress names its node."""
        width = max(map(len, nodes))

        def act(name: str, state_dir: Path) -> int:
            node = self.for_node(name, state_dir, name.ljust(width))
            return node.answer(lambda: COMMANDS[self.args.command].client(node))

        return host_view.worst(host_view.on_every_node(nodes, act))

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

    def ended(self) -> str | None:
        """STOPPED or ABORTED when this node's nsup has already finished and exited (no endpoints
        file: nsup removes it as it exits; its journal says how it ended); otherwise None."""
        if self.args.state_dir is None or (self.args.state_dir / ENDPOINTS_FILE).exists():
            return None
        try:
            return self._final_state()
        except NotReachable:
            return None

    def say(self, text: str, data) -> None:
        if self.node is not None:
            data = {"node": self.node, **data} if isinstance(data, dict) else {"node": self.node, "data": data}
        _emit(json.dumps(data, default=str) if self.args.json else self._labelled(text), sys.stdout)

    def complain(self, text: str, kind: str) -> None:
        """Errors go to stderr for a person, and as one JSON object on stdout for a script."""
        if getattr(self.args, "json", False):
            _emit(json.dumps({**({"node": self.node} if self.node else {}), "status": "error", "error": kind,
                              "reason": text}), sys.stdout)
        else:
            _emit(f"nsupctl: {self.node}: {text}" if self.node else f"nsupctl: {text}", sys.stderr)

    def _labelled(self, text: str) -> str:
        if self._label is None:
            return text
        return "\n".join(f"{self._label}  {line}" for line in text.splitlines())

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
                             "node itself: name it on its host, or give --state-dir DIR or --endpoint")
        if args.command != "nodes" and len(self.names) != 1:
            raise ValueError(f"{args.command} from Redis reads one node: `nsupctl --redis URL {args.command} NAME` "
                             "(see `nsupctl --redis URL nodes`)")
        node = self.names[0] if self.names else None
        reader = RedisReader(args.redis, args.timeout)
        try:
            if args.command == "nodes":
                fleet = reader.nodes()
                self.say("\n".join(_fleet_line(node) for node in fleet) or "no node has mirrored to this Redis", fleet)
            elif args.command == "status":
                data = reader.status(node)
                self.say(_describe_mirrored(data), data)
            else:
                entries = reader.tail(node, args.n)
                for _stream_id, record in entries:
                    self._print_record(record)
                if args.f:
                    after = entries[-1][0] if entries else ("$" if args.n <= 0 else "0-0")
                    for record in reader.follow(node, after=after):
                        self._print_record(record)
        except RedisUnreachable as exc:
            raise NotReachable(str(exc)) from None
        except NodeUnknown as exc:
            raise Refusal(str(exc)) from None
        return EXIT_OK


def _emit(text: str, stream) -> None:
    with _OUTPUT:
        print(text, file=stream, flush=True)


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
