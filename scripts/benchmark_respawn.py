"""The first respawn after a crash: nsup (default settings) vs supervisord vs circusd, in one run.

    .venv/bin/python scripts/benchmark_respawn.py [--runs 3]

Each daemon supervises one program: nsup the demo node (sandbox venue), supervisord and circusd
`sleep 3600` from .bench-venv (scripts/benchmark_control.py makes it). The program is killed with
SIGKILL and this polls the daemon's children in /proc every millisecond until a new one appears: kill
to respawn, the same clock for all three. The peers run as configured for the other figures: their
defaults (circusd's check_delay of 5 s, which its config file defaults to, paces its respawns). nsup's second respawn is timed too (its replacement killed
again while it starts): the backoff is for a crash loop, and begins there. Medians; no assertion.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from benchmark import default_settings  # noqa: E402
from benchmark_control import PeerDaemon, ensure_bench_venv, peer_workdir, say  # noqa: E402
from tests.e2e.conftest import NsupRun  # noqa: E402

POLL_SECS = 0.001


def children(pid: int) -> set[int]:
    kids: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            kids.update(int(k) for k in (task / "children").read_text().split())
        except (OSError, ValueError):
            pass  # a thread that ended meanwhile
    return kids


def kill_and_time_respawn(parent: int, child: int, timeout: float = 30.0) -> tuple[float, int]:
    """SIGKILL `child`, then seconds until `parent` has a child it did not have before, and its pid."""
    before = children(parent)
    started = time.perf_counter()
    os.kill(child, signal.SIGKILL)
    while time.perf_counter() - started < timeout:
        new = children(parent) - before
        if new:
            return time.perf_counter() - started, new.pop()
        time.sleep(POLL_SECS)
    raise TimeoutError(f"no new child of {parent} within {timeout:g}s of killing {child}")


def nsup_respawns(workdir: Path, runs: int) -> dict[str, list[float]]:
    """First respawn (a worker up and RUNNING killed) and second (its replacement killed while starting)."""
    figures: dict[str, list[float]] = {"first": [], "second": []}
    for i in range(runs):
        run = NsupRun(workdir / f"n{i}", {"hold_secs": 3600.0, "flat_secs": 0.0}, default_settings()).start()
        try:
            run.wait_for_state("RUNNING")
            first, replacement = kill_and_time_respawn(run.process.pid, run.worker_pid)
            second, _ = kill_and_time_respawn(run.process.pid, replacement)
            figures["first"].append(first)
            figures["second"].append(second)
            run.wait_for(lambda: len([r for r in run.records("transition") if r["dest"] == "RUNNING"]) == 2, 60.0)
            run.signal(signal.SIGTERM)
            run.exit_code()
        finally:
            run.kill_all()
    return figures


def peer_respawns(name: str, workdir: Path, runs: int) -> list[float]:
    samples = []
    daemon = PeerDaemon(name, peer_workdir(name, workdir))
    try:
        daemon.start()
        child = daemon.client(0, 0)["child_pids"][0]  # returns once `sleep 3600` runs under it
        for _ in range(runs):
            took, child = kill_and_time_respawn(daemon.proc.pid, child)
            samples.append(took)
            time.sleep(1.5)  # up for longer than supervisord's startsecs (1 s): the next kill is a new crash
        daemon.child_pids = [child]
    finally:
        say(f"respawn: {'; '.join(daemon.stop())}")
    return samples


def respawn_figures(runs: int, problems: dict[str, str | None] | None = None) -> dict:
    if problems is None:
        try:
            problems = ensure_bench_venv()
        except Exception as exc:
            problems = {"supervisord": f".bench-venv: {exc}", "circusd": f".bench-venv: {exc}"}
    figures: dict = {"settings": default_settings(restarts=True)}
    with tempfile.TemporaryDirectory(prefix="resp-") as tmp:
        say(f"respawn: nsup, {runs} runs")
        figures["nsup"] = nsup_respawns(Path(tmp), runs)
        for name in ("supervisord", "circusd"):
            if problems.get(name):
                figures[name] = problems[name]
                continue
            say(f"respawn: {name}, {runs} kills")
            try:
                figures[name] = peer_respawns(name, Path(tmp), runs)
            except Exception as exc:  # a peer that will not run is reported, not fatal
                figures[name] = f"{type(exc).__name__}: {str(exc)[:300]}"
    return figures


def report(fig: dict, indent: str = "   ") -> None:
    def ms(xs: list[float]) -> str:
        return f"{statistics.median(xs) * 1000:8.1f} ms" if xs else "       -"

    base = fig["nsup"]["first"]
    settings = ", ".join(f"{k} {v:g}" for k, v in fig["settings"].items())
    print(f"{indent}first respawn after a crash: kill -9 of the supervised process -> a new child of the supervisor")
    print(f"{indent}(nsup: default settings, {settings}; peers: their defaults, `sleep 3600`)")
    print(f"{indent}{'':<44}{'median':>11}{'peer / nsup':>13}")
    print(f"{indent}{'nsup, first respawn':<44}{ms(base)}")
    for name in ("supervisord", "circusd"):
        samples = fig.get(name)
        if isinstance(samples, str):
            print(f"{indent}{name:<44}not available ({samples})")
        elif samples:
            ratio = statistics.median(samples) / statistics.median(base) if base else float("nan")
            print(f"{indent}{name + ', first respawn':<44}{ms(samples)}{ratio:>12.1f}x")
    print(f"{indent}{'nsup, second respawn (killed again starting)':<44}{ms(fig['nsup']['second'])}   the backoff begins here")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # the finally blocks stop what was started
    report(respawn_figures(args.runs), indent="")


if __name__ == "__main__":
    main()
