"""Alerts: alerting records reach a real local webhook (and a real command) from a background thread,
with retries; the journal's caller is never held up; a full queue drops the oldest."""

from __future__ import annotations

import asyncio
import json
import shlex
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import msgspec
import pytest
from loguru import logger

from supervisor import protocol as p
from supervisor.alerts import DEFAULT_KINDS, FAILURE_KIND, Alerter, AlertsSection
from supervisor.journal import Journal

WAIT_SECS = 10.0


class Webhook:
    """An HTTP server on 127.0.0.1 that keeps every POST and answers with the statuses it is given
    (then 200). While `hold` is clear, it keeps each request waiting, unanswered."""

    def __init__(self, statuses: list[int] | None = None):
        self.statuses = list(statuses or [])
        self.posts: list[dict] = []
        self.cv = threading.Condition()
        self.hold = threading.Event()
        self.hold.set()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with hook.cv:
                    hook.posts.append({"path": self.path, "type": self.headers["Content-Type"], "body": json.loads(body)})
                    hook.cv.notify_all()
                    status = hook.statuses.pop(0) if hook.statuses else 200
                hook.hold.wait(WAIT_SECS)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):
                pass  # a client that gave up waiting (the timeout test) is not an error here

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook/secret-token"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def wait_for(self, n: int) -> list[dict]:
        with self.cv:
            assert self.cv.wait_for(lambda: len(self.posts) >= n, WAIT_SECS), f"{len(self.posts)} posts, expected {n}"
            return list(self.posts)

    def close(self):
        self.hold.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook():
    hooks = []

    def make(statuses=None) -> Webhook:
        hooks.append(Webhook(statuses))
        return hooks[-1]

    yield make
    for hook in hooks:
        hook.close()


@pytest.fixture
def alerter():
    made = []

    def make(on_failure=None, **config) -> Alerter:
        made.append(Alerter(AlertsSection(**config), on_failure=on_failure))
        return made[-1]

    yield make
    for a in made:
        a.close(drain_secs=0)


@pytest.fixture
def logs():
    lines: list[str] = []
    sink = logger.add(lines.append, level="WARNING", format="{level} {message}")
    yield lines
    logger.remove(sink)


def wait_until(check, what: str) -> None:
    deadline = time.monotonic() + WAIT_SECS
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def logged(lines: list[str], *parts: str) -> list[str]:
    return [line for line in lines if all(part in line for part in parts)]


def record(kind: str, n: int, **fields) -> dict:
    return {"ts": f"2026-01-01T00:00:0{n}.000000+00:00", "kind": kind, "n": n, **fields}


def test_alerting_records_arrive_as_json_posts_and_the_others_do_not(tmp_path, webhook, alerter):
    hook = webhook()
    alerts = alerter(webhook_url=hook.url)
    journal = Journal(tmp_path / "journal.jsonl")
    journal.listen(alerts.on_record)
    sent = [
        journal.record("transition", trigger="halt", source="RUNNING", dest="HALTING", actor="signal:SIGTERM",
                       positions_open=2, orders_inflight=0, orders_open=1),
        journal.record("flat_seen", confirm_in_secs=0.5),  # not an alerting kind
        journal.record("halt_stuck", reason="not flat", positions=[p.PositionView("EUR/USD.SIM", "LONG", "1000", "-3 USD")]),
        journal.record("worker_command", command=p.MarketExit(), actor="nsup"),  # nor this
        journal.record("command", command="stop", actor="op", result="graceful stop requested"),  # nor this
        journal.record("health", health="feed_silent", was="ok", data_age_secs=12.0, clients={"SIM": True}),
    ]
    journal.close()
    posts = hook.wait_for(3)
    alerts.close()
    assert len(hook.posts) == 3
    assert [post["body"]["kind"] for post in posts] == ["transition", "halt_stuck", "health"]
    assert all(post["type"] == "application/json" and post["path"] == "/hook/secret-token" for post in posts)
    expected = [json.loads(msgspec.json.encode(r)) for r in sent if r["kind"] in DEFAULT_KINDS]
    assert [post["body"] for post in posts] == expected  # the record as journaled, structs included
    assert posts[1]["body"]["positions"] == [
        {"instrument_id": "EUR/USD.SIM", "side": "LONG", "quantity": "1000", "unrealized_pnl": "-3 USD"}]
    assert alerts.delivered == 3 and alerts.failed == 0


def test_origin_says_which_nsup_is_speaking(webhook):
    hook = webhook()
    alerts = Alerter(AlertsSection(webhook_url=hook.url), origin={"host": "box1", "state_dir": "/var/lib/nsup/n1"})
    try:
        alerts.on_record(record("fault", 1, reason="lost"))
        (post,) = hook.wait_for(1)
    finally:
        alerts.close()
    assert post["body"] == {**record("fault", 1, reason="lost"), "origin": {"host": "box1", "state_dir": "/var/lib/nsup/n1"}}


