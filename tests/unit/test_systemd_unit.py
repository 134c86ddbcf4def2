"""deploy/systemd/nsup@.service: systemd itself checks it (`systemd-analyze verify` and `security`),
and it agrees with nsup (exit codes, directories, the notify policy) and the example config.

The unit runs /usr/local/bin/nsup, which a test machine does not have, and `verify` insists that
every Exec path is executable. The temp copy points at a stub executable instead, and changes
nothing else: the arguments, the sandbox and every other line are the unit as shipped.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from supervisor.config import load_config
from supervisor.daemon import EXIT_ABORTED, EXIT_OK, EXIT_USAGE
from supervisor.session import WORKER_EXIT_TIMEOUT_SECS
from supervisor.sd_notify import KEEPALIVE_SECS

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
UNIT = DEPLOY / "systemd" / "nsup@.service"
INSTANCE = "demo"
BINARY = "/usr/local/bin/nsup"
SAFE_LEVELS = ("PERFECT", "SAFE", "OK")
NEWER_SYSTEMD_KEYS = {"RestartSteps": 254, "RestartMaxDelaySec": 254}

pytestmark = pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")


def directives(path: Path) -> list[tuple[str, str, str]]:
    """(section, key, value) for every assignment, in order; a key may repeat (SystemCallFilter=)."""
    section, out = "", []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.append((section, key.strip(), value.strip()))
    return out


def one(key: str) -> str:
    values = [v for _, k, v in directives(UNIT) if k == key]
    assert len(values) == 1, f"{key}: expected once, found {values}"
    return values[0]


def systemd_version() -> int:
    out = subprocess.run(["systemd-analyze", "--version"], capture_output=True, text=True, check=True).stdout
    return int(re.match(r"systemd (\d+)", out).group(1))


@pytest.fixture
def unit_dir(tmp_path) -> Path:
    """The unit as shipped, in a directory of its own, its Exec binary replaced by a stub."""
    stub = tmp_path / "bin" / "nsup"
    stub.parent.mkdir()
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    units = tmp_path / "units"
    units.mkdir()
    text = UNIT.read_text()
    assert text.count(BINARY) == 2  # ExecStartPre (preflight) and ExecStart (run)
    (units / UNIT.name).write_text(text.replace(BINARY, str(stub)))
    return units


def verify(units: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["systemd-analyze", "verify", "--man=no", f"{units}/nsup@{INSTANCE}.service"],
                          capture_output=True, text=True, cwd=units)


def test_systemd_verifies_the_unit_without_a_complaint(unit_dir):
    result = verify(unit_dir)
    assert result.returncode == 0 and result.stderr.strip() == "" and result.stdout.strip() == "", result.stderr


def test_the_control_group_drop_in_verifies_too(unit_dir):
    (unit_dir / "nsup@.service.d").mkdir()
    shutil.copy(DEPLOY / "systemd" / "control-group.conf", unit_dir / "nsup@.service.d")
    result = verify(unit_dir)
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr


def test_the_restart_backoff_drop_in_needs_systemd_254(unit_dir):
    """RestartSteps= and RestartMaxDelaySec= are systemd >= 254: kept out of the unit (verified clean on
    252), in a drop-in for newer systems. Here: clean on >= 254, and on older only those two keys warn."""
    (unit_dir / "nsup@.service.d").mkdir()
    shutil.copy(DEPLOY / "systemd" / "restart-backoff.conf", unit_dir / "nsup@.service.d")
    result = verify(unit_dir)
    complaints = {line for line in result.stderr.splitlines() if line.strip()}
    unknown = {k for k, since in NEWER_SYSTEMD_KEYS.items() if systemd_version() < since}
    assert all(re.search(rf"Unknown key (name )?'?({'|'.join(unknown)})'? ", line) for line in complaints) if unknown else not complaints, \
        result.stderr
    assert not {k for _, k, _ in directives(UNIT)} & NEWER_SYSTEMD_KEYS.keys()


def test_the_sandbox_scores_ok(unit_dir, capsys):
    result = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager", f"{unit_dir}/nsup@{INSTANCE}.service"],
                            capture_output=True, text=True, cwd=unit_dir)
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+) (\w+)", result.stdout)
    assert match, result.stdout + result.stderr
    score, level = float(match.group(1)), match.group(2)
    remaining = sorted(
        ((float(m.group(2)), m.group(1)) for m in re.finditer(r"✗ (\S+)\s.*?\s(\d+\.\d+)\s*$", result.stdout, re.M)),
        reverse=True,
    )
    with capsys.disabled():
        print(f"\nsystemd-analyze security nsup@{INSTANCE}.service: {score} {level}; top remaining: "
              + ", ".join(f"{name} {exposure}" for exposure, name in remaining[:6]))
    assert level in SAFE_LEVELS and score <= 2.0, result.stdout


def test_the_unit_is_what_nsup_expects():
    assert one("Type") == "notify" and one("NotifyAccess") == "main"
    assert one("KillMode") == "process"  # the worker outlives nsup; nsup ends it, never systemd
    assert one("RuntimeDirectoryPreserve") == "yes"  # the worker's sockets outlive nsup's restarts
    assert one("OOMPolicy") == "continue"  # an OOM-killed worker is nsup's to replace
    assert one("Restart") == "on-failure"
    prevented = set(map(int, one("RestartPreventExitStatus").split()))
    assert {EXIT_ABORTED, EXIT_USAGE} <= prevented and EXIT_OK not in prevented
    assert not [k for _, k, _ in directives(UNIT) if k == "SuccessExitStatus"]  # ABORTED shows as failed
    assert one("ExecStartPre") == f"{BINARY} preflight --config /etc/nsup/%i.toml --strict --stop-timeout-secs 300"
    assert float(one("TimeoutStopSec")) == 300  # what preflight is told: keep the two equal
    assert one("ExecStart") == f"{BINARY} run --config /etc/nsup/%i.toml --log-json"
    assert not [k for _, k, _ in directives(UNIT) if k in ("ExecStop", "DynamicUser")]
    assert one("User") == one("Group") == "nsup"


def test_the_timers_leave_room_for_nsup():
    watchdog = int(one("WatchdogSec"))
    assert watchdog / 2 >= KEEPALIVE_SECS  # the keep-alive pings at least twice per watchdog period
    stop = int(one("TimeoutStopSec"))
    config = load_config(DEPLOY / "nsup.example.toml").supervisor
    assert stop >= config.flatten_rounds * config.flatten_round_wait_secs + WORKER_EXIT_TIMEOUT_SECS
    assert int(one("TimeoutStartSec")) > config.startup_timeout_secs


def test_the_example_config_uses_the_units_directories():
    config = load_config(DEPLOY / "nsup.example.toml")
    name = Path(config.supervisor.state_dir).name
    assert one("StateDirectory") == "nsup/%i" and config.supervisor.state_dir == f"/var/lib/nsup/{name}"
    assert one("RuntimeDirectory") == "nsup/%i" and config.supervisor.run_dir == f"/run/nsup/{name}"
    assert one("WorkingDirectory") == "/var/lib/nsup/%i"
    assert config.control.group is None and config.control.tcp_endpoint is None  # [control] is left commented out
    assert config.node.factory != "node_worker.demo.node:demo_node"  # a real node: the user's own factory


def test_the_telegram_bridge_unit_verifies_and_scores_ok(tmp_path):
    """deploy/systemd/nsup-telegram.service, checked the same way: its binary replaced by a stub."""
    bridge_unit = DEPLOY / "systemd" / "nsup-telegram.service"
    stub = tmp_path / "nsup-telegram"
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    text = bridge_unit.read_text()
    assert text.count("/usr/local/bin/nsup-telegram --config") == 1
    (tmp_path / bridge_unit.name).write_text(text.replace("/usr/local/bin/nsup-telegram", str(stub)))
    verified = subprocess.run(["systemd-analyze", "verify", "--man=no", bridge_unit.name], capture_output=True,
                              text=True, cwd=tmp_path)
    assert verified.returncode == 0 and verified.stderr.strip() == "", verified.stderr
    security = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager", bridge_unit.name],
                              capture_output=True, text=True, cwd=tmp_path)
    level = re.search(r"Overall exposure level for \S+: (\d+\.\d+) (\w+)", security.stdout)
    assert level and level.group(2) in SAFE_LEVELS, security.stdout + security.stderr
    from telegram_bridge.cli import EXIT_USAGE

    assert f"RestartPreventExitStatus={EXIT_USAGE}" in text  # a config error: restarting changes nothing
