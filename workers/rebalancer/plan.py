"""From target weights to orders across every venue: pure, deterministic, testable by hand.

One portfolio, many venues. The value of each asset is summed over the venues that hold
it; the difference between the target value and the current one becomes orders:

* a no-trade band: an asset whose weight is within ``band`` of its target is left alone,
  so a tiny drift does not churn fees;
* every order is an immediate-or-cancel limit order: a buy at the venue's ask, a sell at
  its bid, widened by the slippage allowance, so slippage is bounded by construction;
* balances are never exceeded: sells come from the venues that hold the asset (largest
  free quantity first), never more than is free; buys go to the venues with the most free
  quote — sell proceeds on a venue count for its buys, at the sell's limit price net of the
  fee — and a buy never spends more than is free at its limit price plus the fee;
* each order's cost is estimated as notional × (fee rate + slippage bps / 10⁴); an order
  below the minimum notional (ours or the venue's market limit) is skipped and counted;
* at most ``max_orders`` orders, the most valuable first (the rest skipped and counted),
  then sells before buys, so quote is freed before it is spent;
* client order ids derive from the plan id and the order's place in the plan, so a
  replayed plan can never place an order twice.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from shared.errors import PlanError
from shared.messages import PlannedOrder


@dataclass(frozen=True)
class Holding:
    venue: str
    asset: str
    quantity: float  # total: what the portfolio is worth
    free: float | None = None  # what can be traded now (None: all of it)

    @property
    def available(self) -> float:
        return self.quantity if self.free is None else max(0.0, min(self.free, self.quantity))


@dataclass
class Plan:
    orders: list[PlannedOrder]
    skipped_min_notional: int = 0
    skipped_max_orders: int = 0
    skipped_unfunded: int = 0  # buys whose funding sell did not make the cut
    within_band: list[str] = field(default_factory=list)
    total_value: float = 0.0
    current_weights: dict[str, float] = field(default_factory=dict)

    @property
    def skipped(self) -> int:
        return self.skipped_min_notional + self.skipped_max_orders + self.skipped_unfunded

    @property
    def est_cost(self) -> float:
        return sum(o.est_cost for o in self.orders)


def below_minimum(amount: float, mid: float, limit: float, min_notional: float,
                  venue_floor: float = 0.0) -> bool:
    """Under our minimum notional (at the mid), or under the venue's minimum cost (at the limit)."""
    return amount <= 0 or amount * mid < min_notional or amount * limit < max(min_notional, venue_floor)


_Draft = tuple[str, str, float, float]  # (venue, asset, signed amount: < 0 sells, limit price)


@dataclass(frozen=True)
class _Market:
    """Where and at what price an ``asset/quote`` order may go: listings, limits, minimums, fee."""

    quote: str
    price: dict[str, float]
    fee_rate: float
    slip: float
    min_notional: float
    listed: dict[str, set[str]] | None
    quotes: dict[tuple[str, str], tuple[float, float]] | None
    venue_min_notional: dict[tuple[str, str], float] | None

    def trades(self, venue: str, asset: str) -> bool:
        return self.listed is None or f"{asset}/{self.quote}" in self.listed.get(venue, set())

    def limit(self, venue: str, asset: str, side: str) -> float:
        """The IOC limit: the venue's ask (buy) or bid (sell), widened by the slippage allowance."""
        price = self.price[asset]
        bid, ask = (self.quotes or {}).get((venue, f"{asset}/{self.quote}"), (price, price))
        return ask * (1 + self.slip) if side == "buy" else bid * (1 - self.slip)

    def too_small(self, venue: str, asset: str, amount: float, px: float) -> bool:
        venue_floor = (self.venue_min_notional or {}).get((venue, f"{asset}/{self.quote}"), 0.0)
        return below_minimum(amount, self.price[asset], px, self.min_notional, venue_floor)


def plan_orders(holdings: list[Holding], prices: dict[str, float], targets: dict[str, float], *,
                quote: str, plan_id: str, fee_rate: float, slippage_bps: float, min_notional: float,
                max_orders: int, band: float = 0.0,
                listed: dict[str, set[str]] | None = None,
                quotes: dict[tuple[str, str], tuple[float, float]] | None = None,
                venue_min_notional: dict[tuple[str, str], float] | None = None) -> Plan:
    """Orders that move ``holdings`` towards the ``targets`` weights (quote included).

    ``prices`` are in quote per unit (the quote asset itself is 1); ``targets`` may omit
    assets (weight 0) and give the quote currency the weight left uninvested. ``listed``
    maps venue -> symbols it trades (None: every venue trades everything). ``quotes`` maps
    (venue, symbol) -> (bid, ask) for the limit prices (missing: the price itself);
    ``venue_min_notional`` (venue, symbol) -> the venue's smallest order cost.
    """
    price = {**prices, quote: 1.0}
    total_of, free_of = _positions(holdings)
    missing = sorted(a for a in total_of if a not in price)
    if missing:
        raise PlanError(f"no price for {', '.join(missing)}")
    total = sum(q * price[a] for a, venues in total_of.items() for q in venues.values())
    plan = Plan([], total_value=total)
    if total <= 0:
        return plan
    assets = sorted((set(total_of) | set(targets)) - {quote})  # the quote is what is left
    plan.current_weights = {a: sum(total_of.get(a, {}).values()) * price.get(a, 0.0) / total
                            for a in sorted(set(assets) | {quote})}
    slip = slippage_bps / 1e4
    market = _Market(quote, price, fee_rate, slip, min_notional, listed, quotes, venue_min_notional)
    quote_free: dict[str, float] = dict(free_of.get(quote, {}))
    cash = dict(quote_free)  # before any sell: to re-check funding of what is finally chosen
    drafts: list[_Draft] = []

    def delta_of(asset: str) -> float:
        return (targets.get(asset, 0.0) - plan.current_weights.get(asset, 0.0)) * total

    for asset in assets:
        if asset not in price:
            raise PlanError(f"no price for {asset}")
        delta = delta_of(asset)
        if abs(delta) <= band * total:
            if delta:
                plan.within_band.append(asset)
            continue
        if delta < 0:
            drafts += _draft_sells(market, asset, -delta / price[asset], free_of[asset], quote_free)
    for asset in assets:
        delta = delta_of(asset)
        if delta <= band * total:
            continue
        drafts += _draft_buys(market, asset, delta / price[asset], quote_free)

    viable, plan.skipped_min_notional = _above_minimum(market, drafts)
    viable.sort(key=lambda d: (-abs(d[2]) * price[d[1]], d[0], d[1]))  # the most valuable first
    plan.skipped_max_orders = max(0, len(viable) - max_orders)
    chosen = viable[:max_orders]
    chosen.sort(key=lambda d: (d[2] > 0, -abs(d[2]) * price[d[1]], d[0], d[1]))  # sells first
    funded, plan.skipped_unfunded = _funded(market, chosen, cash)
    plan.orders.extend(_planned_orders(market, funded, plan_id, fee_rate + slip))
    return plan


