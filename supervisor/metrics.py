"""Prometheus metrics: nsup's state, the node's counts and health, on an HTTP endpoint of its own.

    [metrics]                                      # optional; off unless listen is set
    listen = "127.0.0.1:9464"                      # HOST:PORT; a bare PORT (or :PORT) binds 127.0.0.1

Exposed (all read at scrape time, from what the journal and the worker's statuses last said):

    nsup_lifecycle_state{state}          1 for nsup's lifecycle state, 0 for the others
    nsup_trading_state{state}            1 for the node's trading state (ACTIVE, REDUCING, HALTED)
    nsup_positions_open, nsup_orders_inflight, nsup_orders_open    the node's counts, as last heard
    nsup_health{health}                  1 for the worker's health (ok, waiting_for_data, ...)
    nsup_component_state{component,state}  1 for each NautilusTrader component DEGRADED or FAULTED now
    nsup_heartbeat_age_seconds           since the worker was last heard
    nsup_worker_restarts_total           workers replaced (counter)
    nsup_transitions_total{source,dest}  lifecycle transitions since this nsup started (counter)
    nsup_journal_degraded                1 while the journal or state.json cannot be written, else 0
    nsup_journal_records_held            journal records held in memory until the disk takes them
    nsup_in_session                      1 during the trading session, 0 outside it (only with [schedule])
    nsup_lease_lost                      1 while the node's lease is lost and it runs closing-only (only with [redis])

Everything but the transitions is read from nsup's snapshot when scraped. A value not known yet (no
status, no heartbeat) is left out rather than reported as zero: zero open positions is a claim nsup
does not make before the worker has said so. prometheus_client is
imported only when a Metrics is made, so an nsup without [metrics] does not pay for it.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import Annotated

import msgspec
from loguru import logger

from supervisor.lifecycle import STATES
from supervisor.snapshot import Snapshot

DEFAULT_LISTEN = "127.0.0.1:9464"
DEFAULT_HOST = "127.0.0.1"
POLL_SECS = 0.05  # how soon stop() is noticed by the serving thread
TRADING_STATES = ("ACTIVE", "REDUCING", "HALTED")
HEALTHS = ("ok", "waiting_for_data", "feed_silent", "idle_market_closed", "venue_disconnected", "degraded",
           "component_degraded", "component_faulted")  # NodeStatus.health's answers

Listen = Annotated[str, msgspec.Meta(pattern=r"^((\[[0-9A-Fa-f:.]+\]|[^\s:\[\]]*):)?\d{1,5}$")]


class MetricsSection(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    listen: Listen | None = None  # e.g. DEFAULT_LISTEN; None: no metrics endpoint

    def __post_init__(self):
        if self.listen is not None:
            parse_listen(self.listen)

    @property
    def enabled(self) -> bool:
        return self.listen is not None


def parse_listen(listen: str) -> tuple[str, int]:
    """"HOST:PORT", "[::1]:PORT", ":PORT" or "PORT" -> (host, port); no host means 127.0.0.1."""
    host, _, port = listen.rpartition(":")
    host = host.removeprefix("[").removesuffix("]") or DEFAULT_HOST
    if not port.isdigit() or int(port) > 65535:
        raise ValueError(f"listen: expected HOST:PORT with a port from 0 to 65535, got {listen!r}")
    return host, int(port)


class Metrics:
    """The endpoint, reading nsup's snapshot at scrape time (`watch`), and the journal listener
    (`on_record`) that counts transitions.

    The listener runs on the daemon's loop and only updates a counter under a lock; the HTTP server (a
    daemon thread serving prometheus_client's WSGI app) reads when scraped. Its registry is its own,
    so nothing of the process-global registry (GC, process, platform collectors) is exposed.
    """

    def __init__(self):
        from prometheus_client import CollectorRegistry

        self.snapshot: Callable[[], Snapshot] | None = None
        self.redis_mirror = None  # supervisor.redis_mirror.RedisMirror, read at scrape time
        self._lock = threading.Lock()
        self._transitions: dict[tuple[str, str], int] = {}
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)
        self._server = None
        self._thread: threading.Thread | None = None
        self.address: tuple[str, int] | None = None  # where it listens, the port resolved

    def watch(self, snapshot: Callable[[], Snapshot], redis_mirror=None) -> None:
        """Read `snapshot()` (a daemon.Supervisor's) and the Redis mirror's figures at scrape time."""
        self.snapshot, self.redis_mirror = snapshot, redis_mirror

    def on_record(self, record: dict) -> None:
        if record.get("kind") == "transition":
            key = (str(record.get("source")), str(record.get("dest")))
            with self._lock:
                self._transitions[key] = self._transitions.get(key, 0) + 1

    # The endpoint -------------------------------------------------------------------------------

    def start(self, listen: str = DEFAULT_LISTEN) -> tuple[str, int]:
        """Serve the metrics on `listen` (any path answers, /metrics included); returns the address
        bound (port 0 picks a free one). OSError, naming the address, if it cannot be bound."""
        if self._server is not None:
            raise RuntimeError(f"metrics already listen on {self.address}")
        host, port = parse_listen(listen)
        try:
            self._server = _server(host, port, self.registry)
        except OSError as exc:
            raise OSError(exc.errno, f"metrics cannot listen on {listen}: {exc.strerror or exc}") from None
        self._thread = threading.Thread(target=self._server.serve_forever, args=(POLL_SECS,), name="nsup-metrics",
                                        daemon=True)
        self._thread.start()
        self.address = (host, self._server.server_port)
        logger.info("metrics on http://{}:{}/metrics", _bracketed(host), self.address[1])
        return self.address

    def stop(self) -> None:
        """Stop serving and close the socket: the port is free when this returns."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()  # within POLL_SECS
        server.server_close()
        self._thread.join(timeout=5.0)

    # prometheus_client's Collector protocol ----------------------------------------------------

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        with self._lock:
            transitions = dict(self._transitions)
        snap = self.snapshot() if self.snapshot is not None else None
        if snap is not None:
            yield _one_hot("nsup_lifecycle_state", "1 for nsup's lifecycle state, 0 for the others", "state", STATES,
                           snap.state)
            if snap.node is not None:
                yield _one_hot("nsup_trading_state", "1 for the node's trading state, 0 for the others", "state",
                               TRADING_STATES, snap.node.trading_state)
                c = snap.node.counts
                for name, value, what in zip(("positions_open", "orders_inflight", "orders_open"),
                                             (c.positions_open, c.orders_inflight, c.orders_open),
                                             ("open positions", "orders sent and not yet acknowledged", "open orders")):
                    yield GaugeMetricFamily(f"nsup_{name}", f"The node's {what}, as last heard", value=value)
                # Only the troubled ones: a series per component that runs would be most of the output.
                troubled = GaugeMetricFamily("nsup_component_state", "1 for each NautilusTrader component DEGRADED "
                                             "or FAULTED now (the others run)", labels=["component", "state"])
                for component, state in sorted(snap.node.components.items()):
                    troubled.add_metric([component, state], 1.0)
                yield troubled
            if snap.health is not None:
                yield _one_hot("nsup_health", "1 for the worker's health, 0 for the others", "health", HEALTHS, snap.health)
            if snap.heartbeat_age_secs is not None and math.isfinite(snap.heartbeat_age_secs):
                yield GaugeMetricFamily("nsup_heartbeat_age_seconds", "Seconds since the worker was last heard",
                                        value=snap.heartbeat_age_secs)
            yield CounterMetricFamily("nsup_worker_restarts", "Workers nsup replaced (lost, hung, or restarted)",
                                      value=snap.restarts)
            yield GaugeMetricFamily("nsup_journal_degraded", "1 while the journal or state.json cannot be written",
                                    value=1.0 if snap.degraded else 0.0)
            if snap.schedule is not None:
                yield GaugeMetricFamily("nsup_in_session", "1 during the trading session ([schedule]), else 0",
                                        value=1.0 if snap.schedule.in_session else 0.0)
            yield GaugeMetricFamily("nsup_journal_records_held", "Journal records held in memory until the disk takes them",
                                    value=snap.records_held)
        if (mirror := self.redis_mirror) is not None:
            if mirror.reachable is not None:
                yield GaugeMetricFamily("nsup_redis_up", "1 while Redis takes the journal, 0 while it is unreachable",
                                        value=1.0 if mirror.reachable else 0.0)
            yield CounterMetricFamily("nsup_redis_records_shipped", "Journal records this nsup put in the Redis stream",
                                      value=mirror.shipped)
            if snap is not None:  # with Redis, the node has a lease (supervisor/lease.py)
                yield GaugeMetricFamily("nsup_lease_lost", "1 while the node's lease is lost (closing-only), else 0",
                                        value=1.0 if snap.lease_lost else 0.0)
        family = CounterMetricFamily("nsup_transitions", "Lifecycle transitions since nsup started",
                                     labels=["source", "dest"])
        for (source, dest), n in sorted(transitions.items()):
            family.add_metric([source, dest], n)
        yield family


def _one_hot(name: str, documentation: str, label: str, known: tuple | list, current: str):
    from prometheus_client.core import GaugeMetricFamily

    family = GaugeMetricFamily(name, documentation, labels=[label])
    for value in (*known, *([current] if current not in known else [])):  # an unforeseen value still shows
        family.add_metric([value], 1.0 if value == current else 0.0)
    return family


def _server(host: str, port: int, registry):
    """prometheus_client's WSGI app on a threading server of our own, for a short shutdown poll."""
    import socket
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    from prometheus_client import make_wsgi_app

    class Quiet(WSGIRequestHandler):
        def log_message(self, format, *args):  # noqa: A002 - the stdlib's signature
            pass  # a scrape every few seconds is not news

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    return make_server(host, port, make_wsgi_app(registry), Server, handler_class=Quiet)


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host
