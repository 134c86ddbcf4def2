"""Figures for the Redis mirror: what it costs a journal record, how far behind the stream runs, how
fast a backlog reaches Redis once it is back, and what a Redis that stops answering does to a stop.

    .venv/bin/python scripts/benchmark_redis.py [--records N] [--runs N]

Each figure uses a private redis-server (append-only, fsync always) on a free port. Medians and
ratios; no assertion, no pass or fail.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import msgspec

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from supervisor.journal import Journal  # noqa: E402
from supervisor.redis_mirror import Keys, RedisMirror, RedisSection  # noqa: E402
from tests.e2e.conftest import NsupRun  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402

sys.path.insert(0, str(REPO / "scripts"))
from benchmark import default_settings  # noqa: E402

STOP_CASES = (
    ("no Redis", None),
    ("Redis answering", {}),
    ("Redis paused (SIGSTOP) at the stop", {"pause": True}),
    ("Redis paused, node cache in it too", {"pause": True, "node_cache": True}),
)


def _mirror(server: RedisServer, path: Path) -> tuple[RedisMirror, Journal]:
    section = msgspec.convert({"url": server.url, "timeout_secs": 2.0, "drain_secs": 0.5}, RedisSection)
    mirror = RedisMirror(section, "bench", path)
    mirror.load_state()
    journal = Journal(path, id_floor=mirror.stream_end)
    journal.listen(mirror.wake)
    mirror.start()
    return mirror, journal


def _record_secs(journal: Journal, n: int) -> list[float]:
    samples = []
    for i in range(n):
        started = time.perf_counter()
        journal.record("transition", source="RUNNING", dest="HALTING", n=i, positions_open=2)
        samples.append(time.perf_counter() - started)
    return samples


def _wait_for_stream(server: RedisServer, length: int, timeout: float = 60.0) -> float:
    client, started = server.client(), time.perf_counter()
    while client.xlen(Keys("bench").journal) < length:
        if time.perf_counter() - started > timeout:
            raise TimeoutError(f"the stream did not reach {length} records")
        time.sleep(0.002)
    return time.perf_counter() - started


def redis_figures(records: int, runs: int) -> dict:
    fig: dict = {"record": {}, "lag": [], "backlog": None, "stops": {}}
    with tempfile.TemporaryDirectory(prefix="nrb-") as tmp:
        tmp = Path(tmp)
        plain = Journal(tmp / "plain.jsonl")
        fig["record"]["journal alone"] = _record_secs(plain, records)
        plain.close()

        server = RedisServer(tmp / "redis").start()
        try:
            mirror, journal = _mirror(server, tmp / "mirrored.jsonl")
            fig["record"]["mirrored, Redis answering"] = _record_secs(journal, records)
            _wait_for_stream(server, records)
            fig["lag"] = _ship_lags(server, journal, min(records, 200))
            server.pause()
            fig["record"]["mirrored, Redis paused"] = _record_secs(journal, records)
            server.resume()
            total = records + min(records, 200) + records
            _wait_for_stream(server, total)

            server.kill()  # a backlog: written while Redis is down, shipped when it is back
            backlog = 10 * records
            for i in range(backlog):
                journal.record("fault", reason="backlog", n=i)
            server.start()
            fig["backlog"] = (backlog, _wait_for_stream(server, total + backlog))
            mirror.close()
            journal.close()
        finally:
            server.kill()
        for name, case in STOP_CASES:
            fig["stops"][name] = [_stop_secs(tmp / f"stop-{len(fig['stops'])}-{i}", case) for i in range(runs)]
    return fig


def _ship_lags(server: RedisServer, journal: Journal, n: int) -> list[float]:
    """Seconds from `record` returning to the record arriving at a blocked XREAD reader."""
    written: dict[str, float] = {}
    lags: list[float] = []
    client = server.client()
    last = client.xrevrange(Keys("bench").journal, count=1)[0][0]

    def read() -> None:
        nonlocal last
        while len(lags) < n:
            for _key, entries in client.xread({Keys("bench").journal: last}, block=1000) or []:
                for entry_id, _fields in entries:
                    seen = time.perf_counter()
                    last = entry_id
                    if entry_id.decode() in written:
                        lags.append(seen - written[entry_id.decode()])

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    time.sleep(0.1)
    for i in range(n):
        record = journal.record("command", n=i)
        written[record["id"]] = time.perf_counter()
        time.sleep(0.01)
    reader.join(10)
    return lags


def _stop_secs(directory: Path, case: dict | None) -> float:
    """SIGTERM to nsup's exit, two positions open, on the sandbox venue."""
    server = RedisServer(directory.with_name(directory.name + "-redis")).start() if case is not None else None
    sections = {}
    if server is not None:
        sections["redis"] = {"url": server.url, "name": "bench", "timeout_secs": 2.0, "drain_secs": 2.0,
                             "node_cache": bool(case.get("node_cache"))}
    run = NsupRun(directory, {"hold_secs": 3600.0, "flat_secs": 0.0}, default_settings(), **sections).start()
    try:
        run.wait_for_state("RUNNING")
        run.wait_for_positions(2)
        if server is not None and case.get("pause"):
            server.pause()
        sent = time.perf_counter()
        run.signal(15)
        code = run.exit_code(timeout=120)
        took = time.perf_counter() - sent
        return took if code == 0 else float("nan")
    finally:
        run.kill_all()
        if server is not None:
            server.kill()


def _ms(samples: list[float], q: float | None = None) -> str:
    if not samples:
        return "       n/a"
    value = statistics.median(samples) if q is None else statistics.quantiles(samples, n=100)[int(q) - 1]
    return f"{value * 1000:8.3f} ms"


def report(fig: dict, prefix: str = "") -> None:
    print(f"{prefix}Redis mirror ([redis]; private redis-server, appendfsync always)")
    base = statistics.median(fig["record"]["journal alone"])
    print("   journal.record() (fsync'd line)      median        p99   vs journal alone")
    for name, samples in fig["record"].items():
        print(f"   {name:<34} {_ms(samples)} {_ms(samples, 99)}   {statistics.median(samples) / base:5.2f}x")
    print(f"   record -> in the stream (XREAD)    {_ms(fig['lag'])} {_ms(fig['lag'], 99)}   ({len(fig['lag'])} records, 10 ms apart)")
    count, secs = fig["backlog"]
    print(f"   backlog of {count} records written while Redis was down: in the stream {secs:.2f} s after it came back "
          f"({count / secs:,.0f} records/s)")
    print("   SIGTERM to nsup's exit, 2 positions open (sandbox venue), median of runs:")
    none = statistics.median(fig["stops"]["no Redis"])
    for name, samples in fig["stops"].items():
        good = [s for s in samples if s == s]
        value = statistics.median(good) if good else float("nan")
        print(f"     {name:<40} {value:6.2f} s   {value / none:5.2f}x   ({len(good)}/{len(samples)} runs exited 0)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    report(redis_figures(args.records, args.runs))


if __name__ == "__main__":
    main()
