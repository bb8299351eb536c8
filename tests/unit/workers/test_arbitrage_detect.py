"""Cross-venue detection: the depth walk by hand and by property, and the detector around it."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from collections.abc import Sequence

import msgspec
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.messages import OrderBook
from tooling.bench.arbitrage import bench_detection, walk_numpy
from workers.arbitrage.detect import CrossVenueDetector, DetectorConfig, opportunity_id, walk

INF = math.inf
REL = 1e-9
NOW = 1_700_000_000_000

# database=None: no .hypothesis/ example store left in the working tree
PROPS = settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


# ---------------------------------------------------------------- the walk, by hand

def test_one_level_without_costs() -> None:
    r = walk([(100.0, 1.0)], [(101.0, 1.0)], 0.0, 0.0, 0.0)
    assert r is not None
    assert r.quantity == 1.0 and r.buy_vwap == 100.0 and r.sell_vwap == 101.0
    assert r.gross_profit == pytest.approx(1.0) and r.net_profit == pytest.approx(1.0)
    assert r.edge_bps == pytest.approx(100.0) and r.fees == 0.0


def test_fees_and_slippage_priced_by_hand() -> None:
    # a unit: 101·(1−0.002)(1−0.001) − 100·(1+0.001)(1+0.001) = 100.697202 − 100.2001 = 0.497102
    r = walk([(100.0, 2.0)], [(101.0, 2.0)], 0.001, 0.002, 10.0)
    assert r is not None
    assert r.quantity == 2.0
    assert r.gross_profit == pytest.approx(2.0, rel=REL)
    assert r.net_profit == pytest.approx(2 * 0.497102, rel=REL)
    assert r.fees == pytest.approx(200 * 0.001 + 202 * 0.002, rel=REL)
    assert r.edge_bps == pytest.approx(0.994204 / 200 * 1e4, rel=REL)


def test_fees_then_slippage_shrink_the_size() -> None:
    asks = [(100.0, 1.0), (100.5, 1.0), (101.0, 1.0)]
    bids = [(102.0, 3.0)]
    free = walk(asks, bids, 0.0, 0.0, 0.0)
    assert free is not None and free.quantity == 3.0 and free.net_profit == pytest.approx(4.5)
    # 50 bps each side: a unit pays while ask·1.005 < 102·0.995 = 101.49, i.e. the first two levels
    fees = walk(asks, bids, 0.005, 0.005, 0.0)
    assert fees is not None and fees.quantity == 2.0
    assert fees.net_profit == pytest.approx(204 * 0.995 - 200.5 * 1.005, rel=REL)  # 1.4775
    assert fees.buy_worst == 100.5
    # plus 30 bps of slippage: 102·0.995·0.997 = 101.18553 is above 100·1.005·1.003 = 100.8015
    # but below 100.5·1.005·1.003 = 101.3055: one unit
    slip = walk(asks, bids, 0.005, 0.005, 30.0)
    assert slip is not None and slip.quantity == 1.0
    assert slip.net_profit == pytest.approx(101.18553 - 100.8015, rel=REL)
    assert slip.gross_profit == pytest.approx(2.0)


def test_quote_base_and_notional_caps_are_exact() -> None:
    asks, bids = [(100.0, 5.0)], [(110.0, 5.0)]
    quote = walk(asks, bids, 0.01, 0.0, 0.0, max_quote=202.0)  # 202 buys 200 of notional + 1% fee
    assert quote is not None and quote.quantity == pytest.approx(2.0, rel=1e-12)
    base = walk(asks, bids, 0.01, 0.0, 0.0, max_base=1.5)
    assert base is not None and base.quantity == 1.5
    notional = walk(asks, bids, 0.01, 0.0, 0.0, max_notional=250.0)
    assert notional is not None and notional.quantity == pytest.approx(2.5, rel=1e-12)
    # the tightest of several caps wins
    both = walk(asks, bids, 0.01, 0.0, 0.0, max_base=3.0, max_quote=202.0, max_notional=250.0)
    assert both is not None and both.quantity == pytest.approx(2.0, rel=1e-12)
    assert walk(asks, bids, 0.01, 0.0, 0.0, max_base=0.0) is None
    assert walk(asks, bids, 0.01, 0.0, 0.0, max_quote=0.0) is None


def test_notional_cap_stops_inside_a_deeper_level() -> None:
    r = walk([(100.0, 1.0), (101.0, 1.0), (102.0, 1.0)], [(110.0, 3.0)], 0.0, 0.0, 0.0, max_notional=250.0)
    assert r is not None
    assert r.quantity == pytest.approx(2.0 + 49.0 / 102.0, rel=1e-12)
    assert r.quantity * r.buy_vwap == pytest.approx(250.0, rel=1e-12)
    assert r.buy_worst == 102.0 and r.sell_worst == 110.0


@pytest.mark.parametrize(("asks", "bids"), [
    ([], []),
    ([], [(101.0, 1.0)]),
    ([(100.0, 1.0)], []),
    ([(100.0, 0.0)], [(101.0, 1.0)]),  # only a zero-size level
])
def test_empty_or_one_sided_books_give_nothing(asks: list[tuple[float, float]],
                                               bids: list[tuple[float, float]]) -> None:
    assert walk(asks, bids, 0.0, 0.0, 0.0) is None


def test_a_spread_within_fees_gives_nothing() -> None:
    # crossed by 10 bps, fees 10 bps a side: 100.1·0.999 = 99.9999 < 100·1.001
    assert walk([(100.0, 1.0)], [(100.1, 1.0)], 0.001, 0.001, 0.0) is None
    assert walk([(100.0, 1.0)], [(100.1, 1.0)], 0.0, 0.0, 0.0) is not None


def test_the_optimum_stops_inside_a_level() -> None:
    asks = [(100.0, 1.0), (101.0, 2.0)]
    bids = [(103.0, 1.5), (100.5, 2.0)]
    # +3 a unit up to 1, +2 up to 1.5, then 100.5 − 101 < 0: stop halfway into the second ask level
    r = walk(asks, bids, 0.0, 0.0, 0.0)
    assert r is not None
    assert r.quantity == 1.5
    assert r.buy_vwap == pytest.approx(150.5 / 1.5) and r.sell_vwap == 103.0
    assert r.net_profit == pytest.approx(4.0) and r.buy_worst == 101.0 and r.sell_worst == 103.0
    # numpy arrays are accepted and give the same answer
    assert walk(np.array(asks), np.array(bids), 0.0, 0.0, 0.0) == r


# ---------------------------------------------------------------- the walk, by property

def _fill(levels: Sequence[tuple[float, float]], q: float) -> tuple[float, float]:
    """Notional of the first ``q`` units and how much of ``q`` the book could not fill."""
    notional, rest = 0.0, q
    for price, size in levels:
        if rest <= 0.0:
            break
        take = min(size, rest)
        notional += take * price
        rest -= take
    return notional, rest


def _price_of_unit(levels: Sequence[tuple[float, float]], q: float, after: bool) -> float | None:
    """Price of the level holding the unit just below ``q`` (or just above it with ``after``)."""
    cum = 0.0
    tol = 1e-9 * max(q, 1.0)
    for price, size in levels:
        if size <= 0.0:
            continue
        cum += size
        if (cum > q + tol) if after else (cum >= q - tol):
            return price
    return None


def _book_side(ascending: bool) -> st.SearchStrategy[list[tuple[float, float]]]:
    size = st.one_of(st.just(0.0), st.floats(0.01, 5.0))
    return st.tuples(st.floats(95.0, 105.0), st.lists(st.tuples(st.floats(0.0, 1.0), size), max_size=6)).map(
        lambda t: [(t[0] + (1 if ascending else -1) * sum(s for s, _ in t[1][: n + 1]), q)
                   for n, (_, q) in enumerate(t[1])])


walk_inputs = st.fixed_dictionaries({
    "asks": _book_side(ascending=True),
    "bids": _book_side(ascending=False),
    "fee_buy": st.floats(0.0, 0.005),
    "fee_sell": st.floats(0.0, 0.005),
    "slippage_bps": st.floats(0.0, 20.0),
    # caps at least 1e-6: at subnormal sizes one rounding is a large relative error, and no balance is that
    "max_base": st.one_of(st.just(INF), st.just(0.0), st.floats(1e-6, 10.0)),
    "max_quote": st.one_of(st.just(INF), st.just(0.0), st.floats(1e-6, 1000.0)),
    "max_notional": st.one_of(st.just(INF), st.floats(1.0, 1000.0)),
})


@PROPS
@given(walk_inputs)
def test_walk_net_profit_is_what_the_fills_realise_and_is_the_best(kw: dict) -> None:
    asks, bids = kw["asks"], kw["bids"]
    fb, fs = kw["fee_buy"], kw["fee_sell"]
    slip = kw["slippage_bps"] * 1e-4
    kb, ks = (1 + fb) * (1 + slip), (1 - fs) * (1 - slip)
    cost_cap = min(kw["max_notional"], kw["max_quote"] / (1 + fb))

    def net(q: float) -> float:
        cost, _ = _fill(asks, q)
        proceeds, _ = _fill(bids, q)
        return proceeds * ks - cost * kb

    r = walk(**kw)
    # the best over every candidate size: each book's level boundaries and each cap's size
    cands = set()
    for side in (asks, bids):
        cum = 0.0
        for _, size in side:
            cum += size
            cands.add(cum)
    cands.add(kw["max_base"])
    cum_q = cum_c = 0.0
    for price, size in asks:
        if size > 0 and cum_c + price * size >= cost_cap:
            cands.add(cum_q + (cost_cap - cum_c) / price)
            break
        cum_q += size
        cum_c += price * size
    feasible = [q for q in cands if 0 < q < INF and q <= kw["max_base"] and _fill(asks, q)[0] <= cost_cap
                and _fill(asks, q)[1] <= 1e-12 and _fill(bids, q)[1] <= 1e-12]
    best = max((net(q) for q in feasible), default=0.0)
    if r is None:
        assert best <= 1e-9 * max(1.0, cost_cap if cost_cap < INF else 1.0)
        return
    q = r.quantity
    cost, short_a = _fill(asks, q)
    proceeds, short_b = _fill(bids, q)
    assert short_a <= 1e-9 * q and short_b <= 1e-9 * q, "more than the books hold"
    assert r.net_profit == pytest.approx(proceeds * ks - cost * kb, rel=REL, abs=1e-9)
    assert r.gross_profit == pytest.approx(proceeds - cost, rel=REL, abs=1e-9)
    assert r.fees == pytest.approx(cost * fb + proceeds * fs, rel=REL, abs=1e-12)
    assert r.buy_vwap * q == pytest.approx(cost, rel=REL)
    assert r.sell_vwap * q == pytest.approx(proceeds, rel=REL)
    assert r.edge_bps == pytest.approx(r.net_profit / cost * 1e4, rel=REL)
    assert r.net_profit >= best - 1e-9 * max(1.0, best)
    # caps
    assert q <= kw["max_base"] * (1 + 1e-12)
    assert cost * (1 + fb) <= kw["max_quote"] * (1 + 1e-12)
    assert cost <= kw["max_notional"] * (1 + 1e-12)
    # the last unit taken still pays
    a_last, b_last = _price_of_unit(asks, q, after=False), _price_of_unit(bids, q, after=False)
    assert a_last == r.buy_worst and b_last == r.sell_worst
    assert b_last * ks - a_last * kb > 0
    # and the walk stopped for a reason: a cap, an empty book, or the next unit would lose
    capped = q >= kw["max_base"] * (1 - 1e-9) or cost >= cost_cap * (1 - 1e-9)
    a_next, b_next = _price_of_unit(asks, q, after=True), _price_of_unit(bids, q, after=True)
    if not capped and a_next is not None and b_next is not None:
        assert b_next * ks - a_next * kb <= 0


@PROPS
@given(walk_inputs)
def test_the_numpy_walk_agrees_with_the_loop(kw: dict) -> None:
    """The benchmark's alternative must answer the same, or comparing their speed means nothing."""
    loop, vec = walk(**kw), walk_numpy(**kw)
    if (loop is None) != (vec is None):  # only a rounding-level profit may be seen by one and not the other
        assert (loop or vec).net_profit < 1e-9  # type: ignore[union-attr]
    if loop is not None and vec is not None:
        assert vec.quantity == pytest.approx(loop.quantity, rel=1e-9)
        assert vec.net_profit == pytest.approx(loop.net_profit, rel=1e-7, abs=1e-9)


