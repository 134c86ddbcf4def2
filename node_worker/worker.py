"""The worker process: build the TradingNode on the main thread, then serve nsup on the node's loop."""

from __future__ import annotations

import argparse
import faulthandler
import fcntl
import json
import os
import signal
import sys
from pathlib import Path
from typing import NoReturn

import zmq
import zmq.asyncio
from loguru import logger

from node_worker.log_pipe import LogPipe
from supervisor import protocol as p

# The kernel's fixed sleep between stopping the strategies and disconnecting, for residual orders to
# settle. nsup stops a node only once it has verified it flat, at the venues too, and the worker has set
# HALTED before its own last look: nothing is left to settle. NautilusTrader wants it above zero.
TIMEOUT_POST_STOP_SECS = 0.001
# Disposing closes the cache database, which waits on its Redis without end if Redis stops answering.
DISPOSE_BOUND_SECS = 10.0
EXIT_LINGER_MS = 2000  # at exit, the most a message to nsup still queued may wait for nsup to take it


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    log = LogPipe(Path(args.log)) if args.log else None  # first: before NautilusTrader's logger takes stdout
    logger.remove()
    logger.add(sys.stderr, format="{time:YYYY-MM-DDTHH:mm:ss.SSS!UTC}Z [nsup-worker] {level} {message}")
    if args.check:
        return _check(args.factory, args.spec_file, args.facts_file)
    try:
        lock = _hold_worker_lock(Path(args.lock))  # noqa: F841 (held for the life of the process)
        spec = _read_spec(args.spec_file)
        node = _build_node(args.factory, spec)
    except Exception as exc:
        logger.exception("could not build the node")
        _report_build_failure(args.link, f"{type(exc).__name__}: {exc}")
        return 1

    from node_worker.control_server import ControlServer

    loop = node.get_event_loop()
    server = ControlServer(node, args.link, args.heartbeat_secs, args.reduce_after_supervisor_lost_secs, log)
    _take_over_signals(loop, server)
    try:
        loop.run_until_complete(server.serve())
    except Exception:
        # A bug of ours must not end a node that may hold positions: keep it trading, silent to nsup,
        # which alerts on the missing heartbeats. An operator decides from there.
        logger.critical("the control server failed; the node keeps running without it", exc_info=True)
        loop.run_forever()
    _dispose(node, spec.get("cache_database"), log)
    logger.info("node stopped and disposed; exiting 0")
    _exit_now(node, log)


def _exit_now(node, log: LogPipe | None) -> NoReturn:
    """Exit 0 without the interpreter's shutdown, which would spend about 200 ms of CPU tearing down
    NautilusTrader's modules one by one for nothing: the node is stopped (and disposed, or left to the
    next node's reconciliation). The logs are flushed first: NautilusTrader's by releasing its log
    guard (the last guard's release flushes its writers; without it, its last lines are lost), then
    Python's own streams, which loguru writes to, then the pipe they all go through to worker.log. And
    ZeroMQ sends what is queued to nsup first, within the socket's linger: os._exit skips the context's
    termination, which is what sends it."""
    zmq.asyncio.Context.instance().destroy(linger=EXIT_LINGER_MS)
    node.kernel._log_guard = None  # the kernel holds the only reference (NautilusTrader 1.231)
    sys.stdout.flush()
    sys.stderr.flush()
    if log is not None:
        log.close()
    os._exit(0)


def _read_spec(spec_file: str) -> dict:
    """The spec from its file, or from stdin ("-"): nsup pipes it in, so spawning a worker writes nothing
    to a disk that may be full, and the spec (it may hold secrets) is on no disk at all."""
    return json.loads(sys.stdin.read() if spec_file == "-" else Path(spec_file).read_text())


