"""Triangular arbitrage inside one venue: start currency → X → Y → start currency.

Each market ``B/Q`` of a venue gives two edges of the currency graph: Q→B (buy base at the
ask) and B→Q (sell base at the bid). Converting through an edge multiplies an amount by its
effective rate, ``1/ask`` or ``bid``, times ``(1 − fee)·(1 − slip)`` (the fee is taken from
what is received, the slippage buffer is a pessimistic haircut on every leg). The edge weight
is ``−log(effective rate)`` at top of book, so a loop is profitable exactly when its weights
sum below zero.

Cycles: the length-3 cycles through each start currency are enumerated once per market set
(they only change when a market appears or disappears) into an index array, and a scan sums
their three weights with one numpy gather. That checks every triangle in a few microseconds
and finds all of them, where Bellman–Ford would relax every edge |V| times in Python per
start currency and report one negative cycle of arbitrary length. Only cycles that beat
``min_edge_bps`` at top of book — an upper bound on the edge at any size — are walked
through the books' depth (:func:`walk_cycle`) to size them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

import numpy as np

from shared.messages import Opportunity, OpportunityLeg, OrderBook, split_symbol
from workers.arbitrage.detect import DEFAULT_TAKER_FEE, Balances, Levels, opportunity_id

INF = math.inf


class Leg(NamedTuple):
    """One conversion of a cycle: through ``levels`` (asks when ``buy``, else bids) at ``fee``."""

    levels: Levels
    buy: bool  # True: spend quote, receive base (asks); False: spend base, receive quote (bids)
    fee: float


class LegFill(NamedTuple):
    """What one leg of a sized cycle trades: base quantity, notional, VWAP and worst price."""

    base: float
    notional: float  # base × price summed over the levels taken, in the market's quote
    vwap: float
    worst: float


class CycleResult(NamedTuple):
    """A sized cycle: ``start_amount`` in, ``end_amount`` out (both in the start currency).

    ``net_profit`` = end − start after fees and the slippage buffer; ``gross_profit`` what the
    same fills would return at book prices without them; ``edge_bps`` = net / start × 1e4.
    """

    start_amount: float
    end_amount: float
    gross_profit: float
    net_profit: float
    edge_bps: float
    legs: tuple[LegFill, ...]


def walk_cycle(legs: Sequence[Leg], slippage_bps: float, max_input: float = INF) -> CycleResult | None:
    """Size a conversion cycle against the depth of every leg's book.

    The output of a leg feeds the next one, so the cycle's marginal rate is the product of
    each leg's rate at its current level; it only falls as levels are consumed, making
    the output a concave function of the input. The walk therefore takes the start amount
    in steps, each as large as possible without exhausting a level of any leg (mapped back
    to start-currency units through the rates before it), while the marginal rate is above
    1, and at most ``max_input`` in total. Returns None when not even the first unit pays.
    """
    slip = slippage_bps * 1e-4
    n = len(legs)
    books = [lg.levels.reshape(-1, 2).tolist() if isinstance(lg.levels, np.ndarray) else lg.levels
             for lg in legs]
    keep = [(1.0 - lg.fee) * (1.0 - slip) for lg in legs]
    tops = _top_levels(books)
    if tops is None:
        return None
    price, rem = tops  # rem: base left at the current level
    idx = [0] * n
    base = [0.0] * n
    notional = [0.0] * n
    worst = [0.0] * n
    x = y = 0.0
    room = max_input
    while room > 0.0:
        # Skip exhausted (or zero-size, or bogus zero-price) levels; a book running out ends the walk.
        ended = False
        for k in range(n):
            while rem[k] <= 0.0 or price[k] <= 0.0:
                idx[k] += 1
                if idx[k] == len(books[k]):
                    ended = True
                    break
                price[k], rem[k] = books[k][idx[k]]
        if ended:
            break
        # Marginal rate of the cycle and the largest start-currency step no level limits.
        scale = 1.0  # start units → this leg's input units, at the margin
        step = room
        bind = -1
        scales = [0.0] * n
        for k in range(n):
            scales[k] = scale
            cap = rem[k] * price[k] if legs[k].buy else rem[k]  # level capacity in input units
            if cap / scale < step:
                step = cap / scale
                bind = k
            scale *= keep[k] / price[k] if legs[k].buy else price[k] * keep[k]
        if scale <= 1.0:
            break
        x += step
        y += step * scale
        room -= step
        for k in range(n):
            spent = step * scales[k]
            q = spent / price[k] if legs[k].buy else spent
            if k == bind:
                q = rem[k]  # exact: the binding level is used up, whatever the rounding
            base[k] += q
            notional[k] += q * price[k]
            worst[k] = price[k]
            rem[k] -= q
        if bind < 0:
            break  # max_input reached
    return _gaining_cycle(legs, x, y, base, notional, worst)


def _top_levels(books: Sequence[Sequence[Sequence[float]]]) -> tuple[list[float], list[float]] | None:
    """Price and quantity of every leg's best level, where the walk starts; None if a book is empty."""
    price = [0.0] * len(books)
    qty = [0.0] * len(books)
    for k, book in enumerate(books):
        if not book:
            return None
        price[k], qty[k] = book[0]
    return price, qty


