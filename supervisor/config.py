"""The nsup config file (TOML), validated field by field.

    [node]
    factory = "node_worker.demo.node:demo_node"   # module:function returning a NodeRecipe
    params = { hold_secs = 4.0 }                   # keyword arguments for the factory
    scope = ["EUR/USD.PAPER"]                      # optional: this node's instruments on an account it shares

    [supervisor]
    state_dir = "/var/lib/nsup/demo"               # journal.jsonl, worker.log
    run_dir = "/run/nsup/demo"                     # sockets; defaults to state_dir
    heartbeat_interval_secs = 1.0
    flatten_rounds = 3                             # market_exit rounds before nsup calls itself stuck
    flatten_round_wait_secs = 10.0                 # how long each round waits for flat
    flat_confirm_secs = 0.1                        # the interval between the two flat reads (docs/design.md: why)
    startup_timeout_secs = 60.0                    # worker spawn to node RUNNING
    abort_challenge_ttl_secs = 60.0                # how long an abort challenge's nonce is good for
    max_restarts = 3                               # a lost worker is replaced at most this often...
    restart_window_secs = 300.0                    # ...in this many seconds; past that: ABORTED
    restart_backoff_secs = 0.5                     # the first restart goes at once; then this, doubling, with jitter
    restart_backoff_max_secs = 30.0
    stable_after_secs = 60.0                       # a worker up this long resets the count
    hang_after_missed_heartbeats = 5               # silent this long: hung (flat: replaced; else: operator)
    reduce_after_supervisor_lost_secs = 0.0        # a worker without nsup this long goes closing-only (0: never)
    feed_silent_after_secs = 10.0                  # no market data this long: health feed_silent (an alert only)
    venue_check = "required"                       # or "trust_cache": a venue that cannot say is the cache's word
    fail_on_reconciliation_mismatch = false        # true: a start that finds what nobody left stays closing-only

    [control]                                      # optional; ipc in run_dir is always on
    group = "traders"                              # control.sock 0660 for this group (else 0600)
    tcp_endpoint = "tcp://127.0.0.1:7400"          # TCP only with CURVE: both keys below required
    events_tcp_endpoint = "tcp://127.0.0.1:7401"
    curve_secret_key = "/etc/nsup/server.key_secret"   # from `nsupctl keygen`
    curve_authorized_keys = "/etc/nsup/authorized"     # a directory of clients' *.key files

The optional [alerts], [metrics], [redis] and [schedule] tables are described in supervisor/alerts.py,
supervisor/metrics.py, supervisor/redis_mirror.py and supervisor/schedule.py (the trading-session schedule).

A wrong, missing or mistyped field, or a number out of its range, is a ConfigError whose message is
one line naming the field and what was expected. Every number has a range: one past it would make
nsup wait without end or never give up (flatten_rounds = 99999999999999999999 never calls a stop stuck).
"""

from __future__ import annotations

import grp
import hashlib
import json
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from supervisor.alerts import AlertsSection
from supervisor.metrics import MetricsSection
from supervisor.persisted_state import StateStore
from supervisor.redis_mirror import RedisMirror, RedisSection, node_cache_database
from supervisor.schedule import ScheduleSection

PositiveSecs = Annotated[float, msgspec.Meta(gt=0, le=86_400)]  # finite: inf would wait forever
FACTORY_PATTERN = r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$"


InstrumentIdText = Annotated[str, msgspec.Meta(pattern=r"^\S+\.\S+$")]


