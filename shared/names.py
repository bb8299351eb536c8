"""The deployment guide's service names: Swarm services, worker names in logs, metrics and
health answers, audit-log actors and the default consumer groups."""

MAIN = "cryptospreadedge-main"
REBALANCER = "portfolio-rebalancer"
ARBITRAGE = "arbitrage-worker"
MONITOR = "portfolio-monitor"
