"""Order amounts and prices on a venue's precision, rounded the safe way.

ccxt knows each market's lot step and tick (``market["precision"]``, in the client's
``precisionMode``), but its ``amount_to_precision`` truncates the float it is given: a
quantity computed as ``0.08 - 0.07`` (``0.009999999999999995``) becomes ``0.0099`` and a
whole lot is lost. Here quantities are first taken to the nearest 1e-10 of a step (far
below anything a venue can fill, far above float noise), then truncated; limit prices are
rounded towards the safe side — a buy's limit down (never pay more than the computed
limit), a sell's limit up (never accept less) — after the same forgiveness of float noise,
so a price a hair below a tick is that tick.

Every function takes the ccxt client (markets loaded) and the unified symbol.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

from ccxt.base.decimal_to_precision import DECIMAL_PLACES, TICK_SIZE

_NOISE = 1e-10  # in steps


def _step(client: Any, symbol: str, field: str) -> Decimal | None:
    """The market's step for ``field`` ("amount" or "price") as a Decimal, None if unknown."""
    precision = (client.market(symbol).get("precision") or {}).get(field)
    if precision is None:
        return None
    if client.precisionMode == TICK_SIZE:
        return Decimal(repr(float(precision)))
    if client.precisionMode == DECIMAL_PLACES:
        return Decimal(1).scaleb(-int(precision))
    return None  # significant digits: left to ccxt


def lot_step(client: Any, symbol: str) -> float:
    """The market's lot step (0.0 when the venue does not say)."""
    step = _step(client, symbol, "amount")
    return float(step) if step is not None else 0.0


def amount_floor(client: Any, symbol: str, amount: float) -> float:
    """``amount`` truncated to whole lots (float noise forgiven); 0.0 below one lot."""
    if not amount > 0.0:
        return 0.0
    step = _step(client, symbol, "amount")
    if step is None:
        return float(client.amount_to_precision(symbol, amount))
    lots = math.floor(amount / float(step) * (1.0 + _NOISE))
    return float(step * lots)


def limit_price(client: Any, symbol: str, side: str, price: float) -> float:
    """A limit price on the tick grid: a buy's rounded down, a sell's rounded up."""
    tick = _step(client, symbol, "price")
    if tick is None:
        return float(client.price_to_precision(symbol, price))
    ticks = price / float(tick)
    n = math.floor(ticks + _NOISE * max(1.0, ticks)) if side == "buy" else math.ceil(
        ticks - _NOISE * max(1.0, ticks))
    return float(tick * n)


def min_amount(client: Any, symbol: str, price: float) -> float:
    """The smallest amount the venue accepts at ``price``: its minimum amount and cost."""
    limits = client.market(symbol).get("limits") or {}
    least = float((limits.get("amount") or {}).get("min") or 0.0)
    cost = float((limits.get("cost") or {}).get("min") or 0.0)
    if cost and price > 0.0:
        least = max(least, cost / price)
    return least
