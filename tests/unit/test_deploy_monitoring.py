"""deploy/prometheus and deploy/grafana: promtool checks the rules and runs their unit tests
(nsup-rules.test.yml), and every metric a rule or a dashboard panel reads is one nsup exports, with
label values nsup uses. tests/e2e/test_monitoring.py runs them against a real Prometheus scraping a
real nsup.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from types import SimpleNamespace

import msgspec
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from supervisor.lifecycle import STATES
from supervisor.metrics import HEALTHS, TRADING_STATES, Metrics
from supervisor.scheduler import ScheduleView
from supervisor.snapshot import Snapshot
from tests.deploy_files import (
    DASHBOARD, DEPLOY, RULES, RULES_TEST, dashboard, dashboard_queries, label_values, metric_names, rules,
)
from tests.unit._statuses import status

PROMETHEUS_OWN = {"up", "ALERTS"}
# Read by a rule but not exported by nsup yet (none now; nsup_journal_degraded was, until issue 15).
PENDING: set[str] = set()

needs_promtool = pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed (scripts/test installs prometheus)")


def exported() -> dict[str, dict[str, set[str]]]:
    """Every sample name nsup can export, with the label values seen: a Metrics fed everything it reads."""
    m = Metrics()
    mirror = SimpleNamespace(reachable=True, shipped=3)
    node = msgspec.structs.replace(status(positions=1, trading_state="ACTIVE"), components={"EMACross-001": "FAULTED"})
    snapshot = Snapshot(state="RUNNING", node=node, health="ok", hung=False,
                        stop=None, paused=False, trader_id="T-1", worker=None, worker_alive=True, worker_uptime_secs=1.0,
                        supervisor_pid=1, supervisor_uptime_secs=1.0, heartbeat_age_secs=0.5, restarts=1,
                        last_transition=None, schedule=ScheduleView(timezone="UTC", in_session=True))
    m.watch(lambda: snapshot, mirror)
    m.on_record({"kind": "transition", "source": "BUILT", "dest": "RUNNING"})
    names: dict[str, dict[str, set[str]]] = {}
    for family in text_string_to_metric_families(generate_latest(m.registry).decode()):
        for sample in family.samples:
            labels = names.setdefault(sample.name, {})
            for key, value in sample.labels.items():
                labels.setdefault(key, set()).add(value)
    return names


@needs_promtool
def test_promtool_checks_the_rules_and_the_example_config():
    for args in (["check", "rules", str(RULES)], ["check", "config", str(DEPLOY / "prometheus" / "prometheus.example.yml")]):
        result = subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_the_rules_unit_tests_pass():
    result = subprocess.run(["promtool", "test", "rules", RULES_TEST.name], capture_output=True, text=True,
                            timeout=120, cwd=RULES_TEST.parent)
    assert result.returncode == 0 and "SUCCESS" in result.stdout, result.stdout + result.stderr


@needs_promtool
def test_promtool_fails_a_rule_test_that_expects_the_wrong_thing(tmp_path):
    """The unit tests are real: the same test with one expectation changed fails."""
    shutil.copy(RULES, tmp_path)
    wrong = RULES_TEST.read_text().replace('"2 position(s) open.', '"3 position(s) open.', 1)
    assert wrong != RULES_TEST.read_text()
    (tmp_path / RULES_TEST.name).write_text(wrong)
    result = subprocess.run(["promtool", "test", "rules", RULES_TEST.name], capture_output=True, text=True,
                            timeout=120, cwd=tmp_path)
    assert result.returncode != 0 and "NsupHaltStuck" in result.stdout + result.stderr


def test_every_rule_has_a_test():
    tested = set()
    for line in RULES_TEST.read_text().splitlines():
        if line.strip().startswith("alertname:"):
            tested.add(line.split(":", 1)[1].split("#")[0].strip())
    assert {rule["alert"] for rule in rules()} == tested


def test_rules_and_dashboard_read_only_what_nsup_exports():
    names = exported()
    queries = [(rule["alert"], rule["expr"]) for rule in rules()] + dashboard_queries()
    read = {name for _, expr in queries for name in metric_names(expr)}
    unknown = read - names.keys() - PROMETHEUS_OWN - PENDING
    assert not unknown, f"queried but not exported by nsup: {sorted(unknown)}"
    assert not PENDING & names.keys(), "nsup exports it now: take it out of PENDING"
    assert {n for n in names if n.startswith("nsup_")} <= read, "every metric nsup exports shows somewhere"
    for _, expr in queries:
        for metric, label, known in (("nsup_lifecycle_state", "state", STATES), ("nsup_trading_state", "state", TRADING_STATES),
                                     ("nsup_health", "health", HEALTHS), ("nsup_transitions_total", "dest", STATES)):
            if metric in expr:
                assert label_values(expr, label) <= set(known), expr


def test_the_dashboard_names_every_lifecycle_state_and_health():
    """The state and health panels map each value nsup can report to a name; one it lacked would show as a number."""
    names = {}
    for panel in dashboard()["panels"]:
        for mapping in panel.get("fieldConfig", {}).get("defaults", {}).get("mappings", []):
            names[panel["title"]] = {option["text"] for option in mapping.get("options", {}).values()}
    assert names["State now"] == names["Lifecycle state"] == set(STATES)
    assert names["Health"] == set(HEALTHS)


def test_the_metric_name_reader():
    assert metric_names('sum by (node) (nsup_a{node=~"$node", state="X"} * 2 or nsup_b{x="y"}[5m])') == {"nsup_a", "nsup_b"}
    assert metric_names("increase(nsup_worker_restarts_total[5m]) >= 2") == {"nsup_worker_restarts_total"}
    assert metric_names('nsup_x and on(instance, job) (nsup_y == 1)') == {"nsup_x", "nsup_y"}
    assert metric_names("label_values(nsup_lifecycle_state, node)") == {"nsup_lifecycle_state"}
    assert label_values('m{state=~"A|B", health!="ok"}', "state") == {"A", "B"}


def test_the_dashboard_is_provisionable():
    board = dashboard()
    assert board["uid"] == "nsup" and board["schemaVersion"] >= 36
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        assert all('node=~"$node"' in t["expr"] or "ALERTS" in t["expr"] for t in panel["targets"]), panel["title"]
    provider = (DEPLOY / "grafana" / "provisioning" / "dashboards" / "nsup.yaml").read_text()
    assert "type: file" in provider and "path: /var/lib/grafana/dashboards/nsup" in provider
