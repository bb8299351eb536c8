"""Replay mode (``--replay FILE``): recorded books and candles instead of the price model.

Two file formats are accepted, chosen by the file name.

**JSON lines** (any name not ending in ``.csv``): one object per line; blank lines and
lines starting with ``#`` are skipped. Prices and sizes may be strings or numbers::

    {"type": "symbol", "symbol": "BTC/USDT", "tickSize": "0.01", "stepSize": "0.00001",
     "minNotional": "5"}
    {"type": "book", "ts": 1717000000000, "symbol": "BTC/USDT",
     "bids": [["65000.10", "0.5"], ["65000.00", "1.2"]],
     "asks": [["65000.20", "0.4"], ["65000.30", "2.0"]]}
    {"type": "candle", "symbol": "BTC/USDT", "interval": "1m", "openTime": 1716999940000,
     "open": "64990.1", "high": "65010", "low": "64980.5", "close": "65000.15",
     "volume": "12.5"}

``symbol`` records are optional (tick, lot and minimum notional are otherwise derived
from the first price seen, as in model mode). ``book`` records are full books, served as
recorded (rounded to tick and lot). ``candle`` records feed ``/api/v3/klines``; an
interval that was not recorded is aggregated from a finer recorded one that divides it.

**CSV** (``*.csv``): top of book only, with a header row::

    ts,symbol,bid,ask,bid_qty,ask_qty
    1717000000000,BTC/USDT,65000.10,65000.20,0.5,0.4

``bid_qty``/``ask_qty`` are optional. The venue builds the depth below the recorded best
prices with the same level profile as model mode (``--levels`` deep); the recorded
sizes, when given, replace the best levels' sizes.

**Timing.** The replay starts when the venue starts, at ``--replay-start-ms``, or — with
``--replay-hold`` — when ``POST /venue-sim/v1/replay/start`` says (``{"at_ms": ...}``,
default now), so that several venues start their recordings at one wall time; until then
no book is served. At the start the earliest book record (over all symbols) is current; a
record with timestamp ``ts`` becomes current ``ts - first_ts`` milliseconds later (real
time); a symbol has no book before its first record; after the last record the last books
stay. Candles keep their recorded open times (history is served as recorded). Rolling
24-hour statistics come from the replayed mids (and recorded 1-minute volumes).

**Liquidity is taken for good.** A record, once current, is installed once: what orders
take from it (immediately, or as resting orders the book crosses) stays taken until the
symbol's next record replaces the book. The book's update id changes only when the book
does (a new record, or a fill consuming from it), and its time (``T`` in the depth answer)
is the wall time at which its record became current, or of the last fill that changed it.
"""

from __future__ import annotations

import bisect
import csv
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import numpy as np

from shared.messages import split_symbol
from tooling.venue_sim.book import Book, DepthProfile, book_from_levels
from tooling.venue_sim.market import DAY_MS
from tooling.venue_sim.source import INTERVALS, Stats24h, align, kline_rows
from tooling.venue_sim.symbols import SymbolSpec, make_spec, parse_symbol


class ReplayError(ValueError):
    """The replay file cannot be used; the message names the line."""


@dataclass
class _SymbolData:
    symbol: str
    meta: dict[str, Decimal] = field(default_factory=dict)
    books: list[tuple[int, Any]] = field(default_factory=list)  # (ts, levels or top tuple)
    candles: dict[str, list[tuple[int, float, float, float, float, float]]] = field(
        default_factory=dict)
    first_price: float | None = None


def _num(value: Any, where: str) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ReplayError(f"{where}: {value!r} is not a number") from None
    if not math.isfinite(out) or out < 0:
        raise ReplayError(f"{where}: {value!r} is not a finite non-negative number")
    return out


