"""portfolio-monitor: valuation, allocation, PnL per exchange, drawdown, correlation."""
