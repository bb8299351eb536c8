"""Assets, symbols and their trading rules (tick, lot, notional), plus exact number helpers.

Every asset has parameters for the price model (a reference price, its beta to the market
factor, its idiosyncratic volatility) and for the synthetic book (top-of-book liquidity,
spread). Well-known assets have hand-set values; any other asset gets values derived
from a hash of its name, so an unknown ``--symbols FOO/USDT`` still behaves like a coin.

Tick and lot sizes follow Binance's habits: prices with about 6-7 significant digits,
a lot worth a few cents to a dollar, a minimum order of 5 USDT (or the same value in
the quote asset).
"""

from __future__ import annotations

import math
import re
import zlib
from dataclasses import dataclass
from decimal import Decimal

# Quote assets priced at exactly 1 (no dynamics): the model's numeraire.
STABLES = frozenset({"USDT", "USDC", "FDUSD", "BUSD", "TUSD", "DAI"})

# Annual volatility of the market factor; an asset's total vol is
# sqrt((beta * FACTOR_VOL)^2 + idio_vol^2), 40-120% for every asset below.
FACTOR_VOL = 0.45


@dataclass(frozen=True)
class AssetParams:
    """Model and liquidity parameters of one asset (prices in USD)."""

    price: float
    beta: float
    idio_vol: float
    level_usd: float  # notional of the best level of a synthetic book
    spread_bps: float  # full spread between best bid and best ask


KNOWN: dict[str, AssetParams] = {
    "BTC": AssetParams(65_000.0, 1.0, 0.25, 40_000.0, 0.6),
    "ETH": AssetParams(3_200.0, 1.2, 0.35, 30_000.0, 0.8),
    "SOL": AssetParams(150.0, 1.5, 0.60, 15_000.0, 1.5),
    "BNB": AssetParams(580.0, 0.9, 0.30, 10_000.0, 1.2),
    "XRP": AssetParams(0.55, 1.1, 0.55, 8_000.0, 2.0),
    "DOGE": AssetParams(0.15, 1.4, 0.75, 6_000.0, 2.5),
    "ADA": AssetParams(0.45, 1.2, 0.55, 5_000.0, 2.5),
    "LTC": AssetParams(80.0, 1.0, 0.45, 4_000.0, 2.5),
    "AVAX": AssetParams(30.0, 1.4, 0.60, 4_000.0, 3.0),
    "LINK": AssetParams(15.0, 1.3, 0.55, 4_000.0, 3.0),
    "DOT": AssetParams(6.0, 1.3, 0.50, 3_000.0, 3.0),
    "TRX": AssetParams(0.12, 0.7, 0.35, 3_000.0, 3.0),
}

DEFAULT_SYMBOLS = ["BTC", "ETH", "SOL", "BNB", "XRP", "DOGE", "ADA"]  # each against --quote
DEFAULT_CROSSES = ["ETH/BTC"]  # added when the quote is USDT: triangles to arbitrage
DEFAULT_QUOTE_BALANCE = Decimal(100_000)
# About 50k USD of each base asset, in round numbers.
DEFAULT_BASE_BALANCES = {"BTC": Decimal(1), "ETH": Decimal(15), "SOL": Decimal(300), "BNB": Decimal(80),
                         "XRP": Decimal(90_000), "DOGE": Decimal(300_000), "ADA": Decimal(100_000)}

_ASSET = re.compile(r"^[A-Z0-9]{2,12}$")


def asset_params(asset: str) -> AssetParams:
    """The asset's parameters: hand-set for known assets, hash-derived otherwise."""
    if asset in STABLES:
        return AssetParams(1.0, 0.0, 0.0, 50_000.0, 1.0)
    known = KNOWN.get(asset)
    if known is not None:
        return known
    h = zlib.crc32(asset.encode())
    u = [((h >> s) & 0xFF) / 255.0 for s in (0, 8, 16, 24)]
    return AssetParams(
        price=float(f"{10 ** (-1.3 + 4.0 * u[0]):.3g}"),  # 0.05 .. 500 USD
        beta=0.9 + 0.7 * u[1],
        idio_vol=0.4 + 0.4 * u[2],
        level_usd=2_000.0 + 4_000.0 * u[3],
        spread_bps=3.0 + 3.0 * u[3],
    )


def pow10(exp: int) -> Decimal:
    return Decimal(1).scaleb(exp)


