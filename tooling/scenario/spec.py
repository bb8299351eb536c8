"""Scenario files: parsing and validation (``cse scenario run FILE``).

A scenario is a TOML file (read with :mod:`tomllib`) describing the books of each venue
over time, the starting balances, fees and settings, and the expected outcome. Comments
are the place for the hand arithmetic. Every key is checked; anything unknown, of the
wrong type or inconsistent stops the run with one line naming it, e.g.
``scenario.toml: venues.x.books[2].asks: a level must be [price, quantity]``.

::

    name = "multi-level walk"    # default: the file name without .toml
    replicas = 3                 # arbitrage replicas (default 3; --replicas overrides)
    duration_s = 4.0             # how long the books play (default: last book's `at` + 2 s)
    quote = "USDT"               # the valuation currency (default USDT)
    [settings]                   # CSE_* for every worker; strings, numbers or booleans
    CSE_ARB_TAKER_FEE = 0.001
    CSE_ARB_SLIPPAGE_BPS = 0
    [marks]                      # prices in the quote, to value fees and leftovers
    BTC = 30000
    [venues.x]
    fee = 0.001                  # maker and taker fee (default 0.001)
    balances = { USDT = 10000, BTC = 0 }   # the account's starting balances (required)
    order_latency_ms = 0         # orders meet the book as it is after this delay (default 0)
    [[venues.x.symbols]]         # optional market filters
    symbol = "BTC/USDT"
    tick = 0.01
    step = 0.0001
    min_notional = 5
    [[venues.x.books]]           # full books, sorted by `at`
    at = 0.0                     # seconds after the replay starts
    symbol = "BTC/USDT"
    bids = [[29990, 1.0]]        # [price, quantity], best first
    asks = [[30000, 0.08], [30020, 0.5]]
    [expect]                     # every key optional
    executions = 1               # opportunities that filled anything
    one_leg = 0                  # executions whose legs did not match (hedge needed, or drift)
    refused_legs = 0             # orders the venue refused (Execution status "rejected")
    pnl_total = 2.5926           # quote: all venues' balance changes valued at marks
    pnl_tolerance = 0.01         # default 0.01 (quote)
    quantity_tolerance = 0.0001  # default: the symbol's coarsest lot step given, else 1e-8
    [[expect.execution]]         # in order of first fill; every key optional
    kind = "cross"               # or "triangular" (then buy = sell = the venue)
    symbol = "BTC/USDT"
    buy = "x"
    sell = "y"
    quantity = 0.08              # base filled by the buy leg (triangular: by the first leg)
    pnl = 2.5926                 # its fills' balance changes valued at marks
    [expect.balances.x]          # final free + locked per venue and asset
    BTC = 0.07992                # tolerance: pnl_tolerance for the quote, else quantity_tolerance

Rules beyond the types: venue names are 1-32 letters, digits, ``_``, ``.`` or ``-``;
symbols are ``BASE/QUOTE``; books of one venue are sorted by ``at`` (one book per symbol
and instant), bids best (highest) first, asks best (lowest) first, never crossed; prices
and quantities are multiples of the symbol's tick and lot step (given, or the ones
venue-sim derives from the first price), since venue-sim would otherwise round them
silently; a ``[[venues.x.symbols]]`` entry needs books of that symbol on that venue;
``duration_s`` must not end before the last book; expectations name known venues and
symbols. Settings the runner owns (addresses, ports, ``CSE_VENUES``, ``CSE_SYMBOLS``,
``CSE_REBALANCE_ENABLED``) cannot be set. When ``[[expect.execution]]`` is given and
``executions`` is not, the list's length is the expected count.
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from shared.messages import split_symbol

DEFAULT_QUOTE = "USDT"
DEFAULT_REPLICAS = 3
DEFAULT_FEE = Decimal("0.001")
DEFAULT_PNL_TOLERANCE = Decimal("0.01")
FALLBACK_QUANTITY_TOLERANCE = Decimal("1e-8")
TAIL_S = 2.0  # default duration: the last book plays this long

_VENUE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")
_ASSET = re.compile(r"^[A-Z0-9]{2,12}$")  # as venue-sim
_SETTING = re.compile(r"^CSE_[A-Z0-9_]+$")
# set by the runner for every worker: addresses, ports and what the scenario itself defines
RESERVED_SETTINGS = frozenset({
    "CSE_KAFKA_BOOTSTRAP_SERVERS", "CSE_REDIS_URL", "CSE_INFLUX_URL", "CSE_VENUES", "CSE_SYMBOLS",
    "CSE_METRICS_HOST", "CSE_METRICS_PORT", "CSE_API_HOST", "CSE_API_PORT", "CSE_REBALANCE_ENABLED",
    "CSE_KEYS_FILE", "CSE_SIM_API_KEY", "CSE_SIM_API_SECRET",
})


class ScenarioError(ValueError):
    """A scenario file that cannot be run; the message is the one line to print."""


Level = tuple[Decimal, Decimal]  # (price, quantity)


@dataclass(frozen=True)
class SymbolFilter:
    symbol: str
    tick: Decimal | None = None
    step: Decimal | None = None
    min_notional: Decimal | None = None


@dataclass(frozen=True)
class BookAt:
    at: float  # seconds after the replay starts
    symbol: str
    bids: list[Level]
    asks: list[Level]


@dataclass
class Venue:
    name: str
    balances: dict[str, Decimal]
    fee: Decimal = DEFAULT_FEE
    order_latency_ms: float = 0.0
    symbols: list[SymbolFilter] = field(default_factory=list)
    books: list[BookAt] = field(default_factory=list)

    @property
    def symbol_names(self) -> list[str]:
        """The symbols this venue lists (those it has books of), in order of first book."""
        return list(dict.fromkeys(b.symbol for b in self.books))

    def filters(self, symbol: str) -> SymbolFilter | None:
        return next((f for f in self.symbols if f.symbol == symbol), None)


@dataclass(frozen=True)
class ExpectedExecution:
    kind: str | None = None
    symbol: str | None = None
    buy: str | None = None
    sell: str | None = None
    quantity: Decimal | None = None
    pnl: Decimal | None = None


@dataclass
class Expect:
    executions: int | None = None
    one_leg: int | None = None
    refused_legs: int | None = None
    pnl_total: Decimal | None = None
    pnl_tolerance: Decimal = DEFAULT_PNL_TOLERANCE
    quantity_tolerance: Decimal | None = None
    execution: list[ExpectedExecution] | None = None
    balances: dict[str, dict[str, Decimal]] = field(default_factory=dict)


@dataclass
class Scenario:
    name: str
    source: str  # the file as named by the user, for messages
    venues: dict[str, Venue]
    replicas: int = DEFAULT_REPLICAS
    duration_s: float = 0.0
    quote: str = DEFAULT_QUOTE
    settings: dict[str, str] = field(default_factory=dict)
    marks: dict[str, Decimal] = field(default_factory=dict)
    expect: Expect = field(default_factory=Expect)

    @property
    def symbols(self) -> list[str]:
        """Every symbol of every venue, in order of first appearance."""
        return list(dict.fromkeys(s for v in self.venues.values() for s in v.symbol_names))

    @property
    def last_at(self) -> float:
        return max((b.at for v in self.venues.values() for b in v.books), default=0.0)

    def quantity_tolerance(self, symbol: str | None) -> Decimal:
        """The tolerance on quantities of ``symbol``: the file's, else its coarsest lot step given."""
        if self.expect.quantity_tolerance is not None:
            return self.expect.quantity_tolerance
        steps = [f.step for v in self.venues.values() for f in v.symbols
                 if f.symbol == symbol and f.step is not None]
        return max(steps) if steps else FALLBACK_QUANTITY_TOLERANCE


