"""`nsup`: run a supervised node (`nsup run --config FILE`) or the demo (`nsup demo`)."""

# ruff: noqa: E402 (asyncio, hashlib and hmac are imported first, without OpenSSL: below)
from __future__ import annotations

import sys

# OpenSSL stays out of nsup's process unless something configured needs it: it maps libcrypto and
# libssl, some 5 MB resident of the 32 nsup had. asyncio imports ssl for TLS transports, which nsup
# never opens on its loop; hashlib and hmac take OpenSSL's digests where they can, and fall back to
# Python's built-in ones (the same sha256 for the node's fingerprint; hmac's compare_digest is still
# constant-time). They are imported here first, with ssl and _hashlib kept out, which each takes for
# "not available"; after that both import again as usual: what does use TLS (a rediss:// Redis, an
# https webhook) imports ssl itself when it is configured, and loads OpenSSL then.
_KEPT_OUT = [module for module in ("ssl", "_hashlib") if module not in sys.modules]
sys.modules.update(dict.fromkeys(_KEPT_OUT))  # a None entry makes `import ssl` raise ImportError
import asyncio
import hashlib  # noqa: F401
import hmac  # noqa: F401

for _module in _KEPT_OUT:
    del sys.modules[_module]

import argparse
import contextlib
import fcntl
import grp
import json
import math
import os
import signal
import socket
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import zmq.asyncio
from loguru import logger

from supervisor import __version__
from supervisor.alerts import FAILURE_KIND, Alerter
from supervisor.config import ConfigError, NsupConfig, load_config, parse_config
from supervisor.console import Console, journal_tracebacks, setup_logging
from supervisor.control.client.client import ENDPOINTS_FILE
from supervisor.control.server.events import EventPublisher
from supervisor.control.server.listener import ControlServer
from supervisor.control.server.operators import Operators
from supervisor.control.server.security import Binding, start_authenticator
from supervisor.daemon import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_USAGE, Supervisor
from supervisor.journal import Journal
from supervisor.lease import HeldBy, Lease
from supervisor.metrics import Metrics
from supervisor.persisted_state import PersistedState, StateStore, worker_lock_held
from supervisor.redis_mirror import RedisMirror
from supervisor.schedule import Done
from supervisor.scheduler import Scheduler

if TYPE_CHECKING:
    from paper_venue.launcher import VenueProcess  # `nsup demo` only: `nsup run` does not load it

