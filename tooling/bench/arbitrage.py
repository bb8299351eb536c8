"""Benchmark of the arbitrage detectors on generated books (detection only, no infrastructure).

Books look like a liquid venue's: per symbol a mid price on a 1 bp tick grid random-walks;
each venue quotes it with its own small offset, a 2-tick spread and 20 levels 1 tick apart
whose sizes are a few thousand to a few tens of thousands of quote each. With a 10 bps
taker fee on both legs and a 2 bps slippage buffer a spread must exceed about 24 bps to pay,
so almost every update is rejected at the top of book. A few percent of updates dislocate
one venue's book by 30–60 bps (the next update of that pair repairs it): those open real,
depth-limited opportunities.

Every book is built before the clock starts; only :meth:`CrossVenueDetector.update` (and
:meth:`TriangularDetector.scan`) calls are timed.
"""

from __future__ import annotations

import gc
import math
import time
from typing import Any

import numpy as np

from shared.messages import OrderBook
from workers.arbitrage.detect import INF, CrossVenueDetector, DetectorConfig, Levels, WalkResult, walk
from workers.arbitrage.triangular import TriangularDetector

FEE = 0.001
SLIPPAGE_BPS = 2.0
MAX_NOTIONAL = 10_000.0
DISLOCATION_RATE = 0.02  # share of updates that dislocate a book
T0_MS = 1_700_000_000_000


def walk_numpy(asks: Levels, bids: Levels, fee_buy: float, fee_sell: float, slippage_bps: float,
               max_base: float = INF, max_quote: float = INF, max_notional: float = INF) -> WalkResult | None:
    """The vectorised alternative to :func:`~workers.arbitrage.detect.walk`, same contract.

    Cumulative quantities of both books are merged into segment boundaries, each segment's
    marginal profit is computed at once, and the caps are turned into quantities through the
    ask side's cumulative notional. Kept to measure it against the loop (``walk_*_us``).
    """
    a = np.asarray(asks, dtype=float).reshape(-1, 2)
    b = np.asarray(bids, dtype=float).reshape(-1, 2)
    a = a[a[:, 1] > 0.0]
    b = b[b[:, 1] > 0.0]
    if not len(a) or not len(b):
        return None
    slip = slippage_bps * 1e-4
    kb = (1.0 + fee_buy) * (1.0 + slip)
    ks = (1.0 - fee_sell) * (1.0 - slip)
    ca = np.cumsum(a[:, 1])
    cb = np.cumsum(b[:, 1])
    cca = np.cumsum(a[:, 0] * a[:, 1])
    ccb = np.cumsum(b[:, 0] * b[:, 1])
    bounds = np.sort(np.concatenate((ca, cb)))  # a repeated boundary only adds an empty segment
    bounds = bounds[bounds <= min(ca[-1], cb[-1])]
    starts = np.concatenate(([0.0], bounds[:-1]))
    # an empty segment at the very end would index past the book: clip it onto the last level
    ia = np.minimum(np.searchsorted(ca, starts, side="right"), len(a) - 1)
    ib = np.minimum(np.searchsorted(cb, starts, side="right"), len(b) - 1)
    bad = np.flatnonzero(b[ib, 0] * ks <= a[ia, 0] * kb)
    m = int(bad[0]) if bad.size else len(bounds)
    if m == 0:
        return None
    q = min(float(bounds[m - 1]), max_base)
    cost_cap = min(max_notional, max_quote / (1.0 + fee_buy))
    k = int(np.searchsorted(cca, cost_cap, side="left"))
    if k < len(a):
        q = min(q, (ca[k - 1] if k else 0.0) + (cost_cap - (cca[k - 1] if k else 0.0)) / a[k, 0])
    if not q > 0.0:
        return None
    i = min(int(np.searchsorted(ca, q, side="left")), len(a) - 1)
    j = min(int(np.searchsorted(cb, q, side="left")), len(b) - 1)
    cost = float((cca[i - 1] if i else 0.0) + (q - (ca[i - 1] if i else 0.0)) * a[i, 0])
    proceeds = float((ccb[j - 1] if j else 0.0) + (q - (cb[j - 1] if j else 0.0)) * b[j, 0])
    net = proceeds * ks - cost * kb
    if net <= 0.0:
        return None
    return WalkResult(float(q), cost / q, proceeds / q, float(a[i, 0]), float(b[j, 0]), proceeds - cost,
                      net, net / cost * 1e4, cost * fee_buy + proceeds * fee_sell)


