"""Order books: synthetic depth around a mid, consumption by fills, cached rendering.

Prices are held as integer ticks and sizes as integer lots (numpy ``int64``), so the
matching engine works in exact units and converts to ``Decimal`` only at the edges.

A synthetic book has ``levels`` levels per side. Level ``k`` sits
``spread/2 + 0.2 k (1 + k/500)`` bps from the mid (about 4 bps at level 20, 25 bps at
level 100, 6% at level 1000), rounded outwards to the tick and kept strictly monotone;
its notional grows linearly away from the mid (``1 + 0.15 k`` times the best level's)
with a log-normal wobble.

A venue's book evolves as a real one does, a little at a time: each tick redraws the
``fresh`` levels nearest the mid (prices and sizes around the new mid); deeper levels keep
their price and size (and what fills took from them), and the profile's levels are added
only where the deep book has a hole (no level within 3/4 of the profile's spacing) or at
its far end. So a diff stream carries tens of changed levels per tick, not the whole book.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

import msgspec
import numpy as np

from tooling.venue_sim.symbols import SymbolSpec

BUY = "BUY"
SELL = "SELL"


@dataclass(eq=False)
class Book:
    """One side-pair of price levels in ticks/lots; bids descending, asks ascending."""

    spec: SymbolSpec
    bid_px: np.ndarray
    bid_qty: np.ndarray
    ask_px: np.ndarray
    ask_qty: np.ndarray
    update_id: int
    ts_ms: int
    _rendered: dict[int, bytes] = field(default_factory=dict, repr=False)

    @property
    def best_bid(self) -> int | None:
        return int(self.bid_px[0]) if len(self.bid_px) else None

    @property
    def best_ask(self) -> int | None:
        return int(self.ask_px[0]) if len(self.ask_px) else None

    @property
    def mid(self) -> float | None:
        """Mid price in the quote asset, or the one side's best price if the other is empty."""
        bb, ba = self.best_bid, self.best_ask
        if bb is None and ba is None:
            return None
        if bb is None or ba is None:
            return float(bb if bb is not None else ba) * self.spec.tick_f
        return (bb + ba) / 2.0 * self.spec.tick_f

    def _side(self, taker_side: str) -> tuple[np.ndarray, np.ndarray]:
        # a buyer takes the asks, a seller the bids
        return (self.ask_px, self.ask_qty) if taker_side == BUY else (self.bid_px, self.bid_qty)

    def available(self, taker_side: str, limit_px: int | None) -> int:
        """Lots a taker could get at or better than ``limit_px`` (all if None)."""
        px, qty = self._side(taker_side)
        if limit_px is None:
            return int(qty.sum())
        n = int(np.searchsorted(px, limit_px, side="right")) if taker_side == BUY else \
            int(np.searchsorted(-px, -limit_px, side="right"))
        return int(qty[:n].sum())

    def walk(self, taker_side: str, limit_px: int | None = None, lots: int | None = None,
             quote: Decimal | None = None) -> list[tuple[int, int]]:
        """The (price ticks, lots) a taker would get, best first, without consuming them.

        Bounded by ``lots`` or by a quote-asset amount ``quote`` (spend up to it on a
        buy, receive up to it on a sell), and by ``limit_px`` if given.
        """
        px, qty = self._side(taker_side)
        unit = self.spec.tick * self.spec.step  # quote value of one lot at one tick
        out: list[tuple[int, int]] = []
        remaining_lots = lots
        remaining_quote = quote
        for i in range(len(px)):
            p = int(px[i])
            if limit_px is not None and (p > limit_px if taker_side == BUY else p < limit_px):
                break
            q = int(qty[i])
            if remaining_lots is not None:
                q = min(q, remaining_lots)
            if remaining_quote is not None:
                q = min(q, int(remaining_quote // (unit * p)))
            if q <= 0:
                break
            out.append((p, q))
            if remaining_lots is not None:
                remaining_lots -= q
                if remaining_lots == 0:
                    break
            if remaining_quote is not None:
                remaining_quote -= unit * p * q
        return out

    def consume(self, taker_side: str, taken: list[tuple[int, int]], now_ms: int | None = None) -> None:
        """Remove what a walk returned (a prefix of the side) from the book; the book changed
        at ``now_ms`` (its time becomes that)."""
        if not taken:
            return
        px, qty = self._side(taker_side)
        qty = qty.copy()
        for i, (p, q) in enumerate(taken):
            assert int(px[i]) == p and qty[i] >= q, "consume() must follow walk() on the same book"
            qty[i] -= q
        keep = qty > 0
        keep[len(taken):] = True
        if taker_side == BUY:
            self.ask_px, self.ask_qty = px[keep], qty[keep]
        else:
            self.bid_px, self.bid_qty = px[keep], qty[keep]
        self.update_id += 1
        if now_ms is not None:
            self.ts_ms = now_ms
        self._rendered.clear()

    def depth_json(self, limit: int) -> bytes:
        """The ``/api/v3/depth`` body for ``limit`` levels, rendered once per book version."""
        body = self._rendered.get(limit)
        if body is None:
            tick, step = self.spec.tick_f, self.spec.step_f
            body = msgspec.json.encode({
                # no "T": Binance spot's depth has none, and ccxt.pro, seeing one, would demand
                # that the first diff start exactly at lastUpdateId + 1
                "lastUpdateId": self.update_id,
                "bids": _levels(self.bid_px[:limit], self.bid_qty[:limit], tick, step),
                "asks": _levels(self.ask_px[:limit], self.ask_qty[:limit], tick, step),
            })
            self._rendered[limit] = body
        return body


def side_changes(old_px: np.ndarray, old_qty: np.ndarray, new_px: np.ndarray, new_qty: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The levels of one side that differ between two versions: (prices, new sizes), size 0
    for a level that is gone -- what a Binance diff stream sends for them."""
    if old_px is new_px and old_qty is new_qty:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    common, oi, ni = np.intersect1d(old_px, new_px, assume_unique=True, return_indices=True)
    changed = new_qty[ni] != old_qty[oi]
    gone = np.ones(len(old_px), dtype=bool)
    gone[oi] = False
    added = np.ones(len(new_px), dtype=bool)
    added[ni] = False
    px = np.concatenate([old_px[gone], new_px[added], common[changed]])
    qty = np.concatenate([np.zeros(int(gone.sum()), dtype=np.int64), new_qty[added],
                          new_qty[ni][changed]])
    return px, qty


def _keep_deep(top_px: np.ndarray, top_qty: np.ndarray, deep_px: np.ndarray, deep_qty: np.ndarray,
               old_px: np.ndarray, old_qty: np.ndarray, levels: int, sign: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """One side: the new ``top`` levels, then the old levels beyond them, with the new profile's
    ``deep`` levels only where the old ones leave a hole; ``levels`` in all. ``sign`` is -1
    for bids (descending prices), 1 for asks."""
    if not len(top_px) or not len(old_px):
        return np.concatenate([top_px, deep_px])[:levels], np.concatenate([top_qty, deep_qty])[:levels]
    bound = int(top_px[-1]) * sign
    old_key = old_px * sign  # ascending away from the mid
    keep = old_key > bound
    o_key, o_qty = old_key[keep], old_qty[keep]
    n_key = deep_px * sign
    if len(n_key) and len(o_key):
        gap = np.diff(n_key, append=n_key[-1] + (n_key[-1] - n_key[-2] if len(n_key) > 1 else 1))
        i = np.searchsorted(o_key, n_key)
        left = np.where(i > 0, o_key[np.maximum(i - 1, 0)], np.iinfo(np.int64).min // 2)
        right = np.where(i < len(o_key), o_key[np.minimum(i, len(o_key) - 1)], np.iinfo(np.int64).max // 2)
        hole = np.minimum(n_key - left, right - n_key) * 4 > gap * 3
    else:
        hole = np.ones(len(n_key), dtype=bool)
    key = np.concatenate([o_key, n_key[hole]])
    qty = np.concatenate([o_qty, deep_qty[hole]])
    need = max(0, levels - len(top_px))
    if len(key) < need and len(key):  # short of levels: the profile's beyond the last one
        beyond = (n_key > key.max()) & ~hole
        key = np.concatenate([key, n_key[beyond]])
        qty = np.concatenate([qty, deep_qty[beyond]])
        short = need - len(key)
        if short > 0 and len(n_key) > 1:  # then on at the profile's far spacing
            gap = max(1, int(n_key[-1] - n_key[-2]))
            key = np.concatenate([key, key.max() + gap * np.arange(1, short + 1, dtype=np.int64)])
            qty = np.concatenate([qty, np.resize(deep_qty[-short:], short)])
    order = np.argsort(key, kind="stable")[:need]
    px = key[order] * sign
    ok = px > 0
    return np.concatenate([top_px, px[ok]]), np.concatenate([top_qty, qty[order][ok]])


def _levels(px: np.ndarray, qty: np.ndarray, tick: float, step: float) -> list[list[str]]:
    prices = (px * tick).tolist()
    sizes = (qty * step).tolist()
    return [[f"{p:.8f}", f"{q:.8f}"] for p, q in zip(prices, sizes, strict=True)]


class DepthProfile:
    """Precomputed level distances and sizes for one symbol's synthetic book."""

    def __init__(self, spec: SymbolSpec, levels: int) -> None:
        self.spec = spec
        k = np.arange(levels, dtype=float)
        self.dist = (spec.spread_bps / 2.0 + 0.2 * k * (1.0 + k / 500.0)) / 1e4
        self.notional = spec.level_notional * (1.0 + 0.15 * k)
        self._ramp = np.arange(levels, dtype=np.int64)

    def build(self, mid: float, rng: np.random.Generator, update_id: int, ts_ms: int,
              top: tuple[float, float] | None = None, *, prev: Book | None = None,
              fresh: int | None = None) -> Book:
        """A book around ``mid``; with ``top`` = (best bid, best ask), anchored on those.

        With ``prev`` and ``fresh``, only the ``fresh`` levels nearest the mid are new; the
        deeper levels of ``prev`` stay (see the module's docstring)."""
        tick, step = self.spec.tick_f, self.spec.step_f
        if top is None:
            bid_raw = np.floor(mid * (1.0 - self.dist) / tick)
            ask_raw = np.ceil(mid * (1.0 + self.dist) / tick)
        else:
            rel = self.dist - self.dist[0]
            bid_raw = np.floor(top[0] * (1.0 - rel) / tick + 1e-9)
            ask_raw = np.ceil(top[1] * (1.0 + rel) / tick - 1e-9)
        ramp = self._ramp
        # strictly monotone, at least one tick apart
        bid = np.minimum.accumulate(bid_raw.astype(np.int64) + ramp) - ramp
        ask = np.maximum.accumulate(ask_raw.astype(np.int64) - ramp) + ramp
        if len(bid) and len(ask) and bid[0] >= ask[0]:
            ask = ask + (bid[0] - ask[0] + 1)
        bid_ok = bid > 0
        bid = bid[bid_ok]
        wobble = rng.lognormal(0.0, 0.35, size=(2, len(ramp)))
        bid_lots = np.maximum(1, np.rint(self.notional[:len(bid)] * wobble[0, :len(bid)]
                                         / (bid * tick * step))).astype(np.int64)
        ask_lots = np.maximum(1, np.rint(self.notional * wobble[1] / (ask * tick * step))
                              ).astype(np.int64)
        if prev is not None and fresh is not None and 0 < fresh < len(ramp):
            n = len(ramp)
            bid, bid_lots = _keep_deep(bid[:fresh], bid_lots[:fresh], bid[fresh:], bid_lots[fresh:],
                                       prev.bid_px, prev.bid_qty, n, -1)
            ask, ask_lots = _keep_deep(ask[:fresh], ask_lots[:fresh], ask[fresh:], ask_lots[fresh:],
                                       prev.ask_px, prev.ask_qty, n, 1)
        return Book(self.spec, bid, bid_lots, ask, ask_lots, update_id, ts_ms)


def book_from_levels(spec: SymbolSpec, bids: list[tuple[float, float]], asks: list[tuple[float, float]],
                     update_id: int, ts_ms: int) -> Book:
    """A book from recorded (price, size) levels, rounded to the symbol's tick and lot."""
    tick, step = spec.tick_f, spec.step_f

    def side(levels: list[tuple[float, float]], descending: bool) -> tuple[np.ndarray, np.ndarray]:
        if not levels:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        arr = np.asarray(levels, dtype=float).reshape(-1, 2)
        px = np.rint(arr[:, 0] / tick).astype(np.int64)
        qty = np.floor(arr[:, 1] / step + 1e-9).astype(np.int64)
        order = np.argsort(-px if descending else px, kind="stable")
        px, qty = px[order], qty[order]
        ok = (qty > 0) & (px > 0)
        return px[ok], qty[ok]

    bid_px, bid_qty = side(bids, True)
    ask_px, ask_qty = side(asks, False)
    return Book(spec, bid_px, bid_qty, ask_px, ask_qty, update_id, ts_ms)
