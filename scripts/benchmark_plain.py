"""A plain TradingNode stopped with SIGTERM, the way a node runs today without a supervisor.

    .venv/bin/python scripts/benchmark_plain.py [--runs 3]

Each run starts, in a child Python process, the demo recipe (sandbox venue, hold_secs=3600, flat_secs=0:
a position open on every instrument, held) built into a TradingNode by hand with the recipe's config
UNCHANGED: NautilusTrader's own timeout_post_stop, not the 0.1 s nsup's worker sets. The usual
`try: node.run() finally: node.dispose()`. Once the child reports the positions open, this sends it
SIGTERM (the kernel's signal handler calls node.stop()), and times SIGTERM to process exit. The child
reports what its cache still holds open when run() returns; its log is searched for the kernel's
"Residual" warnings. Prints medians; no assertion, no pass or fail.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

POSITIONS = 2  # the demo recipe trades two instruments


# ---------------------------------------------------------------------------------------------
# the child: a plain node, nothing of nsup's but the demo recipe


def _describe(positions) -> list[str]:
    return [f"{p.instrument_id} {p.side.name if hasattr(p.side, 'name') else p.side} {p.quantity}" for p in positions]


def child(status_fd: int, want: int) -> int:
    from node_worker.demo.node import demo_node
    from node_worker.recipe import build_node

    out = os.fdopen(status_fd, "w", buffering=1)

    def report(kind: str, **data) -> None:
        out.write(json.dumps({"kind": kind, "t": time.time(), **data}) + "\n")

    recipe = demo_node(venue="sandbox", hold_secs=3600.0, flat_secs=0.0)
    node = build_node(recipe, timeout_post_stop=None)  # the recipe's config as is: no timeout_post_stop override
    config = recipe.config
    report("built", timeout_post_stop=config.timeout_post_stop, timeout_disconnection=config.timeout_disconnection,
           timeout_shutdown=getattr(config, "timeout_shutdown", None))

    loop = node.get_event_loop()

    def check() -> None:  # on the node's own loop, as any callback of the node would run
        if node.cache.positions_open_count() >= want:
            report("positions_open", positions=_describe(node.cache.positions_open()))
            return
        loop.call_later(0.02, check)

    loop.call_later(0.02, check)
    try:
        node.run()
    finally:
        report("run_returned", left_open=_describe(node.cache.positions_open()))
        node.dispose()
        report("disposed")
    return 0


# ---------------------------------------------------------------------------------------------
# the parent


def _log_ts(line: str) -> float | None:
    """Epoch seconds of a NautilusTrader log line, `2026-01-02T03:04:05.123456789Z [INFO] ...`."""
    try:
        stamp = line.split(" ", 1)[0].rstrip("Z")
        return datetime.fromisoformat(stamp[:26]).replace(tzinfo=timezone.utc).timestamp()
    except ValueError:
        return None


def one_plain_run(workdir: Path, timeout: float = 60.0) -> dict:
    """Start the plain node, SIGTERM it once its positions are open, time it to exit.

    Returns sigterm, run_returned, disposed, exited (epoch seconds), the child's reports, the
    Residual lines of its log, and its exit code.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "node.log"
    read_fd, write_fd = os.pipe()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--child", "--status-fd", str(write_fd), "--want", str(POSITIONS)],
            cwd=REPO, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, pass_fds=(write_fd,),
        )
    os.close(write_fd)
    reports: dict[str, dict] = {}
    result: dict = {"pid": proc.pid}
    try:
        with os.fdopen(read_fd, "r") as status:
            deadline = time.monotonic() + timeout
            while True:
                ready, _, _ = select.select([status], [], [], max(0.0, deadline - time.monotonic()))
                if not ready:
                    raise TimeoutError(f"the plain node did not finish within {timeout:g}s")
                line = status.readline()
                if not line:  # EOF: the child has exited (or closed its end)
                    break
                record = json.loads(line)
                reports[record["kind"]] = record
                if record["kind"] == "positions_open":
                    result["sigterm"] = time.time()
                    proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout)
        result["exited"] = time.time()
        result["code"] = code
    finally:
        if proc.poll() is None:  # ours, by pid
            proc.kill()
            proc.wait()
    if "sigterm" not in result:
        raise RuntimeError(f"the plain node exited {proc.returncode} before its positions opened: {log_path.read_text(errors='replace')[-600:]}")
    text = log_path.read_text(errors="replace")
    result["reports"] = reports
    result["node_stopped"] = next((_log_ts(ln) for ln in text.splitlines() if ln.rstrip().endswith("TradingNode: STOPPED")), None)
    result["residual_lines"] = [ln.split("Residual ", 1)[1].strip() for ln in text.splitlines() if "Residual " in ln]
    result["log_tail"] = text[-600:]
    return result


def plain_figures(runs: int) -> dict:
    """Samples over `runs` plain-node runs, in seconds, and what each left open."""
    fig: dict = {"to_stopped": [], "stop": [], "to_run_returned": [], "run_returned_to_exit": [], "left_open": [], "residual": [],
                 "codes": [], "config": None, "errors": []}
    with tempfile.TemporaryDirectory(prefix="plain-") as tmp:
        for i in range(runs):
            try:
                r = one_plain_run(Path(tmp) / f"p{i}")
            except Exception as exc:  # reported, not fatal
                fig["errors"].append(f"run {i}: {type(exc).__name__}: {str(exc)[:300]}")
                continue
            rep = r["reports"]
            fig["config"] = rep.get("built")
            fig["codes"].append(r["code"])
            fig["stop"].append(r["exited"] - r["sigterm"])
            if r["node_stopped"]:
                fig["to_stopped"].append(r["node_stopped"] - r["sigterm"])
            if "run_returned" in rep:
                fig["to_run_returned"].append(rep["run_returned"]["t"] - r["sigterm"])
                fig["run_returned_to_exit"].append(r["exited"] - rep["run_returned"]["t"])
                fig["left_open"].append(rep["run_returned"]["left_open"])
            fig["residual"].append(r["residual_lines"])
    return fig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--status-fd", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--want", type=int, default=POSITIONS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        sys.exit(child(args.status_fd, args.want))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # runs the finally blocks: the child is killed
    fig = plain_figures(args.runs)
    ms = lambda xs: f"{statistics.median(xs) * 1000:9.1f} ms" if xs else "        -"  # noqa: E731
    cfg = fig["config"] or {}
    print(f"plain TradingNode, SIGTERM with {POSITIONS} positions open, median of {len(fig['stop'])} runs "
          f"(timeout_post_stop={cfg.get('timeout_post_stop')} s, the config's own)")
    print(f"  SIGTERM -> TradingNode STOPPED   {ms(fig['to_stopped'])}   (its log's timestamp)")
    print(f"  SIGTERM -> node.run() returned   {ms(fig['to_run_returned'])}")
    print(f"  run() returned -> process exit   {ms(fig['run_returned_to_exit'])}   (dispose, interpreter exit)")
    print(f"  SIGTERM -> process exit, total   {ms(fig['stop'])}")
    for i, (left, residual) in enumerate(zip(fig["left_open"], fig["residual"])):
        print(f"  run {i}: left open {len(left)} positions: {'; '.join(left) or '-'}   ({len(residual)} 'Residual' warnings in its log)")
    for error in fig["errors"]:
        print(f"  {error}")


if __name__ == "__main__":
    main()
