"""nsupctl's host view without a node running: the table as shown, the rows of nodes that do not
answer, the fan-out's exit code, and the parser (every subcommand's help line, --json anywhere,
nodes by name). tests/e2e/test_host_view.py puts real nodes behind it."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from supervisor.control.client import host_view, nsupctl
from supervisor.control.commands.base import EXIT_ABORTED, EXIT_OK, EXIT_STUCK, EXIT_UNREACHABLE, EXIT_USAGE

RUNNING = {"node": "alpha", "reachable": True, "state": "RUNNING", "trading_state": "ACTIVE", "positions_open": 2,
           "orders_inflight": 0, "orders_open": 13, "health": "ok", "heartbeat_age_secs": 0.04,
           "worker_uptime_secs": 93784.6, "restarts": 1}
STARTING = {"node": "gamma-long-name", "reachable": True, "state": "STARTING", "trading_state": None,
            "positions_open": None, "orders_inflight": None, "orders_open": None, "health": None,
            "heartbeat_age_secs": None, "worker_uptime_secs": None, "restarts": 0}


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = nsupctl.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_the_table_has_a_header_and_one_aligned_line_per_node():
    gone = {"node": "beta", "reachable": False, "state": "STOPPED", "restarts": 0, "error": "not reachable: no nsup"}
    lines = host_view.render_table([RUNNING, gone, STARTING]).splitlines()
    assert lines[0].split() == list(host_view.COLUMNS)
    assert lines[1].split() == ["alpha", "RUNNING", "ACTIVE", "2", "0", "13", "ok", "0.0s", "1d", "2:03:04", "1"]
    assert lines[2].split()[:2] == ["beta", "STOPPED"] and lines[2].endswith("not reachable: no nsup")
    assert lines[3].split() == ["gamma-long-name", "STARTING", "-", "-", "-", "-", "-", "-", "-", "0"]
    # columns line up: every live column starts where its header does
    for column in ("STATE", "TRADING", "HEALTH", "UPTIME"):
        start = lines[0].index(column)
        assert lines[1][start - 1] == " " and lines[1][start] != " ", column
        assert lines[3][start - 1] == " " and lines[3][start] != " ", column
    assert lines[2].index("STOPPED") == lines[0].index("STATE")
    # numbers are right-aligned under their header
    assert lines[1].index("13") + 2 == lines[0].index("OPEN") + len("OPEN")


@pytest.mark.parametrize(("secs", "shown"), [(None, "-"), (0, "0:00:00"), (59.9, "0:00:59"), (3600, "1:00:00"),
                                            (86399, "23:59:59"), (86400 * 3 + 61, "3d 0:01:01")])
def test_uptime_is_shown_as_supervisorctl_shows_it(secs, shown):
    assert host_view._uptime(secs) == shown


def test_a_node_that_does_not_answer_shows_what_its_state_json_last_held(tmp_path):
    (tmp_path / "state.json").write_text(json.dumps({"state": "ABORTED", "restarts": 3, "version": 9}))
    row = host_view.unreachable_row("n", tmp_path, "not reachable: gone")
    assert row == {"node": "n", "reachable": False, "error": "not reachable: gone", "state": "ABORTED", "restarts": 3}
    (tmp_path / "state.json").write_text("{torn")
    assert host_view.unreachable_row("n", tmp_path, "x")["state"] is None
    assert host_view.unreachable_row("n", tmp_path / "never-started", "x")["state"] is None


def test_several_nodes_are_asked_at_once_and_answer_in_their_order():
    import threading

    barrier = threading.Barrier(3, timeout=5)  # passes only if all three are being asked at the same time
    nodes = {"c": "dc", "a": "da", "b": "db"}
    assert host_view.on_every_node(nodes, lambda name, d: (barrier.wait(), name + d)[1]) == ["cdc", "ada", "bdb"]


def test_the_exit_code_of_several_nodes_is_the_worst():
    assert host_view.worst([EXIT_OK, EXIT_STUCK, EXIT_UNREACHABLE]) == EXIT_STUCK
    assert host_view.worst([EXIT_OK, EXIT_ABORTED, EXIT_STUCK]) == EXIT_ABORTED
    assert host_view.worst([]) == EXIT_OK


def test_every_subcommand_has_a_one_line_help():
    out = subprocess.run([sys.executable, "-m", "supervisor.control.client.nsupctl", "--help"],
                         capture_output=True, text=True, check=True).stdout
    listed = out.split("COMMAND ...", 1)[1].split("options:", 1)[0]
    helps = dict(re.findall(r"^    (\S+) +(\S.*)$", listed, re.MULTILINE))
    subcommands = set(nsupctl._parser()._subparsers._group_actions[0].choices)
    assert set(helps) == subcommands and all(helps.values()), helps
    assert {"status", "stop", "pause", "events", "tail", "keygen", "nodes"} <= subcommands


@pytest.mark.parametrize("command", ["status", "pause", "resume", "flatten", "stop", "restart", "abort", "recover",
                                     "version", "events", "tail", "nodes", "keygen"])
def test_json_is_taken_before_or_after_the_command(command):
    rest = ["/tmp/keys"] if command == "keygen" else []
    parser = nsupctl._parser()
    assert parser.parse_args(["--json", command, *rest]).json is True
    assert parser.parse_args([command, *rest, "--json"]).json is True
    assert parser.parse_args([command, "--json", *rest]).json is True
    assert parser.parse_args([command, *rest]).json is False


def test_local_commands_print_json_after_the_command(capsys, tmp_path):
    code, out, _ = run(capsys, "keygen", str(tmp_path / "keys"), "--json")
    assert code == EXIT_OK and set(json.loads(out)) == {"public", "secret"}
    node = tmp_path / "root" / "n1"
    node.mkdir(parents=True)
    (node / "journal.jsonl").write_text('{"ts": "t", "kind": "fault", "reason": "r"}\n')
    code, out, _ = run(capsys, "--root", str(tmp_path / "root"), "tail", "n1", "--json")
    assert code == EXIT_OK and json.loads(out) == {"ts": "t", "kind": "fault", "reason": "r"}
    code, out, _ = run(capsys, "nodes", "--json")  # no --redis: the error is JSON too, for the script
    assert code == EXIT_USAGE and json.loads(out)["reason"] == "nodes reads Redis: give --redis URL"


def test_the_host_table_with_no_nodes_and_with_nodes_that_do_not_answer(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("NSUP_ROOT", str(tmp_path))
    code, out, _ = run(capsys, "status")
    assert code == EXIT_OK and out == f"no nsup node under {tmp_path} (set --root or $NSUP_ROOT)\n"
    (tmp_path / "journal.jsonl").write_text("")  # one node's state dir, as a container has it
    code, out, _ = run(capsys, "status")
    assert code == EXIT_OK and f"is itself a node's state dir: nsupctl --state-dir {tmp_path} status" in out
    (tmp_path / "n1").mkdir()
    (tmp_path / "n1" / "state.json").write_text('{"state": "STOPPED", "restarts": 0}')
    code, out, _ = run(capsys, "status", "--json")
    assert code == EXIT_UNREACHABLE
    [row] = json.loads(out)
    assert row["node"] == "n1" and row["state"] == "STOPPED" and "no endpoints.json" in row["error"]


@pytest.mark.parametrize(("args", "says"), [
    (["resume"], "resume needs a node: `nsupctl resume NAME`"),
    (["resume", "all"], "resume acts on one node at a time"),
    (["status", "nobody"], "no nsup node 'nobody' under"),
    (["status", "../etc"], "is not a node name"),
    (["--state-dir", "/tmp", "status", "n1"], "not both"),
    (["status", "n1", "n2", "--diagram", "/tmp/d.md"], "--diagram draws one node's lifecycle"),
])
def test_naming_nodes_wrongly_is_one_line_and_exit_2(capsys, tmp_path, args, says):
    for name in ("n1", "n2"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "journal.jsonl").write_text("")
    code, out, err = run(capsys, "--root", str(tmp_path), *args)
    assert code == EXIT_USAGE and says in err and len(err.splitlines()) == 1, err
