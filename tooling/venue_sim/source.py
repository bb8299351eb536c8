"""Where a venue's market data comes from: the seeded model or a replayed recording.

Both sources answer the same questions for the server and the matching engine: the book
at a given wall time, candles, and the rolling 24-hour statistics of a symbol.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from tooling.venue_sim.book import Book, DepthProfile
from tooling.venue_sim.market import (
    DAY_MS,
    EPOCH_MS,
    FINE_PER_HOUR,
    FINE_PER_MINUTE,
    LEVEL_MS,
    MINUTE_MS,
    VenueModel,
    _Lru,
)
from tooling.venue_sim.symbols import SymbolSpec

INTERVALS: dict[str, int] = {
    "1s": 1_000, "1m": 60_000, "3m": 180_000, "5m": 300_000, "15m": 900_000, "30m": 1_800_000,
    "1h": 3_600_000, "2h": 7_200_000, "4h": 14_400_000, "6h": 21_600_000, "8h": 28_800_000,
    "12h": 43_200_000, "1d": DAY_MS, "3d": 3 * DAY_MS, "1w": 7 * DAY_MS,
}
WEEK_OFFSET_MS = 4 * DAY_MS  # Binance weeks start on Monday; 1970-01-01 was a Thursday
# Volume per minute, in multiples of the best level's notional.
VOLUME_PER_MINUTE = 20.0


def align(t_ms: int, interval_ms: int) -> int:
    """Open time of the candle containing ``t_ms``."""
    offset = WEEK_OFFSET_MS if interval_ms == INTERVALS["1w"] else 0
    return (t_ms - offset) // interval_ms * interval_ms + offset


def select_opens(interval_ms: int, start: int | None, end: int | None, limit: int, now_ms: int,
                 first_allowed: int) -> list[int]:
    """Candle open times Binance would return for these parameters (ascending)."""
    last_open = align(now_ms, interval_ms)
    if end is not None:
        last_open = min(last_open, align(end, interval_ms))
    lowest = align(first_allowed, interval_ms)
    if lowest < first_allowed:
        lowest += interval_ms
    if start is not None:
        first = align(start, interval_ms)
        if first < start:
            first += interval_ms
        first = max(first, lowest)
        count = min(limit, (last_open - first) // interval_ms + 1)
    else:
        first = max(lowest, last_open - (limit - 1) * interval_ms)
        count = (last_open - first) // interval_ms + 1
    if count <= 0:
        return []
    return [first + i * interval_ms for i in range(count)]


@dataclass(frozen=True)
class Stats24h:
    """Rolling 24-hour figures of a symbol, in the quote asset (volume in base)."""

    open: float
    high: float
    low: float
    last: float
    volume: float
    quote_volume: float
    open_time: int
    close_time: int
    count: int


class MarketSource(Protocol):
    """What the server and engine need from a price source."""

    specs: list[SymbolSpec]

    def book(self, spec: SymbolSpec, now_ms: int, update_id: int, prev: Book | None = None
             ) -> Book | None: ...

    def klines(self, spec: SymbolSpec, interval: str, start: int | None, end: int | None,
               limit: int, now_ms: int) -> list[list[object]]: ...

    def stats_24h(self, spec: SymbolSpec, now_ms: int) -> Stats24h | None: ...


def _uniform(indexes: np.ndarray, salt: int) -> np.ndarray:
    """A cheap deterministic hash of integer indexes to [0, 1)."""
    h = (indexes.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(salt)) & np.uint64(
        0xFFFFFFFFFFFFFFFF)
    h ^= h >> np.uint64(29)
    h = (h * np.uint64(0xBF58476D1CE4E5B9)) & np.uint64(0xFFFFFFFFFFFFFFFF)
    h ^= h >> np.uint64(32)
    return (h & np.uint64(0xFFFFFF)).astype(float) / float(1 << 24)


def kline_rows(spec: SymbolSpec, opens: list[int], interval_ms: int, o: np.ndarray, h: np.ndarray,
               lo: np.ndarray, c: np.ndarray, v: np.ndarray) -> list[list[object]]:
    """Binance kline arrays: prices rounded to the tick, volumes to the lot."""
    dec_p = max(0, -spec.tick.as_tuple().exponent)  # type: ignore[operator]
    dec_q = max(0, -spec.step.as_tuple().exponent)  # type: ignore[operator]
    rows: list[list[object]] = []
    for i, t in enumerate(opens):
        vol = float(v[i])
        mid = (float(o[i]) + float(c[i])) / 2.0
        qv = vol * mid
        rows.append([
            t, f"{o[i]:.{dec_p}f}", f"{h[i]:.{dec_p}f}", f"{lo[i]:.{dec_p}f}", f"{c[i]:.{dec_p}f}",
            f"{vol:.{dec_q}f}", t + interval_ms - 1, f"{qv:.8f}",
            int(qv / max(spec.level_notional / 50.0, 1e-12)) + 1,
            f"{vol / 2:.{dec_q}f}", f"{qv / 2:.8f}", "0",
        ])
    return rows


class ModelSource:
    """Books and candles from the seeded price model (see :mod:`.market`)."""

    def __init__(self, model: VenueModel, specs: list[SymbolSpec], levels: int,
                 rng: np.random.Generator, fresh: int | None = None) -> None:
        self.model = model
        self.fresh = fresh  # levels redrawn per tick; None: the whole book
        self.specs = specs
        self.profiles = {s.id: DepthProfile(s, levels) for s in specs}
        self.rng = rng
        self._salt = {s.id: zlib.crc32(f"{model.effects.name}:{s.id}".encode()) for s in specs}
        self._minute_ohlc: dict[str, _Lru] = {s.id: _Lru(1200) for s in specs}
        self._stats: dict[str, tuple[int, Stats24h]] = {}

    def mid(self, spec: SymbolSpec, now_ms: int) -> float:
        return self.model.mid_at(spec, now_ms)

    def book(self, spec: SymbolSpec, now_ms: int, update_id: int, prev: Book | None = None) -> Book:
        """The book at ``now_ms``: around the model's mid, evolved from ``prev`` if given."""
        return self.profiles[spec.id].build(self.mid(spec, now_ms), self.rng, update_id, now_ms,
                                            prev=prev, fresh=self.fresh)

    # --- candles --------------------------------------------------------------------------

    def _volumes(self, spec: SymbolSpec, opens: np.ndarray, minutes: float, close: np.ndarray
                 ) -> np.ndarray:
        u = _uniform(opens // MINUTE_MS, self._salt[spec.id])
        return spec.level_notional * VOLUME_PER_MINUTE * minutes * (0.5 + u) / close

    @staticmethod
    def _minute_ohlc_of(pts: np.ndarray) -> np.ndarray:
        """(60, 4) log open/high/low/close of each minute of an hour of 200 ms points."""
        body = pts[:-1].reshape(60, FINE_PER_MINUTE)
        close = pts[FINE_PER_MINUTE::FINE_PER_MINUTE]
        return np.column_stack([body[:, 0], np.maximum(body.max(axis=1), close),
                                np.minimum(body.min(axis=1), close), close])

    def klines(self, spec: SymbolSpec, interval: str, start: int | None, end: int | None,
               limit: int, now_ms: int) -> list[list[object]]:
        iv = INTERVALS[interval]
        opens = select_opens(iv, start, end, limit, now_ms, EPOCH_MS)
        if not opens:
            return []
        if interval == "1m":
            ohlc = self._minute_candles(spec, opens, now_ms)
        else:
            ohlc = self._generic_candles(spec, opens, iv, now_ms)
        o, h, lo, c = (np.exp(ohlc[:, i]) for i in range(4))
        opens_arr = np.asarray(opens, dtype=np.int64)
        minutes = iv / MINUTE_MS
        v = self._volumes(spec, opens_arr, minutes, c)
        if opens[-1] + iv > now_ms:  # the candle in progress has traded only part of its time
            v[-1] *= max(0.0, min(1.0, (now_ms - opens[-1]) / iv))
        return kline_rows(spec, opens, iv, o, h, lo, c, v)

    def _minute_candles(self, spec: SymbolSpec, opens: list[int], now_ms: int) -> np.ndarray:
        cache = self._minute_ohlc[spec.id]
        current = (now_ms - EPOCH_MS) // MINUTE_MS
        minutes = [(t - EPOCH_MS) // MINUTE_MS for t in opens]
        missing = sorted({m // 60 for m in minutes if m < current and m // 60 not in cache})
        if missing:  # one pass over the 200 ms path for every hour not summarised yet
            lo, hi = missing[0], missing[-1]
            pts = self.model.log_mid(spec, "fine", lo * FINE_PER_HOUR, (hi + 1) * FINE_PER_HOUR)
            for h in missing:
                start = (h - lo) * FINE_PER_HOUR
                cache.put(h, self._minute_ohlc_of(pts[start:start + FINE_PER_HOUR + 1]))
        out = np.empty((len(opens), 4))
        for n, (t, m) in enumerate(zip(opens, minutes, strict=True)):
            if m >= current:  # the minute in progress: only what happened up to now
                out[n] = self._partial(spec, t, now_ms, "fine")
            else:
                out[n] = cache[m // 60][m % 60]
        return out

    def _partial(self, spec: SymbolSpec, open_ms: int, now_ms: int, level: str) -> np.ndarray:
        step = LEVEL_MS[level]
        i0 = (open_ms - EPOCH_MS) // step
        i1 = max(i0, (now_ms - EPOCH_MS) // step)
        pts = self.model.log_mid(spec, level, i0, i1)
        last = math.log(self.model.mid_at(spec, now_ms))
        return np.array([pts[0], max(pts.max(), last), min(pts.min(), last), last])

    def _generic_candles(self, spec: SymbolSpec, opens: list[int], iv: int, now_ms: int
                         ) -> np.ndarray:
        level = "fine" if iv < MINUTE_MS else "minute" if iv < DAY_MS else "hour"
        step = LEVEL_MS[level]
        n = iv // step
        i0 = (opens[0] - EPOCH_MS) // step
        count = len(opens)
        i_now = (now_ms - EPOCH_MS) // step
        i_end = min(i0 + count * n, i_now)
        pts = self.model.log_mid(spec, level, i0, i_end)
        last = math.log(self.model.mid_at(spec, now_ms))
        full = np.full(count * n + 1, last)  # the rest of the candle in progress: flat at now
        full[:len(pts)] = pts
        body = full[:-1].reshape(count, n)
        close = full[n::n]
        return np.column_stack([body[:, 0], np.maximum(body.max(axis=1), close),
                                np.minimum(body.min(axis=1), close), close])

    # --- 24 hours ---------------------------------------------------------------------------

    def stats_24h(self, spec: SymbolSpec, now_ms: int) -> Stats24h:
        cached = self._stats.get(spec.id)
        if cached is not None and now_ms - cached[0] < 1000:
            return cached[1]
        m1 = (now_ms - EPOCH_MS) // MINUTE_MS
        m0 = m1 - 1440
        log_pts = self.model.log_mid(spec, "minute", m0, m1)
        last = self.model.mid_at(spec, now_ms)
        pts = np.exp(log_pts)
        opens = (EPOCH_MS + np.arange(m0, m1) * MINUTE_MS).astype(np.int64)
        vols = self._volumes(spec, opens, 1.0, pts[1:])
        volume = float(vols.sum())
        quote_volume = float((vols * pts[1:]).sum())
        stats = Stats24h(open=float(pts[0]), high=max(float(pts.max()), last),
                         low=min(float(pts.min()), last), last=last, volume=volume,
                         quote_volume=quote_volume, open_time=now_ms - DAY_MS, close_time=now_ms,
                         count=int(quote_volume / max(spec.level_notional / 50.0, 1e-12)) + 1)
        self._stats[spec.id] = (now_ms, stats)
        return stats

