"""The portfolio monitor's metrics: the deployment guide's ``portfolio_*`` valuation
figures and what it sees go by (``cse_monitor_*``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

# worker
TOTAL_VALUE = Gauge("portfolio_total_value", "Value of the whole portfolio in the quote currency")
ALLOCATION = Gauge("portfolio_symbol_allocation", "Share of the portfolio's value per asset", ["symbol"])
EXCHANGE_PNL = Gauge("portfolio_exchange_pnl", "Value now minus the baseline, per exchange (quote)",
                     ["exchange"])
EXCHANGE_VALUE = Gauge("portfolio_exchange_value", "Value held per exchange (quote)", ["exchange"])
PNL_TOTAL = Gauge("portfolio_pnl_total", "Sum of the exchanges' PnL (quote)")
PEAK = Gauge("portfolio_peak_value", "Running peak of the portfolio value (quote)")
DRAWDOWN = Gauge("portfolio_drawdown", "Fraction of value lost from the running peak (0..1)")
MAX_CORRELATION = Gauge("portfolio_max_correlation",
                        "Largest pairwise correlation of hourly returns between held positions")
FEES = Counter("portfolio_fees_paid_total", "Fees paid, converted to the quote currency", ["exchange"])
EXECUTIONS = Counter("cse_monitor_executions_total", "Executions seen", ["source", "status"])
OPPORTUNITIES = Counter("cse_monitor_opportunities_total", "Opportunities seen", ["kind"])
REBALANCES = Counter("cse_monitor_rebalance_plans_total", "Rebalance plans seen", ["status"])
BOOK_AGE = Gauge("cse_monitor_book_age_seconds", "Age of the newest order book seen per venue", ["venue"])
LAST_POLL = Gauge("cse_monitor_last_poll_timestamp_seconds", "When the balances were last valued")
STALE_VENUES = Gauge("cse_monitor_stale_venues", "Venues valued from their last known balances")
