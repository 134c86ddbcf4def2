"""Figures for the graceful stop with positions open, and the supervisor's footprint.

    scripts/bench [--runs N]

Each run starts `nsup run` on the demo node with a position open on every instrument, sends SIGTERM
once the positions are seen, and splits the time from the stop request to STOPPED using the
journal's own timestamps. Then many such nodes (8 by default) are stopped at once, against one
alone. nsup runs with the config's defaults (the tests' faster heartbeat and confirm undone).
Prints medians; no assertion, no pass or fail.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import msgspec

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from supervisor.config import SupervisorSection  # noqa: E402
from tests.e2e.conftest import NsupRun  # noqa: E402  (one way to drive nsup, shared with the tests)

PHASES = [
    ("SIGTERM sent -> HALTING", "sigterm_sent", "halting"),
    ("HALTING -> REDUCING set", "halting", "reducing"),
    ("market_exit -> flat seen  (the flatten itself)", "market_exit", "flat_seen"),
    ("flat seen -> FLAT  (confirm interval + HALTED)", "flat_seen", "flat"),
    ("FLAT -> stop sent  (gate's fresh status)", "flat", "worker_end"),
    ("stop sent -> worker exit  (node stop + dispose)", "worker_end", "worker_exit"),
    ("worker exit -> STOPPED", "worker_exit", "stopped"),
]


def default_settings(restarts: bool = False) -> dict[str, float]:
    """The config's defaults for what the stop (and, with `restarts`, the respawn) depends on: NsupRun
    otherwise sets the tests' faster heartbeat and flat confirm."""
    names = ["heartbeat_interval_secs", "flat_confirm_secs"]
    names += ["restart_backoff_secs", "restart_backoff_max_secs", "stable_after_secs"] if restarts else []
    defaults = {field.name: field.default for field in msgspec.structs.fields(SupervisorSection)}
    return {name: defaults[name] for name in names}


def moments(journal: list[dict]) -> dict[str, float]:
    """The first time each mark of the stop appears in the journal, in epoch seconds."""
    marks: dict[str, float] = {}
    for r in journal:
        key = r["kind"] if r["kind"] in ("flat_seen", "worker_end", "worker_exit") else None
        if r["kind"] == "transition":
            key = {"HALTING": "halting", "FLAT": "flat", "STOPPED": "stopped"}.get(r["dest"])
        elif r["kind"] == "worker_command":
            key = {"set_trading_state": "reducing", "market_exit": "market_exit"}.get(r["command"]["type"])
        if key:
            marks.setdefault(key, datetime.fromisoformat(r["ts"]).timestamp())
    return marks


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def one_run(workdir: Path, confirm: float) -> tuple[dict, float, float, int]:
    run = NsupRun(workdir, {"hold_secs": 3600.0, "flat_secs": 0.0}, {**default_settings(), "flat_confirm_secs": confirm}).start()
    try:
        run.wait_for_state("RUNNING")
        run.wait_for_positions(2)
        supervisor_rss, worker_rss = rss_mb(run.process.pid), rss_mb(run.worker_pid)
        sent = time.time()
        run.signal(15)
        code = run.exit_code()
        exited = time.time()  # the whole nsup process gone, on this process's clock (the journal's too)
        return {**moments(run.journal), "sigterm_sent": sent, "nsup_exit": exited}, supervisor_rss, worker_rss, code
    finally:
        run.kill_all()


def paper_venue_figures(workdir: Path, runs: int) -> tuple[list[float], list[float]]:
    """Fill latency in the strategy (order created to fill seen), and a killed worker's replacement
    (spawn to RUNNING, reconciliation included) finding the positions the venue kept."""
    from paper_venue.launcher import VenueProcess

    venue = VenueProcess(workdir)
    venue.wait_ready()
    params = {"venue": "paper", "venue_endpoint": venue.endpoint, "quotes_endpoint": venue.quotes_endpoint,
              "hold_secs": 0.5, "flat_secs": 0.2}
    latencies, restarts = [], []
    try:
        for i in range(runs):
            first = NsupRun(workdir / f"k{i}", params, {"max_restarts": 0}).start()  # a new nsup reconciles
            try:
                first.wait_for_state("RUNNING")
                time.sleep(3.0)  # a few round trips of the demo strategy
                first.wait_for_positions(1)
                os.kill(first.worker_pid, 9)
                first.exit_code()
                log = (first.state_dir / "worker.log").read_text()
                latencies += [float(line.split("fill latency ")[1].split()[0]) / 1000 for line in log.splitlines() if "fill latency" in line]
            finally:
                first.kill_all()
            second = NsupRun(workdir / f"r{i}", {**params, "hold_secs": 3600.0}, {}).start()
            try:
                second.wait_for_state("RUNNING")
                second.wait_for_positions(1)
                spawned = second.records("worker_spawned")[0]["ts"]
                running = next(r["ts"] for r in second.records("transition") if r["dest"] == "RUNNING")
                restarts.append(datetime.fromisoformat(running).timestamp() - datetime.fromisoformat(spawned).timestamp())
                second.signal(15)
                second.exit_code()
            finally:
                second.kill_all()
    finally:
        venue.stop()
    return latencies, restarts