class NodeSection(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    factory: Annotated[str, msgspec.Meta(pattern=FACTORY_PATTERN)]
    params: dict[str, Any] = {}
    # The instruments that are this node's on a venue account another node also trades: its flat is
    # judged, and its closer acts, on these only. Empty: everything on its accounts is its own.
    scope: list[InstrumentIdText] = []


class SupervisorSection(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    state_dir: str
    run_dir: str | None = None
    heartbeat_interval_secs: PositiveSecs = 1.0
    flatten_rounds: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 3
    flatten_round_wait_secs: PositiveSecs = 10.0
    flat_confirm_secs: PositiveSecs = 0.1
    startup_timeout_secs: PositiveSecs = 60.0
    abort_challenge_ttl_secs: PositiveSecs = 60.0
    max_restarts: Annotated[int, msgspec.Meta(ge=0, le=100)] = 3
    restart_window_secs: PositiveSecs = 300.0
    restart_backoff_secs: PositiveSecs = 0.5
    restart_backoff_max_secs: PositiveSecs = 30.0
    stable_after_secs: PositiveSecs = 60.0
    hang_after_missed_heartbeats: Annotated[int, msgspec.Meta(ge=2, le=1000)] = 5
    reduce_after_supervisor_lost_secs: Annotated[float, msgspec.Meta(ge=0, le=86_400)] = 0.0
    feed_silent_after_secs: PositiveSecs = 10.0
    # A venue whose adapter cannot say what it holds (NautilusTrader's sandbox; a query that fails) is
    # never flat: "required". "trust_cache" takes the node's cache's word there, journaled each time.
    venue_check: Literal["required", "trust_cache"] = "required"
    # At a start, the node found positions or orders the last session did not leave (supervisor/holdings.py):
    # always journaled and alerted; with this, the node also starts closing-only until an operator resumes it.
    fail_on_reconciliation_mismatch: bool = False

    @property
    def state_path(self) -> Path:
        return Path(self.state_dir)

    @property
    def run_path(self) -> Path:
        return Path(self.run_dir or self.state_dir)


TcpEndpoint = Annotated[str, msgspec.Meta(pattern=r"^tcp://[^\s:]+:\d{1,5}$")]


class ControlSection(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    group: str | None = None
    tcp_endpoint: TcpEndpoint | None = None
    events_tcp_endpoint: TcpEndpoint | None = None
    curve_secret_key: str | None = None
    curve_authorized_keys: str | None = None

    def __post_init__(self):
        if self.group is not None:
            try:
                grp.getgrnam(self.group)
            except KeyError:
                raise ValueError(f"group: no such group {self.group!r}") from None
        if self.curve_secret_key is not None and not self.curve_secret_key.endswith(".key_secret"):
            raise ValueError("curve_secret_key: expected the server's .key_secret file (from `nsupctl keygen`)")
        if (self.tcp_endpoint or self.events_tcp_endpoint) and not (self.curve_secret_key and self.curve_authorized_keys):
            raise ValueError("plain TCP is refused: set curve_secret_key and curve_authorized_keys (see `nsupctl keygen`)")
        if bool(self.tcp_endpoint) != bool(self.events_tcp_endpoint):
            raise ValueError("tcp_endpoint and events_tcp_endpoint go together")


class NsupConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    node: NodeSection
    supervisor: SupervisorSection
    control: ControlSection = ControlSection()
    alerts: AlertsSection = AlertsSection()
    metrics: MetricsSection = MetricsSection()
    redis: RedisSection = RedisSection()
    schedule: ScheduleSection | None = None  # the trading-session schedule; none without the table

    @property
    def redis_name(self) -> str:
        """This node's name in Redis: as configured, else the state dir's last part (the systemd instance)."""
        return self.redis.name or self.supervisor.state_path.name

    @property
    def node_fingerprint(self) -> str:
        """Which node this is, without its params (they may hold secrets): its factory and params, hashed."""
        node = json.dumps({"factory": self.node.factory, "params": self.node.params}, sort_keys=True)
        return hashlib.sha256(node.encode()).hexdigest()[:16]

    @property
    def journal_path(self) -> Path:
        return self.supervisor.state_path / "journal.jsonl"

    def redis_mirror(self) -> RedisMirror | None:
        """The mirror of this node's journal, state and status to Redis; None without [redis]."""
        return RedisMirror(self.redis, self.redis_name, self.journal_path) if self.redis.enabled else None

    @property
    def worker_lock_path(self) -> Path:
        return self.supervisor.run_path / "worker.lock"

    def state_store(self, mirror=None) -> StateStore:
        """This node's persisted state: state.json in the state dir, and its copy in Redis with a mirror."""
        return StateStore(self.supervisor.state_path / "state.json", mirror, node=self.node_fingerprint)

    def worker_spec(self) -> dict:
        """What the worker builds its node from (written to a 0600 file: it may hold secrets)."""
        return {"params": self.node.params, "scope": self.node.scope, "cache_database": node_cache_database(self.redis)}


PATTERN_HINTS = {
    "webhook_url": "expected an http:// or https:// URL",
    "listen": "expected HOST:PORT (or PORT, on 127.0.0.1), e.g. 127.0.0.1:9464",
    "factory": "expected 'module:function', e.g. node_worker.demo.node:demo_node",
    "scope": "expected instrument ids as NautilusTrader writes them, e.g. EUR/USD.PAPER",
    "tcp_endpoint": "expected tcp://HOST:PORT",
    "events_tcp_endpoint": "expected tcp://HOST:PORT",
    "name": "expected letters, digits and _ . @ - (at most 100)",
}


class ConfigError(ValueError):
    pass


def load_config(path: Path) -> NsupConfig:
    return parse_config(read_toml(path), source=str(path))


def read_toml(path: Path) -> dict:
    """A TOML file's tables, or ConfigError in one line (the Telegram bridge reads its config so too)."""
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def validated(raw: dict, schema: type, source: str):
    """`raw` as `schema` (a msgspec Struct), or ConfigError naming the field first, in one line."""
    try:
        return msgspec.convert(raw, schema)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{source}: {_one_line(str(exc))}") from None


def parse_config(raw: dict, source: str = "config") -> NsupConfig:
    config = validated(raw, NsupConfig, source)
    try:
        json.dumps(config.node.params, allow_nan=False)  # the worker receives them as JSON
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: node.params: must be plain values (strings, numbers, lists, tables): {exc}") from None
    heartbeat = config.supervisor.heartbeat_interval_secs
    if config.redis.enabled and config.redis.lease_secs < 3 * heartbeat:
        raise ConfigError(f"{source}: redis.lease_secs: expected at least 3 x supervisor.heartbeat_interval_secs "
                          f"({3 * heartbeat:g}s): the worker hears of each renewal with nsup's heartbeat, and would go "
                          "closing-only between them")
    return config


def _one_line(message: str) -> str:
    """msgspec says 'Expected `int`, got `str` - at `$.supervisor.flatten_rounds`'; lead with the field."""
    match = re.match(r"^(?P<what>.*?)(?: - at `\$\.?(?P<field>[^`]*)`)?$", message, re.S)
    what, field = match["what"].strip(), match["field"] or ""
    named = re.match(r"Object (?P<problem>missing required|contains unknown) field `(?P<name>[^`]+)`", what)
    what = what.replace("`", "")
    if named:
        field = f"{field}.{named['name']}".lstrip(".")
        what = "required, but missing" if named["problem"] == "missing required" else "unknown field"
    elif "matching regex" in what:
        what = PATTERN_HINTS.get(field.rsplit(".", 1)[-1], what)
    elif own := re.match(r"^(?P<name>[a-z_]+): (?P<rest>.+)$", what):  # a section's own check names its field
        field, what = f"{field}.{own['name']}".lstrip("."), own["rest"]
    elif "RFC3339 encoded" in what:  # msgspec's word for a date or time it cannot read
        what = "expected a time of day as HH:MM:SS, e.g. 15:55:00" if "time" in what else "expected a date as YYYY-MM-DD"
    return f"{field or '(top level)'}: {what[0].lower() + what[1:]}"
