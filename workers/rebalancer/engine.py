"""One rebalance cycle over the whole multi-venue portfolio.

1. portfolio: balances from every venue through the gateway, valued in the quote currency
   at the median mid across venues;
2. risk model: with ``CSE_REBALANCE_USE_REAL_COV=1`` the covariance of hourly log returns
   from candle history (ccxt ``fetch_ohlcv``), Ledoit–Wolf shrunk and scaled to a daily
   horizon; otherwise the documented fallback, a diagonal with a 4 % daily volatility for
   every asset (equal-risk weights are then equal weights);
3. allocation: risk parity (``rp``) or mean-variance utility (``mv``, expected returns from
   the shrunk mean of history, risk aversion 1);
4. volatility target: with ``CSE_REBALANCE_VOL_TARGET_ENABLED=1`` the risky weights are
   scaled so the predicted daily volatility equals ``CSE_REBALANCE_VOL_TARGET``, never above
   100 % invested; the rest stays in the quote currency;
5. orders: :func:`workers.rebalancer.plan.plan_orders`; with ``CSE_REBALANCE_DRY_RUN=1``
   the plan is published and logged and no exchange is touched.

The seed's metrics are exported here (``portfolio_rebalance_*``).
"""

from __future__ import annotations

import asyncio
import math
import statistics
from dataclasses import dataclass
from typing import Any

import numpy as np
from prometheus_client import Counter, Gauge

from shared import allocation
from shared.errors import CseError
from shared.gateway import Gateway
from shared.logs import get_logger
from shared.messages import PORTFOLIO_REBALANCE, RebalancePlan, now_ms
from shared.settings import RebalanceSettings
from workers.rebalancer.plan import Holding, Plan, plan_orders

log = get_logger("rebalance")

ORDERS_PLACED = Counter("portfolio_rebalance_orders_placed_total", "Rebalance orders placed")
ORDERS_SKIPPED = Counter("portfolio_rebalance_orders_skipped_total",
                         "Rebalance orders skipped (below min notional, over max orders)")
ERRORS = Counter("portfolio_rebalance_errors_total", "Failed rebalance cycles and orders")
COSTS = Counter("portfolio_rebalance_transaction_costs_total",
                "Estimated transaction costs of placed orders (quote currency)")
ACTUAL_VOL = Gauge("portfolio_rebalance_actual_volatility",
                   "Predicted daily volatility of the current portfolio")
TARGET_VOL = Gauge("portfolio_rebalance_target_volatility", "Target daily volatility")
BACKOFF_ACTIVE = Gauge("portfolio_rebalance_backoff_active", "1 while failed cycles back off")

FALLBACK_DAILY_VOL = 0.04
HOURS_PER_DAY = 24


@dataclass
class Snapshot:
    holdings: list[Holding]
    prices: dict[str, float]
    listed: dict[str, set[str]]