# ---------------------------------------------------------------- the detector

def ob(venue: str, bid: float, ask: float, *, size: float = 1.0, symbol: str = "BTC/USDT", seq: int = 1,
       ts: int = NOW, recv: int | None = None) -> OrderBook:
    """A two-level book; ``size`` per level."""
    return OrderBook(venue=venue, symbol=symbol, bids=[(bid, size), (bid - 1.0, size)],
                     asks=[(ask, size), (ask + 1.0, size)], ts_venue_ms=ts,
                     ts_recv_ms=ts + 5 if recv is None else recv, seq=seq)


def cfg(**kw: float) -> DetectorConfig:
    base: dict = {"taker_fees": {}, "default_fee": 0.001, "slippage_bps": 0.0, "max_notional": 1e9,
                  "stale_ms": 1_000}
    base.update(kw)
    return DetectorConfig(**base)


def test_a_cross_is_found_both_ways_with_its_fields() -> None:
    det = CrossVenueDetector(cfg())
    assert det.update(ob("a", 99.0, 100.0), NOW) == []
    # b bids 101: buy on a at 100, sell on b at 101
    [op] = det.update(ob("b", 101.0, 102.0, ts=NOW + 1, recv=NOW + 9), NOW + 20)
    assert (op.kind, op.symbol, op.buy_venue, op.sell_venue) == ("cross", "BTC/USDT", "a", "b")
    assert op.quantity == 1.0 and op.buy_vwap == 100.0 and op.sell_vwap == 101.0
    assert op.net_profit == pytest.approx(101 * 0.999 - 100 * 1.001)
    assert op.ts_book_ms == NOW + 9 and op.ts_detect_ms == NOW + 20
    assert len(op.id) == 16 and int(op.id, 16) >= 0
    assert op.id == opportunity_id("cross", "BTC/USDT", "a", "b", 1, NOW, 1, NOW + 1)
    # now a's ask rises above b's bid, and its bid above b's ask: buy on b, sell on a
    [op] = det.update(ob("a", 103.0, 104.0, seq=2, ts=NOW + 2), NOW + 20)
    assert (op.buy_venue, op.sell_venue, op.buy_vwap, op.sell_vwap) == ("b", "a", 102.0, 103.0)
    assert det.stats == {"updates": 3, "topbook_rejects": 1, "walks": 2, "opportunities": 2,
                         "stale_skips": 0, "out_of_order": 0}


