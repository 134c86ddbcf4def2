"""The node's lease (supervisor/lease.py) against a private redis-server: taken once, renewed only by its
holder, taken over from an earlier nsup of the same state dir only, lost when Redis is silent past the
expiry and taken again with a new token; and the worker's fencing rule."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import msgspec
import pytest

from supervisor.lease import Change, Granted, HeldBy, Holder, Lease, LeaseView, Unanswered, lease_keys, refused_by_worker
from tests.redis_server import redis_server  # noqa: F401 (a fixture)


def lease(server, state_dir: Path, ttl: float = 2.0) -> Lease:
    return Lease(server.url, "n1", state_dir, ttl_secs=ttl, timeout_secs=0.3)


def test_one_holder_a_clear_refusal_and_a_new_token_on_every_take(redis_server, tmp_path):
    first, second = lease(redis_server, tmp_path / "a"), lease(redis_server, tmp_path / "b")
    taken = first.take_at_start()
    assert isinstance(taken, Change) and taken.held and taken.token == 1 and first.held()
    refused = second.take_at_start()
    assert isinstance(refused, HeldBy) and not second.held()
    assert refused.holder.token == 1 and refused.holder.state_dir == str((tmp_path / "a").resolve())
    assert f"on {refused.holder.host} ({tmp_path / 'a'}), token 1, until 20" in refused.describe()
    assert 0 < refused.expires_in_ms <= 2000

    first.release()
    assert redis_server.client().get(first.key) is None
    again = second.take_at_start()
    assert again.held and again.token == 2, "a take after a release is a new take: a new token"
    first.release()  # not its lease any more: the holder's stays
    assert msgspec.json.decode(redis_server.client().get(first.key), type=Holder).token == 2


def test_an_earlier_nsup_of_the_same_state_dir_is_taken_over_but_not_one_on_another_boot(redis_server, tmp_path):
    crashed = lease(redis_server, tmp_path / "a", ttl=60)
    assert crashed.take_at_start().token == 1
    restarted = lease(redis_server, tmp_path / "a", ttl=60)  # same host, boot and state dir: we hold its lock now
    assert restarted.take_at_start().token == 2

    key, _ = lease_keys("n1")
    client = redis_server.client()
    elsewhere = msgspec.structs.replace(restarted.me, boot_id="another-machine", token=3)
    client.set(key, msgspec.json.encode(elsewhere), px=60_000)  # a pod rescheduled elsewhere, same name and path
    assert isinstance(lease(redis_server, tmp_path / "a").take_at_start(), HeldBy)
    client.set(key, b"not json", px=60_000)
    refused = lease(redis_server, tmp_path / "a").take_at_start()
    assert isinstance(refused, HeldBy) and refused.holder is None and "someone nsup cannot name" in refused.describe()


def test_a_renewal_extends_only_its_own_lease(redis_server, tmp_path):
    mine = lease(redis_server, tmp_path / "a")
    mine.take_at_start()
    key, _ = lease_keys("n1")
    client = redis_server.client()
    client.set(key, msgspec.json.encode(msgspec.structs.replace(mine.me, start_id="other", token=9)), px=5_000)
    answer = mine._call(lambda client: mine._renew(client, mine.view.value))
    assert isinstance(answer, HeldBy) and answer.holder.token == 9
    assert 4_000 < client.pttl(key) <= 5_000, "someone else's lease is left as it was"
    client.delete(key)
    gone = mine._call(lambda client: mine._renew(client, mine.view.value))
    assert gone.why_lost() == "the lease had expired in Redis before its renewal ran" and client.get(key) is None


def test_redis_silent_past_the_expiry_loses_the_lease_at_the_expiry_and_a_new_take_has_a_new_token(redis_server, tmp_path):
    held = lease(redis_server, tmp_path / "a", ttl=1.0)
    assert held.take_at_start().token == 1
    changes: list[tuple[float, Change]] = []

    async def scenario():
        keeper = asyncio.ensure_future(held.keep(lambda change: changes.append((time.monotonic(), change))))
        await asyncio.sleep(1.5)  # renewed meanwhile: still held
        assert held.held() and changes == []
        paused_at = time.monotonic()
        redis_server.pause()
        try:
            while not changes:
                await asyncio.sleep(0.02)
            lost_after = changes[0][0] - paused_at
        finally:
            redis_server.resume()
        while len(changes) < 2:
            await asyncio.sleep(0.02)
        keeper.cancel()
        return lost_after

    lost_after = asyncio.run(scenario())
    (_, lost), (_, back) = changes
    assert not lost.held and "before the lease expired" in lost.reason and lost.token == 1
    assert lost_after <= 1.0, "the belief ends by the expiry, without waiting for Redis's answer"
    assert back.held and back.token == 2 and not back.others_took_it


def test_the_decision_believes_a_lease_no_longer_than_redis_keeps_it():
    view = LeaseView(10.0)
    me = Holder(host="h", boot_id="b", state_dir="/s", pid=1, start_id="x", token=1)
    view, change = view.after(now=100.0, sent_at=99.0, answer=Granted(me, b"v1"))
    assert change == Change(True, 1, "taken") and view.held(108.8) and not view.held(108.95)
    assert view.after(105.0, 104.0, Unanswered("timeout")) == (view, None), "still within the expiry"
    lost_view, lost = view.after(109.0, 104.0, Unanswered("timeout"))
    assert not lost.held and "before the lease expired" in lost.reason and not lost_view.held(109.0)
    # A renewal answered after the belief ended proves the lease was never anyone else's (it held our exact
    # value when Redis ran it): believed again from its own sending, with the same token, and nobody else's.
    back, change = lost_view.after(109.5, 104.0, Granted(me, b"v1"))
    assert change == Change(True, 1, "taken") and back.held(109.5) and not back.held(113.95)
    late, change = lost_view.after(114.5, 104.0, Granted(me, b"v1"))  # answered past its own expiry
    assert change is None and not late.held(114.5) and late.value is None
    other = Holder(host="g", boot_id="c", state_dir="/t", pid=2, start_id="y", token=2)
    gone, change = view.after(103.0, 102.0, HeldBy(other, 5_000))
    assert not gone.held(103.0) and "held by nsup pid 2 on g (/t), token 2" in change.reason
    back, change = gone.after(120.0, 119.0, Granted(msgspec.structs.replace(me, token=4), b"v4"))
    assert change.held and change.others_took_it, "tokens 2 and 3 were someone else's"


def test_the_worker_refuses_an_older_token_and_opens_nothing_on_an_expired_lease():
    for newest, fence in [(0, 0), (3, 3), (3, 4)]:
        assert refused_by_worker(newest, fence, 0.0, 50.0, opens=True) is None
    assert refused_by_worker(4, 3, 0.0, 50.0, opens=False).startswith(
        "fenced: the command carries lease token 3, older than 4")
    assert refused_by_worker(3, 3, 100.0, 99.0, opens=True) is None
    late = refused_by_worker(3, 3, 100.0, 100.5, opens=True)
    assert late.startswith("the lease this command was sent under (token 3) expired 0.500s before it arrived")
    assert refused_by_worker(3, 3, 100.0, 100.5, opens=False) is None, "closing, reading and stopping need no lease"


@pytest.mark.parametrize("ttl", [0.5, 301])
def test_the_lease_expiry_has_a_range(ttl, tmp_path):
    from supervisor.config import ConfigError, parse_config

    with pytest.raises(ConfigError, match="redis.lease_secs"):
        parse_config({"node": {"factory": "m:f"}, "supervisor": {"state_dir": str(tmp_path)},
                      "redis": {"url": "redis://127.0.0.1:1/0", "lease_secs": ttl}})


def test_the_lease_outlasts_three_heartbeats(tmp_path):
    from supervisor.config import ConfigError, parse_config

    raw = {"node": {"factory": "m:f"}, "supervisor": {"state_dir": str(tmp_path), "heartbeat_interval_secs": 5.0},
           "redis": {"url": "redis://127.0.0.1:1/0", "lease_secs": 10.0}}
    with pytest.raises(ConfigError, match=r"redis.lease_secs: expected at least 3 x supervisor.heartbeat_interval_secs \(15s\)"):
        parse_config(raw)
    raw["redis"]["lease_secs"] = 15.0
    assert parse_config(raw).redis.lease_secs == 15.0
