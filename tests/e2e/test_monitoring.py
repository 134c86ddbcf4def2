"""A real Prometheus (Debian's) scrapes a real nsup and evaluates deploy/prometheus/nsup-rules.yml as
shipped: the dashboard's queries answer with the node's state, and a STUCK node fires
NsupHaltStuck with its open positions."""

from __future__ import annotations

import signal

import pytest

from tests.deploy_files import RULES, dashboard, dashboard_queries, expand_grafana
from tests.e2e.test_graceful_stop import unflattenable_node
from tests.redis_server import free_port

pytestmark = pytest.mark.e2e

NODE = "e2e"
# Panels that show a RUNNING node at once; the others may be empty: health (until its first change),
# restarts and transitions (an increase needs two samples), Redis (not configured), alerts (none).
SHOWN_AT_ONCE = {"State now", "STUCK", "Lifecycle state", "Open positions and orders", "Trading state",
                 "Heartbeat age"}


def coded(panel_title: str, text: str) -> float:
    """The number a state-timeline or stat panel maps to `text` (its value mappings)."""
    panel = next(p for p in dashboard()["panels"] if p["title"] == panel_title)
    options = panel["fieldConfig"]["defaults"]["mappings"][0]["options"]
    return float(next(value for value, mapped in options.items() if mapped["text"] == text))


def panel_values(prometheus, title: str) -> list[float]:
    values = []
    for panel, expr in dashboard_queries():
        if panel == title:
            values += [float(sample["value"][1]) for sample in prometheus.query(expand_grafana(expr))
                       if sample["metric"].get("node", NODE) == NODE]
    return values


def alert(prometheus, name: str, state: str) -> dict | None:
    return next((a for a in prometheus.alerts() if a["labels"]["alertname"] == name and a["state"] == state), None)


def test_prometheus_scrapes_nsup_the_dashboard_shows_it_and_a_stuck_node_fires(nsup_run, prometheus_server):
    port = free_port()
    run = unflattenable_node(nsup_run, rounds=1, round_wait_secs=0.5, metrics={"listen": f"127.0.0.1:{port}"})
    prometheus = prometheus_server({f"127.0.0.1:{port}": {"node": NODE}}, [RULES])
    prometheus.wait_for(lambda: prometheus.query(f'nsup_positions_open{{node="{NODE}"}} == 2'), what="the node's positions")

    # Every dashboard query is valid PromQL to a real Prometheus; the main panels show this node.
    for panel, expr in dashboard_queries():
        if expr.startswith("label_values("):  # Grafana's own: the node variable lists the scraped nodes
            assert NODE in prometheus.api("label/node/values", **{"match[]": "nsup_lifecycle_state"})
            continue
        result = prometheus.query(expand_grafana(expr))  # raises with Prometheus's error for a bad query
        assert result or panel not in SHOWN_AT_ONCE, f"{panel}: {expr} shows nothing"
    assert panel_values(prometheus, "Lifecycle state") == [coded("Lifecycle state", "RUNNING")]
    assert panel_values(prometheus, "Trading state") == [coded("Trading state", "ACTIVE")]
    assert panel_values(prometheus, "STUCK") == [0.0]
    assert not [a for a in prometheus.alerts() if a["state"] == "firing"]

    run.signal(signal.SIGTERM)
    run.wait_for(lambda: run.records("halt_stuck"), what="halt_stuck")

    firing = prometheus.wait_for(lambda: alert(prometheus, "NsupHaltStuck", "firing"), what="NsupHaltStuck firing")
    assert firing["labels"]["node"] == NODE and firing["labels"]["severity"] == "critical"
    assert firing["annotations"]["description"].startswith("2 position(s) open.")
    assert alert(prometheus, "NsupHaltingTooLong", "pending")  # the real STUCK series matches; 10 minutes to go
    assert panel_values(prometheus, "Lifecycle state") == [coded("Lifecycle state", "STUCK")]
    assert panel_values(prometheus, "STUCK") == [1.0]
    assert panel_values(prometheus, "Alerts firing")  # the dashboard's alert table lists it
    assert run.process.poll() is None and run.records("worker_end") == []  # alerting changed nothing
