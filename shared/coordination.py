"""Coordination in Redis: leader lock with fencing, idempotency claims.

Leader lock
    ``acquire`` sets ``<prefix>lock:<name>`` to ``<owner>:<token>`` with a TTL when
    nobody holds it, the token coming from an ever-increasing counter
    ``<prefix>fence:<name>``. The holder renews well within the TTL; when it dies, the
    key expires and the next contender gets a larger token. Every action a leader takes
    goes through :meth:`LeaderLock.fenced` (or carries the token to a resource that
    checks it), so a paused, stale leader that wakes up after losing the lock is refused
    instead of acting twice.

Idempotency claim
    ``claim(key)`` is ``SET key owner NX EX ttl``: true for exactly one caller however
    many race, so an order id is sent at most once.

Errors
    :func:`connect` returns a client whose commands, scripts and pipelines raise
    :class:`RedisUnavailable` — a :class:`~shared.errors.TransientError` (retry with
    backoff) that is also a ``redis.exceptions.ConnectionError`` — when Redis cannot be
    reached, times out, is loading, read-only or out of memory. Callers never translate
    Redis errors by hand. Other ``ResponseError``s (a script bug, a wrong type) stay as
    they are: retrying would not help.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
from redis import exceptions as rex
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError

from shared.errors import StaleLeader, TransientError
from shared.logs import get_logger
from shared.messages import now_ms
from shared.rediskeys import DEFAULT_PREFIX, RedisKeys
from shared.settings import RedisSettings

log = get_logger("coordination")

# KEYS[1]=lock KEYS[2]=fence  ARGV[1]=owner ARGV[2]=ttl_ms
# Returns the holder's token if ARGV[1] now holds the lock, else 0.
_ACQUIRE = """
local cur = redis.call('GET', KEYS[1])
if cur then
  local owner, token = string.match(cur, '^(.*):(%d+)$')
  if owner == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return tonumber(token)
  end
  return 0
end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. token, 'PX', ARGV[2])
return token
"""

# Delete KEYS[1] only if it still holds ARGV[1] (a lock or lease we own, not a successor's).
_DELETE_IF = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# A fenced write: KEYS[1]=lock KEYS[2]=target ARGV[1]=owner ARGV[2]=token ARGV[3]=value
# Succeeds only while (owner, token) still holds the lock.
_FENCED_SET = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] .. ':' .. ARGV[2] then
  return 0
end
redis.call('SET', KEYS[2], ARGV[3])
return 1
"""

# A resource that only moves forward in tokens: KEYS[1]=highest-seen ARGV[1]=token
_FENCE_CHECK = """
local seen = tonumber(redis.call('GET', KEYS[1]) or '0')
local token = tonumber(ARGV[1])
if token < seen then
  return 0
end
redis.call('SET', KEYS[1], token)
return 1
"""


class RedisUnavailable(TransientError, rex.ConnectionError):
    """Redis could not serve a command now; the same command may succeed later."""


# What "Redis is away" looks like; NoScriptError and other ResponseErrors are not in it
# (the script runner relies on the former, the latter are bugs).
_UNAVAILABLE = (rex.ConnectionError, rex.TimeoutError, rex.ReadOnlyError, rex.TryAgainError,
                rex.OutOfMemoryError)


def _unavailable(what: object, exc: Exception) -> RedisUnavailable:
    return RedisUnavailable(f"redis unavailable ({what}): {type(exc).__name__}: {exc}")


class _TranslatingPipeline(Pipeline):
    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        try:
            return await super().execute(raise_on_error)
        except RedisUnavailable:
            raise
        except _UNAVAILABLE as exc:
            raise _unavailable("pipeline", exc) from exc


class TranslatingRedis(aioredis.Redis):
    """``redis.asyncio.Redis`` raising :class:`RedisUnavailable` for an unreachable server."""

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        try:
            return await super().execute_command(*args, **options)
        except RedisUnavailable:
            raise
        except _UNAVAILABLE as exc:
            raise _unavailable(args[0] if args else "command", exc) from exc

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Pipeline:
        return _TranslatingPipeline(self.connection_pool, self.response_callbacks, transaction,
                                    shard_hint)


def connect(settings: RedisSettings) -> aioredis.Redis:
    """A Redis client with timeouts, raising :class:`RedisUnavailable` when Redis is away;
    the URL (which may hold a password) is never logged.

    Its pool holds at most ``max_connections``; a command finding them all busy waits for one
    (up to the socket timeout) instead of failing: redis-py's default pool raises
    ``MaxConnectionsError`` past 100, which a burst of polled books reached."""
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.url.get_secret_value(),
        max_connections=settings.max_connections,
        timeout=settings.socket_timeout_s,
        socket_timeout=settings.socket_timeout_s,
        socket_connect_timeout=settings.socket_timeout_s,
        health_check_interval=30,
        decode_responses=False,
    )
    return TranslatingRedis.from_pool(pool)