def test_kinds_are_configurable(webhook, alerter):
    hook = webhook()
    alerts = alerter(webhook_url=hook.url, kinds=("flat_seen",))
    alerts.on_record(record("transition", 1))
    alerts.on_record(record("flat_seen", 2))
    alerts.close()
    assert [post["body"]["kind"] for post in hook.posts] == ["flat_seen"]


def test_a_server_failing_twice_gets_the_record_on_the_third_try(webhook, alerter, logs):
    hook = webhook(statuses=[500, 500])
    alerts = alerter(webhook_url=hook.url, retries=3, backoff_secs=0.01)
    alerts.on_record(record("fault", 1, reason="worker lost"))
    posts = hook.wait_for(3)
    alerts.close()
    assert len(hook.posts) == 3
    assert all(post["body"] == record("fault", 1, reason="worker lost") for post in posts)
    assert alerts.delivered == 1 and alerts.failed == 0
    assert len(logged(logs, "WARNING", "HTTP 500", "trying again")) == 2
    assert not logged(logs, "ERROR")
    assert not logged(logs, "secret-token")  # the webhook's path may carry a token: never logged


def test_retries_are_bounded_and_a_client_error_is_not_retried(webhook, alerter, logs):
    failing, missing = webhook(statuses=[503] * 10), webhook(statuses=[404])
    a = alerter(webhook_url=failing.url, retries=2, backoff_secs=0.01)
    b = alerter(webhook_url=missing.url, retries=2, backoff_secs=0.01)
    a.on_record(record("fault", 1))
    b.on_record(record("fault", 2))
    wait_until(lambda: a.failed == 1 and b.failed == 1, "both failures")
    assert len(failing.posts) == 3 and len(missing.posts) == 1
    assert logged(logs, "ERROR", "fault alert not delivered (after 3 tries): HTTP 503")
    assert logged(logs, "ERROR", "fault alert not delivered (not retried): HTTP 404")


def test_a_webhook_that_never_answers_does_not_hold_up_the_caller(webhook, alerter, logs):
    hook = webhook()
    hook.hold.clear()  # it takes each request and sits on it, past the alerter's timeout
    alerts = alerter(webhook_url=hook.url, timeout_secs=0.3, retries=0)
    took = []
    for n in range(5):
        started = time.perf_counter()
        alerts.on_record(record("hung_with_exposure", n, reason="hung"))
        took.append(time.perf_counter() - started)
    assert max(took) < 0.1, took  # queued, not sent: microseconds, nowhere near the 0.3 s timeout
    hook.wait_for(1)
    wait_until(lambda: logged(logs, "ERROR", "hung_with_exposure alert not delivered", "timed out"), "the failure log")
    assert alerts.delivered == 0


def test_a_failure_is_reported_on_the_loop_that_journaled_it(webhook):
    hook = webhook(statuses=[500] * 10)
    reports: list[tuple[str, int]] = []

    async def main():
        alerts = Alerter(AlertsSection(webhook_url=hook.url, retries=1, backoff_secs=0.01),
                         on_failure=lambda message: reports.append((message, threading.get_ident())))
        try:
            alerts.on_record(record("refusal", 1, reason="abort only in HALTING"))
            deadline = time.monotonic() + WAIT_SECS
            while not reports and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
        finally:
            alerts.close(drain_secs=0)

    asyncio.run(main())
    (message, thread), = reports
    assert thread == threading.get_ident()  # the loop's thread, not the alert thread: the daemon may journal it
    assert "refusal alert not delivered (after 2 tries): HTTP 500" in message
    assert f"http://127.0.0.1:{hook.server.server_port}" in message and "secret-token" not in message


def test_the_command_gets_the_record_as_json_on_stdin(tmp_path, alerter):
    out = tmp_path / "alerts.out"
    code = ("import os, sys; f = open(sys.argv[1], 'ab'); "
            "f.write(os.environ['NSUP_ALERT_KIND'].encode() + b' ' + sys.stdin.buffer.read() + b'\\n')")
    alerts = alerter(command=shlex.join([sys.executable, "-c", code, str(out)]))
    alerts.on_record(record("transition", 1, source="HALTING", dest="FLAT"))
    alerts.on_record(record("worker_spawned", 2))  # not an alerting kind
    alerts.on_record(record("venue_disagrees", 3, node=p.Counts(0, 0, 0), venue=p.Counts(1, 0, 0)))
    alerts.close(drain_secs=WAIT_SECS)
    lines = out.read_bytes().splitlines()
    assert [line.split(b" ", 1)[0] for line in lines] == [b"transition", b"venue_disagrees"]
    assert json.loads(lines[0].split(b" ", 1)[1]) == record("transition", 1, source="HALTING", dest="FLAT")
    assert json.loads(lines[1].split(b" ", 1)[1])["venue"] == {"positions_open": 1, "orders_inflight": 0, "orders_open": 0}
    assert alerts.delivered == 2


