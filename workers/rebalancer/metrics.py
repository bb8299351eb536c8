"""The rebalancer's metrics: the deployment guide's ``portfolio_rebalance_*``."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

# engine
ORDERS_PLACED = Counter("portfolio_rebalance_orders_placed_total", "Rebalance orders placed")
ORDERS_SKIPPED = Counter("portfolio_rebalance_orders_skipped_total",
                         "Rebalance orders skipped (below min notional, over max orders)")
ERRORS = Counter("portfolio_rebalance_errors_total", "Failed rebalance cycles and orders")
COSTS = Counter("portfolio_rebalance_transaction_costs_total",
                "Estimated transaction costs of placed orders (quote currency)")
ACTUAL_VOL = Gauge("portfolio_rebalance_actual_volatility",
                   "Daily volatility of the current portfolio under the cycle's covariance")
TARGET_VOL = Gauge("portfolio_rebalance_target_volatility", "Target daily volatility")
BACKOFF_ACTIVE = Gauge("portfolio_rebalance_backoff_active", "1 while failed cycles back off")
