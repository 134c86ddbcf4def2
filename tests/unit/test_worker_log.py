"""A failure's own cause, from the worker's log: the last ERROR line, its continuation, said plainly."""

from __future__ import annotations

from supervisor.worker_log import cause_of, last_error, log_size

BINANCE_REFUSED = """\
2026-12-01T23:20:51.600000000Z [INFO] UNREACH-001.TradingNode: starting
2026-12-01T23:20:51.704752740Z [ERROR] UNREACH-001.ExecClient-BINANCE: Error on '_connect'
HttpError(error sending request for url (http://127.0.0.1:9/api/v3/account?timestamp=1&signature=ab12): client error (Connect): tcp connect error: Connection refused (os error 111))
2026-12-01T23:20:52.000000000Z [INFO] UNREACH-001.TradingNode: waiting
"""
TIMEOUT = """\
2026-12-01T23:18:26.859577766Z [ERROR] DEMO-001.DataClient-PAPER: Error running '_connect'
2026-12-01T23:18:26.859693448Z [ERROR] DEMO-001.ExecClient-SIM: _connect failed: VenueTimeout: the venue did not answer within 5s
2026-12-01T23:18:26.860Z [nsup-worker] WARNING fault: SIM: _connect failed
"""


def test_the_last_error_with_its_cause_on_the_next_line_and_no_query_string(tmp_path):
    log = tmp_path / "worker.log"
    log.write_text(BINANCE_REFUSED)
    error = last_error(log, 0)
    assert error.startswith("UNREACH-001.ExecClient-BINANCE: Error on '_connect': HttpError(")
    assert "Connection refused" in error and "signature" not in error and "/api/v3/account)" in error
    assert cause_of(log, 0).endswith("retrying will not heal this: check the venue's address and the credentials")


def test_a_cause_retrying_may_heal_is_not_called_hopeless(tmp_path):
    log = tmp_path / "worker.log"
    log.write_text(TIMEOUT)
    assert cause_of(log, 0) == ("; the node's last error: DEMO-001.ExecClient-SIM: _connect failed: VenueTimeout: "
                                "the venue did not answer within 5s")


def test_only_this_workers_lines_count(tmp_path):
    log = tmp_path / "worker.log"
    log.write_text(TIMEOUT)
    since = log_size(log)
    with open(log, "a") as f:
        f.write("2026-12-01T23:30:00.000Z [nsup-worker] INFO the next worker starts\n")
    assert last_error(log, since) is None and cause_of(log, since) == ""
    assert last_error(tmp_path / "missing.log", 0) is None and log_size(tmp_path / "missing.log") == 0