def test_every_other_venue_is_compared_best_first_on_what_the_better_ones_left() -> None:
    det = CrossVenueDetector(cfg(default_fee=0.0))
    for v, bid in (("a", 101.0), ("b", 102.0), ("c", 99.0)):
        det.update(ob(v, bid, bid + 5.0), NOW)
    d = OrderBook(venue="d", symbol="BTC/USDT", bids=[(90.0, 1.0)], asks=[(100.0, 2.5), (101.0, 5.0)],
                  ts_venue_ms=NOW, ts_recv_ms=NOW, seq=1)
    ops = det.update(d, NOW)
    assert [(o.buy_venue, o.sell_venue) for o in ops] == [("d", "b"), ("d", "a")]
    # d→b: 1 @ 100 sold at 102, 1 @ 100 sold at 101 (b's depth is 1 + 1): 3.0
    assert (ops[0].quantity, ops[0].net_profit) == (2.0, pytest.approx(3.0))
    # d→a gets the 0.5 left at 100, sold at 101 — not the 1.0 it would see on an untouched book
    assert (ops[1].quantity, ops[1].buy_vwap, ops[1].net_profit) == (0.5, 100.0, pytest.approx(0.5))


def test_a_kept_book_is_not_offered_twice_when_the_other_venue_updates() -> None:
    """The trader's case: x asks 0.08 @ 30000 then 0.06 @ 30020; y bids 0.05 @ 30100, 0.10 @ 30080."""
    det = CrossVenueDetector(cfg(default_fee=0.001))
    x = OrderBook(venue="x", symbol="BTC/USDT", bids=[(29990.0, 1.0)],
                  asks=[(30000.0, 0.08), (30020.0, 0.06)], ts_venue_ms=NOW, ts_recv_ms=NOW, seq=7)
    y = OrderBook(venue="y", symbol="BTC/USDT", bids=[(30100.0, 0.05), (30080.0, 0.10)],
                  asks=[(30110.0, 1.0)], ts_venue_ms=NOW, ts_recv_ms=NOW, seq=1)
    assert det.update(x, NOW) == []
    [first] = det.update(y, NOW)
    # 0.08 bought at 30000, sold 0.05 @ 30100 + 0.03 @ 30080 = 2407.4; 30020 vs 30080 does not pay
    # (30080·0.999 = 30049.92 < 30020·1.001 = 30050.02). Net 2407.4·0.999 − 2400·1.001 = 2.5926
    assert first.quantity == pytest.approx(0.08) and first.net_profit == pytest.approx(2.5926)
    # y's next book, same levels: x's 0.08 @ 30000 is promised, what is left starts at 30020,
    # which pays against 30100 (30100·0.999 = 30069.9 > 30050.02) for y's 0.05 only
    [second] = det.update(msgspec.structs.replace(y, seq=2), NOW)
    assert (second.quantity, second.buy_vwap, second.sell_vwap) == (pytest.approx(0.05), 30020.0, 30100.0)
    assert second.net_profit == pytest.approx(0.05 * (30069.9 - 30050.02))
    assert second.id != first.id
    # another y book: the 0.01 left at 30020, then x has nothing left to offer
    [third] = det.update(msgspec.structs.replace(y, seq=3), NOW)
    assert (third.quantity, third.buy_vwap) == (pytest.approx(0.01), pytest.approx(30020.0))
    assert det.update(msgspec.structs.replace(y, seq=4), NOW) == []
    # a newer x book starts afresh
    [fresh] = det.update(msgspec.structs.replace(x, seq=8), NOW)
    assert fresh.quantity == pytest.approx(0.08) and fresh.buy_vwap == 30000.0