def _text(raw: object) -> str:
    """A Redis reply as text. redis-py types replies as ``bytes | str`` (it depends on
    ``decode_responses``); the clients here are made by :func:`connect` and return bytes."""
    if isinstance(raw, bytes):
        return raw.decode()
    raise TypeError(f"expected a bytes reply from Redis, got {type(raw).__name__}")


def default_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class LeaderLock:
    """A TTL lock with a fencing token; see the module docstring."""

    def __init__(self, client: aioredis.Redis, name: str, *, ttl_s: float = 10.0,
                 owner: str | None = None, prefix: str = DEFAULT_PREFIX):
        self.client = client
        self.name = name
        self.ttl_ms = int(ttl_s * 1000)
        self.owner = owner or default_owner()
        keys = RedisKeys(prefix)
        self.lock_key, self.fence_key = keys.lock(name), keys.fence(name)
        self.seen_key = keys.fence_seen(name)
        self.token: int | None = None
        self._acquire = client.register_script(_ACQUIRE)
        self._release = client.register_script(_DELETE_IF)
        self._fenced_set = client.register_script(_FENCED_SET)
        self._fence_check = client.register_script(_FENCE_CHECK)

    async def acquire(self) -> int | None:
        """Take or renew the lock. Returns the fencing token, or None if another holds it."""
        token = int(await self._acquire(keys=[self.lock_key, self.fence_key],
                                        args=[self.owner, self.ttl_ms]))
        if token:
            if self.token != token:
                log.info("leader_acquired", lock=self.name, fence=token)
            self.token = token
            return token
        if self.token is not None:
            log.warning("leader_lost", lock=self.name, fence=self.token)
        self.token = None
        return None

    async def release(self) -> None:
        if self.token is None:
            return
        with contextlib.suppress(RedisError):
            await self._release(keys=[self.lock_key], args=[f"{self.owner}:{self.token}"])
        self.token = None

    async def holder(self) -> tuple[str, int] | None:
        raw = await self.client.get(self.lock_key)
        if raw is None:
            return None
        owner, _, token = _text(raw).rpartition(":")
        return owner, int(token)

    async def fenced_set(self, key: str, value: str | bytes, token: int) -> None:
        """Write ``key`` only while ``token`` still holds the lock; raise StaleLeader if not."""
        ok = await self._fenced_set(keys=[self.lock_key, key], args=[self.owner, token, value])
        if not ok:
            raise StaleLeader(f"lock {self.name}: token {token} no longer holds the lock")

    async def check_fence(self, token: int) -> None:
        """For resources that remember the highest token used: refuse anything older."""
        ok = await self._fence_check(keys=[self.seen_key], args=[token])
        if not ok:
            raise StaleLeader(f"lock {self.name}: token {token} is older than one already used")


class LeaderElector:
    """Keeps trying to lead; calls ``on_elected(token)`` / ``on_lost()`` on changes."""

    def __init__(self, lock: LeaderLock, *,
                 on_elected: Callable[[int], Awaitable[Any]] | None = None,
                 on_lost: Callable[[], Awaitable[Any]] | None = None):
        self.lock = lock
        self.on_elected = on_elected
        self.on_lost = on_lost
        self.is_leader = asyncio.Event()
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        period = self.lock.ttl_ms / 1000 / 3
        try:
            while not self._stop.is_set():
                was = self.is_leader.is_set()
                try:
                    token = await self.lock.acquire()
                except TransientError as exc:
                    log.warning("leader_check_failed", lock=self.lock.name, error=str(exc))
                    token = None
                if token and not was:
                    self.is_leader.set()
                    if self.on_elected:
                        await self.on_elected(token)
                elif not token and was:
                    self.is_leader.clear()
                    if self.on_lost:
                        await self.on_lost()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), period)
        finally:
            if self.is_leader.is_set():
                self.is_leader.clear()
                await self.lock.release()


class Claims:
    """Idempotency claims: the first ``claim(key)`` wins, every other gets False."""

    def __init__(self, client: aioredis.Redis, *, prefix: str = DEFAULT_PREFIX, ttl_s: int = 7 * 86_400,
                 owner: str | None = None):
        self.client = client
        self.keys = RedisKeys(prefix)
        self.ttl_s = ttl_s
        self.owner = owner or default_owner()

    async def claim(self, key: str) -> bool:
        return bool(await self.client.set(self.keys.claim(key), self.owner, nx=True, ex=self.ttl_s))

    async def owner_of(self, key: str) -> str | None:
        raw = await self.client.get(self.keys.claim(key))
        return _text(raw) if raw is not None else None


