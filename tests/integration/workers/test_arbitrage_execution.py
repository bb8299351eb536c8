"""The executor in process, against real venue-sims, the real Redis (behind a failing proxy
when asked) and the real broker: balances moved by fills, never spent twice, reads that
reconcile, others' fills from the account stream, and Redis failing at every single step of
an execution.

The two venues share a price model and sit 80 bps below (x) and above (y) it, so buying
on x and selling on y is a real spread whatever the model does.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from shared.bus import Bus
from shared.coordination import RedisUnavailable, connect
from shared.errors import TransientError
from shared.gateway import Gateway
from shared.halt import Halt
from shared.messages import Opportunity, OrderBook, now_ms
from shared.settings import KafkaSettings, RedisSettings
from tests.conftest import NotYet, eventually
from tests.integration.conftest import SimVenue, sim_gateway, start_venue
from tests.integration.redis_proxy import RedisProxy
from tests.metric_values import value
from workers.arbitrage.balances import BalanceBook, trade_deltas
from workers.arbitrage.detect import CrossVenueDetector, DetectorConfig
from workers.arbitrage.execute import ExecutionPolicy, Executor, leg_ids
from workers.arbitrage.ledger import ExecutionLedger
from workers.arbitrage.metrics import DISAGREEMENTS, STREAM_FILLS, STREAM_UP

pytestmark = pytest.mark.slow
BTC, ETH = "BTC/USDT", "ETH/USDT"
CONFIG = DetectorConfig(default_fee=0.001, slippage_bps=20.0, max_notional=600.0, stale_ms=60_000)


@pytest.fixture(scope="module")
def venues(venue_sim_logs: Path) -> Iterator[dict[str, SimVenue]]:
    x = start_venue(venue_sim_logs, "exe-x", seed=5, args=[
        "--price-offset-bps", "-80", "--noise-bps", "1", "--balances", "USDT=200000,BTC=0,ETH=0"])
    y = start_venue(venue_sim_logs, "exe-y", seed=5, args=[
        "--price-offset-bps", "80", "--noise-bps", "1", "--balances", "USDT=0,BTC=5,ETH=0.15"])
    yield {"exe-x": x, "exe-y": y}
    x.stop()
    y.stop()


@dataclass
class Rig:
    gateway: Gateway
    bus: Bus
    redis: Any  # the executor's client (through the proxy)
    direct: Any  # the test's own client
    proxy: RedisProxy
    prefix: str

    def executor(self, *, refresh_ms: int = 60_000, hold_s: float = 30.0, lease_s: float = 30.0) -> Executor:
        ledger = ExecutionLedger(self.redis, owner="test-owner", prefix=self.prefix, lease_s=lease_s)
        book = BalanceBook(self.redis, self.gateway.venues, prefix=self.prefix)
        policy = ExecutionPolicy(detector=CONFIG, refresh_ms=refresh_ms, hold_s=hold_s)
        return Executor(self.gateway, self.bus, ledger, book, Halt(self.redis, self.prefix), None, policy)


@pytest.fixture
async def rig(venues: dict[str, SimVenue], kafka_settings: KafkaSettings,
              redis_server: Any) -> AsyncIterator[Rig]:
    proxy = await RedisProxy(redis_server.port).start()
    prefix = f"exe-{uuid.uuid4().hex[:6]}:"
    redis = connect(RedisSettings(url=f"redis://127.0.0.1:{proxy.port}/0", socket_timeout_s=2.0))
    direct = connect(RedisSettings(url=f"redis://127.0.0.1:{redis_server.port}/0"))
    gateway = sim_gateway(venues, [BTC, ETH])
    async with Bus(kafka_settings) as bus:
        for venue in gateway.venues:
            await gateway.call(venue, "load_markets")
        rig = Rig(gateway, bus, redis, direct, proxy, prefix)
        book = BalanceBook(direct, gateway.venues, prefix=prefix)
        for venue in gateway.venues:
            assert await book.read(gateway, venue) == "applied"
        yield rig
    await gateway.close()
    await redis.aclose()
    await direct.aclose()
    await proxy.close()


async def opportunity(rig: Rig, symbol: str = BTC, seq: int | None = None) -> Opportunity:
    """The x→y opportunity on the venues' books as they are now (the detector's own walk)."""
    det = CrossVenueDetector(CONFIG)
    now = now_ms()
    seq = seq if seq is not None else int(uuid.uuid4().int % 10**12)
    found: list[Opportunity] = []
    for venue in ("exe-x", "exe-y"):
        raw = await rig.gateway.call(venue, "fetch_order_book", symbol, 20)
        found = det.update(OrderBook(venue=venue, symbol=symbol, bids=[tuple(b[:2]) for b in raw["bids"]],
                                     asks=[tuple(a[:2]) for a in raw["asks"]], ts_venue_ms=now,
                                     ts_recv_ms=now, seq=seq), now)
    [opp] = [o for o in found if o.buy_venue == "exe-x"]
    return opp


async def venue_free(rig: Rig, venue: str) -> dict[str, float]:
    balance = await rig.gateway.call(venue, "fetch_balance")
    return {a: float(v or 0.0) for a, v in balance["free"].items()}


async def view(rig: Rig, venue: str) -> dict[str, float]:
    raw = await rig.direct.hgetall(f"{rig.prefix}arb:bal:{venue}")
    return {k.decode(): float(v) for k, v in raw.items() if not k.startswith(b"_")}


async def outcome(rig: Rig, opp_id: str) -> str:
    raw = await rig.direct.hget(f"{rig.prefix}arb:opp:{opp_id}", "outcome")
    return raw.decode() if raw else ""


async def held(rig: Rig) -> dict[str, Any]:
    """Everything an execution may hold in Redis: reservations, in-flight marks, pair locks."""
    out: dict[str, Any] = {}
    for pattern in ("arb:res:*", "arb:inflight:*", "arb:pair:*"):
        async for key in rig.direct.scan_iter(f"{rig.prefix}{pattern}"):
            kind = await rig.direct.type(key)
            value = await rig.direct.hgetall(key) if kind == b"hash" else await rig.direct.get(key)
            if value:
                out[key.decode()] = value
    return out


def assert_same(view_: dict[str, float], venue: dict[str, float]) -> None:
    for asset in set(view_) | set(venue):
        assert view_.get(asset, 0.0) == pytest.approx(venue.get(asset, 0.0), rel=1e-9, abs=1e-9), asset


async def test_fills_move_the_view_at_once_and_the_next_read_agrees(rig: Rig) -> None:
    executor = rig.executor()
    opp = await opportunity(rig)
    await executor.handle(opp)
    assert await outcome(rig, opp.id) == "both_legs"
    for venue in rig.gateway.venues:  # no read since: the fills alone moved the view
        assert_same(await view(rig, venue), await venue_free(rig, venue))
    before = {v: value(DISAGREEMENTS, v) for v in rig.gateway.venues}
    for venue in rig.gateway.venues:
        assert await executor.balances.read(rig.gateway, venue) == "applied"
        assert value(DISAGREEMENTS, venue) == before[venue]
    assert await held(rig) == {}, "the execution left something held"


async def test_a_balance_spent_is_not_spent_again(rig: Rig) -> None:
    """y holds 0.15 ETH. Two opportunities sized without balances (as a detector with a stale
    view would size them) each want more: the first sells what there is, the second sends
    nothing instead of an order the venue would refuse."""
    executor = rig.executor()
    first = await opportunity(rig, ETH)
    assert first.quantity > 0.15
    await executor.handle(first)
    assert await outcome(rig, first.id) == "both_legs"
    assert (await venue_free(rig, "exe-y")).get("ETH", 0.0) == pytest.approx(0.0, abs=1e-12)
    second = await opportunity(rig, ETH)
    await executor.handle(second)
    assert await outcome(rig, second.id) == "no_balance"
    for cid in leg_ids(second.id)[:2]:
        for venue in rig.gateway.venues:
            assert await rig.gateway.find_order(venue, ETH, cid) is None, "an order went out"


async def test_a_read_counts_what_moved_outside_the_view(rig: Rig) -> None:
    book = rig.executor().balances
    before = value(DISAGREEMENTS, "exe-x")
    await rig.gateway.call("exe-x", "create_order", BTC, "market", "buy", 0.001)  # not through the view
    assert await book.read(rig.gateway, "exe-x") == "applied"
    assert value(DISAGREEMENTS, "exe-x") == before + 2  # BTC and USDT
    assert_same(await view(rig, "exe-x"), await venue_free(rig, "exe-x"))


async def test_a_read_waits_while_an_order_is_in_flight(rig: Rig) -> None:
    book = rig.executor().balances
    await book.begin_orders("exe-x", ["test-in-flight"], ttl_s=30)
    assert await book.read(rig.gateway, "exe-x") == "busy"
    await book.apply("exe-x", "test-in-flight", None, BTC)
    assert await book.read(rig.gateway, "exe-x") == "applied"


@contextlib.asynccontextmanager
async def following(rig: Rig, venue: str) -> AsyncIterator[BalanceBook]:
    """A balance view following the venue's account stream, subscribed."""
    book = BalanceBook(rig.direct, rig.gateway.venues, prefix=rig.prefix)
    stopping = asyncio.Event()
    task = asyncio.create_task(book.follow(rig.gateway, venue, stopping))
    try:
        await eventually(lambda: value(STREAM_UP, venue) == 1 or task.done(), 10, "the account stream up")
        assert not task.done(), task
        yield book
    finally:
        stopping.set()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_others_fills_reach_the_view_from_the_account_stream_once(rig: Rig) -> None:
    """A fill of an order the arbitrage did not place (as the rebalancer's) moves the view
    within moments, without a read; the arbitrage's own fills, also on the stream, are not
    applied twice; a later read finds nothing to correct."""
    async with following(rig, "exe-x"):
        before = {r: value(STREAM_FILLS, "exe-x", r) for r in ("applied", "own")}
        order = await rig.gateway.call("exe-x", "create_order", BTC, "market", "buy", 0.003, None,
                                       {"clientOrderId": f"rb-test-{uuid.uuid4().hex[:8]}"})
        assert order["filled"] == 0.003 and order["trades"]

        async def view_is_venue() -> bool:
            mine, theirs = await view(rig, "exe-x"), await venue_free(rig, "exe-x")
            return all(abs(mine.get(a, 0.0) - theirs.get(a, 0.0)) <= 1e-9 * (1 + abs(theirs.get(a, 0.0)))
                       for a in set(mine) | set(theirs))

        await eventually(view_is_venue, 5, "the rebalancer-like fill in the view, without a read")
        assert value(STREAM_FILLS, "exe-x", "applied") == before["applied"] + len(order["trades"])

        executor = rig.executor()
        opp = await opportunity(rig)
        await executor.handle(opp)
        assert await outcome(rig, opp.id) == "both_legs"
        await eventually(lambda: value(STREAM_FILLS, "exe-x", "own") > before["own"], 5,
                         "the arbitrage's own fill reported on the stream")
        assert value(STREAM_FILLS, "exe-x", "applied") == before["applied"] + len(order["trades"])
        assert await view_is_venue()
    disagreements = value(DISAGREEMENTS, "exe-x")
    assert await executor.balances.read(rig.gateway, "exe-x") == "applied"
    assert value(DISAGREEMENTS, "exe-x") == disagreements