@PROPS
@given(sizes=st.lists(st.floats(0.01, 5.0), min_size=1, max_size=6), updates=st.integers(1, 6))
def test_a_kept_book_never_promises_more_than_it_shows(sizes: list[float], updates: int) -> None:
    det = CrossVenueDetector(cfg(default_fee=0.0))
    asks = [(100.0 + i, q) for i, q in enumerate(sizes)]
    det.update(OrderBook(venue="x", symbol="BTC/USDT", bids=[(90.0, 1.0)], asks=asks, ts_venue_ms=NOW,
                         ts_recv_ms=NOW, seq=1), NOW)
    taken = 0.0
    for n in range(updates):
        y = OrderBook(venue="y", symbol="BTC/USDT", bids=[(200.0, 3.0)], asks=[(201.0, 1.0)],
                      ts_venue_ms=NOW, ts_recv_ms=NOW, seq=n + 1)
        taken += sum(op.quantity for op in det.update(y, NOW) if op.buy_venue == "x")
    assert taken == pytest.approx(min(sum(sizes), 3.0 * updates), rel=1e-9)
    assert taken <= sum(sizes) * (1 + 1e-12)


def test_no_cross_is_rejected_at_the_top_without_a_walk() -> None:
    det = CrossVenueDetector(cfg())
    det.update(ob("a", 99.0, 100.0), NOW)
    # crossed by 10 bps, but that is within 10 bps of fee a side
    assert det.update(ob("b", 100.1, 101.0), NOW) == []
    assert det.topbook_rejects == 2 and det.walks == 0


