"""nsup never dies into an unsupervised node, and loses no record it acknowledged (issue 15): a real nsup,
a real worker on the paper venue with positions open, and a state dir that fills up, turns
read-only, loses its journal, or is flooded by a hostile client.

The disks are real: a small tmpfs filled with a file (ENOSPC), and ext4 on a loop device made
read-only by an error (errors=remount-ro and the kernel's trigger_fs_error: EROFS on every write,
open files too, as a failing disk does). A plain `mount -o remount,ro` is refused while files are
open for writing (EBUSY), and a read-only bind mount leaves the open journal writable, so neither
would test what a failing disk does. Mounting needs root (CAP_SYS_ADMIN); without it these tests
skip and say so. tests/unit/test_guard_stateful.py injects write failures without a mount.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import zmq

from supervisor.control import protocol as c
from supervisor.control.client.client import ControlClient
from supervisor.control.server.listener import BUDGET_PER_MINUTE
from supervisor.daemon import EXIT_ABORTED
from supervisor.journal import read_journal
from tests.e2e.conftest import REPO, pid_alive
from tests.e2e.test_paper_venue import ALWAYS_IN, drill, on_venue, venue, venue_book  # noqa: F401

pytestmark = pytest.mark.e2e

STUCK_SOON = {"flatten_rounds": 1, "flatten_round_wait_secs": 0.5}


def nsupctl(state_dir: Path, *args: str):
    return subprocess.run([sys.executable, "-m", "supervisor.control.client.nsupctl", "--state-dir", str(state_dir),
                           *args], cwd=REPO, capture_output=True, text=True, timeout=60)


def status(state_dir: Path) -> dict:
    result = nsupctl(state_dir, "--json", "status")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def wait_until(predicate, timeout: float = 15.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := predicate():
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@contextlib.contextmanager
def mounted(*command: str, at: Path):
    at.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or subprocess.run([*command, str(at)], capture_output=True).returncode:
        pytest.skip("cannot mount here (needs root, CAP_SYS_ADMIN)")
    try:
        yield at
    finally:
        subprocess.run(["umount", "-l", str(at)], capture_output=True)


def fill(directory: Path) -> None:
    """Every free page of the file system taken: the next write that needs one fails with ENOSPC."""
    with open(directory / "filler", "wb", buffering=0) as f:
        for size in (1 << 20, 4096, 1):
            with contextlib.suppress(OSError):
                while True:
                    f.write(b"\0" * size)


def on_state_dir(nsup_run, venue, state_dir: Path, supervisor: dict | None = None, **sections):
    """nsup trading on the paper venue with its state dir at `state_dir`; RUNNING, both positions open."""
    run = nsup_run(on_venue(venue, **ALWAYS_IN, exit_max_attempts=5), {"state_dir": str(state_dir), **(supervisor or {})},
                   **sections)
    run.wait_for_state("RUNNING")
    run.wait_for_positions(2)
    return run


def until_degraded(run, commands=("pause", "resume"), says=lambda s: "journal not durable" in (s["degraded"] or "")):
    """Commands (each on record, and logged by the worker) until nsup's status `says` so: the last page of
    a file may take a few more lines after the file system is full."""
    for i in range(60):
        done = nsupctl(run.state_dir, commands[i % len(commands)])
        run.answered = getattr(run, "answered", 0) + (done.returncode == 0)
        if says(now := status(run.state_dir)):
            return now
    raise AssertionError(f"never came to pass: {now}")


def unwritten(run) -> list[dict]:
    """The journal records nsup printed as it exited because the disk never took them."""
    return [line for line in run.log_lines if isinstance(line, dict) and "kind" in line and "id" in line]


def test_a_full_state_dir_while_running_and_while_halting(nsup_run, venue, tmp_path):
    with mounted("mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", at=tmp_path / "disk") as disk:
        run = on_state_dir(nsup_run, venue, disk / "state", STUCK_SOON)
        worker = run.worker_pid

        # RUNNING: the disk fills; nsup, the worker and the control socket go on, and say so
        fill(disk)
        degraded = until_degraded(run)
        assert degraded["degraded"].startswith("degraded: journal not durable (ENOSPC: No space left on device;")
        assert degraded["records_held"] >= 1 and degraded["state"] == "RUNNING"
        until_degraded(run, says=lambda s: (s["worker_log"] or "").startswith("ENOSPC"))
        assert pid_alive(worker) and run.process.poll() is None

        # ... space is freed: every record held reaches the journal, in order, with the gap on record
        (disk / "filler").unlink()
        restored = run.wait_for(lambda: run.records("journal_restored"), what="journal_restored")[0]
        kinds = [r["kind"] for r in run.journal]
        assert kinds.index("journal_degraded") < kinds.index("journal_restored") and restored["written_late"] >= 2
        assert len(run.records("command")) == run.answered, "every command answered while the disk was full is on file"
        assert any("worker.log cannot be written (ENOSPC" in r["text"] for r in run.records("worker_notice"))
        assert nsupctl(run.state_dir, "pause").returncode == 0  # the worker logs the command: its log takes it
        wait_until(lambda: status(run.state_dir)["worker_log"] is None, what="worker.log written again")
        assert "bytes of this log were dropped" in (run.state_dir / "worker.log").read_text()

        # HALTING: the venue rejects the closes, the disk fills again; an approval cannot be put on file
        drill(venue, reject_orders=True)
        assert nsupctl(run.state_dir, "stop").returncode == 0
        run.wait_for(lambda: run.records("halt_stuck"), what="STUCK")
        fill(disk)
        until_degraded(run, commands=("pause",))  # refused in STUCK, and each refusal on record
        abort = nsupctl(run.state_dir, "abort", "--confirm", "DEMO-001", "--reason", "disk full")
        assert abort.returncode == 1 and "not durable (ENOSPC" in abort.stderr, abort.stderr
        # ... and the stop goes on to flat, on a full disk: flattening is the safe direction
        drill(venue, reject_orders=False)
        assert nsupctl(run.state_dir, "flatten").returncode == 0
        assert run.exit_code() == 0
        assert venue_book(venue) == {} and not pid_alive(worker)
        # Nothing was lost: what the disk took at the last is in the journal, the rest in nsup's log, whole
        kept = run.journal + unwritten(run)
        assert [(r["source"], r["dest"]) for r in kept if r["kind"] == "transition"][-2:] == [("STUCK", "FLAT"),
                                                                                            ("FLAT", "STOPPED")]
        assert any(r["kind"] == "refusal" and "not durable" in r["reason"] for r in kept)
        assert not [line for line in run.log_lines if isinstance(line, str) and "Traceback" in line]


def test_a_state_dir_whose_disk_fails_read_only(nsup_run, venue, tmp_path, redis_server):
    image = Path(tempfile.mkdtemp(prefix="nsup-ext4-")) / "disk.img"
    with open(image, "wb") as f:
        f.truncate(32 << 20)
    subprocess.run(["mkfs.ext4", "-q", str(image)], check=True, capture_output=True)
    with mounted("mount", "-o", "loop,errors=remount-ro", str(image), at=tmp_path / "disk") as disk:
        device = Path(subprocess.run(["findmnt", "-no", "SOURCE", str(disk)], capture_output=True, text=True).stdout.strip()).name
        run = on_state_dir(nsup_run, venue, disk / "state", redis={"url": redis_server.url, "name": "ro"})
        worker = run.worker_pid
        Path(f"/sys/fs/ext4/{device}/trigger_fs_error").write_text("nsup test: the disk fails\n")
        with pytest.raises(OSError) as read_only:
            (disk / "probe").write_text("x")
        assert read_only.value.errno == errno.EROFS

        degraded = until_degraded(run)
        assert "journal not durable (EROFS" in degraded["degraded"] and "state.json not durable (EROFS" in degraded["degraded"]
        command = wait_until(lambda: next((r for r in reversed(_stream(redis_server, "ro")) if r["kind"] == "command"), None),
                             what="the command in Redis")
        assert command["id"] not in {r["id"] for r in read_journal(run.state_dir / "journal.jsonl")}, \
            "a record held in memory, not on file, is in Redis meanwhile"

        run.signal(signal.SIGTERM)
        assert run.exit_code() == 0 and venue_book(venue) == {} and not pid_alive(worker)
        stream_ids = {r["id"] for r in _stream(redis_server, "ro")}
        held = unwritten(run)
        assert held and {r["id"] for r in held} <= stream_ids, "nothing held is lost: Redis has it, and the log"
        assert any(r["kind"] == "transition" and r["dest"] == "STOPPED" for r in held)
    image.unlink()
    image.parent.rmdir()


NAUTILUS_LOGGING = """
import sys
from nautilus_trader.common.component import Logger, init_logging
from nautilus_trader.common.enums import LogLevel
from nautilus_trader.model.identifiers import TraderId
if sys.argv[1] == "through-the-pipe":
    from pathlib import Path
    from node_worker.log_pipe import LogPipe
    pipe = LogPipe(Path("/dev/full"))