async def test_a_streamed_fill_the_last_read_counted_is_not_applied_again(rig: Rig) -> None:
    """A fill reported late, after a read that already counted it, changes nothing; a fill is
    applied once per venue trade id however often it is reported."""
    book = rig.executor().balances
    order = await rig.gateway.call("exe-x", "create_order", BTC, "market", "buy", 0.002)
    assert await book.read(rig.gateway, "exe-x") == "applied"
    trades = [t for t in await rig.gateway.call("exe-x", "fetch_my_trades", BTC, None, 50)
              if t["order"] == order["id"]]
    assert trades
    snapshot = await view(rig, "exe-x")
    for trade in trades:
        assert await book.apply_streamed("exe-x", trade) == "read"
    assert await view(rig, "exe-x") == snapshot
    later = {**trades[0], "id": f"later-{uuid.uuid4().hex[:8]}", "timestamp": trades[0]["timestamp"] + 1}
    assert await book.apply_streamed("exe-x", later) == "applied"
    assert await book.apply_streamed("exe-x", later) == "seen"
    moved = await view(rig, "exe-x")
    deltas = trade_deltas(later)
    assert deltas["USDT"] == pytest.approx(-later["cost"], rel=1e-12) and deltas["BTC"] > 0
    for asset, delta in deltas.items():
        assert moved[asset] == pytest.approx(snapshot[asset] + delta, rel=1e-12, abs=1e-12), asset
    own = {**later, "id": f"own-{uuid.uuid4().hex[:8]}", "clientOrderId": "cseown-test-b", "info": {}}
    assert await book.apply_streamed("exe-x", own) == "own"
    assert await view(rig, "exe-x") == moved
    assert await book.read(rig.gateway, "exe-x") == "applied"  # the venue's truth again