def test_venue_fees_and_the_default_fee() -> None:
    det = CrossVenueDetector(cfg(taker_fees={"cheap": 0.0, "dear": 0.01}, default_fee=0.002))
    assert det.config.fee("cheap") == 0.0 and det.config.fee("other") == 0.002
    det.update(ob("cheap", 98.0, 100.0), NOW)
    [op] = det.update(ob("other", 101.0, 103.0), NOW)
    assert op.net_profit == pytest.approx(101 * 0.998 - 100.0)
    assert det.update(ob("dear", 100.5, 103.0), NOW) == []  # 100.5·0.99 < 100


def test_balances_cap_quote_on_the_buy_venue_and_base_on_the_sell_venue() -> None:
    asked: list[tuple[str, str]] = []
    held = {("a", "USDT"): 150.3, ("b", "BTC"): 5.0}

    def balances(venue: str, asset: str) -> float:
        asked.append((venue, asset))
        return held.get((venue, asset), 0.0)

    det = CrossVenueDetector(cfg(default_fee=0.002))
    det.update(ob("a", 99.0, 100.0, size=5.0), NOW)
    [op] = det.update(ob("b", 110.0, 111.0, size=5.0), NOW, balances)
    assert sorted(asked) == [("a", "USDT"), ("b", "BTC")]
    assert op.quantity == pytest.approx(150.3 / 1.002 / 100.0, rel=1e-12)  # 1.5
    held[("b", "BTC")] = 0.25
    [op] = det.update(ob("b", 110.0, 111.0, size=5.0, seq=2), NOW, balances)
    assert op.quantity == 0.25
    held[("b", "BTC")] = 0.0
    assert det.update(ob("b", 110.0, 111.0, size=5.0, seq=3), NOW, balances) == []


