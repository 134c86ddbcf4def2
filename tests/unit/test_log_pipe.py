"""The worker's log pipe: a log file that takes no writes costs lines, never the process. /dev/full
stands for the full disk here (every write to it fails with ENOSPC): no mount, no root."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

WRITER = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    from node_worker.log_pipe import LogPipe

    pipe = LogPipe(Path(sys.argv[1]))
    for i in range(5000):
        print("x" * 100, flush=True)
        os.write(2, b"from fd 2, as a Rust logger writes\\n")
    pipe.close()
    Path(sys.argv[2]).write_text(pipe.describe() or "ok")
""")


def run(log: str, tmp_path) -> tuple[int, str]:
    result = tmp_path / "result"
    done = subprocess.run([sys.executable, "-c", WRITER, log, str(result)], cwd=REPO, capture_output=True, timeout=30)
    return done.returncode, result.read_text()


def test_a_log_that_takes_no_writes_drops_and_counts_and_the_process_lives(tmp_path):
    code, said = run("/dev/full", tmp_path)
    assert code == 0
    assert said.startswith("ENOSPC: No space left on device since ") and "bytes of log dropped" in said
    assert int(said.rsplit("; ", 1)[1].split()[0]) > 500_000  # everything written: 5000 x (101 + 36) bytes


def test_a_log_that_takes_writes_gets_every_line(tmp_path):
    log = tmp_path / "worker.log"
    code, said = run(str(log), tmp_path)
    assert code == 0 and said == "ok"
    lines = log.read_text().splitlines()
    assert lines.count("x" * 100) == 5000 and lines.count("from fd 2, as a Rust logger writes") == 5000