# KEYS[1]=lease KEYS[2]=last-published  ARGV[1]=member ARGV[2]=item id ARGV[3]=ttl_ms
# 1 = publish (and remember the id), 0 = already published, -1 = not the lease holder.
_GATE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return -1
end
if redis.call('GET', KEYS[2]) == ARGV[2] then
  return 0
end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
return 1
"""

# KEYS[1]=lease ARGV[1]=member ARGV[2]=ttl_ms: take if free, renew if ours.
_LEASE = """
local cur = redis.call('GET', KEYS[1])
if not cur then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""


class WorkShare:
    """Share a set of work items between live members without overlap.

    Members announce themselves with a heartbeat (a sorted set scored by expiry). Each item
    is assigned to one live member by rendezvous hashing, so a member joining or leaving
    moves only its share. Assignment alone could overlap for a moment while members see
    different member lists, so a member also holds a lease per item (``SET NX PX``) and
    :meth:`gate` checks the lease and the last published id atomically: an item is
    published by its lease holder only, and never twice with the same id.
    """

    def __init__(self, client: aioredis.Redis, name: str, *, member: str | None = None,
                 ttl_s: float = 10.0, prefix: str = DEFAULT_PREFIX):
        self.client = client
        self.member = member or default_owner()
        self.ttl_ms = int(ttl_s * 1000)
        self.name, self.keys = name, RedisKeys(prefix)
        self.members_key = self.keys.share_members(name)
        self.owned: set[str] = set()
        self._lease_until: dict[str, float] = {}  # monotonic time our lease surely lasts to
        self._gate = client.register_script(_GATE)
        self._lease = client.register_script(_LEASE)
        self._release_lease = client.register_script(_DELETE_IF)

    @staticmethod
    def _weight(member: str, item: str) -> int:
        return int.from_bytes(hashlib.blake2b(f"{member}|{item}".encode(), digest_size=8).digest(),
                              "big")

    async def live_members(self) -> list[str]:
        now = now_ms()
        await self.client.zremrangebyscore(self.members_key, "-inf", now)
        raw = await self.client.zrangebyscore(self.members_key, now, "+inf")
        return sorted(_text(m) for m in raw)

    def assign(self, items: list[str], members: list[str]) -> dict[str, str]:
        return {item: max(members, key=lambda m: self._weight(m, item)) for item in items} if members else {}

    async def refresh(self, items: list[str]) -> set[str]:
        """Heartbeat, recompute the assignment, take or renew our leases, drop the rest."""
        try:
            await self.client.zadd(self.members_key, {self.member: now_ms() + self.ttl_ms})
            mine = {i for i, m in self.assign(items, await self.live_members()).items()
                    if m == self.member}
            owned = set()
            for item in items:
                if item in mine:
                    asked = time.monotonic()  # the lease runs from no earlier than this
                    if await self._lease(keys=[self.keys.share_lease(self.name, item)],
                                         args=[self.member, self.ttl_ms]):
                        owned.add(item)
                        self._lease_until[item] = asked + self.ttl_ms / 1000
                elif item in self.owned:
                    await self._release(item)
        except TransientError:
            self.owned = set()  # without Redis we cannot prove ownership: publish nothing
            raise
        self.owned = owned
        return owned

    async def _release(self, item: str) -> None:
        await self._release_lease(keys=[self.keys.share_lease(self.name, item)], args=[self.member])

    def holds(self, item: str) -> bool:
        """True while our lease on ``item`` surely lasts (renewed, with a fifth of its TTL
        to spare): no other member can hold it meanwhile, so a stream's books may be
        published without asking Redis each time. (Lost with Redis's data: a restarted
        Redis lets another member take the item while this one still believes, for at most
        the TTL.)"""
        return item in self.owned and \
            time.monotonic() < self._lease_until.get(item, 0.0) - self.ttl_ms / 5000

    async def note_published(self, item: str, item_id: str) -> None:
        """Record ``item_id`` as the item's last published id (what :meth:`gate` compares),
        e.g. when a member that published without the gate hands the item over."""
        await self.client.set(self.keys.share_last(self.name, item), item_id, px=self.ttl_ms * 6)

    async def gate(self, item: str, item_id: str) -> int:
        """1: publish ``item_id`` now; 0: it was already published; -1: not our item."""
        keys = [self.keys.share_lease(self.name, item), self.keys.share_last(self.name, item)]
        return int(await self._gate(keys=keys,
                                    args=[self.member, item_id, self.ttl_ms * 6]))

    async def leave(self) -> None:
        with contextlib.suppress(RedisError):
            await self.client.zrem(self.members_key, self.member)
            for item in list(self.owned):
                await self._release(item)
        self.owned = set()