def test_thresholds_max_notional_and_validation() -> None:
    books = [ob("a", 99.0, 100.0, size=10.0), ob("b", 101.0, 102.0, size=10.0)]

    def run(**kw: float) -> list:
        det = CrossVenueDetector(cfg(default_fee=0.0, **kw))
        det.update(books[0], NOW)
        return det.update(books[1], NOW)

    [op] = run(max_notional=250.0)
    assert op.quantity == 2.5 and op.net_profit == pytest.approx(2.5)
    assert run(max_notional=250.0, min_profit=2.6) == []
    assert len(run(max_notional=250.0, min_profit=2.5)) == 1
    assert run(min_edge_bps=100.1) == [] and len(run(min_edge_bps=99.9)) == 1
    for bad in ({"default_fee": 1.0}, {"taker_fees": {"x": -0.1}}, {"max_notional": 0.0}, {"stale_ms": -1},
                {"slippage_bps": -1.0}):
        with pytest.raises(ValueError):
            cfg(**bad)  # type: ignore[arg-type]


def test_older_books_are_ignored_and_forget_drops_a_venue() -> None:
    det = CrossVenueDetector(cfg())
    det.update(ob("a", 99.0, 100.0, ts=NOW, seq=5), NOW)
    det.update(ob("a", 150.0, 151.0, ts=NOW - 1, seq=9), NOW)  # older venue time
    det.update(ob("a", 150.0, 151.0, ts=NOW, seq=4), NOW)  # same time, older sequence
    assert det.out_of_order == 2
    kept = det.book("BTC/USDT", "a")
    assert kept is not None and kept.seq == 5
    assert len(det.update(ob("b", 101.0, 102.0), NOW)) == 1
    det.forget("a")
    assert det.book("BTC/USDT", "a") is None
    assert det.update(ob("b", 101.0, 102.0, seq=2), NOW) == []
    [op] = det.update(ob("c", 99.0, 100.0), NOW)  # venue slots are rebuilt correctly after a removal
    assert (op.buy_venue, op.sell_venue) == ("c", "b")


def test_symbols_are_independent() -> None:
    det = CrossVenueDetector(cfg())
    det.update(ob("a", 99.0, 100.0, symbol="ETH/USDT"), NOW)
    assert det.update(ob("b", 101.0, 102.0, symbol="BTC/USDT"), NOW) == []