def _gaining_cycle(legs: Sequence[Leg], x: float, y: float, base: list[float], notional: list[float],
                   worst: list[float]) -> CycleResult | None:
    """The walked cycle (``x`` in, ``y`` out, per-leg totals) as a result; None unless it gains.

    The gross profit is what the same fills return at book prices, without fees or slippage.
    """
    if x <= 0.0 or y <= x:
        return None
    gross_rate = 1.0
    for k, leg in enumerate(legs):
        gross_rate *= base[k] / notional[k] if leg.buy else notional[k] / base[k]
    fills = tuple(LegFill(base[k], notional[k], notional[k] / base[k], worst[k]) for k in range(len(legs)))
    return CycleResult(x, y, x * gross_rate - x, y - x, (y - x) / x * 1e4, fills)


class _Market(NamedTuple):
    symbol: str
    base: str
    quote: str


class _Venue:
    """One venue's markets, books and edge weights (edge 2i: buy market i, 2i+1: sell it)."""

    __slots__ = ("books", "cycles", "dirty", "index", "keep", "markets", "tri", "weights")

    def __init__(self, keep: float):
        self.keep = keep  # (1 − fee)(1 − slip) of this venue
        self.markets: list[_Market] = []
        self.index: dict[str, int] = {}
        self.books: list[OrderBook | None] = []
        self.weights = np.full(0, INF)
        self.dirty = True
        self.tri: list[np.ndarray] = []  # first, second, third edge of every cycle
        self.cycles: list[tuple[str, tuple[int, int, int]]] = []  # (start currency, edges)