def test_a_failing_or_slow_command_is_logged_not_raised(alerter, logs):
    failing = alerter(command=shlex.join([sys.executable, "-c", "import sys; print('no route to pager', file=sys.stderr); sys.exit(3)"]))
    slow = alerter(command=shlex.join([sys.executable, "-c", "import time; time.sleep(30)"]), timeout_secs=0.3)
    missing = alerter(command="/nonexistent/pager --now")
    started = time.perf_counter()
    for a in (failing, slow, missing):
        a.on_record(record("halt_stuck", 1))
    assert time.perf_counter() - started < 0.1  # the slow one alone would take its 0.3 s timeout
    wait_until(lambda: failing.failed == slow.failed == missing.failed == 1, "three failures")
    assert logged(logs, "ERROR", "command", "halt_stuck alert not delivered: exit code 3: no route to pager")
    assert logged(logs, "ERROR", "halt_stuck alert not delivered: no exit within 0.3s")
    assert logged(logs, "ERROR", "/nonexistent/pager", "FileNotFoundError")


def test_webhook_and_command_both_get_the_alert(tmp_path, webhook, alerter):
    hook, out = webhook(), tmp_path / "alert.json"
    code = "import sys; open(sys.argv[1], 'wb').write(sys.stdin.buffer.read())"
    alerts = alerter(webhook_url=hook.url, command=shlex.join([sys.executable, "-c", code, str(out)]))
    alerts.on_record(record("approval", 1, operator="alice"))
    alerts.close(drain_secs=WAIT_SECS)
    assert hook.posts[0]["body"] == record("approval", 1, operator="alice") == json.loads(out.read_bytes())


def test_a_full_queue_drops_the_oldest_with_a_warning(webhook, alerter, logs):
    hook = webhook()
    hook.hold.clear()
    alerts = alerter(webhook_url=hook.url, queue_size=2, timeout_secs=WAIT_SECS)
    alerts.on_record(record("fault", 1))
    hook.wait_for(1)  # the alert thread is busy with 1, unanswered; 2 and 3 fill the queue
    for n in (2, 3, 4):
        alerts.on_record(record("fault", n))
    assert alerts.dropped == 1
    (warning,) = logged(logs, "WARNING", "alert queue full (2)")
    assert "dropped the oldest waiting alert, fault of 2026-01-01T00:00:02" in warning
    hook.hold.set()
    posts = hook.wait_for(3)
    alerts.close(drain_secs=WAIT_SECS)
    assert [post["body"]["n"] for post in posts] == [1, 3, 4]


def test_close_drains_then_stops(webhook, logs):
    hook = webhook()
    alerts = Alerter(AlertsSection(webhook_url=hook.url))
    for n in range(5):
        alerts.on_record(record("transition", n))
    alerts.close(drain_secs=WAIT_SECS)
    assert [post["body"]["n"] for post in hook.posts] == [0, 1, 2, 3, 4]
    alerts.on_record(record("transition", 9))  # after close: not sent, said so, not raised
    assert logged(logs, "WARNING", "alerts are closed")
    assert not alerts._thread.is_alive()


def test_close_gives_up_on_a_webhook_that_does_not_answer(webhook, logs):
    hook = webhook(statuses=[500] * 100)
    alerts = Alerter(AlertsSection(webhook_url=hook.url, retries=10, backoff_secs=5.0))
    alerts.on_record(record("fault", 1))
    alerts.on_record(record("fault", 2))
    hook.wait_for(1)
    started = time.monotonic()
    alerts.close(drain_secs=0.2)
    assert time.monotonic() - started < 2.0  # the backoff wait is cut short
    assert logged(logs, "WARNING", "alerts closed with 2 alert(s) not delivered")
    wait_until(lambda: not alerts._thread.is_alive(), "the alert thread to end")


def test_the_config_section():
    assert AlertsSection().enabled is False
    section = msgspec.convert({"webhook_url": "https://hooks.example.com/x", "kinds": ["fault"]}, AlertsSection)
    assert section.enabled and section.kinds == ("fault",) and section.retries == 3
    assert set(AlertsSection().kinds) == {"transition", "fault", "refusal", "approval", "halt_stuck", "hung",
                                          "hung_with_exposure", "venue_disagrees", "health", "redis",
                                          "reconciliation_mismatch", "venue_check_unavailable", "journal_degraded",
                                          "journal_replaced", "state_not_durable", "component_state", "lease_lost"}
    for bad, says in [
        ({"webhook_url": "ftp://x"}, "webhook_url"),
        ({"command": "pager 'unclosed"}, "cannot be split"),
        ({"command": "  "}, "command: empty"),
        ({"kinds": []}, "kinds: empty"),
        ({"kinds": [FAILURE_KIND]}, FAILURE_KIND),
        ({"retries": -1}, "retries"),
        ({"timeout_secs": 0}, "timeout_secs"),
        ({"webhook": "https://x"}, "unknown field"),
    ]:
        with pytest.raises(msgspec.ValidationError, match=says):
            msgspec.convert(bad, AlertsSection)
    with pytest.raises(ValueError, match="neither webhook_url nor command"):
        Alerter(AlertsSection())