DEMO_FACTORY = "node_worker.demo.node:demo_node"
MAX_IPC_PATH = 100  # sun_path holds 107 bytes; keep a margin
EXIT_LINGER_MS = 1000  # at exit, the most a socket still open waits for its peer to take what is queued


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["paper-venue"]:  # everything after it is the venue's own (--help included)
        from paper_venue.cli import main as venue_main

        rest = argv[1:]
        return venue_main(rest if rest[:1] in (["serve"], ["drill"]) else ["serve", *rest], prog="nsup paper-venue")
    args = _parser().parse_args(argv)
    if args.command == "preflight":
        return _preflight(args)
    if args.command == "diagram":
        return _diagram(args)
    setup_logging(json_lines=args.log_json)
    try:
        return _run(args)
    except KeyboardInterrupt:  # before supervision began, or after it ended: nothing of the node is running
        print("nsup: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _run(args) -> int:
    """`nsup run` and `nsup demo`: everything that can refuse the start is asked before anything starts
    (the demo's paper venue included), and each refusal is one line."""
    try:
        config = load_config(Path(args.config)) if args.command == "run" else _demo_config(args)
        node = _open(config)
    except ConfigError as exc:
        print(f"nsup: config error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except CannotStart as exc:
        print(f"nsup: cannot start: {exc}", file=sys.stderr)
        return EXIT_USAGE
    venue = None
    try:
        if args.command == "demo" and not (args.sandbox or args.venue_endpoint):
            venue = _start_venue(config.supervisor.state_path)  # only now: no other nsup is on this state dir
        code = _supervise(config, node, duration=getattr(args, "duration", None))
    except CannotStart as exc:
        print(f"nsup: cannot start: {exc}", file=sys.stderr)
        code = EXIT_USAGE
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the winding up is short: a Ctrl-C must not cut it off
        node.close()
        if venue is not None:
            _report_and_stop(venue)
    _leave(code)


def _leave(code: int) -> NoReturn:
    """Exit with `code` once everything is closed (the journal fsync'd, every thread of ours stopped)
    without the interpreter's teardown: about 50 ms of CPU that only frees memory, and a queue when
    many nodes on a few cores stop at once. Python's streams, which the log writes to, are flushed, and
    ZeroMQ is given its sockets' linger: os._exit skips the context's termination, which is what sends
    what is still queued (an abort's answer, the last events), and without it they were lost."""
    zmq.asyncio.Context.instance().destroy(linger=EXIT_LINGER_MS)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a terminal or pipe that has gone: nothing to flush to
            pass
    os._exit(code)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nsup", description="Position-safe supervisor for NautilusTrader nodes.")
    parser.add_argument("--version", action="version", version=f"nsup {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="supervise the node your config's factory builds")
    run.add_argument("--config", required=True, help="TOML config file")
    demo = commands.add_parser("demo", help="supervise the demo node, trading on a paper venue of its own")
    demo.add_argument("--state-dir", help="journal and logs go here (default: a fresh temp dir)")
    demo.add_argument("--duration", type=float, help="run this many seconds, then the graceful stop")
    venue = demo.add_mutually_exclusive_group()
    venue.add_argument("--venue-endpoint", help="use this running paper venue (with --quotes-endpoint)")
    venue.add_argument("--sandbox", action="store_true", help="NautilusTrader's in-process sandbox instead")
    demo.add_argument("--quotes-endpoint", help="the paper venue's quotes, with --venue-endpoint")
    demo.add_argument("--redis", metavar="URL", help="mirror the journal, state and status to this Redis (as node 'demo')")
    demo.add_argument("--node-cache", action="store_true", help="with --redis: keep the node's cache there too")
    commands.add_parser("paper-venue", help="run a paper venue; `nsup paper-venue --help` for its options")
    check = commands.add_parser("preflight", help="check a config, its node and its directories before a session")
    check.add_argument("--config", required=True, help="TOML config file")
    check.add_argument("--strict", action="store_true", help="exit 1 if any check fails")
    check.add_argument("--stop-timeout-secs", type=float, help="the service manager's stop timeout (TimeoutStopSec)")
    diagram = commands.add_parser("diagram", help="regenerate the lifecycle diagram (fsm_diagrams/) from the code")
    diagram.add_argument("--out", help="write here (default: the checkout's fsm_diagrams/, else the current directory)")
    for sub in (run, demo):
        sub.add_argument("--log-json", action="store_true", help="log JSON lines instead of text")
    return parser


def _preflight(args) -> int:
    from supervisor.preflight import preflight

    checks = preflight(Path(args.config), args.stop_timeout_secs)
    for check in checks:
        print(f"{check.outcome:<4} {check.name:<13} {check.detail}")
    failed = [c for c in checks if c.outcome == "FAIL"]
    print(f"{len(failed)} of {len(checks)} checks failed" if failed else f"all {len(checks)} checks passed")
    return 1 if failed and args.strict else 0


def _diagram(args) -> int:
    from supervisor.diagram import default_out_dir, write_generated

    for line in write_generated(Path(args.out) if args.out else default_out_dir()):
        print(line)
    return 0


def _demo_config(args) -> NsupConfig:
    if args.duration is not None and not (math.isfinite(args.duration) and args.duration > 0):
        raise ConfigError("--duration: expected seconds > 0")
    if bool(getattr(args, "venue_endpoint", None)) != bool(getattr(args, "quotes_endpoint", None)):
        raise ConfigError("--venue-endpoint and --quotes-endpoint go together")
    import tempfile

    from paper_venue.launcher import endpoints_in

    state_dir = Path(args.state_dir or tempfile.mkdtemp(prefix="nsup-demo-"))
    if not args.state_dir:
        print(f"nsup demo: state dir {state_dir}", file=sys.stderr)
    if getattr(args, "sandbox", False):
        params = {"venue": "sandbox"}
    else:  # the paper venue the caller names, or the one main() starts in the state dir
        endpoint, quotes = (args.venue_endpoint, args.quotes_endpoint) if args.venue_endpoint else endpoints_in(state_dir)
        params = {"venue": "paper", "venue_endpoint": endpoint, "quotes_endpoint": quotes}
    # The sandbox cannot say what it holds (its reports are the node's own cache): the demo takes the cache's word.
    checks = {"venue_check": "trust_cache"} if params["venue"] == "sandbox" else {}
    raw = {"node": {"factory": DEMO_FACTORY, "params": params}, "supervisor": {"state_dir": str(state_dir), **checks}}
    if args.redis or args.node_cache:
        raw["redis"] = {"url": args.redis, "name": "demo", "node_cache": args.node_cache}
    return parse_config(raw, source="nsup demo")


def _start_venue(state_dir: Path) -> VenueProcess:
    from paper_venue.launcher import VenueProcess

    try:
        venue = VenueProcess(state_dir)
    except OSError as exc:
        raise CannotStart(f"the paper venue: {exc}") from None
    try:
        venue.wait_ready()
    except RuntimeError as exc:
        venue.stop()
        raise CannotStart(f"the paper venue: {exc}") from None
    except BaseException:  # a Ctrl-C while it starts: it goes too, nothing is left behind
        venue.stop()
        raise
    logger.info("paper venue pid {} at {} (its log: {})", venue.pid, venue.endpoint, venue.log_path)
    return venue


def _report_and_stop(venue: VenueProcess) -> None:
    """The venue's books are the judge of flat: say what they hold before the venue goes."""
    try:
        open_positions = [p for p in venue.positions() if p.side != "FLAT"]
    except Exception as exc:  # noqa: BLE001 (a timeout, or the venue gone: it cannot say)
        logger.warning("the paper venue did not say what it holds ({}: {})", type(exc).__name__, exc)
    else:
        if not open_positions:
            logger.info("the venue's books are flat")
            venue.stop()
            return
        for p in open_positions:
            logger.warning("the venue still holds {} {} {} @ {} ({})", p.instrument_id, p.side, p.quantity, p.avg_px_open, p.account_id)
    # Not flat, or cannot say: the venue keeps running, as a broker would, with the positions on it.
    logger.warning("the paper venue keeps running (pid {}); to trade them out: nsup demo --venue-endpoint {} "
                   "--quotes-endpoint {}", venue.pid, venue.endpoint, venue.quotes_endpoint)


class CannotStart(Exception):
    """nsup will not start (another nsup on this node, a worker it cannot vouch for, ...): one line,
    exit 2, and nothing was started."""


class OpenNode:
    """What `nsup run` holds for its life, all of it taken before anything starts: the node's lock, its
    lease, its state (and Redis's copy), its journal, the metrics endpoint. `close` gives it all back."""

    def __init__(self, lock: int, journal: Journal, store: StateStore, carry_on_from: PersistedState | None,
                 mirror: RedisMirror | None, metrics: Metrics | None, schedule_done: list[Done], lease: Lease | None):
        self.lock, self.journal, self.store, self.carry_on_from = lock, journal, store, carry_on_from
        self.schedule_done = schedule_done  # what the schedule acted on, whether or not the last session ended
        self.mirror, self.metrics, self.alerter, self.lease = mirror, metrics, None, lease

    def close(self) -> None:
        if self.lease is not None:
            self.lease.close()
        if self.alerter is not None:
            self.alerter.close()  # up to 2 s, so supervisor_exit (or nsup's own failure) still goes out
        if self.metrics is not None:
            self.metrics.stop()
        if self.mirror is not None:
            self.mirror.close()  # at most drain_secs: what Redis has not taken stays in the file for the next start
        unwritten = self.journal.close()
        if unwritten:  # the disk never took them: the log (systemd's journal, the terminal) is the last place left
            logger.critical("{} journal record(s) could not be written to {}; they follow, one JSON line each",
                            len(unwritten), self.journal.path)
            for line in unwritten:
                sys.stderr.write(line.decode(errors="replace"))
            sys.stderr.flush()
        os.close(self.lock)


def _open(config: NsupConfig) -> OpenNode:
    """Everything that can refuse the start, in order: the directories (a config error), this node's lock,
    the state a crashed nsup left, this node's lease (another nsup holds it), a stranger's worker on the
    node, the journal, the metrics port. Raises ConfigError or CannotStart; nothing has been started then."""
    s = config.supervisor
    socket_path = s.run_path / "control.sock"  # the longest of the socket names
    if len(str(socket_path)) > MAX_IPC_PATH:
        field = "supervisor.run_dir" if s.run_dir else "supervisor.state_dir (or set supervisor.run_dir)"
        raise ConfigError(f"{field}: {socket_path} is longer than a unix socket path may be ({MAX_IPC_PATH} characters)")
    _usable_dir("supervisor.state_dir", s.state_path, config.control.group)
    _usable_dir("supervisor.run_dir" if s.run_dir else "supervisor.state_dir", s.run_path, config.control.group)
    lock = _lock(s.state_path / "nsup.lock", "another nsup already supervises this node")
    metrics = lease = None
    try:
        mirror = config.redis_mirror()
        store = config.state_store(mirror)
        last = store.load()
        carry_on_from = _unfinished_session(last, store)
        lease = _take_lease(config)
        vouched = carry_on_from is not None and carry_on_from.vouches_for_a_live_worker(config.worker_lock_path)
        if worker_lock_held(config.worker_lock_path) and not vouched:  # never a twin beside a stranger
            raise CannotStart("a worker of this node is still running, and it is not ours; "
                              "nsup will not start a second one beside it")
        journal = Journal(config.journal_path, id_floor=mirror.stream_end if mirror else (0, 0))
        if config.metrics.enabled:  # a port in use stops the start before anything is spawned
            metrics = Metrics()
            metrics.start(config.metrics.listen)
    except (ValueError, OSError) as exc:  # a damaged state, Redis's copy about another node, a port in use
        _give_back(lock, lease)
        raise CannotStart(str(exc)) from None
    except BaseException:
        _give_back(lock, lease)
        raise
    return OpenNode(lock, journal, store, carry_on_from, mirror, metrics, last.schedule_done if last else [], lease)


def _take_lease(config: NsupConfig) -> Lease | None:
    """This node's lease, with Redis (supervisor/lease.py): CannotStart while another nsup holds it.
    Redis not answering now refuses nothing: the daemon takes the lease before it spawns or adopts."""
    r = config.redis
    if not r.enabled:
        return None
    lease = Lease(r.url, config.redis_name, config.supervisor.state_path, r.lease_secs, r.timeout_secs)
    taken = lease.take_at_start()
    if isinstance(taken, HeldBy):
        lease.close()
        raise CannotStart(f"node {config.redis_name!r} is held by {taken.describe()}: two nsups on one node would "
                          "trade twice; if that one is gone, its lease expires within "
                          f"{r.lease_secs:g}s; or give this node its own [redis] name")
    return lease


def _give_back(lock: int, lease: Lease | None) -> None:
    """What `_open` took, when it refuses the start after all. The lease is not released: a worker a
    crashed nsup left may still trade; it expires, and an nsup on this state dir takes it over."""
    if lease is not None:
        lease.close()
    os.close(lock)


def _usable_dir(field: str, path: Path, group: str | None) -> None:
    """A state or run dir nsup can work in: made if missing, a directory, writable. Else a config error:
    systemd must not restart nsup into the same wall (RestartPreventExitStatus=2)."""
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        if group:  # the desk's operators reach the sockets, endpoints and journal
            os.chown(path, -1, grp.getgrnam(group).gr_gid)
            os.chmod(path, 0o750)
    except OSError as exc:
        raise ConfigError(f"{field}: {path} cannot be used: {exc.strerror or exc}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"{field}: {path} cannot be used: not writable (permissions, or a read-only file system)")


def _supervise(config: NsupConfig, node: OpenNode, duration: float | None) -> int:
    s, journal, mirror = config.supervisor, node.journal, node.mirror
    console = Console()
    journal.listen(console.on_record)
    if config.alerts.enabled:
        node.alerter = Alerter(config.alerts, on_failure=lambda reason: journal.record(FAILURE_KIND, reason=reason),
                               origin={"host": socket.gethostname(), "state_dir": str(s.state_path),
                                       "factory": config.node.factory})
        journal.listen(node.alerter.on_record)
    if node.metrics is not None:
        journal.listen(node.metrics.on_record)
    if mirror is not None:
        journal.listen(mirror.wake)
        mirror.follow(journal.held_lines)
        mirror.start()
        if node.carry_on_from is not None and node.store.source == "redis":
            was = node.carry_on_from
            journal.record("state_from_redis", state=was.state, version=was.version, written_on=was.host,
                           key=mirror.keys.state, local_damage=node.store.local_damage)
    logger.info("nsup {} supervising {} (state dir {})", __version__, config.node.factory, s.state_path)
    try:
        return asyncio.run(_main(config, journal, console, duration, node))
    except Exception as exc:  # a bug of ours: one line on the terminal, the traceback on record
        logger.critical("nsup failed: {}: {}", type(exc).__name__, exc)
        journal.record("fault", reason=f"nsup failed: {type(exc).__name__}: {exc}", traceback=traceback.format_exc())
        return EXIT_FAILURE


async def _main(config: NsupConfig, journal: Journal, console: Console, duration: float | None, node: OpenNode) -> int:
    tracebacks = journal_tracebacks(journal)  # here: the records are made on this loop, whichever thread logged
    metrics, store = node.metrics, node.store
    scheduler = Scheduler(config.schedule, node.schedule_done) if config.schedule else None
    supervisor = Supervisor(config, journal, node.carry_on_from, store, scheduler, node.lease)
    if metrics is not None:
        metrics.watch(supervisor.snapshot, store.mirror)
    supervisor.on_status(lambda state, status, _: console.on_status(state, status))
    control, events = _control_bindings(config)
    authenticator = None
    if config.control.tcp_endpoint:
        authenticator = start_authenticator(Path(config.control.curve_authorized_keys))
    publisher = EventPublisher(events)
    journal.listen(lambda record: publisher.publish(record["kind"], record))
    supervisor.on_status(lambda state, status, heartbeat: heartbeat and publisher.publish(
        "heartbeat", {"state": state, "status": status}))
    operators = Operators(supervisor, publisher.endpoints)
    server = ControlServer(control, operators)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, operators.on_signal, sig)
    if store.mirror is not None:
        _mirror_status(store.mirror, supervisor, journal)
    endpoints_file = config.supervisor.state_path / ENDPOINTS_FILE
    endpoints = {"control": server.endpoints, "events": publisher.endpoints, "supervisor_pid": os.getpid()}
    try:
        endpoints_file.write_text(json.dumps(endpoints))
    except OSError as exc:  # a full disk now: nsupctl then needs --endpoint; supervision does not wait for it
        journal.record("fault", reason=f"{endpoints_file} cannot be written ({exc}); nsupctl reaches this nsup "
                       f"with --endpoint {server.endpoints[0]}")
    if duration is not None:
        loop.call_later(duration, operators.stop, f"duration:{duration:g}s")
    scheduled = asyncio.ensure_future(scheduler.run(supervisor, operators.perform)) if scheduler else None
    try:
        return await supervisor.run()
    finally:
        if scheduled is not None:
            scheduled.cancel()
        with contextlib.suppress(OSError):
            endpoints_file.unlink(missing_ok=True)
        operators.close()
        await server.close()
        publisher.close()
        logger.remove(tracebacks)
        if authenticator is not None:
            authenticator.stop()


def _control_bindings(config: NsupConfig) -> tuple[list[Binding], list[Binding]]:
    """ipc in the run dir always; tcp beside it only with CURVE (the config refuses it otherwise)."""
    run, control = config.supervisor.run_path, config.control
    commands = [Binding(f"ipc://{run / 'control.sock'}", group=control.group)]
    events = [Binding(f"ipc://{run / 'events.sock'}", group=control.group)]
    if control.tcp_endpoint:
        key = Path(control.curve_secret_key)
        commands.append(Binding(control.tcp_endpoint, curve_secret_key=key))
        events.append(Binding(control.events_tcp_endpoint, curve_secret_key=key))
    return commands, events


def _mirror_status(mirror: RedisMirror, supervisor: Supervisor, journal: Journal) -> None:
    """Redis gets what `nsupctl status` shows, on every status and every record; Redis coming and
    going is journaled (from the loop: the journal's listeners are not all thread-safe)."""
    mirror.report_changes(
        lambda reachable, reason: journal.record("redis", reachable=reachable, reason=reason or None), asyncio.get_running_loop())
    supervisor.on_status(lambda *_: mirror.offer_status(supervisor.snapshot().status()))
    journal.listen(lambda _record: mirror.offer_status(supervisor.snapshot().status()))


def _unfinished_session(was: PersistedState | None, store: StateStore) -> PersistedState | None:
    """The state a crashed nsup left (`store.load()`: the local file, or Redis's copy if newer), if its
    session did not end (STOPPED or ABORTED)."""
    if was is None or was.state in ("STOPPED", "ABORTED"):
        return None
    logger.warning("the last nsup on this node ended in {} without finishing: carrying on from there (state from {})",
                   was.state, "Redis" if store.source == "redis" else "the local file")
    return was


def _lock(path: Path, held_means: str) -> int:
    """Hold `path` locked for the life of this process; CannotStart if someone else holds it."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise ConfigError(f"supervisor.state_dir: {path} cannot be made: {exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise CannotStart(f"{held_means} ({path} is locked)") from None
    return fd


if __name__ == "__main__":
    sys.exit(main())