class _Books:
    """Level lists on a tick grid, cached by (symbol, side, top tick, size profile)."""

    def __init__(self, rng: np.random.Generator, symbols: int, levels: int, profiles: int = 4):
        self.levels = levels
        self.base = np.exp(rng.uniform(math.log(0.5), math.log(60_000.0), symbols))  # price at tick 0
        self.tick = self.base * 1e-4
        # a level's size: lognormal notional around 10k quote, in base units at tick 0
        notional = np.exp(rng.normal(math.log(10_000.0), 0.7, (symbols, profiles, levels)))
        self.sizes = (notional / self.base[:, None, None]).tolist()
        self.base_l = self.base.tolist()
        self.tick_l = self.tick.tolist()
        self._cache: dict[tuple[int, int, int, int], list[tuple[float, float]]] = {}

    def side(self, s: int, bid: bool, top: int, profile: int) -> list[tuple[float, float]]:
        key = (s, bid, top, profile)
        got = self._cache.get(key)
        if got is None:
            step = -1 if bid else 1
            base, tick, sizes = self.base_l[s], self.tick_l[s], self.sizes[s][profile]
            got = self._cache[key] = [(base + (top + step * n) * tick, sizes[n]) for n in range(self.levels)]
        return got


def _cross_stream(venues: int, symbols: int, levels: int, updates: int, seed: int
                  ) -> tuple[list[OrderBook], list[int], int]:
    rng = np.random.default_rng(seed)
    books = _Books(rng, symbols, levels)
    names = [f"venue-{v}" for v in range(venues)]
    syms = [f"C{s:02d}/USDT" for s in range(symbols)]
    offset = rng.integers(-2, 3, venues).tolist()  # each venue's persistent price offset, ticks
    mid = [0] * symbols
    pick_s = rng.integers(0, symbols, updates).tolist()
    pick_v = rng.integers(0, venues, updates).tolist()
    move = rng.choice([-1, 0, 0, 0, 0, 0, 0, 0, 0, 1], updates).tolist()
    dislocate = (rng.random(updates) < DISLOCATION_RATE).tolist()
    shift = (rng.integers(30, 61, updates) * rng.choice([-1, 1], updates)).tolist()
    profile = rng.integers(0, 4, (updates, 2)).tolist()
    out: list[OrderBook] = []
    now: list[int] = []
    repair: tuple[int, int] | None = None
    dislocated = 0
    for n in range(updates):
        if repair is not None:  # the update after a dislocation puts that book back in line
            s, v = repair
            repair = None
            d = 0
        else:
            s, v = pick_s[n], pick_v[n]
            d = shift[n] if dislocate[n] else 0
            if d:
                repair = (s, v)
                dislocated += 1
        mid[s] += move[n]
        centre = mid[s] + offset[v] + d
        ts = T0_MS + n
        out.append(OrderBook(venue=names[v], symbol=syms[s], seq=n, ts_venue_ms=ts, ts_recv_ms=ts + 2,
                             bids=books.side(s, True, centre - 1, profile[n][0]),
                             asks=books.side(s, False, centre + 1, profile[n][1])))
        now.append(ts + 3)
    return out, now, dislocated


def _time_walks(seed: int, levels: int, deep: bool, pairs: int = 200, reps: int = 5) -> tuple[float, float]:
    """Microseconds per call of the loop and the numpy walk on dislocated pairs of books."""
    rng = np.random.default_rng(seed + 1)
    books = _Books(rng, 20, levels)
    cases = []
    for n in range(pairs):
        s = n % 20
        d = int(rng.integers(30, 61))
        cases.append((books.side(s, False, 1 - d, n % 4), books.side(s, True, -1, (n + 1) % 4)))
    cap = INF if deep else MAX_NOTIONAL
    timings = []
    for fn in (walk, walk_numpy):
        best = INF
        for _ in range(reps):
            t0 = time.perf_counter()
            for asks, bids in cases:
                fn(asks, bids, FEE, FEE, SLIPPAGE_BPS, INF, INF, cap)
            best = min(best, time.perf_counter() - t0)
        timings.append(best / pairs * 1e6)
    return timings[0], timings[1]


