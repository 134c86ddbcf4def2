"""One report of every benchmark, on this machine, in one run: `scripts/bench [--quick]`.

    .venv/bin/python scripts/benchmark_report.py [--quick] [--runs N] [--plain-runs N] ...

Sections, each from the script that measures it (run alone, each prints its own part):
  1. shutdown with positions open, nsup vs a plain TradingNode stopped with SIGTERM; many nodes
     stopped at once against one alone (scripts/benchmark.py, scripts/benchmark_plain.py)
  2. recovery on the paper venue (scripts/benchmark.py); the first respawn after a crash, nsup vs
     supervisord vs circusd (scripts/benchmark_respawn.py)
  3. control round trip, nsup vs supervisord vs circusd (scripts/benchmark_control.py)
  4. footprint: RSS and CPU at rest, nsup vs supervisord vs circusd (scripts/benchmark_idle.py)
  5. the Redis mirror: a record's cost, the stream's lag, a backlog, stops with Redis paused
     (scripts/benchmark_redis.py)
Everything runs one after another, never two measured things at once. Progress goes to stderr, the
report to stdout; it ends with a summary, each figure beside its peer from the same run. Medians; no
assertion, no pass or fail.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import signal
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchmark  # noqa: E402
import benchmark_control  # noqa: E402
import benchmark_idle  # noqa: E402
import benchmark_plain  # noqa: E402
import benchmark_redis  # noqa: E402
import benchmark_respawn  # noqa: E402
from benchmark_control import say  # noqa: E402


def med(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def ms(x: float | None, width: int = 10) -> str:
    return f"{'-':>{width}}" if x is None else f"{x * 1000:>{width - 3},.1f} ms"


def ratio(other: float | None, base: float | None) -> str:
    return "-" if other is None or not base else f"{other / base:.1f}x"


def post_stop_secs() -> float:
    from node_worker.worker import TIMEOUT_POST_STOP_SECS

    return TIMEOUT_POST_STOP_SECS


def section_stop(stop: dict, plain: dict, confirm: float) -> None:
    n_nsup, n_plain = len(stop["totals"]), len(plain["stop"])
    cfg = plain["config"] or {}
    settings = benchmark.default_settings()
    print("1. shutdown with 2 positions open: nsup vs a plain TradingNode stopped with SIGTERM")
    print(f"   nsup: demo node (sandbox venue), flat_confirm_secs={confirm:g} (default {settings['flat_confirm_secs']:g}), "
          f"heartbeat {settings['heartbeat_interval_secs']:g} s; its worker sets timeout_post_stop={post_stop_secs():g} s.")
    print(f"   plain: the same recipe in a plain TradingNode, config unchanged (timeout_post_stop={cfg.get('timeout_post_stop')} s),")
    print("   run()/dispose() in its own process, SIGTERM once both positions are open.")
    print()
    head = f"   {'':<40}{'nsup':>13}{'plain node':>14}{'plain / nsup':>14}"
    print(head)
    print(f"   {'':<40}{f'median of {n_nsup}':>13}{f'median of {n_plain}':>14}")
    rows = [
        ("SIGTERM -> STOPPED", med(stop["totals"]), med(plain["to_stopped"])),
        ("SIGTERM -> process exit", med(stop["to_exit"]), med(plain["stop"])),
    ]
    for label, a, b in rows:
        print(f"   {label:<40}{ms(a, 13)}{ms(b, 14)}{ratio(b, a):>14}")
    flatten = med(stop["phases"]["market_exit -> flat seen  (the flatten itself)"])
    print(f"   {'  of which the flatten itself':<40}{ms(flatten, 13)}{'none':>14}")
    print(f"   {'  of which nsup overhead':<40}{ms(med(stop['overheads']), 13)}{'-':>14}")
    post_stop = cfg.get("timeout_post_stop")
    print(f"   {'  of which asleep in timeout_post_stop':<40}{f'{post_stop_secs():g} s':>13}{f'{post_stop} s' if post_stop is not None else '-':>14}")
    print(f"   {'  beyond the flatten (to process exit)':<40}{ms(med(stop['beyond_flatten']), 13)}{'-':>14}")
    nsup_left = [len(r) for r in stop["residual"]]
    plain_left = [len(x) for x in plain["left_open"]]
    print(f"   {'positions left open at exit, per run':<40}{','.join(map(str, nsup_left)) or '-':>13}{','.join(map(str, plain_left)) or '-':>14}")
    print()
    print("   what the plain node left open (its cache when run() returned; the kernel's own 'Residual' warnings):")
    for i, (left, residual) in enumerate(zip(plain["left_open"], plain["residual"])):
        print(f"     run {i}: {len(left)} open: {'; '.join(left) or 'none'}   ({len(residual)} 'Residual' warnings in its log)")
    nsup_residual = sum(len(r) for r in stop["residual"])
    print(f"   nsup: flat before the node stopped in every run ({nsup_residual} 'Residual' warnings in {n_nsup} worker logs).")
    print("   The sandbox venue lives in the node's process, so its book dies with it; on a real venue the plain")
    print("   node's positions stay open there, unattended.")
    print()
    print(f"   nsup, where the time goes (the journal's timestamps), median of {n_nsup}:")
    for name, samples in stop["phases"].items():
        print(f"     {name:<52}{ms(med(samples))}")
    print(f"     {'stop request -> STOPPED, total':<52}{ms(med(stop['totals']))}")
    print(f"     {'nsup overhead (total - flatten - confirm - node stop)':<52}{ms(med(stop['overheads']))}")
    print(f"     {'STOPPED -> nsup process exit':<52}{ms(med([e - t for e, t in zip(stop['to_exit'], stop['totals'])]))}")
    print(f"   plain node, where the time goes, median of {n_plain}:")
    print(f"     {'SIGTERM -> TradingNode STOPPED  (post-stop sleep)':<52}{ms(med(plain['to_stopped']))}")
    print(f"     {'SIGTERM -> node.run() returned':<52}{ms(med(plain['to_run_returned']))}")
    print(f"     {'run() returned -> process exit  (dispose, exit)':<52}{ms(med(plain['run_returned_to_exit']))}")
    for note in stop["skipped"] + plain["errors"]:
        print(f"   note: {note}")
    for i, code in enumerate(plain["codes"]):
        if code != 0:
            print(f"   note: plain run {i} exited {code}")


def section_fleet(fleet: dict, nodes: int) -> None:
    one, many = med(fleet["one"]), med(fleet["many"])
    print(f"   many nodes stopped at once: {nodes} nsups, each with its demo node holding 2 positions (default settings),")
    print(f"   SIGTERM to all, until the last has exited; against one alone, alternately, {len(fleet['many'])} times each")
    print(f"     {'one node alone: SIGTERM -> exit':<52}{ms(one)}")
    print(f"     {f'{nodes} nodes at once: SIGTERM -> the last exit':<52}{ms(many)}   {ratio(many, one)} one node's stop")
    for error in fleet["errors"]:
        print(f"   note: {error}")


def section_recovery(recovery: dict, latencies: list[float], restarts: list[float], runs: int) -> None:
    print(f"2. recovery on the paper venue (its own process) with positions open, median of {runs}")
    print("   heartbeat 0.2 s, hang after 5 missed beats, restart backoff 0.05 s; each from the moment of the fault")
    notes = {"crash -> RUNNING again": "(backoff and reconciliation included)",
             "hang detected": "(SIGSTOP; 5 missed beats of 0.2 s, plus one beat)",
             "killed nsup -> re-attached": "(kill -9 of nsup; the new nsup's start-up included)",
             "crash detected": "(kill -9 of the worker)"}
    for name, samples in recovery.items():
        print(f"     {name:<48}{ms(med(samples))}   {notes.get(name, '')}")
    p90 = statistics.quantiles(latencies, n=10)[-1] if len(latencies) >= 2 else None
    print(f"   paper venue: {len(latencies)} fills, {len(restarts)} kill -9 restarts")
    print(f"     {'submit -> fill seen in the strategy':<48}{ms(med(latencies))}   p90 {ms(p90, 0).strip()}")
    print(f"     {'worker spawned -> RUNNING, positions reconciled':<48}{ms(med(restarts))}")


def section_footprint(idle: dict, stop: dict, window: float, import_secs: float) -> None:
    print(f"4. footprint at rest: RSS and CPU, {window:g} s window each, one daemon at a time (CPU: % of one core)")
    benchmark_idle.print_idle(idle, window, indent="   ")
    print("   nsup is not idle in the sense the others are: it runs the demo node (two positions held, quotes every")
    print("   100 ms per instrument in the worker), takes a heartbeat with the node's status every 1.0 s (the default")
    print("   heartbeat_interval_secs) and logs it. supervisord and circusd each run `sleep 3600`.")
    print("   RSS = VmRSS at the window's end; anon = RssAnon, the same without mapped files (shared libraries),")
    print("   whose resident share follows the page cache and differs between installs of the same packages.")
    print("   CPU (stat) = utime+stime from /proc/<pid>/stat (10 ms ticks: 0.10 % is one tick in 10 s);")
    print("   CPU (sched) = the sum of its threads' /proc/<pid>/task/*/schedstat (ns).")
    print("   ratios: this row / nsup supervisor (above 1.00x nsup's supervisor uses less), CPU from CPU (sched).")
    if stop["sup_rss"]:
        s, w = med(stop["sup_rss"]), med(stop["wrk_rss"])
        print(f"   during the stop runs (heartbeat {benchmark.default_settings()['heartbeat_interval_secs']:g} s): supervisor RSS "
              f"{s:.1f} MB, worker RSS {w:.1f} MB (worker / supervisor {w / s:.1f}x)")
    print(f"   supervisor import, fresh interpreter, Python start included: {import_secs * 1000:.0f} ms")


def summary(stop: dict, fleet: dict, nodes: int, respawn: dict, control: list, idle: dict) -> None:
    """Each figure beside its peer from this run, and what it aims at."""
    figs = {r.name: r.figures() for r in control if r.inproc or r.cli}
    nsup = figs.get("nsup", (None,) * 4)

    def row(label: str, value: str, peer: str, peer_value: str, ratio_text: str, aim: str) -> None:
        print(f"   {label:<36}{value:>11}   {peer:<22}{peer_value:>11}{ratio_text:>9}   {aim}")

    def fig(name: str, i: int, fmt) -> str:
        value = figs.get(name, (None,) * 4)[i]
        return "-" if value is None else fmt(value)

    us, ms_ = (lambda x: f"{x * 1e6:,.0f} µs"), (lambda x: f"{x * 1e3:,.1f} ms")

    def ratio(a: float | None, b: float | None) -> str:
        return "-" if a is None or not b else f"{a / b:.2f}x"

    print("summary: each figure beside its peer, measured in this run (ratios: the peer's / nsup's, or as labelled)")
    row("", "nsup", "peer", "", "ratio", "aim")
    for peer, cli in (("supervisord", "supervisorctl"), ("circusd", "circusctl")):
        row("nsupctl status, whole process" if peer == "supervisord" else "", fig("nsup", 2, ms_), f"{cli} status",
            fig(peer, 2, ms_), ratio(figs.get(peer, (None,) * 4)[2], nsup[2]), "at least 1.5x" if peer == "supervisord" else "at least 2x")
    row("status round trip in-process, p50", fig("nsup", 0, us), "bare pyzmq echo", fig("pyzmq echo", 0, us),
        ratio(nsup[0], figs.get("pyzmq echo", (None,) * 4)[0]).replace("x", "x*"), "at most 1.4x* (nsup / echo)")
    row("", "", "circusd", fig("circusd", 0, us), ratio(figs.get("circusd", (None,) * 4)[0], nsup[0]), "at least 2x")
    to_stopped = med([t - f for t, f in zip(stop["totals"], stop["phases"]["market_exit -> flat seen  (the flatten itself)"])])
    row("stop beyond the flatten, to exit", ms(med(stop["beyond_flatten"]), 0).strip(), "to STOPPED", ms(to_stopped, 0).strip(),
        "", "at most 250 ms")
    first = med(respawn["nsup"]["first"])
    for peer in ("supervisord", "circusd"):
        samples = respawn.get(peer)
        value = med(samples) if isinstance(samples, list) else None
        row("first respawn after a crash" if peer == "supervisord" else "", ms(first, 0).strip() if peer == "supervisord" else "",
            peer, ms(value, 0).strip(), ratio(value, first), "at most 100 ms" if peer == "supervisord" else "")
    one, many = med(fleet["one"]), med(fleet["many"])
    row(f"{nodes} nodes stopped at once", ms(many, 0).strip(), "one node alone", ms(one, 0).strip(),
        ratio(many, one).replace("x", "x*"), "at most 1.3x* (many / one)")
    sup, circus = idle.get("nsup supervisor", {}), idle.get("circusd", {})
    if "rss_mb" in sup and "rss_mb" in circus:
        row("supervisor RSS at rest", f"{sup['rss_mb']:.1f} MB", "circusd", f"{circus['rss_mb']:.1f} MB",
            f"{circus['rss_mb'] / sup['rss_mb']:.2f}x", "below circusd's")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer runs and a shorter window (about 2 minutes)")
    parser.add_argument("--runs", type=int, help="nsup graceful stops (default 7; --quick 3)")
    parser.add_argument("--plain-runs", type=int, help="plain TradingNode stops (default 3; --quick 1)")
    parser.add_argument("--recovery-runs", type=int, help="recovery and paper venue runs (default 3; --quick 1)")
    parser.add_argument("--calls", type=int, help="in-process status calls per daemon (default 1000; --quick 300)")
    parser.add_argument("--cli-runs", type=int, help="CLI runs per daemon (default 30; --quick 10)")
    parser.add_argument("--window", type=float, help="seconds of CPU measurement per daemon (default 10; --quick 5)")
    parser.add_argument("--confirm", type=float, default=benchmark.default_settings()["flat_confirm_secs"],
                        help="flat_confirm_secs for the stop runs (default: the config's default)")
    parser.add_argument("--nodes", type=int, default=8, help="nodes stopped at once (default 8)")
    parser.add_argument("--fleet-runs", type=int, help="runs of one node and of --nodes stopped at once (default 2; --quick 1)")
    parser.add_argument("--records", type=int, help="journal records per Redis mirror figure (default 1000; --quick 300)")
    args = parser.parse_args()
    q = args.quick
    runs = args.runs or (3 if q else 7)
    plain_runs = args.plain_runs or (1 if q else 3)
    recovery_runs = args.recovery_runs or (1 if q else 3)
    calls = args.calls or (300 if q else 1000)
    cli_runs = args.cli_runs or (10 if q else 30)
    window = args.window or (5.0 if q else 10.0)
    records = args.records or (300 if q else 1000)
    fleet_runs = args.fleet_runs or (1 if q else 2)
    args.calls, args.cli_runs, args.warmup = calls, cli_runs, 50  # what benchmark_control.report prints
    # SIGTERM to this script still runs every finally, so nothing it started is left behind.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    benchmark_control.use_bytecode()  # nsup as installed: from bytecode, as the peers run
    started, load_before = time.perf_counter(), os.getloadavg()
    say(f"1/9 nsup graceful stop with positions open, {runs} runs")
    stop = benchmark.stop_figures(runs, args.confirm)
    import_secs = benchmark.startup_secs()
    say(f"2/9 plain TradingNode stopped with SIGTERM, {plain_runs} runs (about 11 s each)")
    plain = benchmark_plain.plain_figures(plain_runs)
    say(f"3/9 one node, then {args.nodes} at once, stopped; {fleet_runs} runs each")
    fleet = benchmark.fleet_stop_figures(args.nodes, fleet_runs)
    say(f"4/9 paper venue, {recovery_runs} runs")
    with tempfile.TemporaryDirectory(prefix="nb-") as tmp:
        latencies, restarts = benchmark.paper_venue_figures(Path(tmp), runs=recovery_runs)
    say(f"5/9 recovery, {recovery_runs} runs")
    with tempfile.TemporaryDirectory(prefix="nr-") as tmp:
        recovery = benchmark.recovery_figures(Path(tmp), runs=recovery_runs)
    say("6/9 control round trip")
    results, versions = benchmark_control.control_figures(calls, 50, cli_runs)
    say(f"7/9 first respawn after a crash, {recovery_runs} runs")
    respawn = benchmark_respawn.respawn_figures(recovery_runs, versions.get("problems"))
    say(f"8/9 footprint at rest, {window:g} s windows")
    idle = benchmark_idle.idle_figures(window, 2.0, versions.get("problems"))
    say(f"9/9 Redis mirror, {records} records a figure, {recovery_runs} stops a case")
    redis = benchmark_redis.redis_figures(records, recovery_runs)
    elapsed = time.perf_counter() - started

    command = "scripts/bench " + shlex.join(sys.argv[1:])
    print(f"nsup benchmark report, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC")
    print(f"command: {command.strip()}")
    print(f"machine: {platform.node()}, {os.cpu_count()} CPUs, {platform.platform()}")
    load_after = os.getloadavg()
    print(f"load average (1, 5, 15 min): {', '.join(f'{x:.2f}' for x in load_before)} at the start, "
          f"{', '.join(f'{x:.2f}' for x in load_after)} at the end")
    print(f"Python {platform.python_version()}, NautilusTrader {version('nautilus_trader')}, pyzmq {version('pyzmq')}; "
          f"peers from .bench-venv (Python {versions['bench']})")
    print("medians unless marked; ratios are other / nsup: above 1.0x nsup's figure is the lower (faster, smaller)")
    print()
    section_stop(stop, plain, args.confirm)
    print()
    section_fleet(fleet, args.nodes)
    print()
    section_recovery(recovery, latencies, restarts, recovery_runs)
    benchmark_respawn.report(respawn)
    print()
    benchmark_control.report(results, args, versions, None, prefix="3. ")
    print()
    section_footprint(idle, stop, window, import_secs)
    print()
    benchmark_redis.report(redis, prefix="5. ")
    print()
    summary(stop, fleet, args.nodes, respawn, results, idle)
    print()
    print(f"total run time {elapsed:.0f} s (virtualenvs ready)")


if __name__ == "__main__":
    main()
