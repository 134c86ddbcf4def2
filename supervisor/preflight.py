"""`nsup preflight --config FILE [--strict]`: everything that would make a session fail or be unsafe,
checked before it starts. systemd runs it as ExecStartPre; each check prints PASS, WARN or FAIL
with its reason, and with --strict any FAIL exits 1, so the session does not start.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from supervisor.config import ConfigError, NsupConfig, load_config
from supervisor.journal import read_journal
from supervisor.persisted_state import worker_lock_held
from supervisor.lease import HeldBy, Holder, decode_holder, lease_keys
from supervisor.redis_mirror import connect, redacted, redis_errors
from supervisor.schedule import ahead, starts_after_flatten, wall_clock

BUILD_TIMEOUT_SECS = 120.0
STOP_MARGIN_SECS = 30.0  # the node's own stop and dispose, and nsup's, after the flatten


@dataclass(frozen=True)
class Check:
    name: str
    outcome: str  # "PASS" | "WARN" | "FAIL"
    detail: str


def preflight(config_path: Path, stop_timeout_secs: float | None) -> list[Check]:
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        return [Check("config", "FAIL", str(exc))]
    return [
        Check("config", "PASS", f"{config_path} is valid"),
        *_directories(config),
        *_node_builds(config),
        _no_stranger_worker(config),
        _last_session(config),
        _stop_timeout(config, stop_timeout_secs),
        _redis(config),
        *_schedule(config),
    ]


def flatten_budget_secs(config: NsupConfig) -> float:
    s = config.supervisor
    return s.flatten_rounds * (s.flatten_round_wait_secs + 2 * s.flat_confirm_secs) + STOP_MARGIN_SECS


def _directories(config: NsupConfig) -> list[Check]:
    checks = []
    for name, path in (("state_dir", config.supervisor.state_path), ("run_dir", config.supervisor.run_path)):
        try:
            path.mkdir(parents=True, exist_ok=True, mode=0o700)
            with tempfile.NamedTemporaryFile(dir=path, prefix=".preflight-"):
                pass
            checks.append(Check(name, "PASS", f"{path} is writable"))
        except OSError as exc:
            checks.append(Check(name, "FAIL", f"{path} is not writable: {exc}"))
    return checks


def _node_builds(config: NsupConfig) -> list[Check]:
    """The node builds, and what it is built of is safe under nsup (node_worker.node_facts)."""
    with tempfile.TemporaryDirectory() as scratch:  # 0700: the spec may hold secrets
        spec, facts = Path(scratch) / "spec.json", Path(scratch) / "facts.json"
        spec.write_text(json.dumps(config.worker_spec()))
        try:
            done = subprocess.run(
                [sys.executable, "-m", "node_worker", "--check", "--factory", config.node.factory,
                 "--spec-file", str(spec), "--facts-file", str(facts)],
                capture_output=True, text=True, timeout=BUILD_TIMEOUT_SECS,
            )
        except subprocess.TimeoutExpired:
            return [Check("node", "FAIL", f"building the node took over {BUILD_TIMEOUT_SECS:g}s (an unreachable cache database?)")]
        if done.returncode != 0:
            reason = (done.stderr.strip().splitlines() or ["no reason given"])[-1]
            return [Check("node", "FAIL", f"{config.node.factory} does not build: {reason}")]
        found = json.loads(facts.read_text())
    return [Check("node", "PASS", f"{config.node.factory} imports and builds"),
            _strategies(found["manage_stop"]), _venue_check(config, found["cannot_say"])]


def _strategies(manage_stop: list[str]) -> Check:
    if manage_stop:
        return Check("strategies", "WARN", f"{', '.join(manage_stop)} set manage_stop=True: their own market exit runs "
                     "beside nsup's flatten at a stop; nsup's is enough (leave it False)")
    return Check("strategies", "PASS", "no strategy runs a market exit of its own at a stop")


def _venue_check(config: NsupConfig, cannot_say: list[str]) -> Check:
    if not cannot_say:
        return Check("venue check", "PASS", "every venue can say what it holds")
    if config.supervisor.venue_check == "trust_cache":
        return Check("venue check", "WARN", f"{'; '.join(cannot_say)}; venue_check = \"trust_cache\" takes the node's "
                     "cache's word there")
    return Check("venue check", "WARN", f"{'; '.join(cannot_say)}: nsup will not call the node flat there, so a stop "
                 "with positions ends STUCK until an operator acts (venue_check = \"trust_cache\" takes the cache's word)")


def _no_stranger_worker(config: NsupConfig) -> Check:
    lock = config.worker_lock_path
    if not worker_lock_held(lock):
        return Check("worker", "PASS", "no worker of this node is running")
    was = _state(config)
    if was is not None and was.vouches_for_a_live_worker(lock):
        return Check("worker", "PASS", f"worker {was.worker.pid} is running and on record: nsup will re-attach to it")
    return Check("worker", "FAIL", f"a worker holds {lock}, and nothing on record says it is ours: end it by hand first")


def _last_session(config: NsupConfig) -> Check:
    try:
        was = _state(config, strict=True)
    except ValueError as exc:
        return Check("last session", "FAIL", str(exc))
    if was is None:
        return Check("last session", "PASS", "no earlier session on record")
    if was.state == "STOPPED":
        return Check("last session", "PASS", "the last session ended STOPPED, flat")
    if was.state != "ABORTED":
        return Check("last session", "WARN", f"the last nsup ended in {was.state} without finishing: the next carries on from there")
    journal = config.journal_path
    records = read_journal(journal) if journal.exists() else []
    last_counts = next((r for r in reversed(records) if r.get("positions_open") is not None), {})
    approval = next((r for r in reversed(records) if r["kind"] == "approval"), None)
    if not last_counts.get("positions_open"):
        return Check("last session", "PASS", "the last session ended ABORTED, but flat")
    left = ", ".join(f"{p['instrument_id']} {p['side']} {p['quantity']}" for p in (approval or {}).get("positions", []))
    return Check("last session", "FAIL", f"the last session ended ABORTED with {last_counts['positions_open']} position(s) "
                 f"open{': ' + left if left else ''}; check the venue before starting again")


def _stop_timeout(config: NsupConfig, stop_timeout_secs: float | None) -> Check:
    budget = flatten_budget_secs(config)
    if stop_timeout_secs is None:
        return Check("stop timeout", "WARN", f"not checked (give --stop-timeout-secs); the flatten budget is {budget:g}s")
    if stop_timeout_secs <= budget:
        return Check("stop timeout", "FAIL", f"{stop_timeout_secs:g}s is not more than the flatten budget of {budget:g}s: "
                     "the service manager could kill nsup mid-flatten")
    return Check("stop timeout", "PASS", f"{stop_timeout_secs:g}s exceeds the flatten budget of {budget:g}s")


def _redis(config: NsupConfig) -> Check:
    section = config.redis
    if not section.enabled:
        return Check("redis", "PASS", "no Redis configured: the journal and state are local files")
    started, client = time.monotonic(), None
    try:
        client = connect(section.url, section.timeout_secs)
        client.ping()
        answered_ms = (time.monotonic() - started) * 1000
        lease = client.pipeline(transaction=False).get(lease_keys(config.redis_name)[0]).pttl(lease_keys(config.redis_name)[0]).execute()
    except (*redis_errors(), ValueError) as exc:
        cache = "; and the node's cache is kept there, so the node cannot build" if section.node_cache else ""
        return Check("redis", "FAIL" if section.node_cache else "WARN",
                     f"{redacted(section.url)} does not answer within {section.timeout_secs:g}s: {exc}{cache}"
                     + ("" if section.node_cache else "; nsup would keep the journal locally and ship it later"))
    finally:
        if client is not None:
            client.close()
    holder = decode_holder(lease[0])
    if lease[0] is not None and (holder is None or not holder.is_on_the_state_dir_of(Holder.me(config.supervisor.state_path))):
        return Check("redis", "FAIL", f"node {config.redis_name!r} is held by {HeldBy(holder, lease[1]).describe()}: nsup "
                                      "would refuse to start (two nsups on one node would trade twice)")
    held = f"; its lease is this state dir's nsup's (pid {holder.pid})" if holder else "; its lease is free"
    return Check("redis", "PASS", f"{redacted(section.url)} answers in {answered_ms:.1f} ms (node {config.redis_name!r}{held})")


def _schedule(config: NsupConfig) -> list[Check]:
    """A session that would start after today's flatten time (or opens after it) is flattened at once:
    a WARN; and what the schedule does next, in its own zone."""
    section = config.schedule
    if section is None:
        return []
    now, was = wall_clock(), _state(config)
    upcoming = list(itertools.islice(ahead(section, now, set(was.schedule_done) if was else set()), 3))
    listed = "; ".join(f"{a.kind} {a.local(section):%a %Y-%m-%d %H:%M:%S}" for a in upcoming) or "nothing scheduled"
    late = starts_after_flatten(section, now)
    return [Check("schedule", "WARN" if late else "PASS",
                  f"{late + '; ' if late else ''}next: {listed} ({section.timezone})")]


def _state(config: NsupConfig, strict: bool = False):
    """The state a new nsup would carry on from: the newer of the local file and Redis's copy.
    `strict`: a damaged or foreign state is a ValueError (else: None)."""
    try:
        return config.state_store(config.redis_mirror()).load()
    except ValueError:
        if strict:
            raise
        return None
