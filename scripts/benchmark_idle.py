"""Footprint at rest: RSS and CPU of nsup (its supervisor process, and separately its worker), supervisord
and circusd, each supervising one program, measured over the same window one after another.

    .venv/bin/python scripts/benchmark_idle.py [--window 10] [--settle 2]

nsup runs the demo node (sandbox venue, two positions held) with the default heartbeat_interval_secs
of 1.0 s: it is not idle in the sense the others are, it receives a heartbeat with the node's status
every second and logs it. supervisord and circusd run `sleep 3600` from .bench-venv
(scripts/benchmark_control.py makes it). CPU is utime + stime from /proc/<pid>/stat (clock ticks) over
the window, as a percentage of one core; the same from the threads' /proc/<pid>/task/*/schedstat
(nanoseconds, a finer clock); wake-ups are the context switches of all its threads. Prints figures
only: no assertion, no pass or fail.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from benchmark_control import PeerDaemon, ensure_bench_venv, peer_workdir, say, use_bytecode  # noqa: E402
from tests.e2e.conftest import NsupRun  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15 of proc(5)


def _sched_ns(pid: int) -> int:
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pass  # a thread that ended meanwhile
    return total


def _switches(pid: int) -> int:
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            for line in (task / "status").read_text().splitlines():
                if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")):
                    total += int(line.split()[1])
        except (OSError, ValueError):
            pass
    return total


def _rss_mb(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _threads(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/task").iterdir()))


def sample(pids: dict[str, int], window: float) -> dict[str, dict]:
    """CPU, wake-ups and RSS of each pid over the same `window` seconds."""
    t0 = time.monotonic()
    before = {k: (_ticks(p), _sched_ns(p), _switches(p)) for k, p in pids.items()}
    time.sleep(window)
    elapsed = time.monotonic() - t0
    out = {}
    for k, p in pids.items():
        ticks, ns, sw = _ticks(p), _sched_ns(p), _switches(p)
        out[k] = {
            "pid": p,
            "window": elapsed,
            "ticks": ticks - before[k][0],
            "cpu_pct": (ticks - before[k][0]) / CLK_TCK / elapsed * 100,
            "cpu_pct_ns": (ns - before[k][1]) / 1e9 / elapsed * 100,
            "wakeups_per_s": (sw - before[k][2]) / elapsed,
            "rss_mb": _rss_mb(p),
            "anon_mb": _rss_mb(p, "RssAnon"),  # VmRSS less the mapped files (libraries), which vary with the page cache
            "threads": _threads(p),
        }
    return out


def nsup_idle(tmp: Path, window: float, settle: float) -> dict[str, dict]:
    """nsup RUNNING the demo node with two positions held, heartbeat 1.0 s (the default)."""
    run = NsupRun(tmp / "nsup-idle", {"hold_secs": 3600.0, "flat_secs": 0.0}, {"heartbeat_interval_secs": 1.0})
    try:
        say("idle: nsup with the demo node (heartbeat 1.0 s)")
        run.start()
        run.wait_for_state("RUNNING")
        run.wait_for_positions(2)
        time.sleep(settle)
        say(f"idle: nsup, {window:g} s window")
        figures = sample({"nsup supervisor": run.process.pid, "nsup worker (the TradingNode)": run.worker_pid}, window)
        run.signal(signal.SIGTERM)
        figures["nsup supervisor"]["note"] = f"graceful stop afterwards: nsup exit {run.exit_code()}"
        return figures
    finally:
        run.kill_all()
        shutil.rmtree(run.run_dir, ignore_errors=True)


def peer_idle(name: str, tmp: Path, window: float, settle: float) -> dict:
    daemon = PeerDaemon(name, peer_workdir(name, tmp))
    try:
        daemon.start()
        out = daemon.client(0, 0)  # returns once `sleep 3600` runs under it; the client then exits
        time.sleep(settle)
        say(f"idle: {name}, {window:g} s window")
        figures = sample({name: daemon.proc.pid}, window)[name]
        figures["version"] = out["version"]
        return figures
    finally:
        figures_notes = daemon.stop()
        say(f"idle: {'; '.join(figures_notes)}")


def idle_figures(window: float, settle: float, problems: dict[str, str | None] | None = None) -> dict[str, dict]:
    """Each daemon in turn, never two at once; a peer that cannot run gets {'unavailable': reason}."""
    if problems is None:
        try:
            problems = ensure_bench_venv()
        except Exception as exc:
            problems = {"supervisord": f".bench-venv: {exc}", "circusd": f".bench-venv: {exc}"}
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="idle-") as tmp:
        try:
            results.update(nsup_idle(Path(tmp), window, settle))
        except Exception as exc:
            results["nsup supervisor"] = {"unavailable": f"{type(exc).__name__}: {str(exc)[:300]}"}
        for name in ("supervisord", "circusd"):
            if problems.get(name):
                results[name] = {"unavailable": problems[name]}
                continue
            try:
                results[name] = peer_idle(name, Path(tmp), window, settle)
            except Exception as exc:
                results[name] = {"unavailable": f"{type(exc).__name__}: {str(exc)[:300]}"}
    return results


def print_idle(results: dict[str, dict], window: float, indent: str = "  ") -> None:
    """The table; ratios are this row / the nsup supervisor's (above 1.00x: nsup's supervisor uses less)."""
    base = results.get("nsup supervisor", {})
    print(f"{indent}{'':<31}{'RSS':>9}{'anon':>9}{'CPU (stat)':>12}{'CPU (sched)':>13}{'wake-ups/s':>12}{'threads':>9}"
          f"{'RSS / nsup':>12}{'CPU / nsup':>12}")
    for name, f in results.items():
        if "unavailable" in f:
            print(f"{indent}{name:<31}not available ({f['unavailable']})")
            continue
        r_rss = r_cpu = ""
        if name != "nsup supervisor" and "rss_mb" in base:
            r_rss = f"{f['rss_mb'] / base['rss_mb']:.2f}x"
            r_cpu = f"{f['cpu_pct_ns'] / base['cpu_pct_ns']:.2f}x" if base["cpu_pct_ns"] > 0 else "-"
        label = name + (f" {f['version']}" if f.get("version") else "")
        print(f"{indent}{label:<31}{f['rss_mb']:>6.1f} MB{f['anon_mb']:>6.1f} MB{f['cpu_pct']:>10.2f} %{f['cpu_pct_ns']:>11.2f} %"
              f"{f['wakeups_per_s']:>12.1f}{f['threads']:>9}{r_rss:>12}{r_cpu:>12}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--window", type=float, default=10.0, help="seconds of measurement per daemon")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds after start-up before the window")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # the finally blocks stop what was started
    use_bytecode()
    results = idle_figures(args.window, args.settle)
    print(f"footprint at rest, {args.window:g} s window each, one daemon at a time (CPU: % of one core)")
    print_idle(results, args.window)


if __name__ == "__main__":
    main()
