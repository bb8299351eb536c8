"""arbitrage-worker: consumer group over md.orderbooks (detection and execution to come)."""