def recovery_figures(workdir: Path, runs: int) -> dict[str, list[float]]:
    """On the paper venue with positions open: detect a crash, detect a hang, crash to RUNNING again,
    killed nsup to re-attached. Each measured from the moment of the fault, on the journal's clock."""
    from paper_venue.launcher import VenueProcess

    def at(record: dict) -> float:
        return datetime.fromisoformat(record["ts"]).timestamp()

    venue = VenueProcess(workdir)
    venue.wait_ready()
    params = {"venue": "paper", "venue_endpoint": venue.endpoint, "quotes_endpoint": venue.quotes_endpoint,
              "hold_secs": 3600.0, "flat_secs": 0.0}
    fast = {"restart_backoff_secs": 0.05, "restart_backoff_max_secs": 0.1}
    figures: dict[str, list[float]] = {"crash detected": [], "crash -> RUNNING again": [], "hang detected": [],
                                       "killed nsup -> re-attached": []}
    try:
        for i in range(runs):
            run = NsupRun(workdir / f"c{i}", params, fast).start()
            try:
                run.wait_for_state("RUNNING")
                run.wait_for_positions(1)
                crash = time.time()
                os.kill(run.worker_pid, 9)
                run.wait_for(lambda: len([r for r in run.records("transition") if r["dest"] == "RUNNING"]) == 2)
                figures["crash detected"].append(at(run.records("fault")[0]) - crash)
                figures["crash -> RUNNING again"].append(at([r for r in run.records("transition") if r["dest"] == "RUNNING"][1]) - crash)
                run.wait_for_positions(1)
                hang = time.time()
                os.kill(run.records("worker_spawned")[-1]["pid"], 19)  # SIGSTOP, positions open
                alert = run.wait_for(lambda: run.records("hung_with_exposure"))[0]
                figures["hang detected"].append(at(alert) - hang)
                os.kill(run.records("worker_spawned")[-1]["pid"], 18)  # SIGCONT
                run.wait_for(lambda: run.records("worker_answering"))
                killed = time.time()
                run.process.kill()
                run.process.wait()
                run.start()
                reattached = run.wait_for(lambda: [r for r in run.records("reattach") if r["result"] == "re-attached"])[0]
                figures["killed nsup -> re-attached"].append(at(reattached) - killed)
                run.signal(15)
                run.exit_code()
            finally:
                run.kill_all()
    finally:
        venue.stop()
    return figures


def startup_secs() -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import supervisor.cli, supervisor.daemon"], check=True, cwd=REPO)
    return time.perf_counter() - start


