"""Config errors: `nsup run` exits 2 with one line naming the field; a good config parses to the right values."""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from supervisor import cli
from supervisor.config import ConfigError, NsupConfig, load_config, parse_config
from supervisor.journal import read_journal

NSUP = Path(sys.executable).parent / "nsup"
# Not importable: should a regression accept one of the bad configs below, the worker fails at once.
VALID_NODE = '[node]\nfactory = "nsup_test_no_such_module:build"\n'


def supervisor_section(tmp_path: Path, extra: str = "") -> str:
    return f'[supervisor]\nstate_dir = "{tmp_path / "state"}"\n{extra}'


def with_schedule(table: str):
    """A config body: a valid node and supervisor, and this [schedule] table."""
    return lambda t: VALID_NODE + supervisor_section(t) + "[schedule]\n" + table


def run_nsup(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run nsup; should a regression accept a bad config, no worker it spawned outlives the test."""
    try:
        return subprocess.run([str(NSUP), *args], capture_output=True, text=True, timeout=20, cwd=cwd)
    finally:
        for journal in cwd.rglob("journal.jsonl"):
            for record in read_journal(journal):
                if record.get("kind") == "worker_spawned":
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(record["pid"], signal.SIGKILL)


def assert_one_line_usage_error(done: subprocess.CompletedProcess, *must_contain: str) -> str:
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr
    stderr_lines = done.stderr.splitlines()
    assert len(stderr_lines) == 1, done.stderr
    line = stderr_lines[0]
    for text in must_contain:
        assert text in line, line
    assert done.stdout == ""
    return line


BAD_CONFIGS = {
    # name: (toml body builder, text the one line must contain)
    "missing node.factory": (lambda t: "[node]\n" + supervisor_section(t), ["node.factory", "missing"]),
    "missing node section": (lambda t: supervisor_section(t), ["node", "missing"]),
    "missing supervisor.state_dir": (lambda t: VALID_NODE + "[supervisor]\n", ["supervisor.state_dir", "missing"]),
    "flatten_rounds as a string": (
        lambda t: VALID_NODE + supervisor_section(t, 'flatten_rounds = "3"\n'), ["supervisor.flatten_rounds", "int"]),
    "flatten_rounds zero": (
        lambda t: VALID_NODE + supervisor_section(t, "flatten_rounds = 0\n"), ["supervisor.flatten_rounds"]),
    "flatten_rounds float": (
        lambda t: VALID_NODE + supervisor_section(t, "flatten_rounds = 2.5\n"), ["supervisor.flatten_rounds"]),
    "negative heartbeat": (
        lambda t: VALID_NODE + supervisor_section(t, "heartbeat_interval_secs = -1.0\n"),
        ["supervisor.heartbeat_interval_secs"]),
    "zero flat_confirm_secs": (
        lambda t: VALID_NODE + supervisor_section(t, "flat_confirm_secs = 0\n"), ["supervisor.flat_confirm_secs"]),
    "nan flat_confirm_secs": (
        lambda t: VALID_NODE + supervisor_section(t, "flat_confirm_secs = nan\n"), ["supervisor.flat_confirm_secs"]),
    "bool startup timeout": (
        lambda t: VALID_NODE + supervisor_section(t, "startup_timeout_secs = true\n"),
        ["supervisor.startup_timeout_secs"]),
    "unknown supervisor field": (
        lambda t: VALID_NODE + supervisor_section(t, "flatten_roundz = 3\n"), ["supervisor.flatten_roundz", "unknown"]),
    "unknown node field": (
        lambda t: VALID_NODE + 'factroy_args = "x"\n' + supervisor_section(t), ["node.factroy_args", "unknown"]),
    "unknown section": (
        lambda t: VALID_NODE + supervisor_section(t) + "[cache]\nurl = 'x'\n", ["cache", "unknown"]),
    "redis url not a redis url": (
        lambda t: VALID_NODE + supervisor_section(t) + "[redis]\nurl = 'http://h:1'\n", ["redis", "url", "redis://"]),
    "redis url with a bad port": (
        lambda t: VALID_NODE + supervisor_section(t) + "[redis]\nurl = 'redis://h:99999'\n", ["redis", "url", "port"]),
    "node cache without a url": (
        lambda t: VALID_NODE + supervisor_section(t) + "[redis]\nnode_cache = true\n", ["node_cache", "url"]),
    "node cache on another database": (
        lambda t: VALID_NODE + supervisor_section(t) + "[redis]\nurl = 'redis://h:1/3'\nnode_cache = true\n",
        ["node_cache", "database 0"]),
    "redis url with a path that is not a database": (
        lambda t: VALID_NODE + supervisor_section(t) + "[redis]\nurl = 'redis://h:1/x'\n", ["redis", "url", "database number"]),
    "redis url with options": (
        lambda t: VALID_NODE + supervisor_section(t) + "[redis]\nurl = 'redis://h:1/0?socket_timeout=9'\n", ["redis", "url", "options"]),
    "redis name with a space": (
        lambda t: VALID_NODE + supervisor_section(t) + "[redis]\nurl = 'redis://h:1'\nname = 'a b'\n", ["redis.name", "letters"]),
    "factory without colon": (
        lambda t: '[node]\nfactory = "nocolon"\n' + supervisor_section(t), ["node.factory", "module:function"]),
    "factory with a path": (
        lambda t: '[node]\nfactory = "my/node.py:build"\n' + supervisor_section(t), ["node.factory"]),
    "factory not a string": (lambda t: "[node]\nfactory = 3\n" + supervisor_section(t), ["node.factory"]),
    "params not a table": (
        lambda t: VALID_NODE + "params = 3\n" + supervisor_section(t), ["node.params"]),
    "params with a TOML date": (
        lambda t: VALID_NODE + "params = { start = 2024-01-01 }\n" + supervisor_section(t), ["node.params"]),
    "params with nan": (
        lambda t: VALID_NODE + "params = { x = nan }\n" + supervisor_section(t), ["node.params"]),
    "infinite flat_confirm_secs": (
        lambda t: VALID_NODE + supervisor_section(t, "flat_confirm_secs = inf\n"), ["supervisor.flat_confirm_secs"]),
    "flatten_rounds past its range": (
        lambda t: VALID_NODE + supervisor_section(t, "flatten_rounds = 99999999999999999999\n"),
        ["supervisor.flatten_rounds", "expected int <= 1000"]),
    "max_restarts past its range": (
        lambda t: VALID_NODE + supervisor_section(t, "max_restarts = 101\n"), ["supervisor.max_restarts", "<= 100"]),
    "negative max_restarts": (
        lambda t: VALID_NODE + supervisor_section(t, "max_restarts = -1\n"), ["supervisor.max_restarts", ">= 0"]),
    "hang_after_missed_heartbeats past its range": (
        lambda t: VALID_NODE + supervisor_section(t, "hang_after_missed_heartbeats = 100000\n"),
        ["supervisor.hang_after_missed_heartbeats", "<= 1000"]),
    "a day and more of reduce_after_supervisor_lost_secs": (
        lambda t: VALID_NODE + supervisor_section(t, "reduce_after_supervisor_lost_secs = 1e9\n"),
        ["supervisor.reduce_after_supervisor_lost_secs", "<= 86400"]),
    "redis stream_max_records past its range": (
        lambda t: VALID_NODE + supervisor_section(t) + "[redis]\nurl = 'redis://h:1'\nstream_max_records = 1e12\n",
        ["redis.stream_max_records"]),
    "alerts queue_size past its range": (
        lambda t: VALID_NODE + supervisor_section(t) + "[alerts]\ncommand = 'true'\nqueue_size = 10000000\n",
        ["alerts.queue_size", "<= 100000"]),
    "schedule in an unknown time zone": (
        with_schedule("timezone = 'America/New_Yrok'\n"),
        ["schedule.timezone", "'America/New_Yrok' is not an IANA time zone"]),
    "schedule flattening before it goes closing-only": (
        with_schedule("timezone = 'UTC'\nclosing_only = 15:50:00\nflatten = 15:45:00\n"),
        ["schedule.flatten", "15:45:00 is before closing_only (15:50:00)", "closing_only <= flatten <= stop"]),
    "schedule stopping before it flattens": (
        with_schedule("timezone = 'UTC'\nflatten = 15:55:00\nstop = '15:50:00'\n"),
        ["schedule.stop", "is before flatten"]),
    "schedule with a day that is not one": (
        with_schedule("timezone = 'UTC'\ndays = ['mon..fry']\n"),
        ["schedule.days", "'mon..fry'", "mon..fri"]),
    "schedule with no trading day": (
        with_schedule("timezone = 'UTC'\ndays = []\n"),
        ["schedule.days", "at least one"]),
    "schedule time without seconds": (
        with_schedule("timezone = 'UTC'\nflatten = '15:55'\n"),
        ["schedule.flatten", "HH:MM:SS"]),
    "schedule time with an offset": (
        with_schedule("timezone = 'UTC'\nstop = '16:00:00+02:00'\n"),
        ["schedule.stop", "without an offset"]),
    "schedule holiday that is no date": (
        with_schedule("timezone = 'UTC'\nholidays = ['2026-02-30']\n"),
        ["schedule.holidays[0]", "YYYY-MM-DD"]),
    "schedule without a time zone": (
        with_schedule("stop = 16:00:00\n"),
        ["schedule.timezone", "required"]),
    "invalid TOML": (lambda t: "[node\nfactory = \n", ["not valid TOML"]),
    "invalid UTF-8": (lambda t: b"[node]\nfactory = \"\xff\xfe\"\n", ["cannot be read"]),
}


def write_config(tmp_path: Path, case: str) -> Path:
    path = tmp_path / "nsup.toml"
    content = BAD_CONFIGS[case][0](tmp_path)
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_config_is_refused_in_one_line_naming_the_field(tmp_path, case):
    """Every case in-process (what `nsup run` prints after "nsup: config error: "); the whole command,
    as an operator runs it, for a few of them below: a process each costs about 0.4 s."""
    with pytest.raises(ConfigError) as refused:
        load_config(write_config(tmp_path, case))
    said = str(refused.value)
    assert "\n" not in said and all(text in said for text in BAD_CONFIGS[case][1]), said


@pytest.mark.parametrize("case", ["missing node.factory", "invalid TOML", "invalid UTF-8", "schedule without a time zone"])
def test_bad_config_exits_2_with_one_line_naming_the_field(tmp_path, case):
    expected = BAD_CONFIGS[case][1]
    done = run_nsup("run", "--config", str(write_config(tmp_path, case)), cwd=tmp_path)
    line = assert_one_line_usage_error(done, "config error", *expected)
    assert line.startswith("nsup: config error: ")
    assert not (tmp_path / "state").exists()  # refused before anything was created


def test_missing_config_file_exits_2_with_one_line(tmp_path):
    missing = tmp_path / "nope" / "nsup.toml"
    done = run_nsup("run", "--config", str(missing), cwd=tmp_path)
    assert_one_line_usage_error(done, str(missing), "does not exist")


def test_config_that_is_a_directory_exits_2_with_one_line(tmp_path):
    done = run_nsup("run", "--config", str(tmp_path), cwd=tmp_path)
    assert_one_line_usage_error(done, "cannot be read")


def test_state_dir_too_long_for_a_unix_socket_exits_2_with_one_line(tmp_path):
    long_dir = tmp_path / ("d" * 120)
    path = tmp_path / "nsup.toml"
    path.write_text(VALID_NODE + f'[supervisor]\nstate_dir = "{long_dir}"\n')
    done = run_nsup("run", "--config", str(path), cwd=tmp_path)
    assert_one_line_usage_error(done, "config error", "supervisor.state_dir")
    assert not long_dir.exists()


@pytest.mark.parametrize("what", ["a file", "under a file", "read-only"])
def test_a_state_dir_nsup_cannot_use_is_a_config_error(tmp_path, what):
    """Exit 2, not 1: systemd must not restart nsup into the same wall (RestartPreventExitStatus=2)."""
    state = tmp_path / "state"
    if what == "a file":
        state.write_text("")
    elif what == "under a file":
        (tmp_path / "blocker").write_text("")
        state = tmp_path / "blocker" / "state"
    else:
        state.mkdir()
        if subprocess.run(["mount", "--bind", "-o", "ro", str(state), str(state)], capture_output=True).returncode:
            pytest.skip("cannot make a read-only bind mount here (needs root)")
    try:
        path = tmp_path / "nsup.toml"
        path.write_text(VALID_NODE + f'[supervisor]\nstate_dir = "{state}"\n')
        done = run_nsup("run", "--config", str(path), cwd=tmp_path)
    finally:
        if what == "read-only":
            subprocess.run(["umount", str(state)], check=True)
    assert_one_line_usage_error(done, "config error", "supervisor.state_dir", str(state), "cannot be used")


@pytest.mark.parametrize("duration", ["-1", "0", "-0.5"])
def test_demo_with_a_non_positive_duration_exits_2(tmp_path, duration):
    done = run_nsup("demo", "--duration", duration, "--state-dir", str(tmp_path / "demo"), cwd=tmp_path)
    assert_one_line_usage_error(done, "--duration")
    assert not (tmp_path / "demo").exists()


def test_demo_duration_nan_is_a_usage_error(tmp_path):
    args = cli._parser().parse_args(["demo", "--duration", "nan", "--state-dir", str(tmp_path)])
    with pytest.raises(ConfigError):
        cli._demo_config(args)


def test_demo_config_examples(tmp_path):
    args = cli._parser().parse_args(["demo", "--duration", "2.5", "--state-dir", str(tmp_path)])
    config = cli._demo_config(args)
    assert config.node.factory == cli.DEMO_FACTORY
    assert config.supervisor.state_dir == str(tmp_path)
    with pytest.raises(ConfigError, match="--duration"):
        cli._demo_config(argparse.Namespace(duration=-1.0, state_dir=str(tmp_path)))


# parse_config / load_config ---------------------------------------------------------------------


def test_parse_config_full(tmp_path):
    raw = {
        "node": {"factory": "my_pkg.nodes:build_node", "params": {"hold_secs": 4.0, "venue": "SIM", "n": [1, 2]}},
        "supervisor": {
            "state_dir": "/var/lib/nsup/x",
            "run_dir": "/run/nsup/x",
            "heartbeat_interval_secs": 0.25,
            "flatten_rounds": 5,
            "flatten_round_wait_secs": 7,  # an int is fine for seconds
            "flat_confirm_secs": 1.5,
            "startup_timeout_secs": 90.0,
        },
    }
    c = parse_config(raw)
    assert isinstance(c, NsupConfig)
    assert c.node.factory == "my_pkg.nodes:build_node"
    assert c.node.params == {"hold_secs": 4.0, "venue": "SIM", "n": [1, 2]}
    s = c.supervisor
    assert (s.heartbeat_interval_secs, s.flatten_rounds, s.flatten_round_wait_secs, s.flat_confirm_secs,
            s.startup_timeout_secs) == (0.25, 5, 7.0, 1.5, 90.0)
    assert isinstance(s.flatten_round_wait_secs, float)
    assert s.state_path == Path("/var/lib/nsup/x") and s.run_path == Path("/run/nsup/x")


def test_parse_config_defaults():
    c = parse_config({"node": {"factory": "node_worker.demo.node:demo_node"}, "supervisor": {"state_dir": "/s"}})
    assert c.node.params == {}
    s = c.supervisor
    assert s.run_dir is None and s.run_path == Path("/s") == s.state_path
    assert s.heartbeat_interval_secs == 1.0
    assert s.flatten_rounds == 3
    assert s.flatten_round_wait_secs == 10.0
    assert s.flat_confirm_secs == 0.1
    assert s.startup_timeout_secs == 60.0


def test_load_config_reads_toml(tmp_path):
    path = tmp_path / "nsup.toml"
    path.write_text(VALID_NODE + "params = { hold_secs = 4.0 }\n" + supervisor_section(tmp_path, "flatten_rounds = 2\n"))
    c = load_config(path)
    assert c.node.params == {"hold_secs": 4.0}
    assert c.supervisor.flatten_rounds == 2 and c.supervisor.state_dir == str(tmp_path / "state")


def test_config_error_is_one_line_and_names_the_source(tmp_path):
    with pytest.raises(ConfigError) as err:
        parse_config({"node": {"factory": "a:b"}, "supervisor": {"state_dir": "/s", "flatten_rounds": "3"}},
                     source="/etc/nsup/x.toml")
    message = str(err.value)
    assert message.startswith("/etc/nsup/x.toml: supervisor.flatten_rounds")
    assert "\n" not in message and "`" not in message


@pytest.mark.parametrize("key", ["flatten-rounds", "heartbeat.interval", "'flat confirm'"])
def test_unknown_field_with_non_word_characters_is_named_in_full(key):
    name = key.strip("'")
    raw = {"node": {"factory": "a:b"}, "supervisor": {"state_dir": "/s", name: 3}}
    with pytest.raises(ConfigError, match=rf"supervisor\.{__import__('re').escape(name)}: unknown field"):
        parse_config(raw)


@pytest.mark.parametrize(
    "field", ["heartbeat_interval_secs", "flatten_round_wait_secs", "flat_confirm_secs", "startup_timeout_secs"]
)
@pytest.mark.parametrize("value", [math.inf, math.nan, 0.0, -1.0, 10 * 86_400.0])
def test_seconds_must_be_positive_and_finite(field, value):
    """flat_confirm_secs = inf would mean flat is never verified and nsup HALTING forever."""
    raw = {"node": {"factory": "a:b"}, "supervisor": {"state_dir": "/s", field: value}}
    with pytest.raises(ConfigError, match=f"supervisor.{field}"):
        parse_config(raw)


@pytest.mark.parametrize("params", [{"when": __import__("datetime").date(2024, 1, 1)}, {"x": math.nan},
                                    {"nested": {"x": math.inf}}])
def test_params_must_be_plain_json(params):
    with pytest.raises(ConfigError, match="node.params"):
        parse_config({"node": {"factory": "a:b", "params": params}, "supervisor": {"state_dir": "/s"}})
