"""Metrics: a real Prometheus endpoint on 127.0.0.1, fed transitions, health and statuses, scraped and
parsed with prometheus_client's own text-format parser."""

from __future__ import annotations

import errno
import socket
import urllib.error
import urllib.request
from types import SimpleNamespace

import msgspec
import pytest
from prometheus_client.parser import text_string_to_metric_families

from supervisor.lifecycle import STATES
from supervisor.metrics import HEALTHS, Metrics, MetricsSection, parse_listen
from supervisor.snapshot import Snapshot
from tests.unit._statuses import status


@pytest.fixture
def metrics():
    made = []

    def make(snapshot=None, redis_mirror=None) -> Metrics:
        made.append(Metrics())
        if snapshot is not None:
            made[-1].watch(snapshot, redis_mirror)
        made[-1].start("127.0.0.1:0")
        return made[-1]

    yield make
    for m in made:
        m.stop()


def scrape(m: Metrics) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} of one scrape."""
    host, port = m.address
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def one_hot(samples: dict, name: str, label: str) -> dict[str, float]:
    return {dict(labels)[label]: value for (n, labels), value in samples.items() if n == name}


def transition(source: str, dest: str) -> dict:
    return {"ts": "2026-01-01T00:00:00+00:00", "kind": "transition", "trigger": "x", "source": source, "dest": dest}


class Nsup:
    """What Metrics reads of the daemon: its snapshot, changed by the test between scrapes."""

    def __init__(self, **fields):
        self.fields = {"state": "CREATED", "node": None, "health": None, "hung": False, "stop": None, "paused": False,
                       "trader_id": None, "worker": None, "worker_alive": False, "worker_uptime_secs": None,
                       "supervisor_pid": 1, "supervisor_uptime_secs": 0.0, "heartbeat_age_secs": None, "restarts": 0,
                       "last_transition": None, **fields}

    def snapshot(self) -> Snapshot:
        return Snapshot(**self.fields)


def test_states_counts_health_and_transitions_are_scraped(metrics):
    nsup = Nsup(heartbeat_age_secs=2.5, restarts=4)
    m = metrics(nsup.snapshot)
    before = scrape(m)
    assert one_hot(before, "nsup_lifecycle_state", "state") == {s: float(s == "CREATED") for s in STATES}
    assert not any(name.startswith(("nsup_positions", "nsup_orders", "nsup_trading", "nsup_health"))
                   for name, _ in before)  # nothing is claimed before the worker has said it
    for source, dest in [("CREATED", "BUILT"), ("BUILT", "RUNNING"), ("RUNNING", "HALTING"), ("HALTING", "RUNNING"),
                         ("RUNNING", "HALTING")]:
        m.on_record(transition(source, dest))
    m.on_record({"kind": "flat_seen"})  # not a transition: ignored
    nsup.fields.update(state="HALTING", health="feed_silent",
                       node=status(positions=2, inflight=1, open_=3, trading_state="REDUCING"))
    after = scrape(m)
    assert one_hot(after, "nsup_lifecycle_state", "state") == {s: float(s == "HALTING") for s in STATES}
    assert one_hot(after, "nsup_trading_state", "state") == {"ACTIVE": 0.0, "REDUCING": 1.0, "HALTED": 0.0}
    assert after[("nsup_positions_open", ())] == 2
    assert after[("nsup_orders_inflight", ())] == 1
    assert after[("nsup_orders_open", ())] == 3
    assert one_hot(after, "nsup_health", "health") == {h: float(h == "feed_silent") for h in HEALTHS}
    assert after[("nsup_heartbeat_age_seconds", ())] == 2.5
    assert after[("nsup_worker_restarts_total", ())] == 4
    transitions = {(dict(labels)["source"], dict(labels)["dest"]): v
                   for (name, labels), v in after.items() if name == "nsup_transitions_total"}
    assert transitions == {("CREATED", "BUILT"): 1, ("BUILT", "RUNNING"): 1, ("RUNNING", "HALTING"): 2,
                           ("HALTING", "RUNNING"): 1}


def test_values_are_read_at_scrape_time(metrics):
    nsup = Nsup()
    mirror = SimpleNamespace(reachable=None, shipped=0)
    m = metrics(nsup.snapshot, mirror)
    samples = scrape(m)
    assert ("nsup_heartbeat_age_seconds", ()) not in samples  # never heard: left out, not 0
    assert ("nsup_redis_up", ()) not in samples and samples[("nsup_redis_records_shipped_total", ())] == 0
    nsup.fields.update(heartbeat_age_secs=0.75, restarts=1, state="RECOVERING", node=status(positions=1, trading_state="ACTIVE"))
    mirror.reachable, mirror.shipped = False, 7  # read at scrape time, from the mirror's own thread's fields
    samples = scrape(m)
    assert samples[("nsup_heartbeat_age_seconds", ())] == 0.75
    assert samples[("nsup_worker_restarts_total", ())] == 1
    assert one_hot(samples, "nsup_lifecycle_state", "state")["RECOVERING"] == 1.0  # e.g. re-attached: no transition seen
    assert samples[("nsup_positions_open", ())] == 1
    assert samples[("nsup_redis_up", ())] == 0.0 and samples[("nsup_redis_records_shipped_total", ())] == 7
    assert samples[("nsup_lease_lost", ())] == 0.0
    nsup.fields.update(lease_lost="Redis did not answer before the lease expired")
    assert scrape(m)[("nsup_lease_lost", ())] == 1.0
    nsup.fields.update(node=status(positions=0, trading_state="HALTED"))
    samples = scrape(m)
    assert samples[("nsup_positions_open", ())] == 0
    assert one_hot(samples, "nsup_trading_state", "state")["HALTED"] == 1.0


def test_only_nsup_metrics_are_exposed(metrics):
    names = {name for name, _ in scrape(metrics(Nsup().snapshot))}
    assert names and all(name.startswith("nsup_") for name in names)  # its own registry: no python_gc_*, process_*


def test_stop_frees_the_port(metrics):
    m = metrics()
    host, port = m.address
    scrape(m)
    probe = socket.socket()
    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as any server binding it would
    with pytest.raises(OSError) as taken:
        probe.bind((host, port))
    assert taken.value.errno == errno.EADDRINUSE
    probe.close()
    m.stop()
    with pytest.raises(urllib.error.URLError):
        scrape(m)
    again = Metrics()
    assert again.start(f"{host}:{port}") == (host, port)  # the same port, at once
    again.stop()
    m.stop()  # twice: nothing


def test_a_taken_port_is_an_oserror_naming_the_address(metrics):
    host, port = metrics().address
    with pytest.raises(OSError, match=f"metrics cannot listen on 127.0.0.1:{port}"):
        Metrics().start(f"127.0.0.1:{port}")


def test_the_config_section():
    assert MetricsSection().enabled is False
    assert msgspec.convert({"listen": "127.0.0.1:9464"}, MetricsSection).enabled
    assert parse_listen("127.0.0.1:9464") == ("127.0.0.1", 9464)
    assert parse_listen("9464") == ("127.0.0.1", 9464)
    assert parse_listen(":9464") == ("127.0.0.1", 9464)
    assert parse_listen("0.0.0.0:9100") == ("0.0.0.0", 9100)
    assert parse_listen("[::1]:9464") == ("::1", 9464)
    for bad in ["127.0.0.1:99999", "localhost", "127.0.0.1:", "http://x:1", "a b:1"]:
        with pytest.raises(msgspec.ValidationError, match="listen"):
            msgspec.convert({"listen": bad}, MetricsSection)
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        msgspec.convert({"port": 9464}, MetricsSection)


def test_each_component_in_trouble_is_a_series_and_one_back_to_running_is_gone(metrics):
    troubled = msgspec.structs.replace(status(), components={"EMACross-001": "FAULTED", "DataEngine": "DEGRADED"})
    nsup = Nsup(node=troubled)
    m = metrics(nsup.snapshot)
    assert {labels: v for (name, labels), v in scrape(m).items() if name == "nsup_component_state"} == {
        (("component", "DataEngine"), ("state", "DEGRADED")): 1.0, (("component", "EMACross-001"), ("state", "FAULTED")): 1.0}
    nsup.fields.update(node=status())
    assert not [name for name, _ in scrape(m) if name == "nsup_component_state"]
