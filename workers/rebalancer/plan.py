"""From target weights to orders across every venue: pure, deterministic, testable by hand.

One portfolio, many venues. The value of each asset is summed over the venues that hold
it; the difference between the target value and the current one becomes orders:

* a no-trade band: an asset whose weight is within ``band`` of its target is left alone,
  so a tiny drift does not churn fees;
* sells come from the venues that hold the asset (largest holding first), never more than
  is held; buys go to the venues with the most quote available — sell proceeds on a venue
  count for its buys — never more than is available;
* each order's cost is estimated as notional × (fee rate + slippage bps / 10⁴); an order
  below the minimum notional is skipped and counted;
* at most ``max_orders`` orders, the most valuable first (the rest skipped and counted),
  then sells before buys, so quote is freed before it is spent;
* client order ids derive from the plan id and the order's place in the plan, so a
  replayed plan can never place an order twice.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from shared.messages import PlannedOrder


@dataclass(frozen=True)
class Holding:
    venue: str
    asset: str
    quantity: float


@dataclass
class Plan:
    orders: list[PlannedOrder]
    skipped_min_notional: int = 0
    skipped_max_orders: int = 0
    within_band: list[str] = field(default_factory=list)
    total_value: float = 0.0
    current_weights: dict[str, float] = field(default_factory=dict)

    @property
    def skipped(self) -> int:
        return self.skipped_min_notional + self.skipped_max_orders

    @property
    def est_cost(self) -> float:
        return sum(o.est_cost for o in self.orders)


def next_delay(interval: float, failures: int, mult: float, maximum: float, enabled: bool = True) -> float:
    """Seconds until the next cycle: ``interval × mult^failures``, capped at ``maximum``."""
    if not enabled or failures <= 0:
        return interval
    return min(maximum, interval * mult ** failures)


def plan_orders(holdings: list[Holding], prices: dict[str, float], targets: dict[str, float], *,
                quote: str, plan_id: str, fee_rate: float, slippage_bps: float, min_notional: float,
                max_orders: int, band: float = 0.0,
                listed: dict[str, set[str]] | None = None) -> Plan:
    """Orders that move ``holdings`` towards the ``targets`` weights (quote included).

    ``prices`` are in quote per unit (the quote asset itself is 1); ``targets`` may omit
    assets (weight 0) and give the quote currency the weight left uninvested. ``listed``
    maps venue -> symbols it trades (None: every venue trades everything).
    """
    price = {**prices, quote: 1.0}
    by_asset: dict[str, dict[str, float]] = defaultdict(dict)
    for h in holdings:
        if h.quantity > 0:
            by_asset[h.asset][h.venue] = by_asset[h.asset].get(h.venue, 0.0) + h.quantity
    missing = sorted(a for a in by_asset if a not in price)
    if missing:
        raise ValueError(f"no price for {', '.join(missing)}")
    total = sum(q * price[a] for a, venues in by_asset.items() for q in venues.values())
    plan = Plan([], total_value=total)
    if total <= 0:
        return plan
    assets = sorted((set(by_asset) | set(targets)) - {quote})  # the quote is what is left
    plan.current_weights = {a: sum(by_asset.get(a, {}).values()) * price.get(a, 0.0) / total
                            for a in sorted(set(assets) | {quote})}
    cost_rate = fee_rate + slippage_bps / 1e4
    quote_free: dict[str, float] = dict(by_asset.get(quote, {}))
    drafts: list[tuple[str, str, float]] = []  # (venue, asset, signed notional)

    def trades(venue: str, asset: str) -> bool:
        return listed is None or f"{asset}/{quote}" in listed.get(venue, set())

    for asset in assets:
        if asset not in price:
            raise ValueError(f"no price for {asset}")
        delta = (targets.get(asset, 0.0) - plan.current_weights.get(asset, 0.0)) * total
        if abs(delta) <= band * total:
            if delta:
                plan.within_band.append(asset)
            continue
        if delta < 0:  # sell, largest holding first
            need = -delta
            for venue, qty in sorted(by_asset[asset].items(), key=lambda kv: -kv[1]):
                if need <= 0 or not trades(venue, asset):
                    continue
                notional = min(need, qty * price[asset])
                drafts.append((venue, asset, -notional))
                quote_free[venue] = quote_free.get(venue, 0.0) + notional * (1 - cost_rate)
                need -= notional
    for asset in assets:
        delta = (targets.get(asset, 0.0) - plan.current_weights.get(asset, 0.0)) * total
        if delta <= band * total:
            continue
        need = delta
        for venue in sorted(quote_free, key=lambda v: -quote_free[v]):
            if need <= 0 or not trades(venue, asset):
                continue
            notional = min(need, quote_free[venue] / (1 + cost_rate))  # the cost is paid too
            if notional <= 0:
                continue
            drafts.append((venue, asset, notional))
            quote_free[venue] -= notional * (1 + cost_rate)
            need -= notional

    viable = []
    for venue, asset, signed in drafts:
        if abs(signed) < min_notional:
            plan.skipped_min_notional += 1
        else:
            viable.append((venue, asset, signed))
    viable.sort(key=lambda d: -abs(d[2]))  # the most valuable first
    plan.skipped_max_orders = max(0, len(viable) - max_orders)
    chosen = viable[:max_orders]
    chosen.sort(key=lambda d: (d[2] > 0, -abs(d[2])))  # then sells before buys
    for index, (venue, asset, signed) in enumerate(chosen):
        side = "sell" if signed < 0 else "buy"
        notional = abs(signed)
        plan.orders.append(PlannedOrder(
            venue=venue, symbol=f"{asset}/{quote}", side=side, amount=notional / price[asset],
            notional=notional, est_cost=notional * cost_rate,
            client_order_id=f"rb{plan_id[:24]}{index:02d}{side[0]}"))
    return plan
