"""The monitor's arithmetic, pure: valuation, PnL against baselines, drawdown, correlation."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Valuation:
    quote: str
    total: float
    by_asset: dict[str, float]  # value per asset, quote currency
    by_venue: dict[str, float]  # value per venue
    allocation: dict[str, float]  # by_asset / total
    prices: dict[str, float]
    missing_prices: list[str] = field(default_factory=list)


def value(holdings: dict[tuple[str, str], float], prices: dict[str, float], quote: str) -> Valuation:
    """Value (venue, asset) -> quantity at ``prices`` (the quote is worth 1); unpriced assets are named."""
    price = {**prices, quote: 1.0}
    by_asset: dict[str, float] = defaultdict(float)
    by_venue: dict[str, float] = defaultdict(float)
    missing: set[str] = set()
    for (venue, asset), qty in holdings.items():
        if asset not in price:
            if qty:
                missing.add(asset)
            continue
        v = qty * price[asset]
        by_asset[asset] += v
        by_venue[venue] += v
    total = sum(by_asset.values())
    allocation = {a: (v / total if total > 0 else 0.0) for a, v in by_asset.items()}
    return Valuation(quote, total, dict(by_asset), dict(by_venue), allocation, dict(price), sorted(missing))


def pnl(by_venue: dict[str, float], baselines: dict[str, float]) -> dict[str, float]:
    """Value now minus the venue's baseline (a venue without a baseline has PnL 0)."""
    return {venue: v - baselines.get(venue, v) for venue, v in by_venue.items()}


def drawdown(total: float, peak: float) -> float:
    """Fraction lost from the running peak (0 at a new high)."""
    if peak <= 0 or total >= peak:
        return 0.0
    return 1.0 - total / peak


def correlation(closes: dict[str, list[float]]) -> tuple[list[str], np.ndarray]:
    """Correlation matrix of log returns of aligned close series (most recent ends aligned)."""
    assets = sorted(a for a, c in closes.items() if len(c) >= 3)
    if len(assets) < 2:
        return assets, np.eye(len(assets))
    length = min(len(closes[a]) for a in assets)
    returns = np.column_stack([np.diff(np.log(np.asarray(closes[a][-length:], dtype=float)))
                               for a in assets])
    std = returns.std(axis=0)
    keep = [i for i, s in enumerate(std) if s > 0 and math.isfinite(s)]
    assets = [assets[i] for i in keep]
    if len(assets) < 2:
        return assets, np.eye(len(assets))
    return assets, np.corrcoef(returns[:, keep], rowvar=False)


def max_pairwise(assets: list[str], matrix: np.ndarray) -> tuple[float, tuple[str, str] | None]:
    """The largest off-diagonal correlation and its pair (0 and None below two assets)."""
    if len(assets) < 2:
        return 0.0, None
    masked = matrix.copy()
    np.fill_diagonal(masked, -np.inf)
    i, j = np.unravel_index(int(np.argmax(masked)), masked.shape)
    return float(masked[i, j]), (assets[min(i, j)], assets[max(i, j)])