def _levels(raw: Any, where: str) -> list[tuple[float, float]]:
    if not isinstance(raw, list):
        raise ReplayError(f"{where}: levels must be a list of [price, size]")
    out = []
    for lvl in raw:
        if not isinstance(lvl, list | tuple) or len(lvl) < 2:
            raise ReplayError(f"{where}: a level must be [price, size], got {lvl!r}")
        out.append((_num(lvl[0], where), _num(lvl[1], where)))
    return out


_Entry = Callable[[Any, str], _SymbolData]  # symbol, where → that symbol's records (created on first use)


def _load(path: Path, quote: str) -> dict[str, _SymbolData]:
    """The records of ``path`` by symbol; the file name chooses the format (CSV or JSON lines)."""
    data: dict[str, _SymbolData] = {}

    def entry(symbol: Any, where: str) -> _SymbolData:
        if not isinstance(symbol, str):
            raise ReplayError(f"{where}: missing symbol")
        try:
            base, q = parse_symbol(symbol, quote)
        except ValueError as exc:
            raise ReplayError(f"{where}: {exc}") from None
        key = f"{base}/{q}"
        return data.setdefault(key, _SymbolData(key))

    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ReplayError(f"cannot read {path}: {exc}") from None
    if path.suffix.lower() == ".csv":
        _read_csv(path, text, entry)
    else:
        _read_json_lines(path, text, entry)
    return data


def _read_csv(path: Path, text: str, entry: _Entry) -> None:
    """The CSV format: one top of book (``ts,symbol,bid,ask``, optional sizes) per row."""
    reader = csv.DictReader(text.splitlines())
    need = {"ts", "symbol", "bid", "ask"}
    if not reader.fieldnames or not need <= set(reader.fieldnames):
        raise ReplayError(f"{path}: the header must have the columns ts,symbol,bid,ask "
                          "(and optionally bid_qty,ask_qty)")
    for n, row in enumerate(reader, 2):
        where = f"{path}:{n}"
        d = entry(row["symbol"], where)
        bid, ask = _num(row["bid"], where), _num(row["ask"], where)
        if not 0 < bid < ask:
            raise ReplayError(f"{where}: need 0 < bid < ask, got {bid} and {ask}")
        bq = _num(row["bid_qty"], where) if row.get("bid_qty") else None
        aq = _num(row["ask_qty"], where) if row.get("ask_qty") else None
        d.books.append((int(_num(row["ts"], where)), (bid, ask, bq, aq)))
        d.first_price = d.first_price or (bid + ask) / 2


def _read_json_lines(path: Path, text: str, entry: _Entry) -> None:
    """The JSON lines format: one symbol, book or candle object per line (blank and ``#`` lines skipped)."""
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{path}:{n}"
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ReplayError(f"{where}: not JSON ({exc.msg})") from None
        if not isinstance(rec, dict):
            raise ReplayError(f"{where}: each line must be a JSON object")
        kind = rec.get("type")
        d = entry(rec.get("symbol"), where)
        if kind == "symbol":
            _read_symbol_meta(d, rec, where)
        elif kind == "book":
            _read_book(d, rec, where)
        elif kind == "candle":
            _read_candle(d, rec, where)
        else:
            raise ReplayError(f"{where}: type must be symbol, book or candle, got {kind!r}")


def _read_symbol_meta(d: _SymbolData, rec: dict[str, Any], where: str) -> None:
    """A ``symbol`` record: whichever of tick size, step size and minimum notional it gives, each > 0."""
    for key in ("tickSize", "stepSize", "minNotional"):
        if key in rec:
            try:
                value = Decimal(str(rec[key]))
            except InvalidOperation:
                raise ReplayError(f"{where}: {key} {rec[key]!r} is not a number") from None
            if not value > 0:
                raise ReplayError(f"{where}: {key} must be > 0")
            d.meta[key] = value


def _read_book(d: _SymbolData, rec: dict[str, Any], where: str) -> None:
    """A ``book`` record: the full recorded depth at ``ts``."""
    bids, asks = _levels(rec.get("bids"), where), _levels(rec.get("asks"), where)
    d.books.append((int(_num(rec.get("ts"), where)), (bids, asks)))
    if d.first_price is None and bids and asks:
        d.first_price = (bids[0][0] + asks[0][0]) / 2


