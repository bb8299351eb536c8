"""portfolio-monitor against two real venue-sims, real Redis, the broker and the store."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.gateway import Gateway
from shared.messages import Execution, now_ms
from tests.conftest import NotYet, eventually
from tests.integration.conftest import SimVenue, ccxt_client, running_venues, sim_gateway
from tests.integration.shared.test_timeseries import export
from tests.metric_values import value
from workers.monitor import metrics as monitor_metrics
from workers.monitor import worker as mon
from workers.monitor.settings import MonitorParams

pytestmark = pytest.mark.slow
SYMBOLS = ["BTC/USDT", "ETH/USDT"]


@pytest.fixture(scope="module")
def venues(venue_sim_logs: Path) -> Iterator[dict[str, SimVenue]]:
    balances = {"mo-a": "BTC=1,USDT=10000", "mo-b": "ETH=20,USDT=5000"}
    with running_venues(venue_sim_logs, balances, seed=21) as running:
        yield running


def gateway(venues: dict[str, SimVenue]) -> Gateway:
    return sim_gateway(venues, SYMBOLS)


async def exported(url: str, match: str, done, timeout_s: float = 10.0) -> list[dict]:  # type: ignore[no-untyped-def]
    """The store's rows for ``match`` once ``done(rows)``."""

    def probe() -> tuple[list[dict]] | NotYet:
        rows = export(url, match)
        return (rows,) if done(rows) else NotYet(rows)  # a tuple: done may be true of no rows

    (rows,) = await eventually(probe, timeout_s, f"the store's rows for {match}", interval_s=0.2)
    return rows


async def test_value_pnl_and_drawdown_survive_a_restart(venues, redis_client, redis_settings,
                                                         store_settings) -> None:
    from shared.timeseries import TimeSeriesWriter

    account = f"m{uuid.uuid4().hex[:8]}"
    params = MonitorParams(account=account)
    async with gateway(venues) as gw, TimeSeriesWriter(store_settings) as tsdb:
        first = mon.Monitor(params, gw, SYMBOLS, redis=redis_client, tsdb=tsdb,
                            prefix=redis_settings.key_prefix)
        v = await first.poll()
        # the value is the balances at the median mid, computed here independently through ccxt
        mids: dict[str, list[float]] = {}
        for venue in venues.values():
            async with ccxt_client(venue) as ex:
                for t in (await ex.fetch_tickers(SYMBOLS)).values():
                    mids.setdefault(t["symbol"].split("/")[0], []).append((t["bid"] + t["ask"]) / 2)
        btc, eth = (sorted(mids[a])[len(mids[a]) // 2] if len(mids[a]) % 2 else sum(mids[a]) / 2
                    for a in ("BTC", "ETH"))
        expected = 1 * btc + 20 * eth + 15000
        assert v.total == pytest.approx(expected, rel=2e-3)  # prices walk between the two reads
        assert value(monitor_metrics.TOTAL_VALUE) == v.total
        assert sum(v.allocation.values()) == pytest.approx(1.0)
        assert value(monitor_metrics.ALLOCATION, "USDT") == pytest.approx(15000 / v.total)
        assert value(monitor_metrics.EXCHANGE_PNL, "mo-a") == 0.0, "the first valuation is the baseline"
        assert value(monitor_metrics.DRAWDOWN) == 0.0
        latest = json.loads(await redis_client.get(first.k_latest))
        assert latest["total_value"] == v.total and set(latest["pnl_by_exchange"]) == {"mo-a", "mo-b"}

        # an earlier high and an earlier baseline, as a previous run would have left them
        await redis_client.set(first.k_peak, repr(v.total * 1.25))
        await redis_client.hset(first.k_baseline, "mo-a", repr(v.by_venue["mo-a"] - 100.0))
        restarted = mon.Monitor(params, gw, SYMBOLS, redis=redis_client, tsdb=tsdb,
                                prefix=redis_settings.key_prefix)
        again = await restarted.poll()
        assert value(monitor_metrics.DRAWDOWN) == pytest.approx(1 - again.total / (v.total * 1.25))
        assert value(monitor_metrics.DRAWDOWN) == pytest.approx(0.2, abs=0.01)
        pnl_a = value(monitor_metrics.EXCHANGE_PNL, "mo-a")
        assert pnl_a == pytest.approx(again.by_venue["mo-a"] - v.by_venue["mo-a"] + 100.0)
        assert value(monitor_metrics.PNL_TOTAL) == pytest.approx(
            pnl_a + value(monitor_metrics.EXCHANGE_PNL, "mo-b"))

        top = await restarted.correlation_once()
        assert -1.0 <= top <= 1.0 and value(monitor_metrics.MAX_CORRELATION) == top
        await tsdb.flush()
    # the store makes fresh points searchable within about a second
    rows = await exported(store_settings.url, f'{{__name__="portfolio_total_value",account="{account}"}}',
                          lambda rows: len(rows) == 1 and len(rows[0]["values"]) == 2)
    assert len(rows) == 1 and len(rows[0]["values"]) == 2, rows
    # written by the same flush, but a series the store has not seen before may show later
    corr = await exported(store_settings.url,
                          f'{{__name__="portfolio_correlation_value",account="{account}"}}', bool)
    assert [(r["metric"]["a"], r["metric"]["b"]) for r in corr] == [("BTC", "ETH")]


async def test_fees_are_counted_once_per_execution_in_the_quote(venues, redis_client,
                                                                 redis_settings) -> None:
    async with gateway(venues) as gw:
        monitor = mon.Monitor(MonitorParams(account="fees"), gw, SYMBOLS, redis=redis_client,
                              prefix=redis_settings.key_prefix)
        await monitor.poll()
        before = value(monitor_metrics.FEES, "mo-a")
        ex_id = uuid.uuid4().hex
        fee_in_btc = Execution(id=ex_id, source="arbitrage", parent_id="o", venue="mo-a", symbol="BTC/USDT",
                               side="buy", client_order_id=ex_id, status="filled", amount=0.1, filled=0.1,
                               fee=0.0001, fee_currency="BTC", ts_ms=now_ms())
        await monitor.handle(fee_in_btc)
        await monitor.handle(fee_in_btc)  # redelivered
        assert value(monitor_metrics.FEES, "mo-a") - before == pytest.approx(0.0001 * monitor.prices["BTC"])
        dry = Execution(id=uuid.uuid4().hex, source="rebalancer", parent_id="p", venue="mo-a",
                        symbol="BTC/USDT", side="buy", client_order_id="x", status="planned", amount=1,
                        fee=5.0, fee_currency="USDT", dry_run=True, ts_ms=now_ms())
        await monitor.handle(dry)
        assert value(monitor_metrics.FEES, "mo-a") - before == pytest.approx(0.0001 * monitor.prices["BTC"])


async def test_without_redis_the_valuation_still_reaches_the_metrics(venues) -> None:
    from shared.coordination import connect
    from shared.settings import RedisSettings
    from tooling.devstack.infra import free_port

    down = connect(RedisSettings(url=f"redis://127.0.0.1:{free_port()}/0"))  # nothing listens there
    try:
        async with gateway(venues) as gw:
            monitor = mon.Monitor(MonitorParams(account=f"down{uuid.uuid4().hex[:6]}"), gw, SYMBOLS,
                                  redis=down)
            v = await monitor.poll()
    finally:
        await down.aclose()
    assert v.total > 0 and value(monitor_metrics.TOTAL_VALUE) == v.total
    assert value(monitor_metrics.PEAK) == v.total, "the peak is kept in memory meanwhile"
    assert value(monitor_metrics.EXCHANGE_PNL, "mo-b") == 0.0
