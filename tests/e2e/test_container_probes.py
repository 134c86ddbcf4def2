"""The container's and the pod's checks, as shipped (the Containerfile's HEALTHCHECK, the StatefulSet's
probes and preStop hook), run against a real nsup: healthy and alive in every state nsup answers in,
HALTING and STUCK included; ready only while RUNNING; preStop is the graceful stop and reports STUCK."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy_files import (
    CONTAINERFILE, KUSTOMIZE_EXAMPLE, NSUP_READY, containerfile_stages, healthcheck_command, kustomize, one_of_kind,
)
from tests.e2e.test_graceful_stop import unflattenable_node

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (kustomize) is not installed")]

IMAGE_STATE_DIR = "/var/lib/nsup"
EXIT_STUCK, EXIT_UNREACHABLE = 4, 3


def shipped_commands() -> dict[str, list[str]]:
    pod = one_of_kind(kustomize(KUSTOMIZE_EXAMPLE), "StatefulSet")["spec"]["template"]["spec"]
    nsup = next(c for c in pod["containers"] if c["name"] == "nsup")
    return {
        "healthcheck": healthcheck_command(containerfile_stages(CONTAINERFILE)[-1])[1],
        "liveness": nsup["livenessProbe"]["exec"]["command"],
        "readiness": nsup["readinessProbe"]["exec"]["command"],
        "preStop": nsup["lifecycle"]["preStop"]["exec"]["command"],
    }


def here(command: list[str], state_dir: Path, timeout: str | None = None) -> list[str]:
    """The image's command on this machine: the test venv's nsupctl, nsup-ready from deploy/, this run's
    state dir instead of the image's, and `timeout` for nsupctl's --timeout if given."""
    executables = {"nsupctl": [str(Path(sys.executable).with_name("nsupctl"))], "nsup-ready": [sys.executable, str(NSUP_READY)]}
    assert command.count(IMAGE_STATE_DIR) == 1, command
    args = [str(state_dir) if arg == IMAGE_STATE_DIR else arg for arg in command[1:]]
    if timeout is not None:
        args[args.index("--timeout") + 1] = timeout
    return executables[command[0]] + args


def run_check(command: list[str], state_dir: Path, timeout: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(here(command, state_dir, timeout), capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)


def test_probes_keep_a_stuck_node_alive_and_unready(nsup_run):
    commands = shipped_commands()
    run = unflattenable_node(nsup_run, rounds=1, round_wait_secs=0.5)

    for name in ("healthcheck", "liveness", "readiness"):
        result = run_check(commands[name], run.state_dir)
        assert result.returncode == 0, f"{name} while RUNNING: {result.stdout}{result.stderr}"
    assert run_check(commands["readiness"], run.state_dir).stdout.strip() == "RUNNING"

    # The kubelet's preStop: the graceful stop, which ends stuck (exit 4) on a node that cannot be flattened.
    pre_stop = run_check(commands["preStop"], run.state_dir)
    assert pre_stop.returncode == EXIT_STUCK, pre_stop.stdout + pre_stop.stderr
    assert "halt_stuck" in pre_stop.stdout  # the record, with the positions that keep it from flat

    for name in ("healthcheck", "liveness"):  # STUCK is alive: never restarted for it
        result = run_check(commands[name], run.state_dir)
        assert result.returncode == 0 and "STUCK" in result.stdout, f"{name}: {result.stdout}{result.stderr}"
    readiness = run_check(commands["readiness"], run.state_dir)
    assert readiness.returncode == 1 and readiness.stdout.strip() == "STUCK"
    assert run.process.poll() is None and run.records("worker_end") == []

    run.process.kill()  # nsup gone (in a container its worker would go with it; here teardown ends it)
    run.process.wait()
    for name in ("healthcheck", "liveness", "readiness"):  # nothing answers: the shipped 10 s wait, shortened
        result = run_check(commands[name], run.state_dir, timeout="0.5")
        assert result.returncode == EXIT_UNREACHABLE and "Traceback" not in result.stderr, f"{name}: {result.stderr}"
