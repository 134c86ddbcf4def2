"""What nsupctl reads from Redis for any node: the fleet, one node's status and its journal.

These only read what the nodes' Redis mirrors wrote (supervisor/redis_mirror.py); they never reach a
node, so they work for a node that is down, on another host, or stuck behind a firewall.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone

import msgspec

from supervisor.redis_mirror import NODES_KEY, Keys, connect, redacted, redis_errors

FOLLOW_BLOCK_MS = 1000


class RedisUnreachable(Exception):
    pass


class NodeUnknown(Exception):
    pass


class RedisReader:
    def __init__(self, url: str, timeout_secs: float):
        self._url = url
        # A blocking XREAD waits up to FOLLOW_BLOCK_MS; the socket must outlast it.
        self._client = connect(url, timeout_secs + FOLLOW_BLOCK_MS / 1000)
        self._errors = redis_errors()

    def _call(self, method: str, *args, **kwargs):
        try:
            return getattr(self._client, method)(*args, **kwargs)
        except self._errors as exc:
            raise RedisUnreachable(f"Redis at {redacted(self._url)}: {exc}") from None

    def nodes(self) -> list[dict]:
        """Every node that ever mirrored here, with its last status (or its persisted state)."""
        fleet = []
        for name in sorted(member.decode(errors="replace") for member in self._call("smembers", NODES_KEY)):
            try:
                fleet.append(self.status(name))
            except NodeUnknown:  # registered, nothing written yet: its nsup is just starting
                fleet.append({"node": name, "state": None, "persisted": {}})
        return fleet

    def status(self, name: str) -> dict:
        keys = Keys(name)
        raw_status, raw_state = self._call("mget", [keys.status, keys.state])
        if raw_status is None and raw_state is None:
            raise NodeUnknown(f"Redis has no node called {name!r} (see `nsupctl --redis URL nodes`)")
        status = _decode(raw_status)
        state = _decode(raw_state)
        status.setdefault("state", state.get("state"))
        status["node"] = name
        status["persisted"] = state
        try:
            age = datetime.now(timezone.utc) - datetime.fromisoformat(status["updated_at"])
            status["age_secs"] = round(age.total_seconds(), 3)
        except (KeyError, TypeError, ValueError):
            status.pop("updated_at", None)  # none, or not a time with its zone: no age to show
        return status

    def tail(self, name: str, count: int) -> list[tuple[str, dict]]:
        """The last `count` records, oldest first, each with its stream id."""
        entries = self._call("xrevrange", Keys(name).journal, count=count) if count > 0 else []
        return [(entry_id.decode(), _record(fields)) for entry_id, fields in reversed(entries)]

    def follow(self, name: str, after: str) -> Iterator[dict]:
        """Records as they arrive, after the stream id `after` ("$": from now on, "0-0": all)."""
        key, last = Keys(name).journal, after
        while True:
            for _key, entries in self._call("xread", {key: last}, block=FOLLOW_BLOCK_MS) or []:
                for entry_id, fields in entries:
                    last = entry_id.decode()
                    yield _record(fields)


def _decode(raw: bytes | None) -> dict:
    if raw is None:
        return {}
    try:
        value = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return {"damaged": raw[:200].decode(errors="replace")}
    return value if isinstance(value, dict) else {"damaged": repr(value)[:200]}


def _record(fields: dict) -> dict:
    record = _decode(fields.get(b"record"))
    if b"journal_id" in fields:
        record["journal_id"] = fields[b"journal_id"].decode()
    return record