guard = init_logging(trader_id=TraderId("T-001"), level_stdout=LogLevel.INFO)
log = Logger("X")
for i in range(2000):
    log.info("x" * 200)
"""


@pytest.mark.parametrize("how, code", [("straight", -signal.SIGABRT), ("through-the-pipe", 0)])
def test_nautilus_logging_to_a_full_disk_aborts_the_process_unless_through_the_pipe(how, code):
    """The fact behind node_worker/log_pipe.py (NautilusTrader 1.231): its Rust logger reports a failed
    write to stdout on stderr, and when that fails too, it aborts. /dev/full: every write is ENOSPC."""
    with open("/dev/full", "wb") as full:
        done = subprocess.run([sys.executable, "-c", NAUTILUS_LOGGING, how], cwd=REPO, stdout=full, stderr=full,
                              timeout=60)
    assert done.returncode == code


def _stream(redis_server, name: str) -> list[dict]:
    from supervisor.redis_mirror import connect

    client = connect(redis_server.url, 2.0)
    try:
        return [json.loads(fields[b"record"]) for _, fields in client.xrange(f"nsup:{name}:journal")]
    finally:
        client.close()


def test_a_lost_journal_a_flood_and_a_second_demo(nsup_run, venue):
    run = nsup_run(on_venue(venue, **ALWAYS_IN))
    run.wait_for_state("RUNNING")
    run.wait_for_positions(2)
    journal, worker = run.state_dir / "journal.jsonl", run.worker_pid

    # The journal deleted underneath nsup: the next record is in a new file, after the record of the gap
    last_before = read_journal(journal)[-1]["id"]
    journal.unlink()
    assert nsupctl(run.state_dir, "pause").returncode == 0
    gap, *after = read_journal(journal)
    assert gap["kind"] == "journal_replaced" and gap["how"] == "deleted" and gap["ids_in_previous"][1] == last_before
    assert [r["command"] for r in after if r["kind"] == "command"] == ["pause"]
    # ... and rotated (renamed, as logrotate does): the same, and nothing is lost
    journal.rename(run.state_dir / "journal.jsonl.1")
    assert nsupctl(run.state_dir, "resume").returncode == 0
    rotated = read_journal(run.state_dir / "journal.jsonl.1")
    gap, *after = read_journal(journal)
    assert gap["how"] == "moved or replaced" and gap["ids_in_previous"] == [rotated[0]["id"], rotated[-1]["id"]]
    assert [r["command"] for r in after if r["kind"] == "command"] == ["resume"]
    assert nsupctl(run.state_dir, "tail", "-n", "2").returncode == 0

    # A flood from one client for 10 s, beside another that asks for the status
    size_before = journal.stat().st_size
    flood = _flood(run.state_dir, secs=10.0)
    assert flood["busy"] == 0 and flood["unanswered"] == 0, flood
    assert flood["status_p99_ms"] < 250, flood
    assert run.process.poll() is None and pid_alive(worker)

    # nsup demo on this live state dir starts nothing, not even its paper venue
    demo = subprocess.run([sys.executable, "-m", "supervisor", "demo", "--state-dir", str(run.state_dir)], cwd=REPO,
                          capture_output=True, text=True, timeout=30)
    assert demo.returncode == 2 and "another nsup already supervises this node" in demo.stderr
    assert len(demo.stderr.strip().splitlines()) == 1 and "Traceback" not in demo.stderr
    assert not (run.state_dir / "venue.sock").exists() and not (run.state_dir / "venue.log").exists()

    during = journal.stat().st_size - size_before
    run.signal(signal.SIGTERM)
    assert run.exit_code() == 0 and venue_book(venue) == {} and not pid_alive(worker)
    refusals = [r for r in read_journal(journal) if r["kind"] == "refusal"]
    counts = [r for r in refusals if "repeated" in r]  # the coalesced counts, on record as nsup exits
    flood_bytes = during + sum(len(json.dumps(r)) for r in counts)
    print(f"\nflood: {flood}; the journal grew {flood_bytes} bytes for it ({len(refusals)} refusal records, "
          f"{len(run.records('command'))} commands in all)")
    assert flood_bytes < 25_000, flood_bytes
    assert sum(r.get("repeated", 1) for r in refusals) >= flood["sent"] - BUDGET_PER_MINUTE, "every refusal is counted"


def _flood(state_dir: Path, secs: float) -> dict:
    """One client sends as fast as it can: oversized frames, over-long fields and valid requests that
    are refused (abort in RUNNING, 60-character actors); another asks for the status every 20 ms."""
    endpoint = json.loads((state_dir / "endpoints.json").read_text())["control"][0]
    context = zmq.Context.instance()
    flooder = context.socket(zmq.DEALER)
    flooder.setsockopt(zmq.LINGER, 0)
    flooder.connect(endpoint)
    actor = {"user": "u" * 64, "host": "h" * 255}
    kinds = [b"{" + b" " * (c.MAX_REQUEST_BYTES + 1) + b"}",
             json.dumps({"v": 1, "id": "f", "command": "abort", "actor": {**actor, "user": "u" * 65}}).encode(),
             json.dumps({"v": 1, "id": "f", "command": "abort", "actor": actor}).encode(),
             json.dumps({"v": 1, "id": "f", "command": "pause", "actor": actor}).encode()]
    watcher = ControlClient(endpoint, timeout_secs=2.0)
    sent = answered = busy = unanswered = 0
    latencies = []
    deadline = time.monotonic() + secs
    next_status = time.monotonic()
    while time.monotonic() < deadline:
        with contextlib.suppress(zmq.Again):
            flooder.send(kinds[sent % len(kinds)], flags=zmq.NOBLOCK)
            sent += 1
        while flooder.poll(0):
            flooder.recv()
            answered += 1
        if time.monotonic() >= next_status:
            next_status += 0.02
            started = time.monotonic()
            try:
                reply = watcher.call("status")
            except Exception:  # noqa: BLE001 (counted: the watcher must always be answered)
                unanswered += 1
                continue
            latencies.append(time.monotonic() - started)
            busy += reply.status == "error" and reply.errno == c.Errno.BUSY
    while flooder.poll(500):
        flooder.recv()
        answered += 1
    flooder.close()
    watcher.close()
    latencies.sort()
    return {"sent": sent, "answered": answered, "statuses": len(latencies), "busy": busy, "unanswered": unanswered,
            "status_p50_ms": round(latencies[len(latencies) // 2] * 1000, 2),
            "status_p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 2)}


def test_an_approved_abort_of_a_frozen_worker_ends_it_then_says_so(nsup_run, venue):
    """The worst case: the worker freezes between the challenge and its answer, so nsup still takes it for
    a worker that answers and asks it to stop; it acknowledges nothing, and is killed under the approval."""
    run = nsup_run(on_venue(venue, **ALWAYS_IN, exit_max_attempts=5), STUCK_SOON)
    run.wait_for_state("RUNNING")
    run.wait_for_positions(2)
    drill(venue, reject_orders=True)
    assert nsupctl(run.state_dir, "stop").returncode == 0
    run.wait_for(lambda: run.records("halt_stuck"), what="STUCK")
    worker = run.worker_pid
    client = ControlClient.from_state_dir(run.state_dir, timeout_secs=30.0)
    try:
        challenge = client.call("abort")
        os.kill(worker, signal.SIGSTOP)  # frozen: it will acknowledge nothing
        started = time.monotonic()
        reply = client.call("abort_confirm", nonce=challenge.data["nonce"], confirmation="DEMO-001", reason="it froze")
        answered_after = time.monotonic() - started
        gone_at_answer = not pid_alive(worker)
    finally:
        client.close()
    assert reply.status == "ok" and "ended with its positions open" in reply.data["result"], reply
    assert gone_at_answer, "the answer comes only once the worker is gone"
    assert run.exit_code() == EXIT_ABORTED
    approval = run.records("approval")[0]
    ends = run.records("worker_end")
    assert [e["action"] for e in ends] == ["stop_command", "sigkill"] and {e["approval_id"] for e in ends} == {approval["nonce"]}
    assert any("not acknowledged" in r["reason"] for r in run.records("fault"))
    took = _secs_between(approval["ts"], run.records("worker_exit")[-1]["ts"])
    print(f"\nfrozen worker: approval -> worker exit {took:.3f}s; the answer {answered_after:.3f}s after the confirmation")
    assert took < 3.0, took  # the stop's answer timeout (2 s), then the kill
    assert run.transitions()[-2:] == [("STUCK", "ABORTING"), ("ABORTING", "ABORTED")]


def _secs_between(a: str, b: str) -> float:
    from datetime import datetime

    return (datetime.fromisoformat(b) - datetime.fromisoformat(a)).total_seconds()
