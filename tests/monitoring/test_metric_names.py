"""The metric-name extractor the export check relies on."""

from __future__ import annotations

import pytest

from tests.monitoring import metric_names as mn


@pytest.mark.parametrize(("expr", "names"), [
    ("up", {"up"}),
    ('sum by (job) (rate(portfolio_rebalance_errors_total{job=~"a|b"}[5m])) > 0.1',
     {"portfolio_rebalance_errors_total"}),
    ("histogram_quantile(0.95, sum by (venue, le) (rate(cse_exchange_request_seconds_bucket[5m]))) > 1",
     {"cse_exchange_request_seconds_bucket"}),
    ("sum(rate(x_total[5m])) by (job) / ignoring (op) group_left (venue) y_total offset 1h",
     {"x_total", "y_total"}),
    ('(absent(up{job="a"}) or absent(up{job="b"})) > 0', {"up"}),
    ("1 - node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes > 0.9",
     {"node_memory_MemAvailable_bytes", "node_memory_MemTotal_bytes"}),
    ('time() - cse_worker_heartbeat_timestamp_seconds > 6e1', {"cse_worker_heartbeat_timestamp_seconds"}),
    ('abs(a - b) and on (job, instance) cse_leader{lock="rebalance"} == bool 1', {"a", "b", "cse_leader"}),
    ('label_replace(redis_up, "dependency", "redis", "", "") unless without (x) z', {"redis_up", "z"}),
    ('{__name__="weird:metric", job="j"}', {"weird:metric"}),
    ("max_over_time(m[1h:5m] @ 1700000000) * Inf + NaN", {"m"}),
    ("rate(c_total[$__rate_interval]) * on(instance) group_right h{x=\"$venue\"}", {"c_total", "h"}),
    ("topk(5, sum without (le) (q_count))", {"q_count"}),
    ("0x1F + 1.5e-3 + .5", set()),
])
def test_promql_metric_names(expr: str, names: set[str]) -> None:
    assert mn.promql_metric_names(expr) == names


def test_flux_measurements() -> None:
    query = '''from(bucket: "portfolio")
      |> filter(fn: (r) => r._measurement == "arb_realised_pnl" and r._field == "pnl")
      |> union(tables: [from(bucket: "p") |> filter(fn: (r) => r["_measurement"] == "md_top_of_book")])'''
    assert mn.flux_measurements(query) == {"arb_realised_pnl", "md_top_of_book"}


def test_family_and_external() -> None:
    assert mn.family("cse_arb_leg_latency_seconds_bucket") == "cse_arb_leg_latency_seconds"
    assert mn.family("portfolio_rebalance_errors_total") == "portfolio_rebalance_errors_total"
    assert mn.is_external("up") and mn.is_external("node_cpu_seconds_total") and mn.is_external("redis_up")
    assert not mn.is_external("cse_exchange_up")


def test_references_cover_rules_dashboards_and_grafana_alerts() -> None:
    refs = mn.references()
    # A seed metric from each kind of source.
    assert "portfolio_rebalance_errors_total" in refs.metrics
    sources = refs.metrics["portfolio_rebalance_errors_total"]
    assert any(s.startswith("rules/") for s in sources)
    assert any(s.startswith("portfolio-rebalance.json") for s in sources)
    assert any(s.startswith("grafana/provisioning/alerting/") for s in sources)
    assert "portfolio_symbol_allocation" in refs.metrics  # dashboards only
    assert mn.referenced_measurements() == {"arb_realised_pnl", "portfolio_correlation"}
    names = mn.referenced_metrics()
    assert not {"sum", "rate", "by", "job", "le", "venue", "bool", "on", "inf"} & names
    assert all(name == name.strip() and name for name in names)
