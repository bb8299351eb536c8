"""arbitrage-worker: detect on ``md.orderbooks``, execute from ``arb.opportunities``.

Each replica runs two consumer-group members:

* ``arbitrage-worker`` over ``md.orderbooks`` (keyed by symbol, so one replica sees every
  venue's books of a symbol): the detectors compare each update with every other venue's
  freshest book and publish opportunities, keyed by symbol, with deterministic ids;
* ``arbitrage-executor`` over ``arb.opportunities``: executes each opportunity at most
  once (:mod:`workers.arbitrage.execute`); a replica that dies mid-execution has its
  opportunity redelivered and settled by another.

Balances for sizing and for reservations come from the shared balance view in Redis
(:mod:`workers.arbitrage.balances`): moved by every fill the moment it happens (its own from
the venues' answers, others' from each venue's account stream) and reconciled with the
venues every ``CSE_ARB_BALANCE_INTERVAL_S``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiokafka import ConsumerRecord

from shared.bus import Bus, ConsumerLoop, Handler
from shared.coordination import LeaderElector, LeaderLock, default_owner
from shared.gateway import open_gateway
from shared.halt import Halt, HaltWatch
from shared.lifecycle import WorkerContext
from shared.logs import get_logger
from shared.messages import ARB_OPPORTUNITIES, MD_ORDERBOOKS, BookHead, OrderBook, now_ms
from shared.runtime import consume_until_stopped, consumer, open_services
from workers.arbitrage.balances import BalanceBook
from workers.arbitrage.detect import Balances, CrossVenueDetector, DetectorConfig
from workers.arbitrage.execute import ExecutionPolicy, Executor
from workers.arbitrage.ledger import ExecutionLedger
from workers.arbitrage.metrics import DECISION_LATENCY, EDGE, OPPORTUNITIES
from workers.arbitrage.settings import ArbitrageSettings
from workers.arbitrage.triangular import TriangularDetector

log = get_logger("arbitrage")

async def triangular(ctx: WorkerContext, settings: ArbitrageSettings, services: Any,
                     sizing: Balances | None) -> None:
    """Triangular detection needs every market of a venue, so it cannot follow the symbol
    partitioning: one replica, elected, runs it over the whole order-book topic."""
    p = settings.arb
    detector = TriangularDetector(fee=p.fee_map(), default_fee=p.taker_fee, slippage_bps=p.slippage_bps,
                                  start_currencies=p.start_currencies,
                                  min_edge_bps=p.min_edge_bps, max_notional=p.max_notional,
                                  min_profit=p.min_profit, stale_ms=p.stale_ms)

    async def on_book(book: OrderBook, _record: ConsumerRecord) -> None:
        detector.update(book)
        for opp in detector.scan(book.venue, now_ms(), sizing):
            OPPORTUNITIES.labels(opp.symbol, opp.buy_venue, opp.sell_venue, opp.kind).inc()
            EDGE.observe(opp.edge_bps)
            await services.bus.publish(ARB_OPPORTUNITIES, opp)

    loop: ConsumerLoop | None = None
    running: asyncio.Task[None] | None = None

    async def elected(_token: int) -> None:
        nonlocal loop, running
        # an elected replica starts at the newest books: older ones are stale for detection
        loop = consumer(services, settings, [MD_ORDERBOOKS], settings.triangular_group_id, on_book,
                        auto_offset_reset="latest")
        running = asyncio.create_task(loop.run())

    async def lost() -> None:
        if loop is not None and running is not None:
            loop.stop()
            await running

    lock = LeaderLock(services.redis, "arb-triangular", ttl_s=10, prefix=settings.redis.key_prefix)
    elector = LeaderElector(lock, on_elected=elected, on_lost=lost)
    task = asyncio.create_task(elector.run())
    try:
        await ctx.stopping.wait()
    finally:
        elector.stop()
        await task
        await lost()


def book_handler(detector: CrossVenueDetector, bus: Bus, sizing: Balances | None = None) -> Handler:
    """The ``md.orderbooks`` handler: detect, count, publish each opportunity (acked at commit).

    It runs for every book, read as a :class:`~shared.messages.BookHead` (levels decoded only
    if the detector walks them): one clock read, lock-free histograms, the opportunity
    counter's labelled children looked up once."""
    counters: dict[tuple[str, str, str, str], Any] = {}
    observe_edge = EDGE.observe
    observe_latency = DECISION_LATENCY.observe
    clock = time.time_ns

    async def on_book(book: BookHead, _record: ConsumerRecord) -> None:
        now = clock() // 1_000_000
        for opp in detector.update(book, now, sizing):
            labels = (opp.symbol, opp.buy_venue, opp.sell_venue, opp.kind)
            counter = counters.get(labels)
            if counter is None:
                counter = counters[labels] = OPPORTUNITIES.labels(*labels)
            counter.inc()
            observe_edge(opp.edge_bps)
            await bus.publish(ARB_OPPORTUNITIES, opp)
        latency = now - book.ts_recv_ms
        observe_latency(latency if latency > 0 else 0)

    return on_book


def build_detector(settings: ArbitrageSettings) -> CrossVenueDetector:
    p = settings.arb
    return CrossVenueDetector(DetectorConfig(
        taker_fees=p.fee_map(), default_fee=p.taker_fee, slippage_bps=p.slippage_bps,
        max_notional=p.max_notional, stale_ms=p.stale_ms, min_profit=p.min_profit,
        min_edge_bps=p.min_edge_bps))


async def run(ctx: WorkerContext, settings: ArbitrageSettings) -> None:
    services = await open_services(ctx, settings)
    gateway = await ctx.stack.enter_async_context(open_gateway(settings.venues))
    p = settings.arb
    prefix = settings.redis.key_prefix
    detector = build_detector(settings)
    balances = BalanceBook(services.redis, gateway.venues, prefix=prefix,
                           read_interval_s=p.balance_interval_s)
    ledger = ExecutionLedger(services.redis, owner=default_owner(), prefix=prefix, lease_s=p.lease_s)
    halt = Halt(services.redis, prefix)
    policy = ExecutionPolicy(detector=detector.config, dry_run=p.dry_run,
                             hedge_max_loss_bps=p.hedge_max_loss_bps, refresh_ms=p.refresh_ms,
                             hold_s=p.lease_s)
    executor = Executor(gateway, services.bus, ledger, balances, halt, services.tsdb, policy)
    # detection sizes on the local copy of the shared balance view; a dry run trades nothing
    sizing = None if p.dry_run else balances.available
    loops = [
        consumer(services, settings, [MD_ORDERBOOKS], settings.group_id,
                 book_handler(detector, services.bus, sizing), message_types={MD_ORDERBOOKS: BookHead}),
        consumer(services, settings, [ARB_OPPORTUNITIES], settings.executor_group_id,
                 executor.handle),
    ]
    if p.triangular:
        ctx.background(triangular(ctx, settings, services, sizing), "triangular")
    if gateway.venues and not p.dry_run:
        ctx.background(balances.run(gateway, ctx.stopping), "balances")
        if p.balance_stream:
            ctx.background(balances.follow_all(gateway, ctx.stopping), "balance-streams")

        async def balances_known() -> bool:
            return balances.ready

        ctx.health.add_check("balances", balances_known)
    # the executor reads the persisted halt before every execution; the watch makes a change
    # visible (logged, HALTED gauge) the moment it is published
    watch = HaltWatch(halt)
    ctx.background(watch.run(ctx.stopping), "halt")
    await consume_until_stopped(ctx, loops)
