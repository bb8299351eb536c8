"""Cross-venue arbitrage detection: buy a symbol on one venue, sell it on another.

Pure and synchronous: no I/O, no clock (the caller passes ``now_ms``), no infrastructure, so
the worker, the benchmark and the tests run the very same code.

Two stages keep the common case cheap. Every venue's best bid and best ask are kept per
symbol as plain floats already multiplied by that venue's fee and slippage factors; an update
is rejected with one ``max`` and one ``min`` over those lists when no other venue's
effective bid beats this venue's effective ask and no other venue's effective ask is below
this venue's effective bid. Only the rare survivor is walked level by level (:func:`walk`).

Prices are in the symbol's quote currency, quantities in its base currency; a fee is a
fraction of the traded notional (0.001 = 10 bps) and the slippage buffer is a pessimistic
price haircut applied to both legs (``slippage_bps`` = 2 makes every ask 2 bps dearer and
every bid 2 bps cheaper for the profit test).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from shared.messages import BookHead, Level, Opportunity, OrderBook, levels, split_symbol

DEFAULT_TAKER_FEE = 0.001
INF = math.inf

Levels = Sequence[Sequence[float]] | np.ndarray
Balances = Callable[[str, str], float]


@dataclass(frozen=True)
class DetectorConfig:
    """What the cross-venue detector needs to know to price a spread.

    ``taker_fees`` maps venue → taker fee (fraction); venues not in it pay ``default_fee``.
    ``max_notional`` caps the buy leg's notional (quote, at book prices, before fee) of one
    opportunity. A book whose venue timestamp is more than ``stale_ms`` older than ``now_ms``
    never trades. An opportunity is reported only if its net profit is at least
    ``min_profit`` (quote) and its average edge at least ``min_edge_bps``.
    """

    taker_fees: dict[str, float] = field(default_factory=dict)
    default_fee: float = DEFAULT_TAKER_FEE
    slippage_bps: float = 2.0
    max_notional: float = 10_000.0
    stale_ms: int = 2_000
    min_profit: float = 0.0
    min_edge_bps: float = 0.0

    def __post_init__(self) -> None:
        for venue, fee in {**self.taker_fees, "<default>": self.default_fee}.items():
            if not 0.0 <= fee < 1.0:
                raise ValueError(f"taker fee of {venue} must be in [0, 1), got {fee}")
        if not 0.0 <= self.slippage_bps < 10_000.0:
            raise ValueError(f"slippage_bps must be in [0, 10000), got {self.slippage_bps}")
        if not self.max_notional > 0.0:
            raise ValueError(f"max_notional must be > 0, got {self.max_notional}")
        if self.stale_ms < 0:
            raise ValueError(f"stale_ms must be >= 0, got {self.stale_ms}")

    def fee(self, venue: str) -> float:
        """The taker fee of ``venue``."""
        return self.taker_fees.get(venue, self.default_fee)


class WalkResult(NamedTuple):
    """The profit-maximising fill of one buy-here/sell-there pair of books.

    ``quantity`` in base; VWAPs and worst (last touched) prices at book prices; ``gross_profit``
    = quantity × (sell_vwap − buy_vwap); ``net_profit`` after both taker fees and the slippage
    buffer; ``fees`` = both legs' taker fees in quote; ``edge_bps`` = net / buy notional × 1e4.
    """

    quantity: float
    buy_vwap: float
    sell_vwap: float
    buy_worst: float
    sell_worst: float
    gross_profit: float
    net_profit: float
    edge_bps: float
    fees: float


def _as_list(levels: Levels) -> Sequence[Sequence[float]]:
    # Iterating a numpy array yields numpy scalars, several times slower in the loop below.
    if isinstance(levels, np.ndarray):
        return levels.reshape(-1, 2).tolist()  # type: ignore[no-any-return]
    return levels


def walk(asks: Levels, bids: Levels, fee_buy: float, fee_sell: float, slippage_bps: float,
         max_base: float = INF, max_quote: float = INF, max_notional: float = INF,
         used_asks: float = 0.0, used_bids: float = 0.0) -> WalkResult | None:
    """Walk the buy venue's ``asks`` against the sell venue's ``bids`` and size the trade.

    ``used_asks``/``used_bids`` (base) were already taken from the top of these books by
    earlier opportunities: the walk starts below them.

    Both are (price, quantity) levels, best first. A unit bought at ask ``a`` and sold at bid
    ``b`` earns ``b·(1−fee_sell)·(1−slip) − a·(1+fee_buy)·(1+slip)``; that marginal profit
    only falls along the walk, so quantity is taken while it is positive, and at most
    ``max_base`` (base held on the sell venue), at most what ``max_quote`` pays for including
    the buy fee (Σ a·q·(1+fee_buy) ≤ max_quote, at book prices) and at most ``max_notional``
    of buy notional (Σ a·q). Returns None when no unit is profitable or a cap is zero.

    A tight loop rather than numpy: with 20 levels and profit usually ending within the first
    level or two, it is several times faster than cumsum/searchsorted (``cse bench arbitrage``,
    tooling/bench/arbitrage.py).
    """
    asks = _as_list(asks)
    bids = _as_list(bids)
    na = len(asks)
    nb = len(bids)
    if na == 0 or nb == 0:
        return None
    slip = slippage_bps * 1e-4
    kb = (1.0 + fee_buy) * (1.0 + slip)  # cost of a unit per unit of ask price
    ks = (1.0 - fee_sell) * (1.0 - slip)  # proceeds of a unit per unit of bid price
    cost_cap = min(max_notional, max_quote / (1.0 + fee_buy))  # both caps bound Σ a·q
    base_room = max_base
    if not (cost_cap > 0.0 and base_room > 0.0):
        return None

    i, qa = _after(asks, used_asks)
    j, qb = _after(bids, used_bids)
    if i == na or j == nb:
        return None
    a = asks[i][0]
    b = bids[j][0]
    wa = wb = 0.0  # prices of the last levels actually taken from
    qty = cost = proceeds = 0.0
    while True:
        # An exhausted level (or a zero-size one, which real feeds send) is skipped here.
        if qa <= 0.0:
            i += 1
            if i == na:
                break
            a, qa = asks[i]
            continue
        if qb <= 0.0:
            j += 1
            if j == nb:
                break
            b, qb = bids[j]
            continue
        if b * ks <= a * kb:
            break
        take = qa if qa < qb else qb
        last = False
        if take >= base_room:
            take = base_room
            last = True
        room = cost_cap - cost
        if take * a >= room:
            take = room / a
            last = True
        qty += take
        cost += take * a
        proceeds += take * b
        wa = a
        wb = b
        if last:
            break
        base_room -= take
        qa -= take  # exactly 0.0 for the level that bounded the step
        qb -= take
    return _profitable_fill(qty, cost, proceeds, wa, wb, kb, ks, fee_buy, fee_sell)


def _profitable_fill(qty: float, cost: float, proceeds: float, buy_worst: float, sell_worst: float,
                     kb: float, ks: float, fee_buy: float, fee_sell: float) -> WalkResult | None:
    """The walk's fill priced after both fees and the slippage buffer; None unless it nets a profit.

    ``cost``/``proceeds`` are Σ a·q and Σ b·q at book prices; ``kb``/``ks`` the per-unit cost
    and proceeds factors the walk priced the margin with.
    """
    if qty <= 0.0:
        return None
    net = proceeds * ks - cost * kb
    if net <= 0.0:
        return None
    return WalkResult(qty, cost / qty, proceeds / qty, buy_worst, sell_worst, proceeds - cost, net,
                      net / cost * 1e4, cost * fee_buy + proceeds * fee_sell)


def _after(levels: Sequence[Sequence[float]], used: float) -> tuple[int, float]:
    """Index and quantity left of the first level below ``used`` base taken from the top."""
    if used <= 0.0:
        return 0, levels[0][1]
    for i, (_price, qty) in enumerate(levels):
        if used < qty * (1.0 - 1e-12):
            return i, qty - used
        used -= qty
    return len(levels), 0.0


def best_left(levels: Levels, used: float) -> float | None:
    """The best price still offered once ``used`` base was taken from the top, if any."""
    levels = _as_list(levels)
    if not levels:
        return None
    i, _left = _after(levels, used)
    return levels[i][0] if i < len(levels) else None


def opportunity_id(kind: str, *parts: Any) -> str:
    """A short hex digest of ``kind`` and ``parts``: stable across processes (unlike hash())."""
    text = "|".join([kind, *map(str, parts)])
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


class _Symbol:
    """One symbol's books across venues, with slot-aligned lists of effective best prices."""

    __slots__ = ("ask_lv", "base", "bid_lv", "books", "buy_f", "eask", "ebid", "fees", "index", "quote",
                 "sell_f", "symbol", "used_ask", "used_bid", "venues")

    def __init__(self, symbol: str):
        self.symbol = symbol
        self.base, self.quote = split_symbol(symbol)
        self.venues: list[str] = []
        self.index: dict[str, int] = {}
        self.books: list[OrderBook | BookHead | None] = []
        self.fees: list[float] = []
        self.buy_f: list[float] = []  # (1+fee)(1+slip): best ask × this = effective cost
        self.sell_f: list[float] = []  # (1−fee)(1−slip): best bid × this = effective proceeds
        self.ebid: list[float] = []  # −inf when the venue has no bid
        self.eask: list[float] = []  # +inf when the venue has no ask
        # base already promised to opportunities from the kept book's top (until a newer book)
        self.used_ask: list[float] = []
        self.used_bid: list[float] = []
        # the kept books' levels, decoded (None: not yet, for a book read as a BookHead)
        self.ask_lv: list[list[Level] | None] = []
        self.bid_lv: list[list[Level] | None] = []

    def add(self, venue: str, fee: float, slip: float) -> int:
        self.index[venue] = len(self.venues)
        self.venues.append(venue)
        self.books.append(None)
        self.fees.append(fee)
        self.buy_f.append((1.0 + fee) * (1.0 + slip))
        self.sell_f.append((1.0 - fee) * (1.0 - slip))
        self.ebid.append(-INF)
        self.eask.append(INF)
        self.used_ask.append(0.0)
        self.used_bid.append(0.0)
        self.ask_lv.append(None)
        self.bid_lv.append(None)
        return self.index[venue]

    def asks(self, k: int) -> list[Level]:
        lv = self.ask_lv[k]
        if lv is None:
            book = self.books[k]
            assert book is not None
            lv = self.ask_lv[k] = levels(book.asks)
        return lv

    def bids(self, k: int) -> list[Level]:
        lv = self.bid_lv[k]
        if lv is None:
            book = self.books[k]
            assert book is not None
            lv = self.bid_lv[k] = levels(book.bids)
        return lv

    def remove(self, venue: str) -> None:
        k = self.index.pop(venue)
        for lst in (self.venues, self.books, self.fees, self.buy_f, self.sell_f, self.ebid, self.eask,
                    self.used_ask, self.used_bid, self.ask_lv, self.bid_lv):
            del lst[k]
        self.index = {v: n for n, v in enumerate(self.venues)}


