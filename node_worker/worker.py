"""The worker process: build the TradingNode on the main thread, then serve nsup on the node's loop."""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import signal
import sys
from pathlib import Path

import zmq
from loguru import logger

from supervisor import protocol as p

# nsup verifies flat before it stops the node, so the kernel's fixed post-stop sleep buys nothing.
TIMEOUT_POST_STOP_SECS = 0.1


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    logger.remove()
    logger.add(sys.stderr, format="{time:YYYY-MM-DDTHH:mm:ss.SSS!UTC}Z [nsup-worker] {level} {message}")
    if args.check:
        return _check(args.factory, args.params_file)
    try:
        lock = _hold_worker_lock(Path(args.lock))  # noqa: F841 (held for the life of the process)
        params = json.loads(Path(args.params_file).read_text())
        node = _build_node(args.factory, params)
    except Exception as exc:
        logger.exception("could not build the node")
        _report_build_failure(args.link, f"{type(exc).__name__}: {exc}")
        return 1

    from node_worker.control_server import ControlServer

    loop = node.get_event_loop()
    server = ControlServer(node, args.link, args.heartbeat_secs, args.reduce_after_supervisor_lost_secs)
    _take_over_signals(loop, server)
    try:
        loop.run_until_complete(server.serve())
    except Exception:
        # A bug of ours must not end a node that may hold positions: keep it trading, silent to nsup,
        # which alerts on the missing heartbeats. An operator decides from there.
        logger.critical("the control server failed; the node keeps running without it", exc_info=True)
        loop.run_forever()
    node.dispose()
    logger.info("node stopped and disposed; exiting 0")
    return 0


def _parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m node_worker")
    parser.add_argument("--check", action="store_true", help="import the factory, build the node, dispose it, exit")
    parser.add_argument("--link", help="the supervisor's worker endpoint")
    parser.add_argument("--factory", required=True, help="module:function returning a NodeRecipe")
    parser.add_argument("--params-file", required=True, help="JSON object of keyword arguments for the factory")
    parser.add_argument("--lock", help="file this worker holds locked while it lives")
    parser.add_argument("--heartbeat-secs", type=float, default=1.0)
    parser.add_argument("--reduce-after-supervisor-lost-secs", type=float, default=0.0,
                        help="without a supervisor this long, go closing-only (0: never)")
    return parser.parse_args(argv)


def _check(factory: str, params_file: str) -> int:
    """For `nsup preflight`: does the factory import and the node build? Nothing connects, nothing runs."""
    try:
        node = _build_node(factory, json.loads(Path(params_file).read_text()))
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


def _build_node(factory_spec: str, params: dict):
    from node_worker.recipe import NodeRecipe, build_node, load_factory

    recipe = load_factory(factory_spec)(**params)
    if not isinstance(recipe, NodeRecipe):
        raise TypeError(f"factory {factory_spec} returned {type(recipe).__name__}, expected NodeRecipe")
    return build_node(recipe, TIMEOUT_POST_STOP_SECS)


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