def _read_candle(d: _SymbolData, rec: dict[str, Any], where: str) -> None:
    """A ``candle`` record of a known interval, kept under its open time."""
    interval = rec.get("interval")
    if interval not in INTERVALS:
        raise ReplayError(f"{where}: unknown interval {interval!r}")
    values = [_num(rec.get(k), where) for k in ("open", "high", "low", "close", "volume")]
    d.candles.setdefault(interval, []).append(
        (int(_num(rec.get("openTime"), where)), *values))  # type: ignore[arg-type]
    d.first_price = d.first_price or values[3]

class ReplaySource:
    """Books and candles replayed from a file (format in the module docstring)."""

    def __init__(self, path: Path, levels: int, rng: np.random.Generator, start_ms: int | None,
                 quote: str = "USDT", only: list[str] | None = None) -> None:
        """``start_ms``: the wall time at which the first record becomes current; None: held
        until :meth:`start`."""
        data = _load(path, quote)
        if only:
            missing = [s for s in only if s not in data]
            if missing:
                raise ReplayError(f"{path}: no records for {', '.join(missing)}")
            data = {s: data[s] for s in only}
        if not data:
            raise ReplayError(f"{path}: no records")
        self.specs: list[SymbolSpec] = []
        self._books: dict[str, tuple[list[int], list[Any]]] = {}
        self._mids: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._candles: dict[str, dict[str, np.ndarray]] = {}
        self.rng = rng
        first_ts: list[int] = []
        for symbol, d in data.items():
            if d.first_price is None:
                raise ReplayError(f"{path}: {symbol} has neither books nor candles")
            base, q = split_symbol(symbol)
            spec = make_spec(base, q, ref_price=d.first_price, tick=d.meta.get("tickSize"),
                             step=d.meta.get("stepSize"), min_notional=d.meta.get("minNotional"))
            self.specs.append(spec)
            d.books.sort(key=lambda b: b[0])
            self._books[spec.id] = ([b[0] for b in d.books], [b[1] for b in d.books])
            self._mids[spec.id] = (np.asarray([b[0] for b in d.books], dtype=np.int64),
                                   np.asarray([_record_mid(b[1]) for b in d.books], dtype=float))
            self._candles[spec.id] = {iv: np.asarray(sorted(rows), dtype=float)
                                      for iv, rows in d.candles.items()}
            if d.books:
                first_ts.append(d.books[0][0])
        self.profiles = {s.id: DepthProfile(s, levels) for s in self.specs}
        self.first_ts = min(first_ts) if first_ts else (start_ms or 0)
        self.start_ms = start_ms
        self.installed: dict[str, int] = {}  # symbol id → index of the record now served

    def start(self, at_ms: int) -> None:
        """Start a held replay: its first record becomes current at ``at_ms``."""
        if self.start_ms is not None:
            raise ValueError("the replay has started already")
        self.start_ms = at_ms

    def record_time(self, now_ms: int) -> int | None:
        """The recording's clock at wall time ``now_ms``; None before the replay starts."""
        if self.start_ms is None or now_ms < self.start_ms:
            return None
        return self.first_ts + (now_ms - self.start_ms)

    def current(self, spec: SymbolSpec, now_ms: int) -> int | None:
        """Index of the symbol's record current at ``now_ms``, None before its first."""
        t = self.record_time(now_ms)
        times = self._books[spec.id][0]
        if t is None or not times:
            return None
        i = bisect.bisect_right(times, t) - 1
        return i if i >= 0 else None

    def book(self, spec: SymbolSpec, now_ms: int, update_id: int, prev: Book | None = None
             ) -> Book | None:
        """A new book when the symbol's current record changed, else None (the venue keeps
        the book it has, with whatever orders took from it)."""
        i = self.current(spec, now_ms)
        if i is None or self.installed.get(spec.id) == i:
            return None
        self.installed[spec.id] = i
        assert self.start_ms is not None
        times, records = self._books[spec.id]
        since = self.start_ms + (times[i] - self.first_ts)  # when the record became current
        rec = records[i]
        if len(rec) == 2:
            levels = book_from_levels(spec, rec[0], rec[1], 0, 0)
            return Book(spec, levels.bid_px, levels.bid_qty, levels.ask_px, levels.ask_qty, update_id,
                        since)
        bid, ask, bq, aq = rec
        book = self.profiles[spec.id].build((bid + ask) / 2, self.rng, update_id, since, top=(bid, ask))
        if bq is not None and len(book.bid_qty):
            book.bid_qty[0] = max(1, int(bq / spec.step_f + 1e-9))
        if aq is not None and len(book.ask_qty):
            book.ask_qty[0] = max(1, int(aq / spec.step_f + 1e-9))
        return book

    def _rows(self, spec: SymbolSpec, interval: str) -> np.ndarray | None:
        recorded = self._candles[spec.id]
        if interval in recorded:
            return recorded[interval]
        iv = INTERVALS[interval]
        finer = [k for k in recorded if INTERVALS[k] < iv and iv % INTERVALS[k] == 0]
        if not finer:
            return None
        src = recorded[max(finer, key=lambda k: INTERVALS[k])]
        groups: dict[int, list[np.ndarray]] = {}
        for row in src:
            groups.setdefault(align(int(row[0]), iv), []).append(row)
        out = [(t, g[0][1], max(r[2] for r in g), min(r[3] for r in g), g[-1][4],
                sum(r[5] for r in g)) for t, g in sorted(groups.items())]
        return np.asarray(out, dtype=float)

    def klines(self, spec: SymbolSpec, interval: str, start: int | None, end: int | None,
               limit: int, now_ms: int) -> list[list[object]]:
        rows = self._rows(spec, interval)
        if rows is None or not len(rows):
            return []
        opens = rows[:, 0].astype(np.int64)
        lo = 0 if start is None else int(np.searchsorted(opens, start, side="left"))
        hi = len(rows) if end is None else int(np.searchsorted(opens, end, side="right"))
        sel = rows[lo:hi]
        sel = sel[:limit] if start is not None else sel[-limit:]
        return kline_rows(spec, [int(t) for t in sel[:, 0]], INTERVALS[interval], sel[:, 1],
                          sel[:, 2], sel[:, 3], sel[:, 4], sel[:, 5])

    def stats_24h(self, spec: SymbolSpec, now_ms: int) -> Stats24h | None:
        times, mids = self._mids[spec.id]
        t = self.record_time(now_ms)
        if not len(times) or t is None or t < times[0]:
            return None
        hi = max(1, int(np.searchsorted(times, t, side="right")))
        lo = min(int(np.searchsorted(times, t - DAY_MS, side="left")), hi - 1)
        window = mids[lo:hi]
        volume = 0.0
        quote_volume = 0.0
        minute = self._candles[spec.id].get("1m")
        if minute is not None and len(minute):
            sel = minute[(minute[:, 0] > t - DAY_MS) & (minute[:, 0] <= t)]
            volume = float(sel[:, 5].sum())
            quote_volume = float((sel[:, 5] * sel[:, 4]).sum())
        return Stats24h(open=float(window[0]), high=float(window.max()), low=float(window.min()),
                        last=float(window[-1]), volume=volume, quote_volume=quote_volume,
                        open_time=now_ms - DAY_MS, close_time=now_ms, count=len(window))


def _record_mid(rec: Any) -> float:
    if len(rec) == 2:
        bids, asks = rec
        if bids and asks:
            return (bids[0][0] + asks[0][0]) / 2
        side = bids or asks
        return side[0][0] if side else math.nan
    return (rec[0] + rec[1]) / 2
