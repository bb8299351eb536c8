"""portfolio-monitor: value, allocation, PnL per exchange, drawdown, correlation, fees.

Two loops and a consumer:

* every ``CSE_MONITOR_POLL_INTERVAL_S`` the balances of every venue (through the gateway)
  are valued at the median mid across venues: ``portfolio_total_value``,
  ``portfolio_symbol_allocation{symbol}``, ``portfolio_exchange_pnl{exchange}`` (value now
  minus the venue's baseline, the value first seen), ``portfolio_pnl_total`` and
  ``portfolio_drawdown`` (from the running peak). Baselines and the peak live in Redis, so
  a restarted monitor carries on where it was. A venue that does not answer keeps its last
  known balances (and ``cse_exchange_up{venue}`` drops to 0);
* every ``CSE_MONITOR_CORRELATION_INTERVAL_S`` the correlation of hourly returns between
  the held positions: ``portfolio_max_correlation`` and the matrix in the store;
* the consumer (group ``portfolio-monitor``) follows executions (fees paid per exchange,
  counted once per execution even when redelivered), opportunities, rebalance plans and
  order books (the age of the newest book per venue).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from aiokafka import ConsumerRecord
from redis.exceptions import RedisError

from shared.errors import CseError, TransientError
from shared.gateway import Gateway, open_gateway
from shared.lifecycle import WorkerContext
from shared.logs import get_logger
from shared.messages import (
    PORTFOLIO_SNAPSHOTS,
    TOPICS,
    Execution,
    Opportunity,
    OrderBook,
    PortfolioSnapshot,
    Position,
    RebalancePlan,
    now_ms,
    split_symbol,
)
from shared.portfolio import median_mids, read_venue
from shared.rediskeys import DEFAULT_PREFIX, RedisKeys
from shared.runtime import Services, consume_until_stopped, consumer, open_services
from workers.monitor import valuation as val
from workers.monitor.metrics import (
    ALLOCATION,
    BOOK_AGE,
    DRAWDOWN,
    EXCHANGE_PNL,
    EXCHANGE_VALUE,
    EXECUTIONS,
    FEES,
    LAST_POLL,
    MAX_CORRELATION,
    OPPORTUNITIES,
    PEAK,
    PNL_TOTAL,
    REBALANCES,
    STALE_VENUES,
    TOTAL_VALUE,
)
from workers.monitor.settings import MonitorParams, MonitorSettings

log = get_logger("monitor")

# KEYS[1]=peak ARGV[1]=value -> the peak after this value
_PEAK = """
local p = tonumber(redis.call('GET', KEYS[1]) or '0')
local v = tonumber(ARGV[1])
if v > p then redis.call('SET', KEYS[1], ARGV[1]) return ARGV[1] end
return tostring(p)
"""
FEE_DEDUP_TTL_S = 7 * 86_400


class Monitor:
    def __init__(self, params: MonitorParams, gateway: Gateway, symbols: list[str], *, redis: Any,
                 bus: Any = None, tsdb: Any = None, prefix: str = DEFAULT_PREFIX):
        self.params = params
        self.gateway = gateway
        self.symbols = symbols
        self.redis = redis
        self.bus = bus
        self.tsdb = tsdb
        self.quote = split_symbol(symbols[0])[1] if symbols else "USDT"
        self.keys = RedisKeys(prefix)
        self.k_baseline, self.k_peak, self.k_latest = (
            self.keys.monitor(params.account, what) for what in ("baseline", "peak", "latest"))
        self._peak_script = redis.register_script(_PEAK)
        self._baselines: dict[str, float] = {}
        self._peak = 0.0
        self.holdings: dict[str, dict[str, float]] = {}  # venue -> asset -> quantity (last known)
        self.quotes: dict[tuple[str, str], tuple[float, float]] = {}
        self.prices: dict[str, float] = {}
        self.book_ts: dict[str, float] = {}
        self.latest: val.Valuation | None = None
        self.max_correlation = 0.0  # the last computed; the gauge only exports it

    # -- balances and valuation --------------------------------------------------------------
    async def _fetch_venue(self, venue: str) -> None:
        view = await read_venue(self.gateway, venue, self.symbols)
        self.holdings[venue] = view.total
        self.quotes.update({(venue, s): q for s, q in view.quotes.items()})

    async def poll(self) -> val.Valuation:
        """Value the portfolio now; update the metrics, Redis state, the topic and the store."""
        results = await asyncio.gather(*(self._fetch_venue(v) for v in self.gateway.venues),
                                       return_exceptions=True)
        stale = []
        for venue, result in zip(self.gateway.venues, results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, CseError):
                    raise result
                stale.append(venue)
                log.warning("monitor_venue_unavailable", venue=venue, error=str(result)[:200],
                            known=venue in self.holdings)
        STALE_VENUES.set(len(stale))
        self.prices = median_mids(self.quotes)
        holdings = {(v, a): q for v, assets in self.holdings.items() for a, q in assets.items()}
        valuation = val.value(holdings, self.prices, self.quote)
        if valuation.missing_prices:
            log.warning("monitor_unpriced_assets", assets=valuation.missing_prices)
        await self._record(valuation, stale)
        self.latest = valuation
        return valuation

    async def _state(self, v: val.Valuation, stale: list[str]) -> tuple[dict[str, float], float]:
        """PnL baselines and the running peak, kept in Redis so a restart resets neither.

        Without Redis the last known ones serve (and a new high is still taken into account).
        """
        try:
            for venue, amount in v.by_venue.items():
                if venue not in stale:
                    await self.redis.hsetnx(self.k_baseline, venue, repr(amount))
            raw = await self.redis.hgetall(self.k_baseline)
            self._baselines = {k.decode(): float(x) for k, x in raw.items()}
            if v.total > 0:
                self._peak = float(await self._peak_script(keys=[self.k_peak], args=[repr(v.total)]))
        except RedisError as exc:
            log.warning("monitor_state_unavailable", error=str(exc)[:200])
            self._peak = max(self._peak, v.total)
        return self._baselines, self._peak

    async def _record(self, v: val.Valuation, stale: list[str]) -> None:
        """Metrics, the latest valuation in Redis (for the API), the snapshot topic and the store."""
        baselines, peak = await self._state(v, stale)
        pnl = val.pnl(v.by_venue, baselines)
        pnl_total = sum(pnl.values())
        dd = val.drawdown(v.total, peak)
        TOTAL_VALUE.set(v.total)
        PEAK.set(peak)
        DRAWDOWN.set(dd)
        PNL_TOTAL.set(pnl_total)
        ALLOCATION.clear()  # an asset sold out leaves the allocation, not a stale share
        for asset, share in v.allocation.items():
            ALLOCATION.labels(asset).set(share)
        for venue, amount in v.by_venue.items():
            EXCHANGE_VALUE.labels(venue).set(amount)
            EXCHANGE_PNL.labels(venue).set(pnl[venue])
        LAST_POLL.set(time.time())
        doc = {"ts_ms": now_ms(), "account": self.params.account, "quote": v.quote, "total_value": v.total,
               "peak_value": peak, "drawdown": dd, "pnl_total": pnl_total, "pnl_by_exchange": pnl,
               "value_by_exchange": v.by_venue, "value_by_symbol": v.by_asset, "allocation": v.allocation,
               "prices": {a: p for a, p in v.prices.items() if a != v.quote}, "stale_venues": stale,
               "max_correlation": self.max_correlation}
        try:
            await self.redis.set(self.k_latest, json.dumps(doc))
        except RedisError as exc:
            log.warning("monitor_state_unavailable", error=str(exc)[:200])
        if self.bus is not None:
            positions = [Position(venue=ven, asset=a, quantity=q, price=v.prices.get(a, 0.0),
                                  value=q * v.prices.get(a, 0.0))
                         for ven, assets in sorted(self.holdings.items()) for a, q in sorted(assets.items())]
            await self.bus.send(PORTFOLIO_SNAPSHOTS, PortfolioSnapshot(
                account=self.params.account, quote=v.quote, total_value=v.total, positions=positions,
                ts_ms=now_ms()))
        if self.tsdb is not None:
            tags = {"account": self.params.account}
            self.tsdb.write("portfolio", tags, {"total_value": v.total, "pnl_total": pnl_total,
                                                "drawdown": dd, "peak_value": peak})
            for asset, share in v.allocation.items():
                self.tsdb.write("portfolio_allocation", {**tags, "symbol": asset},
                                {"weight": share, "value": v.by_asset[asset]})
            for venue, amount in v.by_venue.items():
                self.tsdb.write("portfolio_exchange", {**tags, "exchange": venue},
                                {"value": amount, "pnl": pnl[venue]})

    # -- correlation -------------------------------------------------------------------------
    async def correlation_once(self) -> float:
        """Correlation of hourly returns between the held positions; the largest pair's value."""
        v = self.latest
        if v is None:
            return 0.0
        held = sorted(a for a, w in v.allocation.items()
                      if a != self.quote and w >= self.params.correlation_min_weight)
        closes: dict[str, list[float]] = {}
        for asset in held:
            symbol = f"{asset}/{self.quote}"
            venue = next((ven for (ven, s) in self.quotes if s == symbol), None)
            if venue is None:
                continue
            candles = await self.gateway.call(venue, "fetch_ohlcv", symbol, "1h", None,
                                              self.params.correlation_candles)
            closes[asset] = [float(c[4]) for c in candles]
        assets, matrix = val.correlation(closes)
        top, pair = val.max_pairwise(assets, matrix)
        self.max_correlation = top
        MAX_CORRELATION.set(top)
        if self.tsdb is not None:
            for i, a in enumerate(assets):
                for j, b in enumerate(assets):
                    if i < j:
                        self.tsdb.write("portfolio_correlation",
                                        {"account": self.params.account, "a": a, "b": b},
                                        {"value": float(matrix[i, j])})
        log.info("monitor_correlation", assets=assets, max=round(top, 4), pair=pair)
        return top

    # -- messages ----------------------------------------------------------------------------
    async def handle(self, message: object, _record: ConsumerRecord | None = None) -> None:
        if isinstance(message, Execution):
            EXECUTIONS.labels(message.source, message.status).inc()
            if message.fee > 0 and not message.dry_run:
                await self._count_fee(message)
        elif isinstance(message, OrderBook):
            ts = message.ts_recv_ms / 1000
            self.book_ts[message.venue] = max(ts, self.book_ts.get(message.venue, 0.0))
        elif isinstance(message, Opportunity):
            OPPORTUNITIES.labels(message.kind).inc()
        elif isinstance(message, RebalancePlan):
            REBALANCES.labels(message.status).inc()

    async def _count_fee(self, e: Execution) -> None:
        currency = e.fee_currency or self.quote
        price = 1.0 if currency == self.quote else self.prices.get(currency)
        if price is None:
            log.warning("monitor_fee_unpriced", currency=currency, execution=e.id)
            return
        try:
            first = await self.redis.set(self.keys.monitor_fee_seen(e.venue, e.id), "1", nx=True,
                                         ex=FEE_DEDUP_TTL_S)
        except RedisError as exc:
            raise TransientError(f"redis unavailable: {exc}") from exc
        if first:
            FEES.labels(e.venue).inc(e.fee * price)

    def update_book_ages(self) -> None:
        now = time.time()
        for venue, ts in self.book_ts.items():
            BOOK_AGE.labels(venue).set(max(0.0, now - ts))

    async def run(self, stopping: asyncio.Event) -> None:
        next_corr = 0.0
        while not stopping.is_set():
            started = time.monotonic()
            if self.gateway.venues:
                try:
                    await self.poll()
                    if time.monotonic() >= next_corr:
                        next_corr = time.monotonic() + self.params.correlation_interval_s
                        await self.correlation_once()
                except CseError as exc:
                    log.warning("monitor_poll_failed", error=str(exc)[:300])
            self.update_book_ages()
            wait = max(0.0, self.params.poll_interval_s - (time.monotonic() - started))
            try:
                await asyncio.wait_for(stopping.wait(), wait)
            except TimeoutError:
                pass


async def run(ctx: WorkerContext, settings: MonitorSettings) -> None:
    """Follow every topic in the monitor's own group and value the portfolio on a timer."""
    services: Services = await open_services(ctx, settings)
    gateway = await ctx.stack.enter_async_context(open_gateway(settings.venues))
    monitor = Monitor(settings.monitor, gateway, settings.venues.symbol_list, redis=services.redis,
                      bus=services.bus, tsdb=services.tsdb, prefix=settings.redis.key_prefix)
    if not gateway.venues:
        log.warning("monitor_no_venues", hint="set CSE_VENUES to value the portfolio")
    poller = asyncio.create_task(monitor.run(ctx.stopping), name="monitor-poll")
    loop = consumer(services, settings, list(TOPICS), settings.group_id, monitor.handle)
    try:
        await consume_until_stopped(ctx, [loop])
    finally:
        await poller