@dataclass(frozen=True)
class SymbolSpec:
    """One tradable pair and its filters (all amounts exact decimals)."""

    symbol: str  # ccxt style, "BTC/USDT"
    id: str  # exchange style, "BTCUSDT"
    base: str
    quote: str
    tick: Decimal
    step: Decimal
    min_price: Decimal
    max_price: Decimal
    min_qty: Decimal
    max_qty: Decimal
    min_notional: Decimal
    max_notional: Decimal
    ref_price: float  # reference price in the quote asset
    level_notional: float  # notional of a book's best level, in the quote asset
    spread_bps: float

    @property
    def tick_f(self) -> float:
        return float(self.tick)

    @property
    def step_f(self) -> float:
        return float(self.step)


def parse_symbol(text: str, quote: str) -> tuple[str, str]:
    """``"BTC/USDT"``, ``"BTCUSDT"`` is not accepted (ambiguous); ``"BTC"`` means BTC/<quote>."""
    text = text.strip().upper()
    base, sep, q = text.partition("/")
    if not sep:
        base, q = text, quote
    if not _ASSET.match(base) or not _ASSET.match(q):
        raise ValueError(f"{text!r} is not BASE/QUOTE (assets of 2-12 letters or digits)")
    if base == q:
        raise ValueError(f"{text!r}: base and quote are the same asset")
    return base, q


def make_spec(base: str, quote: str, *, ref_price: float | None = None,
              tick: Decimal | None = None, step: Decimal | None = None,
              min_notional: Decimal | None = None) -> SymbolSpec:
    """Derive a symbol's filters from its assets' reference prices (or given values)."""
    bp, qp = asset_params(base), asset_params(quote)
    price = ref_price if ref_price is not None else bp.price / qp.price
    base_usd = price * qp.price
    if tick is None:
        # ~6 significant digits, never coarser than 0.01 (Binance's habit)
        tick = pow10(min(-2, max(-8, math.floor(math.log10(price)) - 4)))
    if step is None:
        # a lot is worth 1-10 cents of USD, capped to whole units for cheap coins
        step = pow10(min(0, max(-8, -math.floor(math.log10(base_usd)) - 1)))
    if min_notional is None:
        min_notional = Decimal(5) if quote in STABLES else pow10(math.ceil(math.log10(5.0 / qp.price)))
    max_qty = pow10(max(0, math.ceil(math.log10(5e8 / base_usd))))  # 10000 BTC (Binance: 9000)
    max_notional = Decimal(9_000_000) * (Decimal(1) if quote in STABLES else
                                         pow10(math.ceil(math.log10(1.0 / qp.price))))
    return SymbolSpec(
        symbol=f"{base}/{quote}",
        id=f"{base}{quote}",
        base=base,
        quote=quote,
        tick=tick,
        step=step,
        min_price=tick,
        max_price=tick * Decimal(1_000_000_000),
        min_qty=step,
        max_qty=max_qty,
        min_notional=min_notional,
        max_notional=max_notional,
        ref_price=price,
        level_notional=max(bp.level_usd, 1_000.0) / qp.price,
        spread_bps=max(bp.spread_bps, qp.spread_bps if quote not in STABLES else 0.0),
    )


def default_balance(asset: str) -> Decimal:
    """Starting balance of an asset when ``--balances`` is not given."""
    if asset in STABLES:
        return DEFAULT_QUOTE_BALANCE
    if asset in DEFAULT_BASE_BALANCES:
        return DEFAULT_BASE_BALANCES[asset]
    return pow10(round(math.log10(50_000.0 / asset_params(asset).price)))


# --- exact numbers on the wire --------------------------------------------------------------

_DECIMAL_RE = re.compile(r"^([0-9]{1,20})(\.[0-9]{1,20})?$")


def parse_decimal(text: str) -> Decimal | None:
    """A non-negative decimal in Binance's accepted form, or None."""
    if not _DECIMAL_RE.match(text):
        return None
    return Decimal(text)


def fmt(value: Decimal) -> str:
    """Binance style: at least 8 decimals, more only when the exact value needs them."""
    if value == 0:
        return "0.00000000"
    exp = value.as_tuple().exponent
    places = max(8, -exp if isinstance(exp, int) else 8)
    return f"{value:.{places}f}"


def fmt8(value: float) -> str:
    return f"{value:.8f}"
