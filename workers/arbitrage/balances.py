"""The arbitrage workers' shared view of every venue's free balances, kept in Redis.

One view for every replica, exact between venue reads:

* **Fills move it at once.** Before an order goes out it is marked in flight on its venue;
  when the venue answers, :meth:`BalanceBook.apply` debits and credits what the order
  did (base and quote by its fill, each fee in its own currency) and clears the mark —
  once per client order id, however often a settlement is retried.
* **Reservations** (:meth:`BalanceBook.reserve`) hold what an execution is about to spend,
  checked against that view minus every other live reservation, atomically; they carry an
  expiry (a crashed worker's hold lapses by itself) and are released by the execution once
  its fills are applied, so a released reservation is never followed by a stale balance.
* **Reads reconcile.** Every ``interval`` one replica (a Redis lease per venue) fetches the
  venue's balance and replaces the view with it — but only if no order was in flight and
  no fill was applied while the read travelled (the view's epoch did not move); a
  difference between the view and the venue is counted
  (``cse_arb_balance_disagreements_total``) and logged.

* **Others' fills arrive on the account stream.** Where the venue has one through ccxt.pro
  (Binance's user data stream: ``watch_my_trades``), every replica follows it
  (:meth:`BalanceBook.follow`) and applies each fill of an order the arbitrage did not place
  (the rebalancer's, an operator's: client ids not starting with :data:`OWN_ORDER_PREFIX`) the
  moment the venue reports it — once per venue trade id, and only if the trade is newer than
  the venue time of the last read that replaced the view (a read already counted older ones).
  The arbitrage's own fills are applied from the venues' answers, as above, never twice.

Each replica also keeps a local copy (free minus live reservations, refreshed every
``refresh_s`` and after its own fills) for sizing opportunities during detection, where
a Redis round trip per book would cost too much; the execution re-checks against Redis.

Keys, under the prefix: ``arb:bal:<venue>`` (asset → free, ``_epoch``, ``_ts``,
``_rt``: the venue time of the view's last read), ``arb:inflight:<venue>`` (client id →
expiry ms), ``arb:applied:<venue>`` (client id, or ``t:<trade id>`` of a streamed fill →
ms), ``arb:res:<venue>`` (``<asset>|<opportunity>`` → ``amount|expiry ms``) and the read
lease ``arb:balread:<venue>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterable
from typing import Any

import ccxt
import redis.asyncio as aioredis

from shared.backoff import Backoff
from shared.errors import CseError, TransientError
from shared.gateway import Gateway
from shared.logs import get_logger
from shared.messages import split_symbol
from shared.rediskeys import DEFAULT_PREFIX, RedisKeys
from workers.arbitrage.metrics import DISAGREEMENTS, READS, STREAM_FILLS, STREAM_UP, VIEW_AGE

log = get_logger("arbitrage.balances")

APPLIED_KEEP_MS = 86_400_000  # remember applied client ids for a day
TOLERANCE = 1e-9  # relative, plus the same absolute: float noise between the view and the venue
OWN_ORDER_PREFIX = "cse"  # starts every client order id the arbitrage sends (execute.leg_ids, cycle_ids)

# KEYS: bal, inflight  ARGV: client ids..., then the expiry ms last
_BEGIN = """
local expiry = ARGV[#ARGV]
for i = 1, #ARGV - 1 do
  redis.call('HSET', KEYS[2], ARGV[i], expiry)
end
redis.call('HINCRBY', KEYS[1], '_epoch', 1)
return 1
"""

# KEYS: bal, inflight, applied  ARGV: client id, now ms, then asset, delta pairs
# 1 = applied, 0 = this client id was applied before
_APPLY = """
redis.call('HDEL', KEYS[2], ARGV[1])
if redis.call('HEXISTS', KEYS[3], ARGV[1]) == 1 then
  return 0
end
for i = 3, #ARGV, 2 do
  redis.call('HINCRBYFLOAT', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
redis.call('HINCRBY', KEYS[1], '_epoch', 1)
return 1
"""

# KEYS: bal, inflight  ARGV: now ms. Returns {epoch, orders in flight} after dropping expired marks.
_READ_START = """
local flying = 0
local marks = redis.call('HGETALL', KEYS[2])
for i = 1, #marks, 2 do
  if tonumber(marks[i + 1]) < tonumber(ARGV[1]) then
    redis.call('HDEL', KEYS[2], marks[i])
  else
    flying = flying + 1
  end
end
return {tonumber(redis.call('HGET', KEYS[1], '_epoch') or '0'), flying}
"""

# KEYS: bal, inflight, applied  ARGV: epoch seen, now ms, tolerance, applied keep ms, json {asset: free},
# the venue's time of the balance read (0: unknown)
# Returns 'busy' (a fill moved the view meanwhile, or an order is in flight) or a JSON list of
# [asset, view, venue] that disagreed; the view is replaced either way unless busy.
_READ_FINISH = """
if tonumber(redis.call('HGET', KEYS[1], '_epoch') or '0') ~= tonumber(ARGV[1])
   or redis.call('HLEN', KEYS[2]) > 0 then
  return 'busy'
end
local fresh = cjson.decode(ARGV[5])
local tol = tonumber(ARGV[3])
local diff = {}
local had = redis.call('HGETALL', KEYS[1])
local first = #had == 0
for i = 1, #had, 2 do
  local asset = had[i]
  if string.sub(asset, 1, 1) ~= '_' then
    local view = tonumber(had[i + 1])
    local venue = tonumber(fresh[asset] or 0)
    if math.abs(view - venue) > tol * (1 + math.abs(venue)) then
      table.insert(diff, {asset, view, venue})
    end
    if fresh[asset] == nil then
      redis.call('HDEL', KEYS[1], asset)
    end
  end
end
for asset, free in pairs(fresh) do
  local view = redis.call('HGET', KEYS[1], asset)
  if view == false and not first and math.abs(tonumber(free)) > tol then
    table.insert(diff, {asset, 0, tonumber(free)})
  end
  redis.call('HSET', KEYS[1], asset, free)
end
redis.call('HSET', KEYS[1], '_ts', ARGV[2])
if tonumber(ARGV[6]) > tonumber(redis.call('HGET', KEYS[1], '_rt') or '0') then
  redis.call('HSET', KEYS[1], '_rt', ARGV[6])
end
redis.call('HINCRBY', KEYS[1], '_epoch', 1)
local applied = redis.call('HGETALL', KEYS[3])
for i = 1, #applied, 2 do
  if tonumber(applied[i + 1]) < tonumber(ARGV[2]) - tonumber(ARGV[4]) then
    redis.call('HDEL', KEYS[3], applied[i])
  end
end
return cjson.encode(diff)
"""

# KEYS: bal, applied  ARGV: 't:' trade id, trade venue time ms, now ms, then asset, delta pairs.
# Another's fill seen on the account stream: 'unknown' (the view was never read), 'seen' (this
# trade was applied), 'read' (the last read came after it and counted it) or 'applied'.
_STREAMED = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 'unknown'
end
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then
  return 'seen'
end
if tonumber(ARGV[2]) <= tonumber(redis.call('HGET', KEYS[1], '_rt') or '0') then
  return 'read'
end
for i = 4, #ARGV, 2 do
  redis.call('HINCRBYFLOAT', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
redis.call('HINCRBY', KEYS[1], '_epoch', 1)
return 'applied'
"""

# Reserve for one opportunity, all or nothing, as much of ``quantity`` as every venue allows.
# KEYS: per need, the venue's bal then res hash.  ARGV: opportunity, now ms, expiry ms,
# quantity, then per need: asset, units per quantity.
# Returns the quantity granted (a string), "0" if none; holds it on every venue when > 0.
_RESERVE = """
local opp, now, expiry, q = ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local n = (#ARGV - 4) / 2
for k = 1, n do
  local bal, res = KEYS[2 * k - 1], KEYS[2 * k]
  local asset, per = ARGV[3 + 2 * k], tonumber(ARGV[4 + 2 * k])
  local free = tonumber(redis.call('HGET', bal, asset) or '0')
  local held = 0
  local entries = redis.call('HGETALL', res)
  for i = 1, #entries, 2 do
    local amount, until_ms = string.match(entries[i + 1], '^([^|]+)|(.+)$')
    if tonumber(until_ms) < now then
      redis.call('HDEL', res, entries[i])
    elseif string.sub(entries[i], 1, #asset + 1) == asset .. '|' then
      held = held + tonumber(amount)
    end
  end
  local room = (free - held) / per
  if room < q then q = room end
end
if q <= 0 then
  return '0'
end
for k = 1, n do
  local res = KEYS[2 * k]
  local asset, per = ARGV[3 + 2 * k], tonumber(ARGV[4 + 2 * k])
  local field = asset .. '|' .. opp
  local before = redis.call('HGET', res, field)
  local amount = q * per
  if before then
    amount = amount + tonumber(string.match(before, '^([^|]+)|'))
  end
  redis.call('HSET', res, field, string.format('%.17g', amount) .. '|' .. expiry)
end
return string.format('%.17g', q)
"""

# KEYS: res hashes  ARGV: opportunity. Drops the opportunity's holds.
_RELEASE = """
local suffix = '|' .. ARGV[1]
for _, res in ipairs(KEYS) do
  local fields = redis.call('HKEYS', res)
  for _, f in ipairs(fields) do
    if string.sub(f, -#suffix) == suffix then
      redis.call('HDEL', res, f)
    end
  end
end
return 1
"""


def fill_deltas(symbol: str, side: str | None, amount: float, cost: float,
                fees: Iterable[dict[str, Any]]) -> dict[str, float]:
    """What a fill of ``amount`` base for ``cost`` quote did to the account, per asset, each
    fee taken in its own currency."""
    base, quote = split_symbol(symbol)
    buy = side == "buy"
    out = {base: amount if buy else -amount, quote: -cost if buy else cost}
    for fee in fees:
        paid = float(fee.get("cost") or 0.0)
        if paid and fee.get("currency"):
            out[fee["currency"]] = out.get(fee["currency"], 0.0) - paid
    return out


def order_deltas(order: dict[str, Any], symbol: str) -> dict[str, float]:
    """What an order did to the account, per asset: its fill, then each fee in its currency."""
    filled = float(order.get("filled") or 0.0)
    if filled <= 0.0:
        return {}
    cost = order.get("cost")
    cost = float(cost) if cost is not None else filled * float(order.get("average") or 0.0)
    return fill_deltas(symbol, order.get("side"), filled, cost,
                       order.get("fees") or ([order["fee"]] if order.get("fee") else []))


def trade_deltas(trade: dict[str, Any]) -> dict[str, float]:
    """What one fill (a ccxt trade) did to the account, per asset, its fee included."""
    amount = float(trade.get("amount") or 0.0)
    cost = trade.get("cost")
    cost = float(cost) if cost is not None else amount * float(trade.get("price") or 0.0)
    return fill_deltas(trade["symbol"], trade.get("side"), amount, cost,
                       [trade["fee"]] if trade.get("fee") else [])


class BalanceBook:
    """See the module docstring."""

    def __init__(self, client: aioredis.Redis, venues: Iterable[str], *, prefix: str = DEFAULT_PREFIX,
                 read_interval_s: float = 5.0, refresh_s: float = 0.5):
        self.client = client
        self.venues = list(venues)
        self.keys = RedisKeys(prefix)
        self.read_interval_s = read_interval_s
        self.refresh_s = refresh_s
        self.local: dict[str, dict[str, float]] = {}  # venue → asset → free minus reservations
        self.last_read_ms: dict[str, int] = {}
        self._begin = client.register_script(_BEGIN)
        self._apply = client.register_script(_APPLY)
        self._read_start = client.register_script(_READ_START)
        self._read_finish = client.register_script(_READ_FINISH)
        self._reserve = client.register_script(_RESERVE)
        self._release = client.register_script(_RELEASE)
        self._streamed = client.register_script(_STREAMED)

    def _keys(self, venue: str) -> tuple[str, str, str, str]:
        return self.keys.arb_balances(venue)

    # --- for detection ------------------------------------------------------------------------

    def available(self, venue: str, asset: str) -> float:
        """Free minus reserved, from the local copy (0.0 until the venue was read once)."""
        return self.local.get(venue, {}).get(asset, 0.0)

    @property
    def ready(self) -> bool:
        """True once every venue's balance is known."""
        return all(v in self.local for v in self.venues)

    async def refresh(self) -> None:
        """Reload the local copy from Redis."""
        now = int(time.time() * 1000)
        for venue in self.venues:
            bal, _flying, _applied, res = self._keys(venue)
            pipe = self.client.pipeline(transaction=False)
            pipe.hgetall(bal)
            pipe.hgetall(res)
            raw_bal, raw_res = await pipe.execute()
            if not raw_bal:
                continue
            free = {k.decode(): float(v) for k, v in raw_bal.items() if not k.startswith(b"_")}
            for field, value in raw_res.items():
                amount, _, until = value.decode().partition("|")
                if int(float(until)) >= now:
                    asset = field.decode().partition("|")[0]
                    free[asset] = free.get(asset, 0.0) - float(amount)
            self.local[venue] = free
            if b"_ts" in raw_bal:
                self.last_read_ms[venue] = int(float(raw_bal[b"_ts"]))

    # --- for execution ------------------------------------------------------------------------

    async def free(self, venue: str, asset: str) -> float:
        raw = await self.client.hget(self._keys(venue)[0], asset)
        return float(raw) if raw is not None else 0.0

    async def reserved(self, venue: str, asset: str) -> float:
        """What live reservations hold of ``asset`` on ``venue``."""
        now = int(time.time() * 1000)
        total = 0.0
        for field, value in (await self.client.hgetall(self._keys(venue)[3])).items():
            amount, _, until = value.decode().partition("|")
            if field.decode().partition("|")[0] == asset and int(float(until)) >= now:
                total += float(amount)
        return total

    async def reserve(self, opportunity_id: str, needs: list[tuple[str, str, float]], quantity: float,
                      ttl_s: float) -> float:
        """Hold, for every ``(venue, asset, units per quantity)``, what ``quantity`` needs — or
        the largest quantity every venue's free-minus-reserved allows. Returns the quantity
        held (0.0: nothing held). Holds lapse after ``ttl_s``; calling again adds to them."""
        now = int(time.time() * 1000)
        keys: list[str] = []
        args: list[Any] = [opportunity_id, now, now + int(ttl_s * 1000), repr(quantity)]
        for venue, asset, per in needs:
            keys += [self._keys(venue)[0], self._keys(venue)[3]]
            args += [asset, repr(per)]
        granted = float(await self._reserve(keys=keys, args=args))
        return max(0.0, granted)

    async def release(self, opportunity_id: str, venues: Iterable[str]) -> None:
        await self._release(keys=[self._keys(v)[3] for v in dict.fromkeys(venues)], args=[opportunity_id])

    async def begin_orders(self, venue: str, client_order_ids: list[str], ttl_s: float) -> None:
        """Mark orders as in flight (no balance read is trusted until they are applied)."""
        bal, flying, _applied, _res = self._keys(venue)
        expiry = int(time.time() * 1000) + int(ttl_s * 1000)
        await self._begin(keys=[bal, flying], args=[*client_order_ids, expiry])

    async def apply(self, venue: str, client_order_id: str, order: dict[str, Any] | None,
                    symbol: str) -> dict[str, float]:
        """Apply what the order did (nothing if it did not fill) and clear its in-flight mark;
        a client id already applied is not applied again. Returns the deltas applied."""
        deltas = order_deltas(order, symbol) if order else {}
        bal, flying, applied, _res = self._keys(venue)
        args: list[Any] = [client_order_id, int(time.time() * 1000)]
        for asset, delta in deltas.items():
            args += [asset, repr(delta)]
        done = int(await self._apply(keys=[bal, flying, applied], args=args))
        if not done:
            return {}
        self._move_local(venue, deltas)  # this replica sees its own fills at once
        return deltas

    def _move_local(self, venue: str, deltas: dict[str, float]) -> None:
        """Move the local copy by what a fill applied to the view did (a venue never read yet
        has none: the next refresh brings it)."""
        mine = self.local.get(venue)
        if mine is not None:
            for asset, delta in deltas.items():
                mine[asset] = mine.get(asset, 0.0) + delta

    # --- reading the venues ---------------------------------------------------------------------

    async def read(self, gateway: Gateway, venue: str) -> str:
        """Fetch the venue's balance and reconcile the view with it: 'applied', 'busy' or 'failed'."""
        bal, flying, applied, _res = self._keys(venue)
        epoch, in_flight = await self._read_start(keys=[bal, flying], args=[int(time.time() * 1000)])
        if int(in_flight):
            READS.labels(venue, "busy").inc()
            return "busy"
        try:
            balance = await gateway.call(venue, "fetch_balance")
        except CseError as exc:
            READS.labels(venue, "failed").inc()
            log.warning("balance_read_failed", venue=venue, error=str(exc)[:200])
            return "failed"
        fresh = {a: repr(float(v or 0.0)) for a, v in (balance.get("free") or {}).items()}
        now = int(time.time() * 1000)
        verdict = await self._read_finish(keys=[bal, flying, applied],
                                          args=[int(epoch), now, TOLERANCE, APPLIED_KEEP_MS,
                                                json.dumps(fresh), int(balance.get("timestamp") or 0)])
        verdict = verdict.decode() if isinstance(verdict, bytes) else str(verdict)
        if verdict == "busy":
            READS.labels(venue, "busy").inc()
            return "busy"
        READS.labels(venue, "applied").inc()
        self.last_read_ms[venue] = now
        diff = json.loads(verdict) if verdict not in ("", "{}") else []
        if diff:
            DISAGREEMENTS.labels(venue).inc(len(diff))
            log.warning("balance_disagreement", venue=venue,
                        assets={a: {"view": v, "venue": x} for a, v, x in diff})
        return "applied"

    # --- the account stream ---------------------------------------------------------------------

    async def apply_streamed(self, venue: str, trade: dict[str, Any]) -> str:
        """Apply one fill the venue's account stream reported and count it: 'own' (the
        arbitrage's order, applied from the venue's answer; no Redis call), else what
        ``_STREAMED`` answers."""
        info = trade.get("info") or {}
        client_id = str(trade.get("clientOrderId") or info.get("c") or "")
        if client_id.startswith(OWN_ORDER_PREFIX):
            STREAM_FILLS.labels(venue, "own").inc()
            return "own"
        deltas = trade_deltas(trade)
        bal, _flying, applied, _res = self._keys(venue)
        args: list[Any] = [f"t:{trade['id']}", int(trade.get("timestamp") or 0), int(time.time() * 1000)]
        for asset, delta in deltas.items():
            args += [asset, repr(delta)]
        result = await self._streamed(keys=[bal, applied], args=args)
        result = result.decode() if isinstance(result, bytes) else str(result)
        STREAM_FILLS.labels(venue, result).inc()
        if result == "applied":
            self._move_local(venue, deltas)
            log.info("balance_streamed_fill", venue=venue, symbol=trade.get("symbol"),
                     side=trade.get("side"), amount=trade.get("amount"), client_order_id=client_id,
                     deltas=deltas)
        return result

    async def follow(self, gateway: Gateway, venue: str, stopping: asyncio.Event) -> None:
        """Follow the venue's account stream (``watch_my_trades`` through ccxt.pro) and apply
        the fills it reports; reconnect with backoff while it fails. Returns at once when the
        venue has no such stream."""
        client = gateway.stream_client(venue)
        if client is None or not client.has.get("watchMyTrades"):
            log.info("balance_stream_unavailable", venue=venue)
            return
        backoff = Backoff(initial=0.5, maximum=30.0)
        up = False
        while not stopping.is_set():
            try:
                if not up:
                    # the subscription confirmed before watching: fills reported before its
                    # reply would not reach the watch
                    await client.authenticate()
                    up = True
                    STREAM_UP.labels(venue).set(1)
                    log.info("balance_stream_up", venue=venue)
                trades = await client.watch_my_trades()
            except (ccxt.BaseError, KeyError, OSError) as exc:
                # ccxt raises KeyError for a refused user data subscription, not an ExchangeError
                STREAM_UP.labels(venue).set(0)
                up = False
                delay = backoff.next()
                log.warning("balance_stream_down", venue=venue, retry_in_s=round(delay, 2),
                            error=f"{type(exc).__name__}: {str(exc)[:200]}")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), delay)
                continue
            backoff.reset()
            for trade in trades:
                try:
                    await self.apply_streamed(venue, trade)
                except TransientError as exc:  # Redis away: the next read reconciles
                    log.warning("balance_streamed_fill_lost", venue=venue, trade=trade.get("id"),
                                error=str(exc)[:200])

    async def follow_all(self, gateway: Gateway, stopping: asyncio.Event) -> None:
        await asyncio.gather(*(self.follow(gateway, venue, stopping) for venue in self.venues))

    async def run(self, gateway: Gateway, stopping: asyncio.Event) -> None:
        """Read each venue every ``read_interval_s`` (one replica per venue and interval, a
        Redis lease decides; a venue never read yet is read at once) and refresh the local
        copy every ``refresh_s``."""
        owner = f"{id(self)}"
        next_read = 0.0
        while not stopping.is_set():
            try:
                if time.monotonic() >= next_read:
                    next_read = time.monotonic() + self.read_interval_s
                    for venue in self.venues:
                        lease = self.keys.arb_balance_read(venue)
                        known = await self.client.exists(self._keys(venue)[0])
                        if not known or await self.client.set(
                                lease, owner, nx=True, px=max(1, int(self.read_interval_s * 900))):
                            await self.read(gateway, venue)
                await self.refresh()
                now = time.time() * 1000
                for venue, at in self.last_read_ms.items():
                    VIEW_AGE.labels(venue).set(max(0.0, (now - at) / 1000))
            except TransientError as exc:
                log.warning("balance_view_unavailable", error=str(exc)[:200])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), self.refresh_s)
