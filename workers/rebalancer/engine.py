"""One rebalance cycle over the whole multi-venue portfolio.

1. portfolio: total and free balances from every venue through the gateway, valued in the
   quote currency at the median mid across venues (each venue's own bid/ask is kept for
   its limit prices, its market limits for the minimum order size);
2. risk model: with ``CSE_REBALANCE_USE_REAL_COV=1`` the covariance of hourly log returns
   from candle history (ccxt ``fetch_ohlcv``), Ledoit–Wolf shrunk and scaled to a daily
   horizon; otherwise the documented fallback, a diagonal with a 4 % daily volatility for
   every asset (equal-risk weights are then equal weights);
3. allocation: risk parity (``rp``, optional ``CSE_REBALANCE_RISK_BUDGETS``) or
   mean-variance (``mv``: ``CSE_REBALANCE_MV_OBJECTIVE``, expected returns from
   ``CSE_REBALANCE_EXPECTED_RETURNS`` or the history mean shrunk half-way to zero, risk
   aversion ``CSE_REBALANCE_RISK_AVERSION``, weights capped at ``CSE_REBALANCE_MAX_WEIGHT``),
   warm-started from the previous cycle's weights;
4. volatility target: with ``CSE_REBALANCE_VOL_TARGET_ENABLED=1`` the risky weights are
   scaled so the predicted daily volatility equals ``CSE_REBALANCE_VOL_TARGET``, never above
   100 % invested; the rest stays in the quote currency;
5. orders: :func:`workers.rebalancer.plan.plan_orders` (IOC limit orders, balances never
   exceeded); with ``CSE_REBALANCE_DRY_RUN=1`` the plan is published and logged and no
   exchange is touched. Otherwise each order is claimed in Redis under its deterministic
   client id, placed at most once, and reported to ``orders.executions``;
6. the valuation goes to ``portfolio.snapshots``, the plan and its outcome to
   ``portfolio.rebalance``, the cycle's figures to the time-series store.

The seed's metrics are exported here (``portfolio_rebalance_*``).
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shared import allocation, names
from shared.audit import audit
from shared.coordination import Claims
from shared.errors import CseError, ExchangeRejected
from shared.gateway import Gateway
from shared.halt import Halt
from shared.logs import get_logger
from shared.messages import (
    ORDERS_EXECUTIONS,
    PORTFOLIO_REBALANCE,
    PlannedOrder,
    RebalancePlan,
    now_ms,
    split_symbol,
)
from shared.orders import execution_report, order_status, planned_report
from shared.portfolio import median_mids, read_venue
from shared.precision import amount_floor, limit_price
from shared.rediskeys import DEFAULT_PREFIX
from workers.rebalancer.metrics import (
    ACTUAL_VOL,
    COSTS,
    ERRORS,
    ORDERS_PLACED,
    ORDERS_SKIPPED,
    TARGET_VOL,
)
from workers.rebalancer.plan import Holding, Plan, below_minimum, plan_orders
from workers.rebalancer.settings import RebalanceSettings

log = get_logger("rebalance")

FALLBACK_DAILY_VOL = 0.04
HOURS_PER_DAY = 24
DAYS_PER_YEAR = 365


@dataclass
class Snapshot:
    holdings: list[Holding]
    prices: dict[str, float]
    listed: dict[str, set[str]]
    quotes: dict[tuple[str, str], tuple[float, float]] = field(default_factory=dict)
    min_cost: dict[tuple[str, str], float] = field(default_factory=dict)


class RebalanceEngine:
    def __init__(self, settings: RebalanceSettings, gateway: Gateway, symbols: list[str], *,
                 bus: Any = None, redis: Any = None, tsdb: Any = None, account: str = "main",
                 history: int = 500, prefix: str = DEFAULT_PREFIX, halt: Halt | None = None):
        self.settings = settings
        self.gateway = gateway
        self.symbols = symbols
        self.bus = bus
        self.claims = Claims(redis, prefix=prefix) if redis is not None else None
        self.tsdb = tsdb
        self.account = account
        self.halt = halt
        self.history = history
        self.quote = split_symbol(symbols[0])[1] if symbols else "USDT"
        self._last_weights: tuple[list[str], np.ndarray] | None = None

    async def snapshot(self) -> Snapshot:
        snap = Snapshot([], {}, {})
        for venue in self.gateway.venues:
            view = await read_venue(self.gateway, venue, self.symbols)
            snap.listed[venue] = view.listed
            snap.min_cost.update({(venue, s): c for s, c in view.min_cost.items()})
            snap.quotes.update({(venue, s): q for s, q in view.quotes.items()})
            snap.holdings += [Holding(venue, a, q, view.free.get(a, 0.0)) for a, q in view.total.items()]
        snap.prices = median_mids(snap.quotes)
        return snap

    async def covariance(self, assets: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Daily covariance and expected daily returns of ``assets``."""
        n = len(assets)
        if not self.settings.use_real_cov:
            return np.eye(n) * FALLBACK_DAILY_VOL**2, self._expected(assets, np.zeros(n))
        series = []
        for asset in assets:
            symbol = f"{asset}/{self.quote}"
            venue = await self._venue_listing(symbol)
            candles = await self.gateway.call(venue, "fetch_ohlcv", symbol, "1h", None, self.history)
            closes = np.array([c[4] for c in candles], dtype=float)
            series.append(np.diff(np.log(closes)))
        length = min(len(s) for s in series)
        returns = np.column_stack([s[-length:] for s in series])
        cov, _shrinkage = allocation.ledoit_wolf(returns)
        mu = returns.mean(axis=0) * 0.5  # shrunk half-way to zero: sample means are noisy
        return cov * HOURS_PER_DAY, self._expected(assets, mu * HOURS_PER_DAY)

    def _expected(self, assets: list[str], history: np.ndarray) -> np.ndarray:
        """Daily expected returns: configured (annual) ones where given, else ``history``."""
        configured = self.settings.expected_returns_map
        return np.array([configured[a] / DAYS_PER_YEAR if a in configured else float(h)
                         for a, h in zip(assets, history, strict=True)])

    async def _venue_listing(self, symbol: str) -> str:
        for venue in self.gateway.venues:
            if symbol in await self.gateway.call(venue, "load_markets"):
                return venue
        raise CseError(f"no configured venue lists {symbol}")

    def targets(self, assets: list[str], cov: np.ndarray, mu: np.ndarray
                ) -> tuple[dict[str, float], float]:
        """Target weights (quote included) and their predicted daily volatility."""
        s = self.settings
        last = self._last_weights
        w0 = last[1] if last is not None and last[0] == assets else None
        if s.method == "rp":
            budgets = s.risk_budgets_map
            b = np.array([budgets.get(a, 1.0) for a in assets]) if budgets else None
            weights = allocation.risk_parity(cov, b, w0=w0)
        else:
            extra: dict[str, Any] = {}
            if s.max_weight < 1.0:
                if s.max_weight * len(assets) < 1.0:
                    raise CseError(f"CSE_REBALANCE_MAX_WEIGHT={s.max_weight:g} cannot hold a fully invested "
                                   f"portfolio of {len(assets)} assets (needs >= {1 / len(assets):.4g})")
                extra["upper"] = np.full(len(assets), s.max_weight)
            weights = allocation.mean_variance(cov, mu, objective=s.mv_objective,
                                               risk_aversion=s.risk_aversion, w0=w0, **extra)
        self._last_weights = (list(assets), weights)
        if s.vol_target_enabled:
            weights, _cash, predicted = allocation.vol_target(weights, cov, s.vol_target)
        else:
            predicted = float(math.sqrt(weights @ cov @ weights))
        targets = {a: float(w) for a, w in zip(assets, weights, strict=True)}
        targets[self.quote] = max(0.0, 1.0 - sum(targets.values()))
        return targets, predicted

    async def cycle(self, plan_id: str, fencing_token: int | None = None, *,
                    preview: bool = False) -> tuple[RebalancePlan, Plan]:
        """One cycle; ``preview`` plans only (whatever ``DRY_RUN`` says), moving no metric."""
        s = self.settings
        if preview:
            s = s.model_copy(update={"dry_run": True})
        snap = await self.snapshot()
        assets = sorted(a for a in snap.prices if a != self.quote)
        if not assets:
            raise CseError(f"no prices for any of {', '.join(self.symbols)} on the configured venues")
        cov, mu = await self.covariance(assets)
        targets, predicted = self.targets(assets, cov, mu)
        plan = plan_orders(snap.holdings, snap.prices, targets, quote=self.quote, plan_id=plan_id,
                           fee_rate=s.fee_rate, slippage_bps=s.slippage_bps,
                           min_notional=s.min_notional, max_orders=s.max_orders, band=s.band,
                           listed=snap.listed, quotes=snap.quotes, venue_min_notional=snap.min_cost)
        current = np.array([plan.current_weights.get(a, 0.0) for a in assets])
        actual = float(math.sqrt(current @ cov @ current))
        status = "planned"
        if not preview:
            ACTUAL_VOL.set(actual)
            TARGET_VOL.set(s.vol_target if s.vol_target_enabled else predicted)
            ORDERS_SKIPPED.inc(plan.skipped)
            if s.dry_run:
                await self._report_planned(plan_id, plan.orders)
            else:
                status = await self._execute(plan_id, plan, snap)
        message = RebalancePlan(
            id=plan_id, account=self.account, method=s.method, dry_run=s.dry_run, status=status,
            target_weights=targets, current_weights=plan.current_weights, orders=plan.orders,
            skipped=plan.skipped, predicted_vol=predicted, fencing_token=fencing_token,
            total_value=plan.total_value, ts_ms=now_ms())
        if preview:
            return message, plan
        if self.bus is not None:
            await self.bus.send(PORTFOLIO_REBALANCE, message)
        self._write_series(message, plan, actual)
        log.info("rebalance_cycle", plan=plan_id, status=status, orders=len(plan.orders),
                 skipped=plan.skipped, value=round(plan.total_value, 2), dry_run=s.dry_run,
                 predicted_vol=round(predicted, 6), actual_vol=round(actual, 6))
        return message, plan

    def _write_series(self, message: RebalancePlan, plan: Plan, actual: float) -> None:
        if self.tsdb is None:
            return
        tags = {"account": self.account, "method": message.method}
        self.tsdb.write("rebalance_cycle", {**tags, "status": message.status}, {
            "orders": len(plan.orders), "skipped": plan.skipped, "est_cost": plan.est_cost,
            "total_value": plan.total_value, "predicted_vol": message.predicted_vol or 0.0,
            "actual_vol": actual, "dry_run": int(message.dry_run)})
        for asset in sorted(set(message.target_weights) | set(message.current_weights)):
            self.tsdb.write("rebalance_weight", {**tags, "asset": asset}, {
                "target": message.target_weights.get(asset, 0.0),
                "current": message.current_weights.get(asset, 0.0)})

    async def _report(self, plan_id: str, order: PlannedOrder, result: dict[str, Any] | None,
                      amount: float, error: CseError | None = None) -> None:
        """One order's outcome to ``orders.executions`` (``result``: the venue's order)."""
        if self.bus is not None:
            await self.bus.send(ORDERS_EXECUTIONS, execution_report(
                result, source="rebalancer", parent_id=plan_id, venue=order.venue, symbol=order.symbol,
                side=order.side, client_order_id=order.client_order_id, amount=amount,
                refused=isinstance(error, ExchangeRejected), error=str(error)[:300] if error else None))

    async def _report_planned(self, plan_id: str, orders: list[PlannedOrder]) -> None:
        if self.bus is not None:
            for o in orders:
                await self.bus.send(ORDERS_EXECUTIONS, planned_report(
                    source="rebalancer", parent_id=plan_id, venue=o.venue, symbol=o.symbol,
                    side=o.side, client_order_id=o.client_order_id, amount=o.amount, price=o.price))

    async def _free_quote(self, venue: str) -> float:
        balance = await self.gateway.call(venue, "fetch_balance")
        return float((balance.get("free") or {}).get(self.quote) or 0.0)

    async def _execute(self, plan_id: str, plan: Plan, snap: Snapshot) -> str:
        """Sells, then buys; each an IOC limit order, claimed, sized to what is free now."""
        s = self.settings
        placed = failed = 0
        cash: dict[str, float] = {}
        for order in plan.orders:
            if self.halt is not None and (await self.halt.state())["halted"]:
                log.warning("rebalance_stopped_halted", plan=plan_id, left=len(plan.orders) - placed - failed)
                return "partial" if placed else "skipped"
            try:
                amount = await self._sized(order, cash, snap)
                if amount is None:
                    ORDERS_SKIPPED.inc()
                    continue
                result = await self._place(plan_id, order, amount)
            except CseError as exc:
                failed += 1
                ERRORS.inc()
                log.warning("rebalance_order_failed", venue=order.venue, symbol=order.symbol,
                            side=order.side, client_order_id=order.client_order_id, error=str(exc)[:200])
                audit("order", actor=names.REBALANCER, outcome="failed", plan=plan_id,
                      venue=order.venue, symbol=order.symbol, side=order.side,
                      client_order_id=order.client_order_id, error=str(exc)[:200])
                await self._report(plan_id, order, None, order.amount, exc)
                continue
            if result is None:
                continue  # already placed under this id: reported by whoever placed it
            placed += 1
            ORDERS_PLACED.inc()
            filled = float(result.get("filled") or 0.0)
            if order.side == "buy":
                cash[order.venue] -= filled * float(result.get("average") or order.price or 0.0) \
                    * (1 + s.fee_rate)
            COSTS.inc(order.est_cost * min(1.0, filled / order.amount) if order.amount else 0.0)
            await asyncio.sleep(0)
        if failed and placed:
            return "partial"
        return "failed" if failed else "executed"

    async def _sized(self, order: PlannedOrder, cash: dict[str, float], snap: Snapshot) -> float | None:
        """The amount to send, at the venue's precision and within its free quote; None: skip."""
        s = self.settings
        client = self.gateway.client(order.venue)
        amount = order.amount
        if order.side == "buy":
            if order.venue not in cash:  # after every sell (they come first)
                cash[order.venue] = await self._free_quote(order.venue)
            assert order.price is not None
            amount = min(amount, cash[order.venue] / (order.price * (1 + s.fee_rate)))
        amount = amount_floor(client, order.symbol, amount)  # whole lots; 0.0 below one
        mid = snap.prices.get(split_symbol(order.symbol)[0], 0.0)
        if below_minimum(amount, mid, order.price or mid, s.min_notional,
                         snap.min_cost.get((order.venue, order.symbol), 0.0)):
            log.info("rebalance_order_skipped", venue=order.venue, symbol=order.symbol, side=order.side,
                     amount=amount, reason="below minimum notional after sizing to free balance")
            return None
        return amount

    async def _place(self, plan_id: str, order: PlannedOrder, amount: float) -> dict[str, Any] | None:
        """Claim the client id, then place the order at most once; None if someone else has."""
        if self.claims is not None and not await self.claims.claim(f"order:{order.client_order_id}"):
            log.warning("rebalance_order_already_claimed", client_order_id=order.client_order_id)
            return None
        client = self.gateway.client(order.venue)
        # on the tick, towards the safe side: a buy never pays above, a sell never takes below, the limit
        price = limit_price(client, order.symbol, order.side, order.price) if order.price else None
        result = await self.gateway.create_order(
            order.venue, order.symbol, "limit" if price else "market", order.side, amount, price,
            client_order_id=order.client_order_id, params={"timeInForce": "IOC"} if price else None)
        await self._report(plan_id, order, result, amount)
        audit("order", actor=names.REBALANCER, outcome=order_status(result, amount, refused=False),
              plan=plan_id, venue=order.venue, symbol=order.symbol, side=order.side, amount=amount,
              price=price, filled=float(result.get("filled") or 0.0),
              client_order_id=order.client_order_id)
        return result
