"""What one venue holds and quotes, read through the gateway: shared by the rebalancer and the monitor."""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass, field

from shared.gateway import Gateway
from shared.messages import split_symbol


@dataclass
class VenueView:
    venue: str
    listed: set[str] = field(default_factory=set)  # the configured symbols this venue trades
    total: dict[str, float] = field(default_factory=dict)  # asset -> quantity held (non-zero)
    free: dict[str, float] = field(default_factory=dict)  # asset -> quantity not locked in orders
    quotes: dict[str, tuple[float, float]] = field(default_factory=dict)  # symbol -> (bid, ask)
    min_cost: dict[str, float] = field(default_factory=dict)  # symbol -> the venue's smallest order


async def read_venue(gateway: Gateway, venue: str, symbols: list[str]) -> VenueView:
    """Balances of the assets of ``symbols``, their best quotes and order limits on ``venue``."""
    tracked = {part for s in symbols for part in split_symbol(s)}
    markets = await gateway.call(venue, "load_markets")
    view = VenueView(venue, listed={s for s in symbols if s in markets})
    for symbol in view.listed:
        cost_min = ((markets[symbol].get("limits") or {}).get("cost") or {}).get("min")
        if cost_min:
            view.min_cost[symbol] = float(cost_min)
    balance = await gateway.call(venue, "fetch_balance")
    free = balance.get("free") or {}
    for asset, qty in (balance.get("total") or {}).items():
        if qty and asset in tracked:
            view.total[asset] = float(qty)
            view.free[asset] = float(free.get(asset) or 0.0)
    if view.listed:
        for symbol, t in (await gateway.call(venue, "fetch_tickers", sorted(view.listed))).items():
            if t.get("bid") and t.get("ask"):
                view.quotes[symbol] = (float(t["bid"]), float(t["ask"]))
    return view


def median_mids(quotes: dict[tuple[str, str], tuple[float, float]]) -> dict[str, float]:
    """(venue, "BTC/USDT") -> (bid, ask)  =>  {"BTC": median mid across venues}."""
    mids: dict[str, list[float]] = defaultdict(list)
    for (_venue, symbol), (bid, ask) in quotes.items():
        if bid > 0 and ask > 0:
            mids[split_symbol(symbol)[0]].append((bid + ask) / 2)
    return {asset: statistics.median(values) for asset, values in mids.items()}