def stop_figures(runs: int, confirm: float) -> dict:
    """Samples over `runs` graceful stops, in seconds: each phase, the total, nsup's overhead, SIGTERM to
    nsup's exit, what the node's log reported still open ('Residual' warnings); and the RSS in MB."""
    fig: dict = {"phases": {name: [] for name, _, _ in PHASES}, "totals": [], "overheads": [], "to_exit": [],
                 "beyond_flatten": [], "sup_rss": [], "wrk_rss": [], "residual": [], "skipped": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(runs):
            marks, s_rss, w_rss, code = one_run(Path(tmp) / f"r{i}", confirm)
            if code != 0:
                fig["skipped"].append(f"run {i}: nsup exited {code}")
                print(f"run {i}: nsup exited {code}; skipped", file=sys.stderr)
                continue
            for name, a, b in PHASES:
                fig["phases"][name].append(marks[b] - marks[a])
            total = marks["stopped"] - marks["sigterm_sent"]
            flatten = marks["flat_seen"] - marks["market_exit"]
            node_stop = marks["worker_exit"] - marks["worker_end"]
            fig["totals"].append(total)
            fig["overheads"].append(total - flatten - confirm - node_stop)
            fig["to_exit"].append(marks["nsup_exit"] - marks["sigterm_sent"])
            fig["beyond_flatten"].append(marks["nsup_exit"] - marks["sigterm_sent"] - flatten)
            fig["sup_rss"].append(s_rss)
            fig["wrk_rss"].append(w_rss)
            log = Path(tmp) / f"r{i}" / "state" / "worker.log"
            text = log.read_text(errors="replace") if log.exists() else ""
            fig["residual"].append([ln.split("Residual ", 1)[1].strip() for ln in text.splitlines() if "Residual " in ln])
    return fig


def stop_at_once(workdir: Path, nodes: int) -> float:
    """`nodes` nsups, each with its demo node holding 2 positions, default settings: SIGTERM to all at
    once, seconds until the last nsup has exited 0."""
    runs = [NsupRun(workdir / f"n{i}", {"hold_secs": 3600.0, "flat_secs": 0.0}, default_settings()) for i in range(nodes)]
    try:
        for run in runs:
            run.start()
        for run in runs:
            run.wait_for_state("RUNNING", timeout=120.0)
            run.wait_for_positions(2, timeout=60.0)
        sent = time.perf_counter()
        for run in runs:
            run.signal(signal.SIGTERM)
        codes = [run.exit_code() for run in runs]
        took = time.perf_counter() - sent
        if any(codes):
            raise RuntimeError(f"exit codes {codes}")
        return took
    finally:
        for run in runs:
            run.kill_all()


def fleet_stop_figures(nodes: int, runs: int) -> dict[str, list[float]]:
    """SIGTERM to the last exit: one node alone, then `nodes` at once, alternately, `runs` times each."""
    fig: dict[str, list[float]] = {"one": [], "many": [], "errors": []}
    with tempfile.TemporaryDirectory(prefix="fleet-") as tmp:
        for i in range(runs):
            for key, count in (("one", 1), ("many", nodes)):
                try:
                    fig[key].append(stop_at_once(Path(tmp) / f"{key}{i}", count))
                except Exception as exc:  # reported, not fatal
                    fig["errors"].append(f"{count} nodes, run {i}: {type(exc).__name__}: {str(exc)[:200]}")
    return fig


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--confirm", type=float, default=default_settings()["flat_confirm_secs"],
                        help="flat_confirm_secs (default: the config's default)")
    args = parser.parse_args()

    fig = stop_figures(args.runs, args.confirm)
    phase_samples, totals, overheads = fig["phases"], fig["totals"], fig["overheads"]
    sup_rss, wrk_rss = fig["sup_rss"], fig["wrk_rss"]

    ms = lambda xs: f"{statistics.median(xs) * 1000:8.1f} ms"  # noqa: E731
    print(f"graceful stop with 2 positions open, median of {len(totals)} runs (flat_confirm_secs={args.confirm})")
    for name, samples in phase_samples.items():
        print(f"  {name:<50} {ms(samples)}")
    print(f"  {'stop request -> STOPPED, total':<50} {ms(totals)}")
    print(f"  {'nsup overhead (total - flatten - confirm - node stop)':<50} {ms(overheads)}")
    print(f"supervisor RSS while RUNNING   {statistics.median(sup_rss):6.1f} MB")
    print(f"worker RSS while RUNNING       {statistics.median(wrk_rss):6.1f} MB   (ratio {statistics.median(wrk_rss) / statistics.median(sup_rss):.1f}x)")
    print(f"supervisor import (fresh interpreter, incl. Python start) {startup_secs() * 1000:.0f} ms")

    with tempfile.TemporaryDirectory(prefix="nb-") as tmp:
        latencies, restarts = paper_venue_figures(Path(tmp), runs=3)
    print(f"paper venue (its own process), {len(latencies)} fills, {len(restarts)} kill -9 restarts")
    print(f"  submit -> fill seen in the strategy              median {ms(latencies)}  p90 {statistics.quantiles(latencies, n=10)[-1] * 1000:.1f} ms")
    print(f"  worker spawned -> RUNNING, positions reconciled  median {ms(restarts)}")

    with tempfile.TemporaryDirectory(prefix="nr-") as tmp:
        figures = recovery_figures(Path(tmp), runs=3)
    print("recovery on the paper venue, positions open (heartbeat 0.2 s, hang after 5 missed beats), median of 3")
    for name, samples in figures.items():
        print(f"  {name:<48} {ms(samples)}")


if __name__ == "__main__":
    main()
