"""Order books: synthetic depth around a mid, consumption by fills, cached rendering.

Prices are held as integer ticks and sizes as integer lots (numpy ``int64``), so the
matching engine works in exact units and converts to ``Decimal`` only at the edges.

A synthetic book has ``levels`` levels per side. Level ``k`` sits
``spread/2 + 0.2 k (1 + k/500)`` bps from the mid (about 4 bps at level 20, 25 bps at
level 100, 6% at level 1000), rounded outwards to the tick and kept strictly monotone;
its notional grows linearly away from the mid (``1 + 0.15 k`` times the best level's)
with a log-normal wobble redrawn every tick.
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
                "lastUpdateId": self.update_id,
                "T": self.ts_ms,  # not in Binance spot, but harmless: ccxt reads it as the time
                "bids": _levels(self.bid_px[:limit], self.bid_qty[:limit], tick, step),
                "asks": _levels(self.ask_px[:limit], self.ask_qty[:limit], tick, step),
            })
            self._rendered[limit] = body
        return body


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
              top: tuple[float, float] | None = None) -> Book:
        """A book around ``mid``; with ``top`` = (best bid, best ask), anchored on those."""
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