def _dispose(node, cache_database: dict | None, log: LogPipe | None) -> None:
    """A node that nsup verified flat and stopped must exit, even if the Redis holding its cache has
    stopped answering: closing the cache database then blocks without end, holding the GIL. So the
    worker asks Redis first and, if it does not answer, exits without disposing; the cache's last
    writes are lost and the next node's reconciliation against the venue corrects them. Should Redis
    stall between the question and the close, faulthandler's own thread (it needs no GIL) ends the
    process, with exit 1: nsup then treats it as a lost worker, and a stop still pending goes on."""
    if cache_database is None:
        node.dispose()
        return
    if not _redis_answers(cache_database):
        logger.error("the node's cache database (Redis {}:{}) does not answer; the node is stopped and was flat: "
                     "exiting 0 without disposing it", cache_database["host"], cache_database["port"])
        _exit_now(node, log)
    faulthandler.dump_traceback_later(DISPOSE_BOUND_SECS, exit=True)
    node.dispose()
    faulthandler.cancel_dump_traceback_later()


def _redis_answers(database: dict) -> bool:
    from supervisor.redis_mirror import connect, redis_errors

    client = connect(None, database["response_timeout"], host=database["host"], port=database["port"],
                     username=database["username"], password=database["password"], ssl=database["ssl"])
    try:
        return bool(client.ping())
    except redis_errors():
        return False
    finally:
        client.close()


def _parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m node_worker")
    parser.add_argument("--check", action="store_true", help="import the factory, build the node, dispose it, exit")
    parser.add_argument("--facts-file", help="with --check: where to write what preflight should know of the node")
    parser.add_argument("--link", help="the supervisor's worker endpoint")
    parser.add_argument("--factory", required=True, help="module:function returning a NodeRecipe")
    parser.add_argument("--spec-file", required=True,
                        help='JSON {"params": factory keyword arguments, "cache_database": DatabaseConfig fields or null}; '
                             '"-": read it from stdin')
    parser.add_argument("--log", help="worker.log: stdout and stderr go there through a pipe this process drains")
    parser.add_argument("--lock", help="file this worker holds locked while it lives")
    parser.add_argument("--heartbeat-secs", type=float, default=1.0)
    parser.add_argument("--reduce-after-supervisor-lost-secs", type=float, default=0.0,
                        help="without a supervisor this long, go closing-only (0: never)")
    return parser.parse_args(argv)


def _check(factory: str, spec_file: str, facts_file: str | None) -> int:
    """For `nsup preflight`: does the factory import and the node build? Nothing connects, nothing runs.
    What preflight warns of in a node that builds goes to facts_file as JSON (node_worker.node_facts)."""
    from node_worker.node_facts import facts_of

    try:
        node = _build_node(factory, _read_spec(spec_file))
        if facts_file:
            Path(facts_file).write_text(json.dumps(facts_of(node)))
        node.dispose()
    except Exception as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


def _hold_worker_lock(path: Path) -> int:
    """While this is held, a new nsup knows a worker of this node still runs and will not start another."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise RuntimeError(f"another worker of this node holds {path}") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def _build_node(factory_spec: str, spec: dict):
    from node_worker.recipe import NodeRecipe, build_node, load_factory

    recipe = load_factory(factory_spec)(**spec["params"])
    if not isinstance(recipe, NodeRecipe):
        raise TypeError(f"factory {factory_spec} returned {type(recipe).__name__}, expected NodeRecipe")
    return build_node(recipe, TIMEOUT_POST_STOP_SECS, spec.get("cache_database"), spec.get("scope") or [])


def _take_over_signals(loop, server) -> None:
    """The kernel stops the node on SIGTERM/SIGINT and dies on the second; here a signal only reports.

    Whether and when the node stops is the supervisor's decision, taken with the positions in view.
    """

    def on_signal(sig: signal.Signals) -> None:
        server.notice(f"worker received {sig.name} and ignored it: only nsup stops the node")

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGABRT):
        loop.remove_signal_handler(sig)
        loop.add_signal_handler(sig, on_signal, sig)


def _report_build_failure(endpoint: str, reason: str) -> None:
    socket = zmq.Context.instance().socket(zmq.DEALER)
    socket.connect(endpoint)
    socket.send(p.encode(p.BuildFailed(p.PROTOCOL_VERSION, os.getpid(), reason)))
    socket.close(linger=2000)
