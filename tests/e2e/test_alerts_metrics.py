"""Alerts reach a webhook and metrics are scraped, from a real supervised node."""

from __future__ import annotations

import json
import socket
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.e2e


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def webhook():
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/hook", received
    server.shutdown()


def scrape(port: int) -> dict:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in text_string_to_metric_families(text) for s in f.samples}


def test_transitions_alert_a_webhook_and_metrics_show_the_node(nsup_run, webhook):
    url, received = webhook
    port = free_port()
    run = nsup_run({"hold_secs": 3600.0, "flat_secs": 0.0}, alerts={"webhook_url": url},
                   metrics={"listen": f"127.0.0.1:{port}"})
    run.wait_for_state("RUNNING")
    run.wait_for_positions(2)

    samples = scrape(port)
    assert samples[("nsup_lifecycle_state", (("state", "RUNNING"),))] == 1
    assert samples[("nsup_positions_open", ())] == 2

    run.signal(15)
    assert run.exit_code() == 0
    alerted = [(r["kind"], r.get("dest")) for r in received]
    assert ("transition", "RUNNING") in alerted and ("transition", "STOPPED") in alerted