@PROPS
@given(age_a=st.integers(0, 3_000), age_b=st.integers(0, 3_000), a_first=st.booleans())
def test_a_stale_book_never_trades(age_a: int, age_b: int, a_first: bool) -> None:
    det = CrossVenueDetector(cfg(stale_ms=1_000))
    books = [ob("a", 99.0, 100.0, ts=NOW - age_a), ob("b", 105.0, 106.0, ts=NOW - age_b)]
    found = [op for b in (books if a_first else books[::-1]) for op in det.update(b, NOW)]
    fresh = age_a <= 1_000 and age_b <= 1_000
    assert bool(found) == fresh
    if found:
        assert [(o.buy_venue, o.sell_venue) for o in found] == [("a", "b")]


@PROPS
@given(seqs=st.tuples(st.integers(0, 2**40), st.integers(0, 2**40)),
       ts=st.tuples(st.integers(NOW - 500, NOW), st.integers(NOW - 500, NOW)),
       venues=st.sampled_from([("a", "b"), ("binance", "sim-a"), ("x y", "x|y")]))
def test_the_id_depends_on_the_books_only(seqs: tuple[int, int], ts: tuple[int, int],
                                          venues: tuple[str, str]) -> None:
    books = [ob(venues[0], 99.0, 100.0, seq=seqs[0], ts=ts[0]),
             ob(venues[1], 101.0, 102.0, seq=seqs[1], ts=ts[1])]
    ids = []
    for order in (books, books[::-1]):  # another instance, fed in the other order
        det = CrossVenueDetector(cfg())
        [op] = [op for b in order for op in det.update(b, NOW)]
        ids.append(op.id)
    assert ids[0] == ids[1]
    det = CrossVenueDetector(cfg())
    det.update(books[0], NOW)
    changed = ob(venues[1], 101.0, 102.0, seq=seqs[1] + 1, ts=ts[1])
    [op] = det.update(changed, NOW)
    assert op.id != ids[0]


def test_the_id_is_the_same_in_another_process() -> None:
    code = ("from workers.arbitrage.detect import opportunity_id;"
            "print(opportunity_id('cross', 'BTC/USDT', 'a', 'b', 1, 2, 3, 4))")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == opportunity_id("cross", "BTC/USDT", "a", "b", 1, 2, 3, 4)


def test_the_benchmark_runs_small_and_finds_the_dislocations() -> None:
    r = bench_detection(venues=3, symbols=4, levels=5, updates=3_000, seed=3)
    assert r["updates"] == 3_000 and r["detect_updates_per_s"] > 0
    assert 0 < r["updates_with_opportunity"] <= r["dislocated_books"]
    assert r["opportunities"] >= r["updates_with_opportunity"]
    assert r["topbook_rejects"] + r["updates_with_opportunity"] <= 3_000
    assert r["triangular_markets"] == 3 + 3 * 4 and r["triangular_scans_per_s"] > 0


def test_books_read_as_heads_give_the_same_opportunities() -> None:
    """The worker reads books as BookHead (levels left raw until walked): same results."""
    from shared.messages import BookHead, Codec

    stream = [ob("a", 99.0, 100.0, size=2.0), ob("b", 101.0, 102.0, seq=2), ob("c", 100.5, 101.5, seq=3),
              ob("b", 101.0, 102.0, seq=4), ob("a", 103.0, 104.0, seq=5, ts=NOW + 1),
              ob("c", 98.0, 99.0, seq=6)]
    full, heads = CrossVenueDetector(cfg()), CrossVenueDetector(cfg())
    for book in stream:
        head = msgspec.json.decode(Codec.encode(book), type=BookHead)
        assert isinstance(head.bids, msgspec.Raw) and head.bid == book.bids[0][0]
        assert full.update(book, NOW + 5) == heads.update(head, NOW + 5)
    assert full.stats == heads.stats and full.opportunities > 0
    # a head from a producer that sent no best prices: taken from the levels
    legacy = b'{"type":"orderbook","venue":"x","symbol":"BTC/USDT","bids":[[1.0,2.0]],"asks":[],' \
             b'"ts_venue_ms":1,"ts_recv_ms":1}'
    head = msgspec.json.decode(legacy, type=BookHead)
    assert (head.bid, head.ask) == (1.0, None)