class TriangularDetector:
    """Keeps each venue's books and finds its profitable length-3 conversion cycles.

    ``fee`` is one taker fee for every venue or a mapping venue → fee (others pay
    ``default_fee``). Cycles start and end in one of ``start_currencies``; their size, in that
    currency, is at most ``max_notional``. A cycle is reported when its edge after fees and
    slippage is at least ``min_edge_bps`` and its net profit at least ``min_profit``; books
    more than ``stale_ms`` older than the scan's ``now_ms`` (venue time) never trade.
    """

    def __init__(self, fee: float | Mapping[str, float] = DEFAULT_TAKER_FEE, slippage_bps: float = 2.0,
                 start_currencies: Iterable[str] = ("USDT",), min_edge_bps: float = 0.0,
                 max_notional: float = 10_000.0, *, min_profit: float = 0.0, stale_ms: int | None = 2_000,
                 default_fee: float = DEFAULT_TAKER_FEE):
        self.fee = fee
        self.default_fee = default_fee
        self.slippage_bps = slippage_bps
        self.start_currencies = tuple(start_currencies)
        self.min_edge_bps = min_edge_bps
        self.max_notional = max_notional
        self.min_profit = min_profit
        self.stale_ms = stale_ms
        # top-of-book screen: the weights of a cycle must sum below this
        self._threshold = -math.log1p(min_edge_bps * 1e-4) if min_edge_bps > 0.0 else 0.0
        self._venues: dict[str, _Venue] = {}
        self.scans = 0
        self.walks = 0
        self.opportunities = 0

    def fee_of(self, venue: str) -> float:
        """The taker fee of ``venue``."""
        if isinstance(self.fee, Mapping):
            return self.fee.get(venue, self.default_fee)
        return self.fee

    def update(self, book: OrderBook) -> None:
        """Keep ``book`` (unless older than the one kept) and refresh its two edge weights."""
        v = self._venues.get(book.venue)
        if v is None:
            v = self._venues[book.venue] = _Venue((1.0 - self.fee_of(book.venue))
                                                  * (1.0 - self.slippage_bps * 1e-4))
        i = v.index.get(book.symbol)
        if i is None:
            i = self._add_market(v, book.symbol)
        old = v.books[i]
        if old is not None and (book.ts_venue_ms, book.seq) < (old.ts_venue_ms, old.seq):
            return
        v.books[i] = book
        log_keep = math.log(v.keep)
        ask = book.asks[0][0] if book.asks else 0.0
        bid = book.bids[0][0] if book.bids else 0.0
        # −log(keep/ask) and −log(bid·keep); a missing side (or a zero price) is no edge at all
        v.weights[2 * i] = math.log(ask) - log_keep if ask > 0.0 else INF
        v.weights[2 * i + 1] = -math.log(bid) - log_keep if bid > 0.0 else INF

    def forget(self, venue: str) -> None:
        """Drop every book of ``venue``."""
        self._venues.pop(venue, None)

    def market_count(self, venue: str) -> int:
        """How many markets of ``venue`` have been seen."""
        v = self._venues.get(venue)
        return 0 if v is None else len(v.markets)

    def cycles(self, venue: str) -> list[list[str]]:
        """The market paths of every cycle watched on ``venue``."""
        v = self._venues.get(venue)
        if v is None:
            return []
        if v.dirty:
            self._build_cycles(v)
        return [[v.markets[e // 2].symbol for e in edges] for _, edges in v.cycles]

    def scan(self, venue: str, now_ms: int, balances: Balances | None = None) -> list[Opportunity]:
        """Every profitable cycle of ``venue`` now, sized through depth (and at most the start
        currency ``balances(venue, currency)`` says is available), best net profit first."""
        self.scans += 1
        v = self._venues.get(venue)
        if v is None:
            return []
        if v.dirty:
            self._build_cycles(v)
        if not v.cycles:
            return []
        # three gathers added in place: the cheapest numpy form of "sum each cycle's weights"
        w = v.weights
        sums = w.take(v.tri[0])
        sums += w.take(v.tri[1])
        sums += w.take(v.tri[2])
        if sums.min() >= self._threshold:
            return []
        found: list[Opportunity] = []
        for c in np.flatnonzero(sums < self._threshold).tolist():
            opp = self._size(venue, v, c, now_ms, balances)
            if opp is not None:
                found.append(opp)
        self.opportunities += len(found)
        found.sort(key=lambda op: -op.net_profit)
        return found

    def _add_market(self, v: _Venue, symbol: str) -> int:
        base, quote = split_symbol(symbol)
        i = v.index[symbol] = len(v.markets)
        v.markets.append(_Market(symbol, base, quote))
        v.books.append(None)
        v.weights = np.concatenate([v.weights, [INF, INF]])
        v.dirty = True
        return i

    def _build_cycles(self, v: _Venue) -> None:
        # out[c] = [(edge, next currency)], then start → x → y → start with three distinct currencies
        out: dict[str, list[tuple[int, str]]] = {}
        for i, m in enumerate(v.markets):
            out.setdefault(m.quote, []).append((2 * i, m.base))
            out.setdefault(m.base, []).append((2 * i + 1, m.quote))
        cycles: list[tuple[str, tuple[int, int, int]]] = []
        for start in self.start_currencies:
            for e1, x in out.get(start, []):
                for e2, y in out.get(x, []):
                    if y in (start, x):
                        continue
                    for e3, z in out.get(y, []):
                        if z == start:
                            cycles.append((start, (e1, e2, e3)))
        v.cycles = cycles
        tri = np.array([edges for _, edges in cycles], dtype=np.intp).reshape(-1, 3)
        v.tri = [np.ascontiguousarray(tri[:, k]) for k in range(3)]
        v.dirty = False

    def _size(self, venue: str, v: _Venue, c: int, now_ms: int, balances: Balances | None
              ) -> Opportunity | None:
        start, edges = v.cycles[c]
        max_input = self.max_notional if balances is None else min(self.max_notional,
                                                                   balances(venue, start))
        if not max_input > 0.0:
            return None
        books: list[OrderBook] = []
        legs: list[Leg] = []
        fee = self.fee_of(venue)
        for e in edges:
            book = v.books[e // 2]
            assert book is not None  # a finite weight implies a book
            if self.stale_ms is not None and now_ms - book.ts_venue_ms > self.stale_ms:
                return None
            books.append(book)
            buy = e % 2 == 0
            legs.append(Leg(book.asks if buy else book.bids, buy, fee))
        self.walks += 1
        res = walk_cycle(legs, self.slippage_bps, max_input)
        if res is None or res.net_profit < self.min_profit or res.edge_bps < self.min_edge_bps:
            return None
        path = [b.symbol for b in books]
        first, last = res.legs[0], res.legs[-1]
        legs = [OpportunityLeg(symbol=b.symbol, side="buy" if e % 2 == 0 else "sell", amount=fill.base,
                               vwap=fill.vwap, worst=fill.worst, book_ms=b.ts_recv_ms)
                for b, e, fill in zip(books, edges, res.legs, strict=True)]
        return Opportunity(
            id=opportunity_id("triangular", venue, start,
                              *[f"{b.symbol}@{b.seq}@{b.ts_venue_ms}" for b in books]),
            kind="triangular", symbol=path[0], buy_venue=venue, sell_venue=venue,
            quantity=res.start_amount,
            # Opportunity has one buy and one sell price: the first and last legs' fills
            buy_vwap=first.vwap, sell_vwap=last.vwap, buy_worst=first.worst, sell_worst=last.worst,
            gross_profit=res.gross_profit, net_profit=res.net_profit, edge_bps=res.edge_bps,
            ts_book_ms=max(b.ts_recv_ms for b in books), ts_detect_ms=now_ms, path=path, legs=legs,
            ts_venue_ms=max(b.ts_venue_ms for b in books),
        )
