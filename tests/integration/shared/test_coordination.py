"""Leader lock with fencing and idempotency claims against a real redis-server."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time

import pytest

from shared.coordination import Claims, LeaderElector, LeaderLock
from shared.errors import StaleLeader
from tests import ROOT
from tests.conftest import NotYet, eventually


def record_attempts(lock: LeaderLock) -> list[int | None]:
    """Every answer ``lock.acquire()`` gives from now on (a token, or None: refused)."""
    answers: list[int | None] = []
    acquire = lock.acquire

    async def recorded() -> int | None:
        token = await acquire()
        answers.append(token)
        return token

    lock.acquire = recorded  # type: ignore[method-assign]
    return answers


RENEWALS = 4  # lock attempts of each contender watched: the leader renews, the other is refused


async def test_two_contenders_exactly_one_leader(redis_client) -> None:
    a = LeaderLock(redis_client, "rebalance", ttl_s=1.0, owner="a", prefix="t1:")
    b = LeaderLock(redis_client, "rebalance", ttl_s=1.0, owner="b", prefix="t1:")
    attempts_a, attempts_b = record_attempts(a), record_attempts(b)
    ea, eb = LeaderElector(a), LeaderElector(b)
    ta, tb = asyncio.create_task(ea.run()), asyncio.create_task(eb.run())
    await eventually(lambda: ea.is_leader.is_set() or eb.is_leader.is_set(), 5, "a leader")
    renewals = (len(attempts_a), len(attempts_b))

    def several_renewal_periods_with_one_leader() -> bool | NotYet:
        assert ea.is_leader.is_set() != eb.is_leader.is_set(), "two leaders, or none"
        done = (len(attempts_a) - renewals[0], len(attempts_b) - renewals[1])
        return min(done) >= RENEWALS or NotYet(done)

    # each contender tries (renews, or is refused) every third of the TTL
    await eventually(several_renewal_periods_with_one_leader, 10,
                     f"{RENEWALS} lock attempts by each contender", interval_s=0.02)
    leader = ea if ea.is_leader.is_set() else eb
    assert (await leader.lock.holder()) == (leader.lock.owner, leader.lock.token)
    ea.stop()
    eb.stop()
    await asyncio.gather(ta, tb)
    assert await a.holder() is None, "a clean stop releases the lock"


LEADER = r"""
import asyncio, sys
from shared.coordination import LeaderElector, LeaderLock, connect
from shared.settings import RedisSettings

async def main():
    client = connect(RedisSettings(url=sys.argv[1]))
    elector = LeaderElector(LeaderLock(client, "rebalance", ttl_s=2.0, owner="doomed",
                                       prefix=sys.argv[2]))
    task = asyncio.create_task(elector.run())
    await elector.is_leader.wait()
    print("TOKEN", elector.lock.token, flush=True)
    await task

asyncio.run(main())
"""


async def test_leader_killed_is_replaced_after_ttl_and_its_token_is_refused(
        redis_client, redis_settings) -> None:
    prefix = redis_settings.key_prefix
    doomed = subprocess.Popen(
        [sys.executable, "-c", LEADER, redis_settings.url.get_secret_value(), prefix],
        stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        line = ""
        while not line.startswith("TOKEN"):
            line = await asyncio.to_thread(doomed.stdout.readline)
            assert line, "the leader process exited before it led"
        old_token = int(line.split()[1])
        follower = LeaderElector(LeaderLock(redis_client, "rebalance", ttl_s=2.0, owner="heir",
                                            prefix=prefix))
        answers = record_attempts(follower.lock)
        task = asyncio.create_task(follower.run())
        await eventually(lambda: len(answers) >= 2 or NotYet(answers), 10,
                         "two attempts of the follower on the held lock")
        assert answers[:2] == [None, None], "the lock is held: no second leader"
        assert not follower.is_leader.is_set(), "the lock is held: no second leader"
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(5)
        died = time.monotonic()
        await asyncio.wait_for(follower.is_leader.wait(), 6)
        took = time.monotonic() - died
    finally:
        if doomed.poll() is None:
            doomed.kill()
            doomed.wait(5)
        doomed.stdout.close()
    assert 0.5 <= took <= 4.0, f"takeover after {took:.2f}s, TTL is 2s"
    new_token = follower.lock.token
    assert new_token is not None and new_token > old_token

    # the dead leader's process, had it only paused, acts with its old token: refused
    stale = LeaderLock(redis_client, "rebalance", ttl_s=2.0, owner="doomed", prefix=prefix)
    with pytest.raises(StaleLeader):
        await stale.fenced_set(prefix + "plan", "stale", old_token)
    await follower.lock.fenced_set(prefix + "plan", "fresh", new_token)
    assert await redis_client.get(prefix + "plan") == b"fresh"
    await follower.lock.check_fence(new_token)
    with pytest.raises(StaleLeader):
        await stale.check_fence(old_token)
    follower.stop()
    await task


async def test_a_released_lock_is_taken_at_once(redis_client) -> None:
    a = LeaderLock(redis_client, "x", ttl_s=30, owner="a", prefix="t2:")
    b = LeaderLock(redis_client, "x", ttl_s=30, owner="b", prefix="t2:")
    assert await a.acquire() == 1
    assert await b.acquire() is None
    assert await a.acquire() == 1, "renewal keeps the same token"
    await a.release()
    assert await b.acquire() == 2


async def test_one_hundred_concurrent_claims_exactly_one_wins(redis_settings) -> None:
    from shared.coordination import connect

    clients = [connect(redis_settings) for _ in range(10)]
    try:
        claims = [Claims(clients[i % 10], prefix=redis_settings.key_prefix, owner=f"w{i}")
                  for i in range(100)]
        results = await asyncio.gather(*(c.claim("order:abc-1") for c in claims))
        assert sum(results) == 1
        winner = results.index(True)
        assert await claims[0].owner_of("order:abc-1") == f"w{winner}"
        assert await claims[winner].claim("order:abc-1") is False, "a second claim never wins"
        assert await claims[0].claim("order:abc-2") is True, "another key is independent"
    finally:
        for c in clients:
            await c.aclose()


async def test_an_unreachable_redis_is_a_transient_error_in_commands_scripts_and_pipelines() -> None:
    from shared.coordination import RedisUnavailable, connect
    from shared.errors import TransientError
    from shared.settings import RedisSettings
    from tooling.devstack import infra

    client = connect(RedisSettings(url=f"redis://127.0.0.1:{infra.free_port()}/0", socket_timeout_s=1.0))
    script = client.register_script("return 1")
    pipe = client.pipeline()
    pipe.get("a")
    try:
        for call in (client.get("a"), script(keys=[], args=[]), pipe.execute()):
            with pytest.raises(RedisUnavailable) as caught:
                await call
            assert isinstance(caught.value, TransientError)
            assert "redis unavailable" in str(caught.value)
    finally:
        await client.aclose()


async def test_a_burst_beyond_the_pool_waits_for_a_connection_instead_of_failing(redis_settings) -> None:
    """1,000 commands at once on a client of 8 connections (a burst of polled books gating at
    once): every one is served; redis-py's own pool raised MaxConnectionsError past its 100."""
    from shared.coordination import connect

    client = connect(redis_settings.model_copy(update={"max_connections": 8}))
    key = f"{redis_settings.key_prefix}burst-{time.monotonic_ns()}"
    try:
        results = await asyncio.gather(*(client.eval("return redis.call('INCR', KEYS[1])", 1, key)
                                         for _ in range(1000)))
        assert sorted(results) == list(range(1, 1001))
    finally:
        await client.delete(key)
        await client.aclose()