async def test_reservations_are_checked_against_the_view_and_lapse(rig: Rig) -> None:
    book = rig.executor().balances
    usdt = (await view(rig, "exe-x"))["USDT"]
    hold_s = 1.0
    assert await book.reserve("opp-a", [("exe-x", "USDT", 1.0)], usdt * 0.75, ttl_s=hold_s) == pytest.approx(
        usdt * 0.75)
    # only a quarter is left for anyone else, and the second hold is granted just that
    assert await book.reserve("opp-b", [("exe-x", "USDT", 2.0)], usdt, ttl_s=30) == pytest.approx(usdt / 8)
    await book.release("opp-b", ["exe-x"])

    async def lapsed() -> bool | NotYet:
        left = await book.reserved("exe-x", "USDT")
        return left == 0.0 or NotYet(left)

    # opp-a's hold lapses by itself, within its time (and the polling's margin)
    await eventually(lapsed, hold_s + 0.2, "opp-a's hold lapsing")
    assert await book.reserve("opp-c", [("exe-x", "USDT", 1.0)], usdt, ttl_s=30) == pytest.approx(usdt)
    await book.release("opp-c", ["exe-x"])


HOLD_S = 0.5  # the holds and the lease of the executions failed below


async def nothing_held(rig: Rig) -> bool | NotYet:
    """Whatever an execution left in Redis has lapsed: reservations and in-flight marks
    carry their end time (``...|until``); a pair lock is a live key until it expires."""
    now = now_ms()
    live = {}
    for key, fields in (await held(rig)).items():
        if not isinstance(fields, dict):
            live[key] = fields
            continue
        for field, raw in fields.items():
            if int(float(raw.decode().rpartition("|")[2])) >= now:
                live[f"{key} {field}"] = raw
    return not live or NotYet(live)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("lose_reply", [False, True], ids=["refused", "reply-lost"])
