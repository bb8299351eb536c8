"""Prometheus rules, scrape config and Grafana provisioning: promtool checks and unit tests,
dashboard and alerting structure, and the Grafana mirror of every Prometheus alert."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.deploy.conftest import require_tool
from tests.monitoring import metric_names
from tooling import grafana_alerts, yamlio

ROOT = metric_names.MONITORING_DIR
RULE_FILES = sorted((ROOT / "rules").glob("*.yml"))
PROMTOOL_TESTS = sorted((ROOT / "tests").glob("*_test.yml"))
DASHBOARDS = sorted((ROOT / "grafana" / "dashboards").glob("*.json"))
DATASOURCES = ROOT / "grafana" / "provisioning" / "datasources" / "datasources.yml"
PROVIDER = ROOT / "grafana" / "provisioning" / "dashboards" / "dashboards.yml"
SCRAPE_CONFIG = ROOT / "prometheus-portfolio.yml"

# The seed's alerts (004_3142bf0ad877614b.txt) and their thresholds.
SEED_THRESHOLDS = {
    "RebalanceErrorRateHigh": (">", 0.1),
    "RebalanceOrdersSkippedHigh": (">", 0.5),
    "RebalanceBackoffFrequent": (">", 0.1),
    "RebalanceTransactionCostsHigh": (">", 100),
    "RebalanceVolatilityTargetMissed": (">", 0.005),
    "PortfolioLossHigh": ("<", -1000),
    "PositionCorrelationHigh": (">", 0.8),
    "PortfolioDrawdownHigh": (">", 0.1),
}
# The operations guide's alerts, by the alert that covers each.
OPERATIONS_GUIDE = {
    "service down": "ServiceDown",
    "Redis unreachable": "RedisUnreachable",
    "Kafka unreachable": "KafkaUnreachable",
    "InfluxDB unreachable": "InfluxDBUnreachable",
    "exchange connectivity lost": "ExchangeConnectivityLost",
    "high CPU": "ProcessCpuHigh",
    "high RAM": "ProcessMemoryHigh",
    "high latency": "ExchangeLatencyHigh",
    "abnormal error rate": "ExchangeErrorRatioHigh",
}
SEVERITIES = {"critical", "warning", "info"}


@pytest.fixture(scope="module")
def promtool() -> str:
    return require_tool("promtool", "Debian package prometheus")


def run(*cmd: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def alerts() -> dict[str, dict]:
    found: dict[str, dict] = {}
    for _group, _interval, rule in grafana_alerts.prometheus_alerts():
        assert rule["alert"] not in found, f"duplicate alert {rule['alert']}"
        found[rule["alert"]] = rule
    return found


# --- promtool ---------------------------------------------------------------------------

def test_scrape_config_and_its_rule_files_pass_promtool(promtool: str, tmp_path: Path) -> None:
    # rule_files are resolved relative to the config file, not to the working directory.
    done = subprocess.run([promtool, "check", "config", str(SCRAPE_CONFIG)], capture_output=True,
                          text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{len(RULE_FILES)} rule files found" in done.stdout


def test_rule_files_pass_promtool_check(promtool: str) -> None:
    done = run(promtool, "check", "rules", *RULE_FILES)
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_unit_tests_pass(promtool: str) -> None:
    done = run(promtool, "test", "rules", *PROMTOOL_TESTS)
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_unit_tests_fail_when_an_expectation_is_wrong(promtool: str, tmp_path: Path) -> None:
    """The unit tests do check something: flip one expected alert and promtool fails."""
    source = ROOT / "tests" / "portfolio_test.yml"
    text = source.read_text().replace("../rules/", str(ROOT / "rules") + "/")
    broken = text.replace("{job: portfolio-rebalancer, severity: critical, team: trading}",
                          "{job: portfolio-rebalancer, severity: warning, team: trading}", 1)
    assert broken != text
    (tmp_path / "broken_test.yml").write_text(broken)
    done = run(promtool, "test", "rules", tmp_path / "broken_test.yml")
    assert done.returncode != 0


def test_every_alert_has_a_firing_and_a_silent_promtool_case(alerts: dict[str, dict]) -> None:
    fired: set[str] = set()
    silent: set[str] = set()
    for path in PROMTOOL_TESTS:
        for case in yamlio.load(path)["tests"]:
            for check in case.get("alert_rule_test", []):
                (fired if check.get("exp_alerts") else silent).add(check["alertname"])
    assert set(alerts) - fired == set(), "alerts never shown firing"
    assert set(alerts) - silent == set(), "alerts never shown silent (below threshold or before `for`)"


# --- rule content -----------------------------------------------------------------------

def test_every_alert_has_severity_summary_description_and_runbook(alerts: dict[str, dict]) -> None:
    readme = (ROOT / "README.md").read_text()
    for name, rule in alerts.items():
        assert rule.get("labels", {}).get("severity") in SEVERITIES, name
        notes = rule.get("annotations", {})
        assert notes.get("summary") and notes.get("description"), name
        assert "First check" in notes["description"], f"{name}: say what to check first"
        anchor = notes.get("runbook_url", "")
        assert anchor == f"infrastructure/monitoring/README.md#{name.lower()}", name
        assert re.search(rf"^#+ {name}\b", readme, re.M), f"{name} has no section in README.md"
        assert "for" in rule, f"{name} has no `for:`"


def test_seed_alerts_use_the_seed_thresholds(alerts: dict[str, dict]) -> None:
    for name, (op, threshold) in SEED_THRESHOLDS.items():
        cond = grafana_alerts.split_condition(alerts[name]["expr"])
        assert (cond.op, cond.threshold) == (op, threshold), name


def test_operations_guide_alerts_exist_with_its_classes(alerts: dict[str, dict]) -> None:
    critical = {"service down", "Redis unreachable", "Kafka unreachable", "InfluxDB unreachable",
                "exchange connectivity lost"}
    for what, name in OPERATIONS_GUIDE.items():
        severity = alerts[name]["labels"]["severity"]
        assert severity == ("critical" if what in critical else "warning"), (what, name, severity)


def test_split_condition_refuses_what_grafana_cannot_mirror() -> None:
    cond = grafana_alerts.split_condition('(a{x="1"} or b) < 1')
    assert (cond.value, cond.op, cond.threshold) == ('(a{x="1"} or b)', "<", 1.0)
    assert grafana_alerts.split_condition("abs(a - b) > 0.005").value == "abs(a - b)"
    for bad in ("a or b < 1", "a > 1 and b", "a == 1", "a > b", "a >= 2"):
        with pytest.raises(ValueError):
            grafana_alerts.split_condition(bad)


# --- scrape config ----------------------------------------------------------------------

def test_scrape_config_discovers_every_service_through_swarm_dns() -> None:
    config = yamlio.load(SCRAPE_CONFIG)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    expected = {
        "cryptospreadedge-main": 9001, "portfolio-rebalancer": 9001, "arbitrage-worker": 9003,
        "portfolio-monitor": 9002, "redis-exporter": 9121, "kafka-exporter": 9308,
        "node-exporter": 9100, "influxdb": 8086,
    }
    for name, port in expected.items():
        (sd,) = jobs[name]["dns_sd_configs"]
        assert sd["names"] == [f"tasks.{name}"] and sd["port"] == port and sd["type"] == "A", name
    assert config["rule_files"] == ["rules/*.yml"]
    header = SCRAPE_CONFIG.read_text().split("global:")[0]
    for name, port in expected.items():
        assert re.search(rf"#\s+{re.escape(name)}\s+.*\b{port}\b", header), f"{name} missing from the header"


# --- Grafana ----------------------------------------------------------------------------

def _datasource_uids() -> dict[str, str]:
    return {ds["uid"]: ds["type"] for ds in yamlio.load(DATASOURCES)["datasources"]}


def test_datasources_hold_no_literal_credentials() -> None:
    config = yamlio.load(DATASOURCES)
    types = {ds["type"] for ds in config["datasources"]}
    assert types == {"prometheus", "influxdb"}
    for ds in config["datasources"]:
        for key, value in ds.get("secureJsonData", {}).items():
            assert re.fullmatch(r"\$__file\{/run/secrets/[\w.-]+\}|\$\{?[A-Z_][A-Z0-9_]*\}?", value), key
        assert "password" not in ds and "basicAuthPassword" not in ds
    influx = next(ds for ds in config["datasources"] if ds["type"] == "influxdb")
    assert influx["jsonData"]["version"] == "Flux"
    assert "token" in influx["secureJsonData"]


def test_dashboard_provider_points_at_the_dashboards() -> None:
    (provider,) = yamlio.load(PROVIDER)["providers"]
    assert provider["type"] == "file" and provider["options"]["path"] == "/var/lib/grafana/dashboards"


def test_dashboards_are_the_seeds_with_a_datasource_and_a_query_per_panel() -> None:
    uids = _datasource_uids()
    boards = {path.name: json.loads(path.read_text()) for path in DASHBOARDS}
    assert {b["title"] for b in boards.values()} == {"Portfolio Rebalance", "Portfolio Performance"}
    assert len({b["uid"] for b in boards.values()}) == len(boards)
    for name, board in boards.items():
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)), f"{name}: duplicate panel ids"
        for panel in board["panels"]:
            where = f"{name}: {panel['title']}"
            assert panel["datasource"]["uid"] in uids, where
            assert panel["targets"], where
            for target in panel["targets"]:
                ds = target.get("datasource", panel["datasource"])
                assert uids.get(ds["uid"]) == ds["type"], where
                query = target.get("query") if ds["type"] == "influxdb" else target.get("expr")
                assert query and query.strip(), f"{where}: empty query"
    titles = {p["title"] for b in boards.values() for p in b["panels"]}
    for seed_panel in ("Portfolio value", "Rebalance orders", "Transaction costs",
                       "Target vs actual volatility", "Backoff state", "Error rate",
                       "Allocation by symbol", "PnL by exchange", "Correlation between positions",
                       "Drawdown"):
        assert seed_panel in titles
    pie = next(p for b in boards.values() for p in b["panels"] if p["title"] == "Allocation by symbol")
    assert pie["type"] == "piechart"


def test_every_promql_query_parses(promtool: str, tmp_path: Path) -> None:
    """Dashboard and Grafana-alert PromQL, checked by promtool as recording rules."""
    queries = [q for q in metric_names.all_queries() if q.language == "promql"]
    assert queries
    rules = [{"record": f"check:q{i}", "expr": q.text} for i, q in enumerate(queries)]
    path = tmp_path / "queries.yml"
    path.write_text(json.dumps({"groups": [{"name": "queries", "rules": rules}]}))
    done = run(promtool, "check", "rules", path)
    assert done.returncode == 0, done.stdout + done.stderr


def test_grafana_alerting_file_is_generated_from_the_rules() -> None:
    assert grafana_alerts.ALERTING_FILE.read_text() == grafana_alerts.render(), (
        "regenerate: .venv/bin/python -m tooling.grafana_alerts")


def test_every_prometheus_alert_has_a_grafana_mirror_with_the_same_threshold(
        alerts: dict[str, dict]) -> None:
    provisioned = yamlio.load(grafana_alerts.ALERTING_FILE)
    assert provisioned["apiVersion"] == 1
    uids = _datasource_uids()
    mirrors: dict[str, dict] = {}
    for group in provisioned["groups"]:
        assert group["folder"] and group["interval"] and group["orgId"] == 1
        for rule in group["rules"]:
            assert set(rule) >= {"uid", "title", "condition", "data", "for", "labels", "annotations"}
            assert len(rule["uid"]) <= 40
            mirrors[rule["title"]] = rule
    assert set(mirrors) == set(alerts)
    assert len({r["uid"] for r in mirrors.values()}) == len(mirrors)
    for name, prom in alerts.items():
        rule = mirrors[name]
        steps = {d["refId"]: d for d in rule["data"]}
        query, reduce, threshold = steps["A"], steps["B"], steps[rule["condition"]]
        assert uids[query["datasourceUid"]] == "prometheus"
        assert reduce["model"]["type"] == "reduce" and reduce["model"]["expression"] == "A"
        assert threshold["model"]["type"] == "threshold" and threshold["model"]["expression"] == "B"
        (condition,) = threshold["model"]["conditions"]
        want = grafana_alerts.split_condition(prom["expr"])
        assert query["model"]["expr"] == want.value, name
        assert condition["evaluator"]["type"] == grafana_alerts.EVALUATORS[want.op], name
        assert condition["evaluator"]["params"] == [want.threshold], name
        assert rule["for"] == prom["for"] and rule["labels"] == prom["labels"], name
        assert "$value " not in json.dumps(rule["annotations"]), name


def test_dashboard_thresholds_match_the_alerts(alerts: dict[str, dict]) -> None:
    """Panels that draw an alert's threshold draw the alert's value."""
    steps = {}
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            values = [s["value"] for s in panel["fieldConfig"]["defaults"]["thresholds"]["steps"]]
            steps[panel["title"]] = values[1:]
    pairs = {"Error rate": "RebalanceErrorRateHigh",
             "Transaction costs": "RebalanceTransactionCostsHigh",
             "Target vs actual volatility": "RebalanceVolatilityTargetMissed",
             "PnL by exchange": "PortfolioLossHigh",
             "Correlation between positions": "PositionCorrelationHigh",
             "Drawdown": "PortfolioDrawdownHigh"}
    for title, alert in pairs.items():
        assert steps[title] == [grafana_alerts.split_condition(alerts[alert]["expr"]).threshold], title
