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

Reservations (``reserve``) keep replicas from committing the same balance twice: the
amount reserved per venue and asset never exceeds the balance last read from the venue.
Each opportunity records what it reserved, so a takeover releases a dead owner's holds.
"""

from __future__ import annotations

import time
from typing import Literal

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from shared.errors import TransientError

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

# KEYS[1]=reserved hash of the venue, KEYS[2]=the opportunity's hash
# ARGV: asset, amount, available, field name in the opportunity hash
_RESERVE = """
local held = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
local amount = tonumber(ARGV[2])
if held + amount > tonumber(ARGV[3]) * (1 + 1e-12) then
  return 0
end
redis.call('HINCRBYFLOAT', KEYS[1], ARGV[1], ARGV[2])
redis.call('HINCRBYFLOAT', KEYS[2], ARGV[4], ARGV[2])
return 1
"""

# Release everything an opportunity reserved. KEYS[1]=opportunity hash; ARGV[1]=key prefix
_RELEASE = """
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  local f = fields[i]
  if string.sub(f, 1, 4) == 'res|' then
    local venue, asset = string.match(f, '^res|([^|]+)|(.+)$')
    local amount = tonumber(fields[i + 1])
    local key = ARGV[1] .. 'arb:reserved:' .. venue
    local left = tonumber(redis.call('HINCRBYFLOAT', key, asset, -amount))
    if left < 1e-12 then
      redis.call('HDEL', key, asset)
    end
    redis.call('HDEL', KEYS[1], f)
  end
end
return 1
"""


class ExecutionLedger:
    def __init__(self, client: aioredis.Redis, *, owner: str, prefix: str = "cse:",
                 lease_s: float = 30.0, keep_s: float = 7 * 86_400):
        self.client = client
        self.owner = owner
        self.prefix = prefix
        self.lease_ms = int(lease_s * 1000)
        self.keep_ms = int(keep_s * 1000)
        self.drift_key = f"{prefix}arb:drift"
        self._begin = client.register_script(_BEGIN)
        self._reserve = client.register_script(_RESERVE)
        self._release = client.register_script(_RELEASE)

    def _key(self, opportunity_id: str) -> str:
        return f"{self.prefix}arb:opp:{opportunity_id}"

    async def begin(self, opportunity_id: str) -> Begin:
        try:
            result = await self._begin(keys=[self._key(opportunity_id)],
                                       args=[self.owner, int(time.time() * 1000), self.lease_ms,
                                             self.keep_ms])
        except RedisError as exc:
            raise TransientError(f"redis unavailable for the execution ledger: {exc}") from exc
        return result.decode() if isinstance(result, bytes) else result  # type: ignore[no-any-return]

    async def reserve(self, opportunity_id: str, venue: str, asset: str, amount: float,
                      available: float) -> bool:
        """Hold ``amount`` of ``asset`` on ``venue`` if the unreserved balance covers it."""
        return bool(await self._reserve(
            keys=[f"{self.prefix}arb:reserved:{venue}", self._key(opportunity_id)],
            args=[asset, repr(amount), repr(available), f"res|{venue}|{asset}"]))

    async def reserved(self, venue: str, asset: str) -> float:
        raw = await self.client.hget(f"{self.prefix}arb:reserved:{venue}", asset)
        return float(raw) if raw is not None else 0.0

    async def release(self, opportunity_id: str) -> None:
        await self._release(keys=[self._key(opportunity_id)], args=[self.prefix])

    async def record(self, opportunity_id: str, **fields: str) -> None:
        await self.client.hset(self._key(opportunity_id), mapping=fields)

    async def finish(self, opportunity_id: str, outcome: str) -> None:
        await self.release(opportunity_id)
        await self.client.hset(self._key(opportunity_id),
                               mapping={"state": "done", "outcome": outcome})

    async def state(self, opportunity_id: str) -> dict[str, str]:
        raw = await self.client.hgetall(self._key(opportunity_id))
        return {k.decode(): v.decode() for k, v in raw.items()}

    async def add_drift(self, payload: str) -> None:
        """Inventory left over after a failed hedge, for the rebalancer to absorb."""
        await self.client.rpush(self.drift_key, payload)