class RebalanceEngine:
    def __init__(self, settings: RebalanceSettings, gateway: Gateway, symbols: list[str], *,
                 bus: Any = None, account: str = "main", band: float = 0.01, history: int = 500):
        self.settings = settings
        self.gateway = gateway
        self.symbols = symbols
        self.bus = bus
        self.account = account
        self.band = band
        self.history = history
        self.quote = symbols[0].split("/")[1] if symbols else "USDT"
        self._last_weights: np.ndarray | None = None

    async def snapshot(self) -> Snapshot:
        holdings: list[Holding] = []
        mids: dict[str, list[float]] = {}
        listed: dict[str, set[str]] = {}
        for venue in self.gateway.venues:
            markets = await self.gateway.call(venue, "load_markets")
            listed[venue] = {s for s in self.symbols if s in markets}
            balance = await self.gateway.call(venue, "fetch_balance")
            for asset, qty in (balance.get("total") or {}).items():
                if qty:
                    holdings.append(Holding(venue, asset, float(qty)))
            tickers = await self.gateway.call(venue, "fetch_tickers", sorted(listed[venue]))
            for symbol, t in tickers.items():
                if t.get("bid") and t.get("ask"):
                    mids.setdefault(symbol.split("/")[0], []).append((t["bid"] + t["ask"]) / 2)
        prices = {asset: statistics.median(values) for asset, values in mids.items()}
        tracked = {s.split("/")[0] for s in self.symbols} | {self.quote}
        return Snapshot([h for h in holdings if h.asset in tracked], prices, listed)

    async def covariance(self, assets: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Daily covariance and expected daily returns of ``assets``."""
        n = len(assets)
        if not self.settings.use_real_cov:
            return np.eye(n) * FALLBACK_DAILY_VOL**2, np.zeros(n)
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
        return cov * HOURS_PER_DAY, mu * HOURS_PER_DAY

    async def _venue_listing(self, symbol: str) -> str:
        for venue in self.gateway.venues:
            if symbol in await self.gateway.call(venue, "load_markets"):
                return venue
        raise CseError(f"no configured venue lists {symbol}")

    def targets(self, assets: list[str], cov: np.ndarray, mu: np.ndarray
                ) -> tuple[dict[str, float], float]:
        """Target weights (quote included) and their predicted daily volatility."""
        w0 = self._last_weights if self._last_weights is not None and len(self._last_weights) == len(assets) \
            else None
        if self.settings.method == "rp":
            weights = allocation.risk_parity(cov, w0=w0)
        else:
            weights = allocation.mean_variance(cov, mu, objective="utility", risk_aversion=1.0, w0=w0)
        self._last_weights = weights
        if self.settings.vol_target_enabled:
            weights, _cash, predicted = allocation.vol_target(weights, cov, self.settings.vol_target)
        else:
            predicted = float(math.sqrt(weights @ cov @ weights))
        targets = {a: float(w) for a, w in zip(assets, weights, strict=True)}
        targets[self.quote] = max(0.0, 1.0 - sum(targets.values()))
        return targets, predicted

    async def cycle(self, plan_id: str, fencing_token: int | None = None) -> tuple[RebalancePlan, Plan]:
        s = self.settings
        snap = await self.snapshot()
        assets = sorted(a for a in snap.prices if a != self.quote)
        cov, mu = await self.covariance(assets)
        targets, predicted = self.targets(assets, cov, mu)
        plan = plan_orders(snap.holdings, snap.prices, targets, quote=self.quote, plan_id=plan_id,
                           fee_rate=s.fee_rate, slippage_bps=s.slippage_bps,
                           min_notional=s.min_notional, max_orders=s.max_orders, band=self.band,
                           listed=snap.listed)
        current = np.array([plan.current_weights.get(a, 0.0) for a in assets])
        ACTUAL_VOL.set(float(math.sqrt(current @ cov @ current)))
        TARGET_VOL.set(s.vol_target if s.vol_target_enabled else predicted)
        ORDERS_SKIPPED.inc(plan.skipped)
        status = "planned" if s.dry_run else "executed"
        if not s.dry_run:
            status = await self._execute(plan)
        message = RebalancePlan(
            id=plan_id, account=self.account, method=s.method, dry_run=s.dry_run, status=status,
            target_weights=targets, current_weights=plan.current_weights, orders=plan.orders,
            skipped=plan.skipped, predicted_vol=predicted, fencing_token=fencing_token, ts_ms=now_ms())
        if self.bus is not None:
            await self.bus.send(PORTFOLIO_REBALANCE, message)
        log.info("rebalance_cycle", plan=plan_id, status=status, orders=len(plan.orders),
                 skipped=plan.skipped, value=round(plan.total_value, 2), dry_run=s.dry_run)
        return message, plan

    async def _execute(self, plan: Plan) -> str:
        placed = failed = 0
        for order in plan.orders:  # sells first: they free the quote the buys spend
            try:
                await self.gateway.create_order(order.venue, order.symbol, "market", order.side,
                                                order.amount, client_order_id=order.client_order_id)
            except CseError as exc:
                failed += 1
                ERRORS.inc()
                log.warning("rebalance_order_failed", venue=order.venue, symbol=order.symbol,
                            error=str(exc)[:200])
                continue
            placed += 1
            ORDERS_PLACED.inc()
            COSTS.inc(order.est_cost)
            await asyncio.sleep(0)
        if failed and placed:
            return "partial"
        return "failed" if failed else "executed"
