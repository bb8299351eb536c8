"""Triangular detection inside one venue: cycle search, depth-aware sizing, fees and staleness."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from shared.messages import OrderBook
from workers.arbitrage.triangular import Leg, TriangularDetector, walk_cycle

NOW = 1_700_000_000_000
K = 0.999  # what a 10 bps fee leaves of every conversion
PROPS = settings(max_examples=100, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def ob(symbol: str, bids: list[tuple[float, float]], asks: list[tuple[float, float]], *, venue: str = "v",
       ts: int = NOW, seq: int = 1) -> OrderBook:
    return OrderBook(venue=venue, symbol=symbol, bids=bids, asks=asks, ts_venue_ms=ts, ts_recv_ms=ts + 3,
                     seq=seq)


def market(eth_usdt_bids: list[tuple[float, float]], **kw: int) -> list[OrderBook]:
    """USDT → BTC (ask 100) → ETH (ask 0.1 BTC) → USDT (bid 10.2): 2% before fees; the reverse loses."""
    return [
        ob("BTC/USDT", [(99.9, 10.0)], [(100.0, 10.0)], **kw),
        ob("ETH/BTC", [(0.0999, 50.0)], [(0.1, 50.0)], **kw),
        ob("ETH/USDT", eth_usdt_bids, [(10.25, 30.0)], **kw),
    ]


def detector(books: Sequence[OrderBook], **kw: object) -> TriangularDetector:
    args: dict = {"fee": 0.001, "slippage_bps": 0.0, "start_currencies": ("USDT",), "min_edge_bps": 0.0,
                  "max_notional": 1e6}
    args.update(kw)
    det = TriangularDetector(**args)
    for b in books:
        det.update(b)
    return det


def test_the_profitable_cycle_is_found_with_its_path_and_size() -> None:
    det = detector(market([(10.2, 30.0)]))
    assert det.market_count("v") == 3
    assert sorted(det.cycles("v")) == [["BTC/USDT", "ETH/BTC", "ETH/USDT"],
                                       ["ETH/USDT", "ETH/BTC", "BTC/USDT"]]
    [op] = det.scan("v", NOW)
    assert op.kind == "triangular" and op.path == ["BTC/USDT", "ETH/BTC", "ETH/USDT"]
    assert (op.symbol, op.buy_venue, op.sell_venue) == ("BTC/USDT", "v", "v")
    # the ETH/USDT bids (30 ETH) bind: X·K/100·K/0.1 = 30 ETH, so X = 300/K², worth 306·K at the end
    assert op.quantity == pytest.approx(300 / K**2, rel=1e-12)
    assert op.net_profit == pytest.approx(306 * K - 300 / K**2, rel=1e-9)
    assert op.gross_profit == pytest.approx(300 / K**2 * 0.02, rel=1e-9)
    assert op.edge_bps == pytest.approx((1.02 * K**3 - 1) * 1e4, rel=1e-9)
    assert (op.buy_vwap, op.buy_worst, op.sell_vwap, op.sell_worst) == (100.0, 100.0, 10.2, 10.2)
    assert op.ts_book_ms == NOW + 3 and op.ts_detect_ms == NOW
    assert det.scan("unknown", NOW) == []


def test_depth_caps_the_size_where_the_next_level_stops_paying() -> None:
    # after 10 ETH at 10.2 the next bid, 10.028, makes the loop 1.0028·K³ = 0.9998 < 1: stop at 10 ETH
    [op] = detector(market([(10.2, 10.0), (10.028, 100.0)])).scan("v", NOW)
    assert op.quantity == pytest.approx(100 / K**2, rel=1e-12)
    assert op.net_profit == pytest.approx(102 * K - 100 / K**2, rel=1e-9)
    assert op.sell_worst == 10.2
    # a second level that still pays is used, until the ETH/BTC asks run out: 50 ETH for 5 BTC = X·K/100
    [op] = detector(market([(10.2, 10.0), (10.1, 100.0)])).scan("v", NOW)
    assert op.quantity == pytest.approx(500 / K, rel=1e-12)
    eth = 50 * K
    assert op.sell_vwap == pytest.approx((10 * 10.2 + (eth - 10) * 10.1) / eth, rel=1e-12)
    assert op.net_profit == pytest.approx((10 * 10.2 + (eth - 10) * 10.1) * K - 500 / K, rel=1e-9)


def test_the_notional_cap_and_the_other_start_currencies() -> None:
    [op] = detector(market([(10.2, 30.0)]), max_notional=100.0).scan("v", NOW)
    assert op.quantity == pytest.approx(100.0) and op.net_profit == pytest.approx(100 * (1.02 * K**3 - 1))
    [op] = detector(market([(10.2, 30.0)]), start_currencies=("BTC",), max_notional=1.0).scan("v", NOW)
    assert op.path == ["ETH/BTC", "ETH/USDT", "BTC/USDT"] and op.quantity == pytest.approx(1.0)


def test_an_edge_below_fees_or_the_threshold_is_not_reported() -> None:
    assert detector(market([(10.2, 30.0)]), fee=0.01).scan("v", NOW) == []  # 1.02·0.99³ < 1
    det = detector(market([(10.2, 30.0)]), slippage_bps=70.0)
    assert det.scan("v", NOW) == []  # 1.02·(K·0.993)³ < 1
    assert det.walks == 0, "rejected by the top-of-book screen, not by the depth walk"
    edge = (1.02 * K**3 - 1) * 1e4  # 169.5 bps
    assert detector(market([(10.2, 30.0)]), min_edge_bps=edge + 0.1).scan("v", NOW) == []
    assert len(detector(market([(10.2, 30.0)]), min_edge_bps=edge - 0.1).scan("v", NOW)) == 1
    assert detector(market([(10.2, 30.0)]), min_profit=5.1).scan("v", NOW) == []  # it makes 5.09
    assert detector(market([(10.2, 30.0)]), fee={"v": 0.01, "w": 0.0}).scan("v", NOW) == []
    # a venue the mapping does not name pays default_fee
    assert detector(market([(10.2, 30.0)]), fee={"w": 0.0}, default_fee=0.01).scan("v", NOW) == []
    assert len(detector(market([(10.2, 30.0)]), fee={"w": 0.01}, default_fee=0.001).scan("v", NOW)) == 1


def test_stale_books_and_missing_sides_never_trade() -> None:
    det = detector(market([(10.2, 30.0)], ts=NOW - 5_000), stale_ms=2_000)
    assert det.scan("v", NOW) == []
    assert len(det.scan("v", NOW - 4_000)) == 1
    assert detector(market([])).scan("v", NOW) == []  # no ETH/USDT bid: no way back to USDT


def test_older_books_are_ignored_and_forget_drops_the_venue() -> None:
    det = detector(market([(10.2, 30.0)], seq=5))
    det.update(ob("ETH/USDT", [(9.0, 30.0)], [(10.25, 30.0)], seq=4))  # older: kept book still pays
    assert len(det.scan("v", NOW)) == 1
    det.update(ob("ETH/USDT", [(9.0, 30.0)], [(10.25, 30.0)], ts=NOW + 1))
    assert det.scan("v", NOW) == []
    det.forget("v")
    assert det.market_count("v") == 0 and det.cycles("v") == []


def test_the_id_depends_on_the_books_only() -> None:
    [a] = detector(market([(10.2, 30.0)])).scan("v", NOW)
    [b] = detector(market([(10.2, 30.0)])[::-1]).scan("v", NOW + 7)
    assert a.id == b.id and len(a.id) == 16
    [c] = detector(market([(10.2, 30.0)], seq=2)).scan("v", NOW)
    assert c.id != a.id


def _convert(levels: Sequence[tuple[float, float]], buy: bool, amount: float) -> tuple[float, float] | None:
    """Push ``amount`` through one book level by level: (raw amount received, input left over)."""
    got, left = 0.0, amount
    for price, size in levels:
        if left <= 0.0:
            break
        cap = price * size if buy else size
        use = min(cap, left)
        got += use / price if buy else use * price
        left -= use
    return got, left


def _execute(legs: Sequence[Leg], slippage_bps: float, x: float) -> float | None:
    """What ``x`` of the start currency becomes through every leg, or None if a book is too thin."""
    amount = x
    for leg in legs:
        out = _convert(leg.levels, leg.buy, amount)  # type: ignore[arg-type]
        assert out is not None
        got, left = out
        if left > 1e-9 * max(amount, 1.0):
            return None
        amount = got * (1 - leg.fee) * (1 - slippage_bps * 1e-4)
    return amount


levels = st.lists(st.tuples(st.floats(0.5, 2.0), st.floats(0.1, 5.0)), min_size=1, max_size=5)


@st.composite
def cycles(draw: st.DrawFn) -> list[Leg]:
    legs = []
    for _ in range(3):
        buy = draw(st.booleans())
        raw = draw(levels)
        # asks rise, bids fall, from a top price near 1 so that some loops pay
        ordered = sorted(raw, reverse=not buy)
        legs.append(Leg(ordered, buy, draw(st.floats(0.0, 0.003))))
    return legs


@PROPS
@given(cycles(), st.floats(0.0, 20.0), st.one_of(st.just(math.inf), st.floats(0.01, 5.0)))
def test_walk_cycle_reports_what_executing_it_realises_and_is_the_best_size(
        legs: list[Leg], slippage_bps: float, max_input: float) -> None:
    r = walk_cycle(legs, slippage_bps, max_input)

    def profit(x: float) -> float | None:
        y = _execute(legs, slippage_bps, x)
        return None if y is None else y - x

    if r is None:
        small = profit(1e-6)
        assert small is None or small <= 1e-12
        return
    assert r.start_amount <= max_input * (1 + 1e-12)
    end = _execute(legs, slippage_bps, r.start_amount)
    assert end is not None, "sized beyond the books' depth"
    assert r.end_amount == pytest.approx(end, rel=1e-9)
    assert r.net_profit == pytest.approx(end - r.start_amount, rel=1e-9, abs=1e-12)
    assert r.net_profit > 0 and r.edge_bps == pytest.approx(r.net_profit / r.start_amount * 1e4, rel=1e-9)
    # a concave profit is at its best: a little less or a little more (if possible) does no better
    for x in (r.start_amount * 0.99, r.start_amount * 1.01):
        p = profit(x)
        if x <= max_input and p is not None:
            assert p <= r.net_profit + 1e-9 * max(1.0, r.net_profit)
    # fills are within each book
    for leg, fill in zip(legs, r.legs, strict=True):
        assert fill.base <= sum(q for _, q in leg.levels) * (1 + 1e-9)  # type: ignore[misc]


CURRENCIES = ["USDT", "BTC", "ETH", "SOL"]
VALUE = {"USDT": 1.0, "BTC": 60_000.0, "ETH": 3_000.0, "SOL": 150.0}


@PROPS
@given(st.lists(st.tuples(st.booleans(), st.booleans(), st.floats(-0.02, 0.02)), min_size=6, max_size=6))
def test_the_cycles_found_are_exactly_the_profitable_triangles(spec: list[tuple[bool, bool, float]]) -> None:
    """Against brute force over every ordered pair of intermediate currencies, at top of book."""
    det = TriangularDetector(0.001, 1.0, ("USDT",), 0.0, max_notional=1.0)
    rate: dict[tuple[str, str], tuple[float, str]] = {}  # (from, to) → (effective rate, market)
    keep = 0.999 * (1 - 1e-4)
    for (listed, flip, noise), (c1, c2) in zip(spec, itertools.combinations(CURRENCIES, 2), strict=True):
        if not listed:
            continue
        base, quote = (c2, c1) if flip else (c1, c2)
        mid = VALUE[base] / VALUE[quote] * (1 + noise)
        bid, ask = mid * 0.9995, mid * 1.0005
        symbol = f"{base}/{quote}"
        det.update(ob(symbol, [(bid, 1e9)], [(ask, 1e9)]))
        rate[(quote, base)] = (keep / ask, symbol)
        rate[(base, quote)] = (bid * keep, symbol)
    expected = []
    for x, y in itertools.permutations(CURRENCIES[1:], 2):
        hops = [("USDT", x), (x, y), (y, "USDT")]
        if all(h in rate for h in hops):
            product = math.prod(rate[h][0] for h in hops)
            assume(abs(product - 1) > 1e-9)
            if product > 1:
                expected.append([rate[h][1] for h in hops])
    found = [op.path for op in det.scan("v", NOW)]
    assert sorted(found) == sorted(expected)