def _positions(holdings: list[Holding]) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    """Quantity held and quantity free, per asset and venue (holdings of nothing ignored)."""
    total_of: dict[str, dict[str, float]] = defaultdict(dict)
    free_of: dict[str, dict[str, float]] = defaultdict(dict)
    for h in holdings:
        if h.quantity > 0:
            total_of[h.asset][h.venue] = total_of[h.asset].get(h.venue, 0.0) + h.quantity
            free_of[h.asset][h.venue] = free_of[h.asset].get(h.venue, 0.0) + h.available
    return total_of, free_of


def _draft_sells(market: _Market, asset: str, need: float, free: dict[str, float],
                 quote_free: dict[str, float]) -> list[_Draft]:
    """Sell ``need`` units of ``asset``, largest free holding first, never more than is free.

    Each sell's proceeds, at its limit net of the fee, are added to its venue's ``quote_free``.
    """
    drafts = []
    for venue, qty in sorted(free.items(), key=lambda kv: (-kv[1], kv[0])):
        if need <= 0 or qty <= 0 or not market.trades(venue, asset):
            continue
        amount = min(need, qty)
        px = market.limit(venue, asset, "sell")
        drafts.append((venue, asset, -amount, px))
        quote_free[venue] = quote_free.get(venue, 0.0) + amount * px * (1 - market.fee_rate)
        need -= amount
    return drafts


def _draft_buys(market: _Market, asset: str, need: float, quote_free: dict[str, float]) -> list[_Draft]:
    """Buy ``need`` units of ``asset`` on the venues with the most free quote first.

    A buy never spends more than its venue's ``quote_free`` (at the limit, fee included),
    which it draws down.
    """
    drafts = []
    for venue in sorted(quote_free, key=lambda v: (-quote_free[v], v)):
        if need <= 0 or not market.trades(venue, asset):
            continue
        px = market.limit(venue, asset, "buy")
        amount = min(need, quote_free[venue] / (px * (1 + market.fee_rate)))  # the fee is paid too
        if amount <= 0:
            continue
        drafts.append((venue, asset, amount, px))
        quote_free[venue] -= amount * px * (1 + market.fee_rate)
        need -= amount
    return drafts


def _above_minimum(market: _Market, drafts: list[_Draft]) -> tuple[list[_Draft], int]:
    """The drafts at or above both minimum notionals, and how many were below."""
    viable = []
    skipped = 0
    for venue, asset, signed, px in drafts:
        if market.too_small(venue, asset, abs(signed), px):
            skipped += 1
        else:
            viable.append((venue, asset, signed, px))
    return viable, skipped


def _funded(market: _Market, chosen: list[_Draft], cash: dict[str, float]) -> tuple[list[_Draft], int]:
    """The chosen orders (sells first) with each buy cut to the quote actually there for it.

    ``cash`` is the free quote before any sell; only the chosen sells add to it, so a sell
    cut by ``max_orders`` no longer funds its buys. Returns the orders kept and how many buys
    were dropped as unfunded (under the minimum once cut).
    """
    fee_rate = market.fee_rate
    funded = []
    unfunded = 0
    for venue, asset, signed, px in chosen:
        if signed < 0:
            cash[venue] = cash.get(venue, 0.0) + -signed * px * (1 - fee_rate)
        else:
            signed = min(signed, cash.get(venue, 0.0) / (px * (1 + fee_rate)))
            if market.too_small(venue, asset, signed, px):
                unfunded += 1
                continue
            cash[venue] -= signed * px * (1 + fee_rate)
        funded.append((venue, asset, signed, px))
    return funded, unfunded


def _planned_orders(market: _Market, funded: list[_Draft], plan_id: str,
                    cost_rate: float) -> list[PlannedOrder]:
    """The orders in plan order, client order ids derived from the plan id and the place in it."""
    orders = []
    for index, (venue, asset, signed, px) in enumerate(funded):
        side = "sell" if signed < 0 else "buy"
        amount = abs(signed)
        notional = amount * market.price[asset]
        orders.append(PlannedOrder(
            venue=venue, symbol=f"{asset}/{market.quote}", side=side, amount=amount, price=px,
            notional=notional, est_cost=notional * cost_rate,
            client_order_id=f"rb{plan_id[:24]}{index:02d}{side[0]}"))
    return orders