def _triangular(seed: int, alts: int, levels: int, scans: int) -> dict[str, Any]:
    """A venue quoting USDT, BTC, ETH and ``alts`` coins against all three; time its scans."""
    rng = np.random.default_rng(seed + 2)
    value = {"USDT": 1.0, "BTC": 60_000.0, "ETH": 3_000.0}
    for k in range(alts):
        value[f"A{k:02d}"] = float(np.exp(rng.uniform(math.log(0.05), math.log(500.0))))
    markets = [("BTC", "USDT"), ("ETH", "USDT"), ("ETH", "BTC")]
    markets += [(f"A{k:02d}", q) for k in range(alts) for q in ("USDT", "BTC", "ETH")]
    det = TriangularDetector(FEE, SLIPPAGE_BPS, ("USDT",), 0.0, MAX_NOTIONAL)

    def book(m: int, n: int, shift_bps: float) -> OrderBook:
        b, q = markets[m]
        mid = value[b] / value[q] * (1.0 + float(rng.normal(0.0, 1e-4)) + shift_bps * 1e-4)
        tick = mid * 1e-4
        size = float(rng.uniform(2_000.0, 20_000.0)) / value[b]
        return OrderBook(venue="tri", symbol=f"{b}/{q}", seq=n, ts_venue_ms=T0_MS + n, ts_recv_ms=T0_MS + n,
                         bids=[(mid - (1 + i) * tick, size) for i in range(levels)],
                         asks=[(mid + (1 + i) * tick, size) for i in range(levels)])

    for m in range(len(markets)):
        det.update(book(m, 0, 0.0))
    feed = []
    repair = -1
    for n in range(1, scans + 1):
        if repair >= 0:  # the update after a dislocation puts that market back in line
            feed.append(book(repair, n, 0.0))
            repair = -1
            continue
        m = int(rng.integers(len(markets)))
        shift = 0.0
        if rng.random() < DISLOCATION_RATE:
            shift = float(rng.choice([-1.0, 1.0]) * rng.uniform(60.0, 120.0))
            repair = m
        feed.append(book(m, n, shift))
    elapsed = 0.0
    found = 0
    for b in feed:
        det.update(b)
        t0 = time.perf_counter()
        found += len(det.scan("tri", b.ts_venue_ms))
        elapsed += time.perf_counter() - t0
    return {"triangular_markets": det.market_count("tri"), "triangular_cycles": len(det.cycles("tri")),
            "triangular_scans": scans, "triangular_scans_per_s": scans / elapsed,
            "triangular_opportunities": found}


def bench_detection(venues: int = 5, symbols: int = 20, levels: int = 20, updates: int = 200_000,
                    seed: int = 1) -> dict[str, Any]:
    """Time the cross-venue detector over ``updates`` generated books, and the triangular one.

    Returns the figures by name: ``detect_updates_per_s`` (book updates per second through
    :meth:`CrossVenueDetector.update`), ``opportunities`` and ``updates``, the detector's
    counters, ``walk_loop_us``/``walk_numpy_us`` (one walk of a dislocated pair capped by
    the notional, and ``*_deep_us`` uncapped through the whole depth), and
    ``triangular_markets``/``triangular_scans_per_s`` for one venue with ``symbols`` coins
    quoted against USDT, BTC and ETH.
    """
    stream, now, dislocated = _cross_stream(venues, symbols, levels, updates, seed)
    det = CrossVenueDetector(DetectorConfig(default_fee=FEE, slippage_bps=SLIPPAGE_BPS,
                                            max_notional=MAX_NOTIONAL, stale_ms=2_000))
    update = det.update
    opportunities = 0
    with_opportunity = 0
    gc.collect()
    t0 = time.perf_counter()
    for book, t in zip(stream, now, strict=True):
        found = update(book, t)
        if found:
            opportunities += len(found)
            with_opportunity += 1
    elapsed = time.perf_counter() - t0
    loop_us, numpy_us = _time_walks(seed, levels, deep=False)
    loop_deep_us, numpy_deep_us = _time_walks(seed, levels, deep=True)
    return {
        "venues": venues, "symbols": symbols, "levels": levels, "updates": updates,
        "detect_seconds": elapsed, "detect_updates_per_s": updates / elapsed,
        "detect_us_per_update": elapsed / updates * 1e6,
        "opportunities": opportunities, "updates_with_opportunity": with_opportunity,
        "dislocated_books": dislocated, **det.stats,
        "walk_loop_us": loop_us, "walk_numpy_us": numpy_us,
        "walk_loop_deep_us": loop_deep_us, "walk_numpy_deep_us": numpy_deep_us,
        **_triangular(seed, symbols, levels, scans=2_000),
    }