# --- reading ------------------------------------------------------------------------------------

def load(path: Path | str) -> Scenario:
    """Read and validate a scenario file; :class:`ScenarioError` names the first problem."""
    source = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ScenarioError(f"{source}: cannot read: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ScenarioError(f"{source}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{source}: not valid TOML: {exc}") from None
    return parse(data, source, default_name=Path(path).stem)


def parse(data: dict[str, Any], source: str = "scenario", default_name: str = "scenario") -> Scenario:
    """Validate decoded TOML (see the module docstring)."""
    return _Parser(source).scenario(data, default_name)


class _Table:
    """One TOML table at a dotted path: typed reads, then :meth:`done` rejects unknown keys."""

    def __init__(self, parser: _Parser, data: Any, where: str):
        if not isinstance(data, dict):
            raise parser.error(where, f"must be a table, got {_kind(data)}")
        self.p = parser
        self.data = data
        self.where = where
        self.seen: set[str] = set()

    def at(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def get(self, key: str) -> Any:
        self.seen.add(key)
        return self.data.get(key)

    def done(self) -> None:
        unknown = [k for k in self.data if k not in self.seen]
        if unknown:
            raise self.p.error(self.at(unknown[0]), "unknown key")

    def string(self, key: str, default: str | None = None, *, required: bool = False) -> str | None:
        value = self.get(key)
        if value is None:
            if required:
                raise self.p.error(self.at(key), "missing")
            return default
        if not isinstance(value, str) or not value.strip():
            raise self.p.error(self.at(key), f"must be a non-empty string, got {_kind(value)}")
        return value

    def number(self, key: str, *, lo: float | None = None, hi: float | None = None,
               lo_open: bool = False, required: bool = False) -> Decimal | None:
        value = self.get(key)
        if value is None:
            if required:
                raise self.p.error(self.at(key), "missing")
            return None
        return self.p.decimal(value, self.at(key), lo=lo, hi=hi, lo_open=lo_open)

    def integer(self, key: str, *, lo: int, hi: int) -> int | None:
        value = self.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.p.error(self.at(key), f"must be an integer, got {_kind(value)}")
        if not lo <= value <= hi:
            raise self.p.error(self.at(key), f"must be from {lo} to {hi}, got {value}")
        return value

    def table(self, key: str) -> _Table | None:
        value = self.get(key)
        return None if value is None else _Table(self.p, value, self.at(key))

    def array_of_tables(self, key: str) -> list[_Table]:
        value = self.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.p.error(self.at(key), f"must be an array of tables ([[{self.at(key)}]]), "
                                             f"got {_kind(value)}")
        return [_Table(self.p, item, f"{self.at(key)}[{i}]") for i, item in enumerate(value)]


class _Parser:
    def __init__(self, source: str):
        self.source = source

    def error(self, where: str, what: str) -> ScenarioError:
        return ScenarioError(f"{self.source}: {where}: {what}" if where else f"{self.source}: {what}")

    def decimal(self, value: Any, where: str, *, lo: float | None = None, hi: float | None = None,
                lo_open: bool = False) -> Decimal:
        """A number (or a string holding one, for exact decimals) within bounds."""
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise self.error(where, f"must be a number, got {_kind(value)}")
        if isinstance(value, float) and not math.isfinite(value):
            raise self.error(where, f"must be a finite number, got {value}")
        try:
            out = Decimal(repr(value) if isinstance(value, float) else str(value).strip())
        except InvalidOperation:
            raise self.error(where, f"must be a number, got {value!r}") from None
        if not out.is_finite():
            raise self.error(where, f"must be a finite number, got {value!r}")
        if lo is not None and (out <= Decimal(str(lo)) if lo_open else out < Decimal(str(lo))):
            raise self.error(where, f"must be {'>' if lo_open else '>='} {lo:g}, got {_show(out)}")
        if hi is not None and out > Decimal(str(hi)):
            raise self.error(where, f"must be <= {hi:g}, got {_show(out)}")
        return out

    def asset(self, name: str, where: str) -> str:
        if not _ASSET.match(name):
            raise self.error(where, "an asset is 2-12 capital letters or digits")
        return name

    def symbol(self, value: str, where: str) -> str:
        base, quote = split_symbol(value)
        if value != f"{base}/{quote}" or not _ASSET.match(base) or not _ASSET.match(quote) or base == quote:
            raise self.error(where, f"{value!r} is not a symbol BASE/QUOTE (assets of 2-12 capital "
                                    "letters or digits)")
        return value

    # --- the file ---------------------------------------------------------------------------------

    def scenario(self, data: dict[str, Any], default_name: str) -> Scenario:
        top = _Table(self, data, "")
        name = top.string("name", default_name) or default_name
        replicas = top.integer("replicas", lo=1, hi=32)
        duration = top.number("duration_s", lo=0, hi=3600, lo_open=True)
        quote = self.asset(top.string("quote", DEFAULT_QUOTE) or DEFAULT_QUOTE, "quote")
        settings = self.settings(top.table("settings"))
        marks = self.marks(top.table("marks"), quote)
        venues_t = top.table("venues")
        if venues_t is None or not venues_t.data:
            raise self.error("venues", "no venues: add at least one [venues.NAME] table")
        venues = {}
        for vname in list(venues_t.data):
            if not _VENUE.match(vname):
                raise self.error(venues_t.at(vname), "a venue name is 1-32 letters, digits, '_', '.' "
                                                     "or '-', starting with a letter or digit")
            table = venues_t.table(vname)
            assert table is not None
            venues[vname] = self.venue(vname, table)
        venues_t.done()
        expect_t = top.table("expect")
        top.done()
        scenario = Scenario(name=name, source=self.source, venues=venues,
                            replicas=replicas or DEFAULT_REPLICAS, quote=quote, settings=settings,
                            marks=marks)
        last = scenario.last_at
        if duration is None:
            scenario.duration_s = last + TAIL_S
        elif float(duration) < last:
            raise self.error("duration_s", f"{_show(duration)} s ends before the last book (at {last:g} s)")
        else:
            scenario.duration_s = float(duration)
        self.check_grid(scenario)
        scenario.expect = self.expect(expect_t, scenario)
        return scenario

    def settings(self, table: _Table | None) -> dict[str, str]:
        out: dict[str, str] = {}
        if table is None:
            return out
        for key in list(table.data):
            value = table.get(key)
            where = table.at(key)
            if not _SETTING.match(key):
                raise self.error(where, "settings are CSE_* environment variables (capitals, digits, _)")
            if key in RESERVED_SETTINGS:
                raise self.error(where, "set by the scenario runner; it cannot be overridden")
            if isinstance(value, bool):
                out[key] = "true" if value else "false"
            elif isinstance(value, int | float) and math.isfinite(value):
                out[key] = repr(value)
            elif isinstance(value, str):
                out[key] = value
            else:
                raise self.error(where, f"must be a string, a number or a boolean, got {_kind(value)}")
        return out

    def marks(self, table: _Table | None, quote: str) -> dict[str, Decimal]:
        out: dict[str, Decimal] = {}
        if table is None:
            return out
        for asset in list(table.data):
            where = table.at(asset)
            self.asset(asset, where)
            value = table.number(asset, lo=0, lo_open=True)
            assert value is not None
            if asset == quote and value != 1:
                raise self.error(where, f"{quote} is the quote: its mark is 1 by definition")
            out[asset] = value
        return out

    def venue(self, name: str, table: _Table) -> Venue:
        fee = table.number("fee", lo=0, hi=0.0999)
        latency = table.number("order_latency_ms", lo=0, hi=60_000)
        bal_t = table.table("balances")
        if bal_t is None:
            raise self.error(table.at("balances"), "missing (the account's starting balances, e.g. "
                                                   "balances = { USDT = 10000, BTC = 0 })")
        balances = {}
        for asset in list(bal_t.data):
            self.asset(asset, bal_t.at(asset))
            value = bal_t.number(asset, lo=0)
            assert value is not None
            balances[asset] = value
        filters = [self.symbol_filter(t) for t in table.array_of_tables("symbols")]
        books = [self.book(t) for t in table.array_of_tables("books")]
        table.done()
        if not books:
            raise self.error(table.at("books"), "no books: add at least one [[venues."
                                                f"{name}.books]]")
        last: dict[str, float] = {}
        for i, book in enumerate(books):
            where = f"{table.at('books')}[{i}].at"
            if i and book.at < books[i - 1].at:
                raise self.error(where, f"books must be sorted by `at`: {book.at:g} comes after "
                                        f"{books[i - 1].at:g}")
            if last.get(book.symbol) == book.at:
                raise self.error(where, f"a second book of {book.symbol} at {book.at:g} s")
            last[book.symbol] = book.at
        for symbol in last:
            if not any(b.symbol == symbol and b.bids and b.asks for b in books):
                raise self.error(table.at("books"), f"{symbol} has no book with both bids and asks "
                                                    "(venue-sim prices the market from the first one)")
        seen: set[str] = set()
        for i, f in enumerate(filters):
            where = f"{table.at('symbols')}[{i}].symbol"
            if f.symbol in seen:
                raise self.error(where, f"{f.symbol} is listed twice")
            seen.add(f.symbol)
            if f.symbol not in last:
                raise self.error(where, f"{f.symbol} has no books on venue {name}")
        return Venue(name=name, balances=balances, fee=DEFAULT_FEE if fee is None else fee,
                      order_latency_ms=float(latency or 0), symbols=filters, books=books)

    def symbol_filter(self, table: _Table) -> SymbolFilter:
        symbol = self.symbol(table.string("symbol", required=True) or "", table.at("symbol"))
        tick = table.number("tick", lo=0, lo_open=True)
        step = table.number("step", lo=0, lo_open=True)
        min_notional = table.number("min_notional", lo=0, lo_open=True)
        table.done()
        return SymbolFilter(symbol, tick, step, min_notional)

    def book(self, table: _Table) -> BookAt:
        at = table.number("at", lo=0, hi=3600, required=True)
        symbol = self.symbol(table.string("symbol", required=True) or "", table.at("symbol"))
        sides = {}
        for side in ("bids", "asks"):
            raw = table.get(side)
            where = table.at(side)
            if raw is None:
                raise self.error(where, "missing (a list of [price, quantity]; [] for an empty side)")
            if not isinstance(raw, list):
                raise self.error(where, f"must be a list of [price, quantity], got {_kind(raw)}")
            levels = []
            for lvl in raw:
                if not isinstance(lvl, list) or len(lvl) != 2:
                    raise self.error(where, "a level must be [price, quantity]")
                price = self.decimal(lvl[0], where, lo=0, lo_open=True)
                qty = self.decimal(lvl[1], where, lo=0, lo_open=True)
                levels.append((price, qty))
            prices = [p for p, _ in levels]
            better_first = sorted(prices, reverse=side == "bids")
            if prices != better_first or len(set(prices)) != len(prices):
                best = "highest" if side == "bids" else "lowest"
                raise self.error(where, f"levels must be best first ({best} price first), one level "
                                        "per price")
            sides[side] = levels
        table.done()
        bids, asks = sides["bids"], sides["asks"]
        if bids and asks and bids[0][0] >= asks[0][0]:
            raise self.error(table.where, f"crossed book: best bid {_show(bids[0][0])} >= best ask "
                                          f"{_show(asks[0][0])}")
        assert at is not None
        return BookAt(float(at), symbol, bids, asks)

    def check_grid(self, scenario: Scenario) -> None:
        """Prices and quantities on the tick and lot grid venue-sim will use (else it rounds them)."""
        for vname, venue in scenario.venues.items():
            for symbol in venue.symbol_names:
                tick, step = effective_grid(venue, symbol)
                for i, book in enumerate(venue.books):
                    if book.symbol != symbol:
                        continue
                    for side in ("bids", "asks"):
                        where = f"venues.{vname}.books[{i}].{side}"
                        for price, qty in getattr(book, side):
                            if price % tick:
                                raise self.error(where, f"price {_show(price)} is not a multiple of the "
                                                        f"tick {_show(tick)} of {symbol} (venue-sim would "
                                                        "round it)")
                            if qty % step:
                                raise self.error(where, f"quantity {_show(qty)} is not a multiple of the "
                                                        f"lot step {_show(step)} of {symbol} (venue-sim "
                                                        "would round it)")

    def expect(self, table: _Table | None, scenario: Scenario) -> Expect:
        out = Expect()
        if table is None:
            return out
        out.executions = table.integer("executions", lo=0, hi=1_000_000)
        out.one_leg = table.integer("one_leg", lo=0, hi=1_000_000)
        out.refused_legs = table.integer("refused_legs", lo=0, hi=1_000_000)
        out.pnl_total = table.number("pnl_total")
        tol = table.number("pnl_tolerance", lo=0)
        out.pnl_tolerance = DEFAULT_PNL_TOLERANCE if tol is None else tol
        out.quantity_tolerance = table.number("quantity_tolerance", lo=0)
        if "execution" in table.data:
            out.execution = [self.expected_execution(t, scenario)
                             for t in table.array_of_tables("execution")]
            if out.executions is None:
                out.executions = len(out.execution)
        bal_t = table.table("balances")
        if bal_t is not None:
            for vname in list(bal_t.data):
                if vname not in scenario.venues:
                    raise self.error(bal_t.at(vname), f"unknown venue {vname!r} (venues: "
                                                      f"{', '.join(scenario.venues)})")
                vt = bal_t.table(vname)
                assert vt is not None
                assets = {}
                for asset in list(vt.data):
                    self.asset(asset, vt.at(asset))
                    value = vt.number(asset, lo=0)
                    assert value is not None
                    assets[asset] = value
                out.balances[vname] = assets
            bal_t.done()
        table.done()
        return out

    def expected_execution(self, table: _Table, scenario: Scenario) -> ExpectedExecution:
        kind = table.string("kind")
        if kind is not None and kind not in ("cross", "triangular"):
            raise self.error(table.at("kind"), f"must be cross or triangular, got {kind!r}")
        symbol = table.string("symbol")
        if symbol is not None:
            self.symbol(symbol, table.at("symbol"))
            if symbol not in scenario.symbols:
                raise self.error(table.at("symbol"), f"{symbol} has no books on any venue")
        venues = {}
        for key in ("buy", "sell"):
            name = table.string(key)
            if name is not None and name not in scenario.venues:
                raise self.error(table.at(key), f"unknown venue {name!r} (venues: "
                                                f"{', '.join(scenario.venues)})")
            venues[key] = name
        quantity = table.number("quantity", lo=0)
        pnl = table.number("pnl")
        table.done()
        return ExpectedExecution(kind, symbol, venues["buy"], venues["sell"], quantity, pnl)


def effective_grid(venue: Venue, symbol: str) -> tuple[Decimal, Decimal]:
    """The tick and lot step venue-sim uses for ``symbol`` on ``venue``: given, or derived as
    venue-sim derives them (from the first price of the recording)."""
    from tooling.venue_sim.symbols import make_spec

    f = venue.filters(symbol) or SymbolFilter(symbol)
    if f.tick is not None and f.step is not None:
        return f.tick, f.step
    ref = next((float(b.bids[0][0]) + float(b.asks[0][0])) / 2 for b in venue.books
               if b.symbol == symbol and b.bids and b.asks)
    base, quote = split_symbol(symbol)
    spec = make_spec(base, quote, ref_price=ref, tick=f.tick, step=f.step, min_notional=f.min_notional)
    return spec.tick, spec.step


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return f"the number {value!r}"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return type(value).__name__


def _show(value: Decimal) -> str:
    return format(value.normalize(), "f")
