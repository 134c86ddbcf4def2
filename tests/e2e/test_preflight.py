"""`nsup preflight`: each check passes or fails with its reason; --strict fails the start."""

from __future__ import annotations

import subprocess
import sys
import time

import msgspec
import pytest

from supervisor.lease import Holder, lease_keys
from tests.e2e.conftest import REPO
from tests.e2e.test_nsupctl import nsupctl, stuck

pytestmark = pytest.mark.e2e


def preflight(config, *args: str):
    return subprocess.run([sys.executable, "-m", "supervisor", "preflight", "--config", str(config), *args],
                          cwd=REPO, capture_output=True, text=True, timeout=180)


def outcome(result, check: str) -> str:
    return next(line for line in result.stdout.splitlines() if line[5:].startswith(check))


def test_a_good_config_passes_every_check(tmp_path):
    config = tmp_path / "nsup.toml"
    config.write_text(f'[node]\nfactory = "node_worker.demo.node:demo_node"\n[supervisor]\nstate_dir = "{tmp_path}/s"\n')
    result = preflight(config, "--strict", "--stop-timeout-secs", "300")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAIL" not in result.stdout and "all 10 checks passed" in result.stdout


def test_failures_are_named_and_strict_refuses(tmp_path):
    config = tmp_path / "nsup.toml"
    config.write_text(f'[node]\nfactory = "node_worker.demo.node:no_such"\n[supervisor]\nstate_dir = "{tmp_path}/s"\n'
                      "flatten_rounds = 3\nflatten_round_wait_secs = 60\n")
    lenient = preflight(config, "--stop-timeout-secs", "90")
    assert lenient.returncode == 0  # without --strict it reports, and lets the caller decide
    strict = preflight(config, "--strict", "--stop-timeout-secs", "90")
    assert strict.returncode == 1
    assert outcome(strict, "node").startswith("FAIL") and "no callable 'no_such'" in outcome(strict, "node")
    assert outcome(strict, "stop timeout").startswith("FAIL") and "flatten budget" in outcome(strict, "stop timeout")


def test_a_stranger_worker_is_refused(tmp_path):
    state = tmp_path / "s"
    state.mkdir()
    config = tmp_path / "nsup.toml"
    config.write_text(f'[node]\nfactory = "node_worker.demo.node:demo_node"\n[supervisor]\nstate_dir = "{state}"\n')
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time\n"
        f"fd = os.open('{state}/worker.lock', os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('held', flush=True)\ntime.sleep(60)\n")], stdout=subprocess.PIPE, text=True)
    try:
        holder.stdout.readline()
        result = preflight(config, "--strict")
        assert result.returncode == 1 and outcome(result, "worker").startswith("FAIL")
    finally:
        holder.kill()


def test_an_aborted_session_with_exposure_is_shown(nsup_run):
    run = stuck(nsup_run)
    assert nsupctl(run, "abort", "--confirm", "DEMO-001", "--reason", "drill").returncode == 0
    assert run.exit_code() == 3
    time.sleep(0.2)
    result = preflight(run.config_path, "--strict")
    assert result.returncode == 1
    line = outcome(result, "last session")
    assert line.startswith("FAIL") and "ABORTED with 2 position(s)" in line and "EUR/USD.SIM" in line


def test_redis_is_checked_and_an_unreachable_one_fails_a_node_cache_there(tmp_path, redis_server):
    config = tmp_path / "nsup.toml"
    base = f'[node]\nfactory = "node_worker.demo.node:demo_node"\n[supervisor]\nstate_dir = "{tmp_path}/s"\n'
    config.write_text(base + f'[redis]\nurl = "{redis_server.url}"\nnode_cache = true\n')
    good = preflight(config, "--strict", "--stop-timeout-secs", "300")
    assert good.returncode == 0, good.stdout + good.stderr
    assert outcome(good, "redis").startswith("PASS") and "answers in" in outcome(good, "redis")
    assert outcome(good, "node").startswith("PASS")  # built with its cache in this Redis
    assert "its lease is free" in outcome(good, "redis")
    elsewhere = Holder(host="other-host", boot_id="b", state_dir="/var/lib/nsup/s", pid=7, start_id="x", token=4)
    redis_server.client().set(lease_keys("s")[0], msgspec.json.encode(elsewhere), px=60_000)
    held = preflight(config, "--strict", "--stop-timeout-secs", "300")
    assert held.returncode == 1 and outcome(held, "redis").startswith(
        "FAIL redis         node 's' is held by nsup pid 7 on other-host (/var/lib/nsup/s), token 4, until 20"), held.stdout
    redis_server.client().delete(lease_keys("s")[0])

    redis_server.pause()  # accepts connections and answers nothing
    try:
        started = time.monotonic()
        stalled = preflight(config, "--strict", "--stop-timeout-secs", "300")
        took = time.monotonic() - started
    finally:
        redis_server.resume()
    assert stalled.returncode == 1
    assert outcome(stalled, "redis").startswith("FAIL") and "does not answer within 2s" in outcome(stalled, "redis")
    assert outcome(stalled, "node").startswith("FAIL")
    assert took < 60, f"bounded by the configured timeouts, not NautilusTrader's minutes: {took:.1f}s"

    config.write_text(base + '[redis]\nurl = "redis://:s3cret@127.0.0.1:1/0"\n')  # mirror only: a warning
    unreachable = preflight(config, "--strict", "--stop-timeout-secs", "300")
    assert unreachable.returncode == 0 and outcome(unreachable, "redis").startswith("WARN")
    assert "s3cret" not in unreachable.stdout and "***" in outcome(unreachable, "redis")
