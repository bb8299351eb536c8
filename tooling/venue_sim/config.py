"""Command line of ``cse venue-sim`` (also ``python -m tooling.venue_sim``).

A bad argument is one line on stderr and exit code 2, like a bad ``CSE_*`` setting.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path

from shared.settings import DEV_SIM_API_KEY, DEV_SIM_API_SECRET, split_list, split_pairs
from tooling.venue_sim.symbols import (
    DEFAULT_CROSSES,
    DEFAULT_SYMBOLS,
    default_balance,
    parse_symbol,
)

DEV_API_KEY = DEV_SIM_API_KEY  # the gateway's default for sim venues
DEV_API_SECRET = DEV_SIM_API_SECRET
DEFAULT_PORT = 9101


class UsageError(ValueError):
    """A bad command line; the message is the one line to print."""


@dataclass
class VenueConfig:
    """Everything a venue-sim process runs with."""

    name: str = "venue-sim"
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    seed: int = 7
    api_key: str = DEV_API_KEY
    api_secret: str = DEV_API_SECRET
    accounts: list[tuple[str, str]] = field(default_factory=list)  # extra (key, secret) pairs
    symbols: list[tuple[str, str]] = field(default_factory=list)  # (base, quote)
    symbols_given: bool = False  # replay: else the recording's symbols
    quote: str = "USDT"
    balances: dict[str, Decimal] | None = None  # None: defaults for the traded assets
    maker_fee: Decimal = Decimal("0.001")
    taker_fee: Decimal = Decimal("0.001")
    price_offset_bps: float = 0.0
    noise_bps: float = 2.0
    lag_ms: int = 0
    latency_ms: float = 0.0
    reject_rate: float = 0.0
    weight_limit: int = 6000
    weight_window_s: int = 60
    levels: int = 1000
    journal: Path | None = None
    replay: Path | None = None
    replay_hold: bool = False  # replay clock stopped until POST /venue-sim/v1/replay/start
    replay_start_ms: int | None = None  # wall time the first record becomes current
    order_latency_ms: float = 0.0
    fresh_levels: int = 10  # levels nearest the mid redrawn each tick; deeper ones persist
    tick_ms: int = 200
    ws_ping_s: float = 20.0
    ws_lifetime_s: float = 86_400.0
    ws_message_rate: int = 5
    ws_drop_rate: float = 0.0
    ws_reorder_rate: float = 0.0
    ws_aligned: bool = False  # every symbol's diff event at the same instant (else staggered)
    log_level: str = "info"
    log_format: str = "auto"

    @property
    def symbol_names(self) -> list[str]:
        return [f"{b}/{q}" for b, q in self.symbols]

    def starting_balances(self, assets: list[str]) -> dict[str, Decimal]:
        if self.balances is not None:
            return dict(self.balances)
        return {a: default_balance(a) for a in assets}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def _number(kind: type, lo: float, hi: float, what: str):  # type: ignore[no-untyped-def]
    def parse(text: str) -> float | int:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{text!r} is out of range: allowed {lo:g} to {hi:g}")
        return value  # type: ignore[no-any-return]
    return parse


def _fee(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value.is_finite() or not Decimal(0) <= value < Decimal("0.1"):
        raise argparse.ArgumentTypeError(f"{text!r}: allowed a fraction from 0 to 0.1 (0.001 = 0.1%)")
    return value


def _key(text: str) -> str:
    if not text or len(text) > 128 or any(c.isspace() or not c.isprintable() for c in text):
        raise argparse.ArgumentTypeError("must be 1-128 printable characters without spaces")
    return text


def _secret(text: str) -> str:
    _key(text)
    # ccxt switches to Ed25519/RSA signing when the secret looks like a PEM key
    if "PRIVATE KEY" in text:
        raise argparse.ArgumentTypeError("venue-sim signs with HMAC-SHA256: use a plain secret")
    return text


def _account(text: str) -> tuple[str, str]:
    key, sep, secret = text.partition(":")
    if not sep:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY:SECRET")
    return _key(key), _secret(secret)


def parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="cse venue-sim",
        description="A paper exchange speaking Binance spot's REST and websocket dialects: point "
                    "an unmodified ccxt.binance or ccxt.pro.binance at it (shared.gateway).",
        epilog=f"Default key pair: {DEV_API_KEY} / {DEV_API_SECRET}. Exit codes: 0 stopped, "
               "2 bad arguments or cannot listen.",
    )
    num = _number
    p.add_argument("--name", default="venue-sim", type=_key, help="venue name (logs, journal, noise)")
    p.add_argument("--host", default="127.0.0.1", help="listen address (default %(default)s)")
    p.add_argument("--port", default=DEFAULT_PORT, type=num(int, 0, 65535, "a port"),
                   help="listen port; 0 = any free port (default %(default)s)")
    p.add_argument("--seed", default=7, type=num(int, 0, 2**32 - 1, "an integer"),
                   help="price model seed: venues with one seed share the true prices (default 7)")
    p.add_argument("--api-key", default=DEV_API_KEY, type=_key,
                   help="the first account's API key (default: the development key)")
    p.add_argument("--api-secret", default=DEV_API_SECRET, type=_secret,
                   help="its HMAC secret (default: the development secret)")
    p.add_argument("--account", action="append", default=[], type=_account, metavar="KEY:SECRET",
                   help="another account with the same starting balances (repeatable)")
    p.add_argument("--symbols", default=None,
                   help="comma-separated BASE/QUOTE (a bare BASE means BASE/--quote); default "
                        f"{','.join(DEFAULT_SYMBOLS)} against --quote, plus {','.join(DEFAULT_CROSSES)}")
    p.add_argument("--quote", default="USDT", help="quote asset of bare symbols (default %(default)s)")
    p.add_argument("--balances", default=None, metavar="ASSET=AMOUNT,...",
                   help="starting balances of every account (unlisted assets start at 0); default "
                        "100000 of the quote and about 50k USD of each base asset")
    p.add_argument("--maker-fee", default=Decimal("0.001"), type=_fee, help="fraction (default 0.001)")
    p.add_argument("--taker-fee", default=Decimal("0.001"), type=_fee, help="fraction (default 0.001)")
    p.add_argument("--price-offset-bps", default=0.0, type=num(float, -1000, 1000, "a number"),
                   help="static offset of this venue's prices")
    p.add_argument("--noise-bps", default=2.0, type=num(float, 0, 1000, "a number"),
                   help="std of this venue's own price noise (default %(default)s)")
    p.add_argument("--lag-ms", default=0, type=num(int, 0, 60_000, "an integer"),
                   help="this venue sees the true prices this late (on the 200 ms grid)")
    p.add_argument("--latency-ms", default=0.0, type=num(float, 0, 60_000, "a number"),
                   help="added to every API call, half before and half after handling it")
    p.add_argument("--reject-rate", default=0.0, type=num(float, 0, 1, "a number"),
                   help="fraction of new orders refused with -1000")
    p.add_argument("--weight-limit", default=6000, type=num(int, 1, 10**9, "an integer"),
                   help="request weight per key (or IP) per window before HTTP 429 (default 6000)")
    p.add_argument("--weight-window-s", default=60, type=num(int, 1, 3600, "an integer"),
                   help="length of the weight window in seconds (default 60, as Binance; "
                        "shorter for tests)")
    p.add_argument("--levels", default=1000, type=num(int, 20, 5000, "an integer"),
                   help="book depth per side (default %(default)s)")
    p.add_argument("--journal", default=None, type=Path,
                   help="JSON-lines file every fill is appended to "
                        "(default .run/venue-sim/<name>/fills.jsonl)")
    p.add_argument("--replay", default=None, type=Path,
                   help="replay recorded books/candles (JSON lines or CSV) instead of the model")
    p.add_argument("--replay-hold", action="store_true",
                   help="replay: serve no books until POST /venue-sim/v1/replay/start "
                        "(optional JSON body {\"at_ms\": epoch ms}) starts the recording, so "
                        "several venues can start theirs at one wall time")
    p.add_argument("--replay-start-ms", default=None, type=num(int, 0, 10**14, "an integer"),
                   help="replay: the wall time (epoch ms) at which the first record becomes "
                        "current (default: when the venue starts)")
    p.add_argument("--order-latency-ms", default=0.0, type=num(float, 0, 60_000, "a number"),
                   help="delay before an order is placed or cancelled (no jitter; other calls "
                        "are not delayed): the order meets the book as it is after the delay")
    p.add_argument("--fresh-levels", default=10, type=num(int, 1, 5000, "an integer"),
                   help="levels per side nearest the mid redrawn every tick; deeper levels keep "
                        "their price and size (default %(default)s; >= --levels: the whole book)")
    p.add_argument("--tick-ms", default=200, type=num(int, 20, 10_000, "an integer"),
                   help="how often the market moves (default %(default)s)")
    p.add_argument("--ws-ping-s", default=20.0, type=num(float, 0.1, 3600, "a number"),
                   help="websocket ping interval; no pong within half of it drops the client "
                        "(default %(default)s)")
    p.add_argument("--ws-lifetime-s", default=86_400.0, type=num(float, 0.1, 10**7, "a number"),
                   help="a websocket connection is closed after this long (default 24 h, as Binance)")
    p.add_argument("--ws-message-rate", default=5, type=num(int, 1, 10**6, "an integer"),
                   help="incoming websocket messages per second before the connection is closed "
                        "(default %(default)s, as Binance)")
    p.add_argument("--ws-drop-rate", default=0.0, type=num(float, 0, 1, "a number"),
                   help="fraction of diff events dropped (tests clients' resync)")
    p.add_argument("--ws-reorder-rate", default=0.0, type=num(float, 0, 1, "a number"),
                   help="fraction of diff events sent after the next one (tests clients' resync)")
    p.add_argument("--ws-aligned", action="store_true",
                   help="send every symbol's diff event at the same instant of the period (the "
                        "bursty case); by default each symbol has its own phase")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--log-format", default="auto", choices=["auto", "json", "console"])
    return p


def parse_args(argv: list[str] | None) -> VenueConfig:
    """Parse and validate; raises :class:`UsageError` (or SystemExit(0) for ``--help``)."""
    ns = parser().parse_args(argv)
    quote = ns.quote.strip().upper()
    symbols = _symbols(ns.symbols, quote)
    balances = _balances(ns.balances) if ns.balances is not None else None
    keys = [ns.api_key, *(k for k, _ in ns.account)]
    if len(set(keys)) != len(keys):
        raise UsageError("argument --account: an API key is used twice")
    if ns.replay is not None and not ns.replay.is_file():
        raise UsageError(f"argument --replay: {ns.replay} is not a file")
    if ns.replay is None and (ns.replay_hold or ns.replay_start_ms is not None):
        raise UsageError("argument --replay-hold/--replay-start-ms: only with --replay FILE")
    if ns.replay_hold and ns.replay_start_ms is not None:
        raise UsageError("argument --replay-start-ms: not with --replay-hold (the start request "
                         "gives the time)")
    journal = ns.journal if ns.journal is not None else Path(".run/venue-sim") / ns.name / "fills.jsonl"
    return VenueConfig(
        name=ns.name, host=ns.host, port=ns.port, seed=ns.seed, api_key=ns.api_key,
        api_secret=ns.api_secret, accounts=list(ns.account), symbols=symbols,
        symbols_given=ns.symbols is not None, quote=quote,
        balances=balances, maker_fee=ns.maker_fee, taker_fee=ns.taker_fee,
        price_offset_bps=ns.price_offset_bps, noise_bps=ns.noise_bps, lag_ms=ns.lag_ms,
        latency_ms=ns.latency_ms, reject_rate=ns.reject_rate, weight_limit=ns.weight_limit,
        weight_window_s=ns.weight_window_s,
        levels=ns.levels, journal=journal, replay=ns.replay, replay_hold=ns.replay_hold,
        replay_start_ms=ns.replay_start_ms, order_latency_ms=ns.order_latency_ms,
        fresh_levels=ns.fresh_levels, tick_ms=ns.tick_ms, ws_ping_s=ns.ws_ping_s,
        ws_lifetime_s=ns.ws_lifetime_s, ws_message_rate=ns.ws_message_rate,
        ws_drop_rate=ns.ws_drop_rate, ws_reorder_rate=ns.ws_reorder_rate, ws_aligned=ns.ws_aligned,
        log_level=ns.log_level,
        log_format=ns.log_format,
    )


def _symbols(arg: str | None, quote: str) -> list[tuple[str, str]]:
    """``--symbols``, else the default markets in ``quote`` (plus crosses for USDT); >= 1, none twice."""
    try:
        if arg is None:
            symbols = [parse_symbol(s, quote) for s in DEFAULT_SYMBOLS if s != quote]
            if quote == "USDT":
                symbols += [parse_symbol(s, quote) for s in DEFAULT_CROSSES]
        else:
            symbols = [parse_symbol(s, quote) for s in split_list(arg)]
    except ValueError as exc:
        raise UsageError(f"argument --symbols: {exc}") from None
    if not symbols:
        raise UsageError("argument --symbols: no symbol given")
    if len(set(symbols)) != len(symbols):
        raise UsageError("argument --symbols: a symbol is listed twice")
    return symbols


def _balances(arg: str) -> dict[str, Decimal]:
    """``--balances``: comma-separated ``ASSET=AMOUNT`` with a finite amount >= 0 (a later one wins)."""
    balances: dict[str, Decimal] = {}
    form = "ASSET=AMOUNT (amount >= 0)"
    try:
        pairs = split_pairs(arg, form)
    except ValueError as exc:
        raise UsageError(f"argument --balances: {exc}") from None
    for asset, amount in pairs:
        try:
            value = Decimal(amount)
        except InvalidOperation:
            value = Decimal(-1)
        if not value.is_finite() or value < 0:
            raise UsageError(f"argument --balances: {f'{asset}={amount}'!r} is not {form}")
        balances[asset.upper()] = value
    return balances
