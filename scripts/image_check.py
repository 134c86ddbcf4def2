"""Runs inside the nsup image (scripts/build-image --check), as the image's own user: the image's
entrypoint on a sandbox demo node, RUNNING with positions, the health check and nsup-ready answering,
then SIGTERM (what `docker stop` sends) and a clean, flat exit.

Where no container runtime can run a container, scripts/build-image runs this in a build step on
top of the image, with the image's filesystem, user, PATH and working directory. What that does not
give: nsup as PID 1 of its own PID namespace. The signal and its handling are the same.

    python3 image_check.py ENTRYPOINT_JSON HEALTHCHECK_JSON
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

CONFIG = """\
[node]
factory = "node_worker.demo.node:demo_node"
params = { venue = "sandbox", hold_secs = 3600.0, flat_secs = 0.0 }

[supervisor]
state_dir = "/var/lib/nsup"
run_dir = "/run/nsup"
heartbeat_interval_secs = 0.2
flat_confirm_secs = 0.3
"""
STATE_DIR = Path("/var/lib/nsup")
DEADLINE_SECS = 120.0


def fail(message: str) -> None:
    print(f"image check FAILED: {message}", flush=True)
    sys.exit(1)


def wait_for(what: str, predicate, nsup: subprocess.Popen):
    deadline = time.monotonic() + DEADLINE_SECS
    while time.monotonic() < deadline:
        if (result := predicate()):
            return result
        if nsup.poll() is not None:
            fail(f"nsup exited {nsup.returncode} before {what}")
        time.sleep(0.2)
    fail(f"no {what} within {DEADLINE_SECS:g}s")


def status() -> dict | None:
    done = subprocess.run(["nsupctl", "--state-dir", str(STATE_DIR), "--json", "status"], capture_output=True, text=True)
    return json.loads(done.stdout) if done.returncode == 0 else None


def main(entrypoint: list[str], healthcheck: list[str]) -> None:
    if os.getuid() == 0:
        fail("the image runs as root")
    config = Path(entrypoint[entrypoint.index("--config") + 1])
    if not config.exists():
        fail(f"the check stage did not put a config at {config}")
    print(f"uid {os.getuid()}, {sys.version.split()[0]}, entrypoint {entrypoint}", flush=True)
    nsup = subprocess.Popen(entrypoint, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        ready = wait_for("readiness", lambda: (r := subprocess.run(["nsup-ready", "--state-dir", str(STATE_DIR)],
                                                                  capture_output=True, text=True)).returncode == 0
                         and r.stdout.strip(), nsup)
        positions = wait_for("open positions", lambda: (s := status()) and s["positions_open"], nsup)
        health = subprocess.run(healthcheck, capture_output=True, text=True)
        if health.returncode != 0:
            fail(f"the health check {healthcheck} exited {health.returncode}: {health.stderr}")
        print(f"nsup-ready: {ready}; {positions} position(s) open, health check exit 0", flush=True)
        nsup.send_signal(signal.SIGTERM)
        code = nsup.wait(DEADLINE_SECS)
    finally:
        if nsup.poll() is None:
            nsup.kill()
        log = nsup.stderr.read().decode(errors="replace")
    journal = [json.loads(line) for line in (STATE_DIR / "journal.jsonl").read_text().splitlines() if line.strip()]
    transitions = [(r["source"], r["dest"], r.get("positions_open")) for r in journal if r["kind"] == "transition"]
    if code != 0 or not transitions or transitions[-1][:2] != ("FLAT", "STOPPED") or transitions[-1][2] != 0:
        fail(f"SIGTERM ended with exit {code}, transitions {transitions}; nsup's log:\n{log[-3000:]}")
    print(f"SIGTERM: exit 0, {' -> '.join([transitions[0][0]] + [t[1] for t in transitions])}, 0 positions open", flush=True)


if __name__ == "__main__":
    if len(sys.argv) == 2 and sys.argv[1] == "--config":
        print(CONFIG, end="")
        sys.exit(0)
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    main(json.loads(sys.argv[1]), json.loads(sys.argv[2]))