class CrossVenueDetector:
    """Keeps the freshest book per (symbol, venue) and reports cross-venue spreads on update.

    Each :meth:`update` compares the updated venue with every other venue of the symbol in
    both directions. Liquidity is never offered twice: an opportunity promises its quantity
    of both books it walked, and later opportunities — of the same update, or of a later
    update of the other venue paired with the same kept book — are sized on what is left
    below it, until that venue sends a newer book. Opportunities are returned best net
    profit first (chosen greedily, each on what the previous ones left).

    Counters: ``updates``, ``topbook_rejects`` (rejected by the best-price test),
    ``walks``, ``opportunities``, ``stale_skips`` (an update whose own book is already stale,
    or a pair crossing at the top with a stale book) and ``out_of_order`` (an update older
    than the book kept, by venue time then sequence: ignored).
    """

    def __init__(self, config: DetectorConfig | None = None):
        self.config = config or DetectorConfig()
        self._slip = self.config.slippage_bps * 1e-4
        self._stale_ms = self.config.stale_ms  # read on every update: one attribute, not two
        self._symbols: dict[str, _Symbol] = {}
        self.updates = 0
        self.topbook_rejects = 0
        self.walks = 0
        self.opportunities = 0
        self.stale_skips = 0
        self.out_of_order = 0

    @property
    def stats(self) -> dict[str, int]:
        """The counters, by name."""
        return {"updates": self.updates, "topbook_rejects": self.topbook_rejects, "walks": self.walks,
                "opportunities": self.opportunities, "stale_skips": self.stale_skips,
                "out_of_order": self.out_of_order}

    def book(self, symbol: str, venue: str) -> OrderBook | BookHead | None:
        """The book kept for (symbol, venue), if any."""
        sym = self._symbols.get(symbol)
        if sym is None or venue not in sym.index:
            return None
        return sym.books[sym.index[venue]]

    def forget(self, venue: str) -> None:
        """Drop every book of ``venue`` (it went down or was disabled)."""
        for sym in self._symbols.values():
            if venue in sym.index:
                sym.remove(venue)

    def update(self, book: OrderBook | BookHead, now_ms: int, balances: Balances | None = None
               ) -> list[Opportunity]:
        """Keep ``book`` and return the opportunities it opens against the other venues.

        A :class:`~shared.messages.BookHead` is judged on its best prices; its levels are
        decoded only if it is walked.

        ``balances(venue, asset)`` gives the amount available; None means unlimited (each
        trade is still capped by ``max_notional``).
        """
        # The hot path: everything up to the top-of-book test avoids allocation and calls.
        self.updates += 1
        sym = self._symbols.get(book.symbol)
        if sym is None:
            sym = self._symbols[book.symbol] = _Symbol(book.symbol)
        k = sym.index.get(book.venue)
        if k is None:
            k = sym.add(book.venue, self.config.fee(book.venue), self._slip)
        old = sym.books[k]
        if old is not None and (book.ts_venue_ms < old.ts_venue_ms
                                or (book.ts_venue_ms == old.ts_venue_ms and book.seq < old.seq)):
            self.out_of_order += 1
            return []
        sym.books[k] = book
        sym.used_ask[k] = sym.used_bid[k] = 0.0  # a newer book: nothing promised from it yet
        bids = book.bids
        if bids.__class__ is list:  # an OrderBook: its levels
            asks = book.asks
            sym.bid_lv[k], sym.ask_lv[k] = bids, asks
            bid = bids[0][0] if bids else None
            ask = asks[0][0] if asks else None
        else:  # a BookHead: its best prices; the levels are decoded if it is ever walked
            sym.bid_lv[k] = sym.ask_lv[k] = None
            bid, ask = book.bid, book.ask
        eb = sym.ebid[k] = bid * sym.sell_f[k] if bid is not None else -INF
        ea = sym.eask[k] = ask * sym.buy_f[k] if ask is not None else INF
        if now_ms - book.ts_venue_ms > self._stale_ms:
            self.stale_skips += 1
            return []
        # No venue sells dearer than we can buy here, none sells cheaper than we can sell here.
        # (This venue's own entries are in the lists; a book is not crossed with itself after fees.)
        if max(sym.ebid) <= ea and min(sym.eask) >= eb:
            self.topbook_rejects += 1
            return []
        return self._compare(sym, k, now_ms, balances)

    def _compare(self, sym: _Symbol, k: int, now_ms: int, balances: Balances | None) -> list[Opportunity]:
        """Every pair of the updated venue with another, both ways, greedily best first: each
        opportunity taken promises its quantity of both books (``used_ask``/``used_bid``), so
        the next one is sized on what is left and no liquidity is offered twice."""
        stale_ms = self.config.stale_ms
        pairs = []
        for o in range(len(sym.venues)):
            if o == k:
                continue
            for buy, sell in ((k, o), (o, k)):
                if sym.ebid[sell] <= sym.eask[buy]:
                    continue
                bb = sym.books[buy]
                sb = sym.books[sell]
                assert bb is not None and sb is not None  # finite effective prices imply a book
                if now_ms - bb.ts_venue_ms > stale_ms or now_ms - sb.ts_venue_ms > stale_ms:
                    self.stale_skips += 1
                    continue
                pairs.append((buy, sell))
        found: list[Opportunity] = []
        # each pair's walk on what is left; after a promise only the pairs sharing the book
        # side it took from are walked again. An Opportunity is built for the chosen only.
        walked = {pair: self._walk_pair(sym, *pair, balances) for pair in pairs}
        while True:
            best_pair, best = None, None
            for pair, res in walked.items():
                if res is not None and (best is None or res.net_profit > best.net_profit):
                    best_pair, best = pair, res
            if best is None or best_pair is None:
                break
            del walked[best_pair]
            buy, sell = best_pair
            found.append(self._opportunity(sym, buy, sell, best, now_ms))
            self._promise(sym, buy, sell, best.quantity)
            for pair in walked:
                if pair[0] == buy or pair[1] == sell:  # its asks or bids were just taken from
                    crosses = sym.ebid[pair[1]] > sym.eask[pair[0]]
                    walked[pair] = self._walk_pair(sym, *pair, balances) if crosses else None
        self.opportunities += len(found)
        return found

    def _promise(self, sym: _Symbol, buy: int, sell: int, quantity: float) -> None:
        """Take ``quantity`` off the top of the buy venue's asks and the sell venue's bids."""
        sym.used_ask[buy] += quantity
        sym.used_bid[sell] += quantity
        bb, sb = sym.books[buy], sym.books[sell]
        assert bb is not None and sb is not None
        ask = best_left(sym.asks(buy), sym.used_ask[buy])
        bid = best_left(sym.bids(sell), sym.used_bid[sell])
        sym.eask[buy] = ask * sym.buy_f[buy] if ask is not None else INF
        sym.ebid[sell] = bid * sym.sell_f[sell] if bid is not None else -INF

    def _walk_pair(self, sym: _Symbol, buy: int, sell: int, balances: Balances | None) -> WalkResult | None:
        """The walk of one pair on what is left of its books, if it clears the thresholds."""
        cfg = self.config
        bb, sb = sym.books[buy], sym.books[sell]
        assert bb is not None and sb is not None
        if balances is None:
            max_quote = max_base = INF
        else:
            max_quote = balances(sym.venues[buy], sym.quote)
            max_base = balances(sym.venues[sell], sym.base)
        self.walks += 1
        res = walk(sym.asks(buy), sym.bids(sell), sym.fees[buy], sym.fees[sell], cfg.slippage_bps,
                   max_base, max_quote, cfg.max_notional, sym.used_ask[buy], sym.used_bid[sell])
        if res is None or res.net_profit < cfg.min_profit or res.edge_bps < cfg.min_edge_bps:
            return None
        return res

    def _opportunity(self, sym: _Symbol, buy: int, sell: int, res: WalkResult, now_ms: int) -> Opportunity:
        bb, sb = sym.books[buy], sym.books[sell]
        assert bb is not None and sb is not None
        buy_venue, sell_venue = sym.venues[buy], sym.venues[sell]
        used_ask, used_bid = sym.used_ask[buy], sym.used_bid[sell]
        parts: list[Any] = [sym.symbol, buy_venue, sell_venue, bb.seq, bb.ts_venue_ms, sb.seq, sb.ts_venue_ms]
        if used_ask or used_bid:  # the rest of books already partly promised: another opportunity
            parts += [repr(used_ask), repr(used_bid)]
        return Opportunity(
            id=opportunity_id("cross", *parts), kind="cross", symbol=sym.symbol, buy_venue=buy_venue,
            sell_venue=sell_venue, quantity=res.quantity, buy_vwap=res.buy_vwap, sell_vwap=res.sell_vwap,
            buy_worst=res.buy_worst, sell_worst=res.sell_worst, gross_profit=res.gross_profit,
            net_profit=res.net_profit, edge_bps=res.edge_bps,
            ts_book_ms=max(bb.ts_recv_ms, sb.ts_recv_ms), ts_detect_ms=now_ms,
            buy_book_ms=bb.ts_recv_ms, sell_book_ms=sb.ts_recv_ms,
            ts_venue_ms=max(bb.ts_venue_ms, sb.ts_venue_ms),
        )
