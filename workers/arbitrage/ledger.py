"""Execution state in Redis: who executes an opportunity and what it reserved.

An opportunity id is deterministic, and the ``arb.opportunities`` consumer group may deliver
it again (a replica died mid-execution, a commit was lost). :meth:`ExecutionLedger.begin`
decides what the receiving replica does with it, atomically:

* ``new``     nobody has seen it: this replica executes it;
* ``recover`` an earlier owner's lease expired before it finished: this replica takes over,
              looks the legs up by client order id and settles what they did — it never
              sends a leg the first owner did not send;
* ``busy``    another live replica is on it: try again later;
* ``done``    finished already: nothing to do.

Pair locks (``lock_pairs``) make executions that trade the same (venue, symbol) take turns,
and record when orders were last answered there (``touch``): a book received before that
no longer shows the venue as it is, so an execution re-reads it. Balances and their
reservations are in :mod:`workers.arbitrage.balances`. Every key here expires (the
opportunity's hash after ``keep_s``, a pair lock after the lease), so a crash at any point
leaves nothing held for ever; Redis errors arrive as
:class:`~shared.coordination.RedisUnavailable` (transient: the message is retried).
"""

from __future__ import annotations

import time
from typing import Literal

import redis.asyncio as aioredis

from shared.rediskeys import DEFAULT_PREFIX, RedisKeys

Begin = Literal["new", "recover", "busy", "done"]

_BEGIN = """
local st = redis.call('HGET', KEYS[1], 'state')
local now = tonumber(ARGV[2])
if not st then
  redis.call('HSET', KEYS[1], 'state', 'claimed', 'owner', ARGV[1], 'lease', now + tonumber(ARGV[3]))
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  return 'new'
end
if st == 'done' then
  return 'done'
end
local lease = tonumber(redis.call('HGET', KEYS[1], 'lease') or '0')
if lease < now or redis.call('HGET', KEYS[1], 'owner') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'lease', now + tonumber(ARGV[3]))
  return 'recover'
end
return 'busy'
"""

# Lock every (venue, symbol) pair an execution trades, all or none. KEYS: the pairs' lock keys,
# then their touch keys. ARGV: owner, ttl ms. Returns the touch times (ms, 0 never traded) or
# nil when another owner holds one of them.
_LOCK = """
local n = #KEYS / 2
for i = 1, n do
  local holder = redis.call('GET', KEYS[i])
  if holder and holder ~= ARGV[1] then
    return nil
  end
end
local touched = {}
for i = 1, n do
  redis.call('SET', KEYS[i], ARGV[1], 'PX', ARGV[2])
  touched[i] = redis.call('GET', KEYS[n + i]) or '0'
end
return touched
"""

# KEYS: lock keys, then touch keys. ARGV: owner, touch ms (or '' to leave the touch times).
_UNLOCK = """
local n = #KEYS / 2
for i = 1, n do
  if ARGV[2] ~= '' then
    redis.call('SET', KEYS[n + i], ARGV[2], 'PX', 86400000)
  end
  if redis.call('GET', KEYS[i]) == ARGV[1] then
    redis.call('DEL', KEYS[i])
  end
end
return 1
"""


class ExecutionLedger:
    def __init__(self, client: aioredis.Redis, *, owner: str, prefix: str = DEFAULT_PREFIX,
                 lease_s: float = 30.0, keep_s: float = 7 * 86_400):
        self.client = client
        self.owner = owner
        self.keys = RedisKeys(prefix)
        self.lease_ms = int(lease_s * 1000)
        self.keep_ms = int(keep_s * 1000)
        self.drift_key = self.keys.arb_drift()
        self._begin = client.register_script(_BEGIN)
        self._lock = client.register_script(_LOCK)
        self._unlock = client.register_script(_UNLOCK)

    def _key(self, opportunity_id: str) -> str:
        return self.keys.arb_opportunity(opportunity_id)

    async def begin(self, opportunity_id: str) -> Begin:
        result = await self._begin(keys=[self._key(opportunity_id)],
                                   args=[self.owner, int(time.time() * 1000), self.lease_ms, self.keep_ms])
        return result.decode() if isinstance(result, bytes) else result  # type: ignore[no-any-return]

    def _pair_keys(self, pairs: list[tuple[str, str]]) -> list[str]:
        return ([self.keys.arb_pair(v, s) for v, s in pairs]
                + [self.keys.arb_touch(v, s) for v, s in pairs])

    async def lock_pairs(self, opportunity_id: str, pairs: list[tuple[str, str]]) -> list[int] | None:
        """Lock the (venue, symbol) pairs an execution trades, for the lease; returns when
        each was last traded (ms, 0 never), or None if another execution holds one."""
        touched = await self._lock(keys=self._pair_keys(pairs), args=[opportunity_id, self.lease_ms])
        if touched is None:
            return None
        return [int(float(t)) for t in touched]

    async def unlock_pairs(self, opportunity_id: str, pairs: list[tuple[str, str]], touched_ms: int | None
                           ) -> None:
        """Release the pairs; ``touched_ms``: orders were answered on them at that time (books
        received before it no longer show the venue as it is)."""
        await self._unlock(keys=self._pair_keys(pairs),
                           args=[opportunity_id, "" if touched_ms is None else touched_ms])

    async def record(self, opportunity_id: str, **fields: str) -> None:
        await self.client.hset(self._key(opportunity_id), mapping=fields)

    async def finish(self, opportunity_id: str, outcome: str) -> None:
        await self.client.hset(self._key(opportunity_id),
                               mapping={"state": "done", "outcome": outcome})

    async def state(self, opportunity_id: str) -> dict[str, str]:
        raw = await self.client.hgetall(self._key(opportunity_id))
        return {k.decode(): v.decode() for k, v in raw.items()}

    async def add_drift(self, payload: str) -> None:
        """Inventory left over after a failed hedge, for the rebalancer to absorb."""
        await self.client.rpush(self.drift_key, payload)
