"""One rebalance cycle against two real venue-sims through real ccxt."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.gateway import Gateway
from tests import ROOT
from tests.conftest import NotYet, eventually
from tests.integration.conftest import SimVenue, running_venues, sim_gateway
from tests.metric_values import value
from workers.rebalancer import engine as eng
from workers.rebalancer import metrics as rebalance_metrics
from workers.rebalancer.settings import RebalanceSettings

pytestmark = pytest.mark.slow
SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT"]


@pytest.fixture(scope="module")
def venues(venue_sim_logs: Path) -> Iterator[dict[str, SimVenue]]:
    with running_venues(venue_sim_logs, {"rb-a": None, "rb-b": None}, seed=9) as running:
        yield running


def gateway(venues: dict[str, SimVenue]) -> Gateway:
    return sim_gateway(venues, SYMBOLS)


def fills(venue: SimVenue) -> list[dict]:
    if not venue.journal.exists():
        return []
    return [json.loads(line) for line in venue.journal.read_text().splitlines()]


async def test_dry_run_plans_across_venues_and_touches_no_exchange(venues) -> None:
    settings = RebalanceSettings(dry_run=True, method="rp", vol_target=0.01, max_orders=20)
    before = {n: len(fills(v)) for n, v in venues.items()}
    async with gateway(venues) as gw:
        message, plan = await eng.RebalanceEngine(settings, gw, SYMBOLS).cycle("dry-1")
    assert message.status == "planned" and message.dry_run
    assert {n: len(fills(v)) for n, v in venues.items()} == before, "dry run reached an exchange"
    # the two venues hold one portfolio: every order is on one of them, sells before buys
    assert plan.orders and {o.venue for o in plan.orders} <= set(venues)
    sides = [o.side for o in plan.orders]
    assert sides == sorted(sides, key=lambda s: s == "buy")
    risky = {a: w for a, w in message.target_weights.items() if a != "USDT"}
    assert set(risky) == {"BTC", "ETH", "SOL"}
    assert sum(message.target_weights.values()) == pytest.approx(1.0)
    assert message.predicted_vol == pytest.approx(0.01, rel=1e-9), "vol target hit exactly"
    assert value(rebalance_metrics.TARGET_VOL) == 0.01
    assert value(rebalance_metrics.ACTUAL_VOL) > 0


async def test_a_live_cycle_places_each_planned_order_once(venues) -> None:
    settings = RebalanceSettings(dry_run=False, method="mv", use_real_cov=True, max_orders=4,
                                 min_notional=10)
    placed_before = value(rebalance_metrics.ORDERS_PLACED)
    async with gateway(venues) as gw:
        message, plan = await eng.RebalanceEngine(settings, gw, SYMBOLS).cycle("live-1")
    assert message.status == "executed", message
    assert len(plan.orders) == 4
    assert value(rebalance_metrics.ORDERS_PLACED) - placed_before == 4
    journal = [f for v in venues.values() for f in fills(v)]
    by_id: dict[str, set] = {}
    for f in journal:
        by_id.setdefault(f["clientOrderId"], set()).add(f["orderId"])
    for order in plan.orders:
        assert len(by_id.get(order.client_order_id, ())) == 1, order.client_order_id


async def test_only_the_leader_rebalances_and_the_other_takes_over(venues, redis_client,
                                                                   redis_settings) -> None:
    import asyncio

    from workers.rebalancer.loop import RebalanceLoop

    settings = RebalanceSettings(dry_run=True, interval=0.3, backoff_max=1)
    async with gateway(venues) as gw:
        loops = [RebalanceLoop(settings, eng.RebalanceEngine(settings, gw, SYMBOLS), redis_client,
                               prefix=redis_settings.key_prefix, ttl_s=2, owner=f"rb{i}")
                 for i in range(2)]
        stops = [asyncio.Event(), asyncio.Event()]
        tasks = [asyncio.create_task(lp.run(st)) for lp, st in zip(loops, stops, strict=True)]
        try:
            await eventually(lambda: sum(cycles := [lp.cycles for lp in loops]) >= 3 or NotYet(cycles),
                             20, "three cycles", interval_s=0.1)
            leader = next(i for i, lp in enumerate(loops) if lp.cycles)
            other = 1 - leader
            assert loops[other].cycles == 0, "two rebalancers acted"
            old_token = loops[leader].lock.token
            stops[leader].set()  # the leader goes away
            await tasks[leader]
            await eventually(lambda: loops[other].cycles > 0, 10, "the other's first cycle (a takeover)",
                             interval_s=0.1)
            assert loops[other].lock.token > old_token, "the new leader has a newer fencing token"
        finally:
            for st in stops:
                st.set()
            await asyncio.gather(*tasks)


def test_cse_rebalance_once_prints_the_plan_and_dry_run_places_nothing(venues) -> None:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("CSE_")}
    env["CSE_VENUES"] = ",".join(f"{n}={v.url}" for n, v in venues.items())
    env["CSE_SYMBOLS"] = ",".join(SYMBOLS)
    before = {n: len(fills(v)) for n, v in venues.items()}
    out = subprocess.run([sys.executable, "-m", "workers.cli", "rebalance", "--once", "--dry-run"],
                         env=env, text=True, capture_output=True, timeout=120,
                         cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "DRY RUN" in out.stdout and "TARGET" in out.stdout and "orders," in out.stdout
    assert {n: len(fills(v)) for n, v in venues.items()} == before
    no_venues = subprocess.run([sys.executable, "-m", "workers.cli", "rebalance", "--once"],
                               env={k: v for k, v in env.items() if k != "CSE_VENUES"}, text=True,
                               capture_output=True, timeout=60, cwd=ROOT)
    assert no_venues.returncode == 2 and "CSE_VENUES" in no_venues.stderr


@pytest.fixture
def drifted(venue_sim_logs: Path) -> Iterator[dict[str, SimVenue]]:
    """Three venues holding one lopsided portfolio: BTC-heavy here, cash there, SOL elsewhere."""
    balances = {"dr-a": "BTC=3,USDT=2000", "dr-b": "USDT=150000,ETH=1", "dr-c": "SOL=600,USDT=500"}
    with running_venues(venue_sim_logs, balances, seed=11) as running:
        yield running


async def test_a_drifted_portfolio_is_brought_within_the_band_and_the_next_cycle_places_nothing(
        drifted, kafka_settings, redis_client, redis_settings, store_settings) -> None:
    import uuid

    from shared.bus import Bus
    from shared.messages import ORDERS_EXECUTIONS, PORTFOLIO_REBALANCE, PORTFOLIO_SNAPSHOTS, Codec
    from shared.timeseries import TimeSeriesWriter
    from tests.conftest import read_topic
    from tests.integration.shared.test_timeseries import export

    account = f"acct-{uuid.uuid4().hex[:8]}"
    venues = drifted
    settings = RebalanceSettings(dry_run=False, method="rp", max_orders=40, min_notional=10,
                                 slippage_bps=30, band=0.01, vol_target=0.03)
    placed = value(rebalance_metrics.ORDERS_PLACED)
    costs = value(rebalance_metrics.COSTS)
    async with gateway(venues) as gw, Bus(kafka_settings) as bus, TimeSeriesWriter(store_settings) as tsdb:
        await bus.ensure_topics()
        engine = eng.RebalanceEngine(settings, gw, SYMBOLS, bus=bus, redis=redis_client, tsdb=tsdb,
                                     account=account, prefix=redis_settings.key_prefix)
        first, plan = await engine.cycle(f"{account}-1")
        assert first.status == "executed" and plan.orders, first
        assert {o.side for o in plan.orders} == {"buy", "sell"}, plan.orders
        assert value(rebalance_metrics.ORDERS_PLACED) - placed == len(plan.orders)
        assert 0 < value(rebalance_metrics.COSTS) - costs <= plan.est_cost + 1e-9
        # every order is an IOC limit order at the venue's quote widened by the slippage allowance
        for o in plan.orders:
            assert o.price is not None and o.client_order_id.startswith("rb")
        # the portfolio is now on target within the band
        snap = await engine.snapshot()
        total = sum(h.quantity * {**snap.prices, "USDT": 1.0}[h.asset] for h in snap.holdings)
        for asset, target in first.target_weights.items():
            held = sum(h.quantity for h in snap.holdings if h.asset == asset)
            weight = held * {**snap.prices, "USDT": 1.0}[asset] / total
            assert abs(weight - target) <= settings.band, (asset, weight, target)
        assert all(h.quantity >= 0 and (h.free or 0) >= 0 for h in snap.holdings)
        # replaying the same plan places nothing: every client id is already claimed
        before = value(rebalance_metrics.ORDERS_PLACED)
        assert await engine._execute(first.id, plan, snap) == "executed"
        assert value(rebalance_metrics.ORDERS_PLACED) == before
        second, again = await engine.cycle(f"{account}-2")
        assert again.orders == [], again.orders
        assert second.status == "executed"
        await tsdb.flush()
    bootstrap = kafka_settings.bootstrap_servers

    async def messages(name: str) -> list:
        codec = Codec.for_topic(name)
        return [codec.decode(r.value) for r in await read_topic(bootstrap, name)]

    # the valuation travels in the plan; portfolio.snapshots is the monitor's alone
    assert not [m for m in await messages(PORTFOLIO_SNAPSHOTS) if m.account == account]
    executions = [m for m in await messages(ORDERS_EXECUTIONS) if m.parent_id == first.id]
    assert sorted(e.client_order_id for e in executions) == sorted(o.client_order_id for o in plan.orders)
    assert all(e.source == "rebalancer" and e.status in ("filled", "partial") for e in executions)
    plans = [m for m in await messages(PORTFOLIO_REBALANCE) if m.account == account]
    assert [p.id for p in plans] == [first.id, second.id]
    assert plans[0].total_value == pytest.approx(plan.total_value) and plan.total_value > 0
    rows = export(store_settings.url, f'{{__name__=~"rebalance_cycle_.*",account="{account}"}}')
    assert {r["metric"]["__name__"] for r in rows} >= {"rebalance_cycle_orders", "rebalance_cycle_est_cost"}
    weights = export(store_settings.url, f'{{__name__="rebalance_weight_target",account="{account}"}}')
    assert {r["metric"]["asset"] for r in weights} == {"BTC", "ETH", "SOL", "USDT"}


async def test_a_requested_cycle_runs_at_once_and_a_halt_stops_cycles(venues, redis_client,
                                                                       redis_settings) -> None:
    import asyncio

    from shared.halt import Halt
    from shared.rediskeys import RedisKeys
    from workers.rebalancer.loop import RebalanceLoop

    settings = RebalanceSettings(dry_run=True, interval=600, backoff_max=600)
    prefix = redis_settings.key_prefix
    async with gateway(venues) as gw:
        loop = RebalanceLoop(settings, eng.RebalanceEngine(settings, gw, SYMBOLS), redis_client,
                             prefix=prefix, ttl_s=2)
        passes: list[bool] = []  # what each pass of the loop returned: True if it ran a cycle
        run_once = loop.run_once

        async def recorded_run_once() -> bool:
            ran = await run_once()
            passes.append(ran)
            return ran

        loop.run_once = recorded_run_once  # type: ignore[method-assign]
        stop = asyncio.Event()
        task = asyncio.create_task(loop.run(stop))
        try:
            await eventually(lambda: loop.cycles >= 1, 20, "a first cycle")
            await redis_client.set(RedisKeys(prefix).rebalance_trigger(), "alice@test")
            await eventually(lambda: loop.cycles >= 2, 5, "the requested cycle (the interval is 600 s)")
            trigger = RedisKeys(prefix).rebalance_trigger()
            assert await redis_client.get(trigger) is None, "the request is consumed"
            await Halt(redis_client, prefix).set(True, reason="test", by="t")
            before = len(passes)
            await redis_client.set(RedisKeys(prefix).rebalance_trigger(), "alice@test")
            # the loop waits out its 600 s interval: its next pass is the one the request brings
            await eventually(lambda: len(passes) > before, 5, "the loop's pass on the request")
            assert passes[before:] == [False] and loop.cycles == 2, "a cycle ran while trading was halted"
        finally:
            await Halt(redis_client, prefix).set(False)
            stop.set()
            await task


async def test_a_halt_raised_during_a_cycle_stops_its_orders(venues, redis_client, redis_settings) -> None:
    from shared.halt import Halt

    halt = Halt(redis_client, redis_settings.key_prefix)
    settings = RebalanceSettings(dry_run=False, method="rp", vol_target=0.05, band=0.0, min_notional=1)
    before = {n: len(fills(v)) for n, v in venues.items()}
    await halt.set(True, reason="incident", by="test")
    try:
        async with gateway(venues) as gw:
            engine = eng.RebalanceEngine(settings, gw, SYMBOLS, redis=redis_client, halt=halt,
                                         prefix=redis_settings.key_prefix)
            message, plan = await engine.cycle(f"halted-{uuid.uuid4().hex[:6]}")
    finally:
        await halt.set(False)
    assert plan.orders, "the plan had orders to place"
    assert message.status == "skipped"
    assert {n: len(fills(v)) for n, v in venues.items()} == before