async def test_redis_failing_at_any_step_holds_nothing_for_ever_and_recovers_exactly(
        rig: Rig, lose_reply: bool) -> None:
    """Fail Redis at the k-th command of an execution, for every k. Then (1) once the holds'
    time is up, nothing is reserved, in flight or locked; (2) the redelivered opportunity
    settles: no order twice, the view equal to the venues' balances, nothing held."""
    # how many commands does a whole execution take (scripts already loaded, as they then are)?
    await rig.executor().handle(await opportunity(rig))
    probe = await opportunity(rig)
    start = rig.proxy.sent
    await rig.executor().handle(probe)
    steps = rig.proxy.sent - start
    assert steps >= 10, steps
    for k in range(steps):
        executor = rig.executor(hold_s=HOLD_S, lease_s=HOLD_S)
        opp = await opportunity(rig)
        rig.proxy.fail_after(k, lose_reply=lose_reply)
        with pytest.raises(TransientError) as failed:
            await executor.handle(opp)
            print(f"step {k} of {steps} did not fail")
        assert isinstance(failed.value, RedisUnavailable) or "redis" in str(failed.value).lower()
        rig.proxy.heal()
        # every hold of the failed attempt lapses within its time (and the polling's margin)
        await eventually(lambda: nothing_held(rig), HOLD_S + 0.2, f"step {k}: every hold lapsed")
        await redeliver(executor, opp)
        assert await outcome(rig, opp.id) in ("both_legs", "none", "one_leg"), k
        for venue in rig.gateway.venues:
            fresh = await venue_free(rig, venue)
            assert await executor.balances.read(rig.gateway, venue) in ("applied", "busy")
            assert_same(await view(rig, venue), fresh)
    placed = await journal_orders(rig)
    assert all(n == 1 for n in placed.values()), {c: n for c, n in placed.items() if n != 1}


async def redeliver(executor: Executor, opp: Opportunity) -> None:
    """What the consumer loop does with a transient failure: handle again, with backoff (the
    first command on each connection the failure broke fails too)."""

    async def handled() -> bool | NotYet:
        try:
            await executor.handle(opp)
        except TransientError as exc:
            return NotYet(exc)
        return True

    await eventually(handled, 10, "the redelivered opportunity settled", interval_s=0.1)


async def journal_orders(rig: Rig) -> dict[str, int]:
    """Client order id → how many venue orders carry it (from each venue's own order list)."""
    counts: dict[str, int] = {}
    for venue in rig.gateway.venues:
        for symbol in (BTC, ETH):
            for order in await rig.gateway.call(venue, "fetch_orders", symbol, None, 1000):
                cid = order.get("clientOrderId") or ""
                if cid.startswith("cse"):
                    counts[cid] = counts.get(cid, 0) + 1
    return counts


def test_the_proxy_counts_pipelined_commands() -> None:
    from tests.integration.redis_proxy import complete_commands

    two = b"*1\r\n$4\r\nPING\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\nvv\r\n"
    assert complete_commands(two) == [14, len(two)]
    assert complete_commands(two[:-3]) == [14]
