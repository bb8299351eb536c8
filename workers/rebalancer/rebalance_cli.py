"""``cse rebalance --once``: one rebalance cycle now, with the ``CSE_*`` settings, the plan
printed as tables (portfolio, weights, orders)."""

from __future__ import annotations

import sys
import time

from shared import logs
from shared.errors import CseError
from shared.gateway import open_gateway
from shared.messages import RebalancePlan
from shared.settings import load_or_report
from workers.rebalancer.engine import RebalanceEngine
from workers.rebalancer.plan import Plan
from workers.rebalancer.settings import RebalancerSettings


def render_plan(message: RebalancePlan, plan: Plan, quote: str, mode: str) -> str:
    """The cycle's plan as text: a summary line, current and target weights, the orders."""
    lines = [f"portfolio {plan.total_value:,.2f} {quote}; method {message.method}; predicted "
             f"daily volatility {message.predicted_vol or 0.0:.4%}; {mode}",
             f"{'ASSET':<8} {'CURRENT':>9} {'TARGET':>9}"]
    for asset in sorted(set(message.target_weights) | set(message.current_weights)):
        lines.append(f"{asset:<8} {message.current_weights.get(asset, 0.0):>9.2%} "
                     f"{message.target_weights.get(asset, 0.0):>9.2%}")
    lines.append(f"{'VENUE':<10} {'SYMBOL':<10} {'SIDE':<5} {'AMOUNT':>14} {'LIMIT':>12} {'NOTIONAL':>12} "
                 f"{'COST':>8}")
    for o in plan.orders:
        lines.append(f"{o.venue:<10} {o.symbol:<10} {o.side:<5} {o.amount:>14.6f} {o.price or 0.0:>12.6g} "
                     f"{o.notional:>12,.2f} {o.est_cost:>8.2f}")
    lines.append(f"{len(plan.orders)} orders, {plan.skipped} skipped, estimated cost {plan.est_cost:,.2f}")
    return "\n".join(lines)


async def rebalance_once(dry_run: bool) -> int:
    """Exit code: 0 done, 1 the cycle failed, 2 bad settings or no venue."""
    settings = load_or_report(RebalancerSettings, "cse rebalance")
    if settings is None:
        return 2
    logs.configure("warning", "console", stream=sys.stderr)
    rebalance = settings.rebalance.model_copy(update={"dry_run": dry_run or settings.rebalance.dry_run})
    if not settings.venues.venue_specs:
        print("cse rebalance: no venues: set CSE_VENUES (name=URL or name=ccxt-id, ...)", file=sys.stderr)
        return 2
    try:
        async with open_gateway(settings.venues) as gateway:
            engine = RebalanceEngine(rebalance, gateway, settings.venues.symbol_list)
            message, plan = await engine.cycle(f"once-{int(time.time())}")
    except CseError as exc:
        print(f"cse rebalance: {exc}", file=sys.stderr)
        return 1
    print(render_plan(message, plan, engine.quote, "DRY RUN" if rebalance.dry_run else message.status))
    return 0
