"""The arbitrage worker's metrics (``cse_arb_*``): detection, execution and the balance view."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from shared.metrics import LoopHistogram

# worker
OPPORTUNITIES = Counter("cse_arb_opportunities_total", "Opportunities found",
                        ["symbol", "buy_venue", "sell_venue", "kind"])
EDGE = LoopHistogram("cse_arb_edge_bps", "Net edge of the opportunities found",
                     (1, 2, 5, 10, 20, 50, 100, 200, 500))
DECISION_LATENCY = LoopHistogram(
    "cse_arb_decision_latency_seconds", "Book received by ingest to detection done",
    (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5), scale=1000)  # observed in ms

# execute
EXECUTIONS = Counter("cse_arb_executions_total", "Opportunities handled by outcome", ["outcome"])
LEG_LATENCY = Histogram("cse_arb_leg_latency_seconds", "Order round trip of a leg", ["venue"],
                        buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
REALISED_PNL = Gauge("cse_arb_realised_pnl", "Realised PnL since start (quote currency)",
                     ["symbol", "buy_venue", "sell_venue"])
HEDGES = Counter("cse_arb_hedges_total", "Residual hedges by result", ["result"])
REVALIDATIONS = Counter("cse_arb_revalidations_total",
                        "Opportunities checked against fresh books before execution, by result "
                        "(kept: books fresh enough; refetched: re-sized on fresh books; dropped)",
                        ["result"])
DRIFT = Counter("cse_arb_drift_total", "Inventory left to the rebalancer, by reason (hedge_short, dust)",
                ["reason"])

# balances
DISAGREEMENTS = Counter("cse_arb_balance_disagreements_total",
                        "Assets whose venue balance differed from the workers' view at a read",
                        ["venue"])
READS = Counter("cse_arb_balance_reads_total", "Balance reads by result (applied, busy, failed)",
                ["venue", "result"])
VIEW_AGE = Gauge("cse_arb_balance_view_age_seconds", "Time since the venue's balance was last read",
                 ["venue"])
STREAM_UP = Gauge("cse_arb_balance_stream_up",
                  "1 while the venue's account stream (fills of others' orders) is followed", ["venue"])
STREAM_FILLS = Counter("cse_arb_balance_stream_fills_total",
                       "Fills reported by the account stream, by what the view did with them "
                       "(applied, own, seen, read, unknown)", ["venue", "result"])
