"""Metric names referenced by the monitoring configuration.

``referenced_metrics()`` reads every PromQL expression of the Prometheus rule files, the
Grafana dashboards and the Grafana alert rules, and returns the metric names they use;
``referenced_measurements()`` returns the InfluxDB measurement names the Flux queries read.
A test comparing them with what the running workers export should leave out
``is_external(name)``: metrics of Prometheus itself (``up``) and of the exporters.

Names are returned as written in the queries, so a histogram appears as ``<name>_bucket``
(use ``family()`` to map it back to the name the code registers).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tooling import yamlio
from tooling.grafana_alerts import MONITORING_DIR

# Produced by Prometheus itself or by the exporters of the stack, not by our workers.
EXTERNAL_METRICS = frozenset({"up", "redis_up", "kafka_brokers"})
EXTERNAL_PREFIXES = ("node_", "redis_", "kafka_", "container_", "prometheus_", "influxdb_", "go_")

_KEYWORDS = frozenset({
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
    "and", "or", "unless", "offset", "atan2", "inf", "nan",
})
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_NAME_MATCHER = re.compile(r'__name__\s*=\s*("(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\')')
_BRACES = re.compile(r"\{[^{}]*\}")
_BRACKETS = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_AT_OR_OFFSET = re.compile(r"(?:\boffset\s+-?[0-9][0-9a-z.]*|@\s*(?:start\(\)|end\(\)|[0-9.]+))", re.I)
_VARIABLE = re.compile(r"\$\{[^}]*\}|\$\w+|\[\[\w+\]\]")
_TOKEN = re.compile(
    r"(?P<num>0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?(?:ms|[smhdwy])?)"
    r"|(?P<id>[a-zA-Z_:][a-zA-Z0-9_:]*)"
)


def promql_metric_names(expr: str) -> set[str]:
    """Metric names used by one PromQL expression (functions, labels, keywords removed)."""
    names: set[str] = set()
    text = _VARIABLE.sub(" ", expr)
    # A selector may name its metric inside the braces: {__name__="x"}.
    for literal in _NAME_MATCHER.findall(text):
        names.add(json.loads('"' + literal[1:-1] + '"'))
    text = _STRING.sub('""', text)
    while _BRACES.search(text):
        text = _BRACES.sub(" ", text)
    text = _BRACKETS.sub(" ", text)
    text = _AT_OR_OFFSET.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    for match in _TOKEN.finditer(text):
        ident = match.group("id")
        if ident is None or ident.lower() in _KEYWORDS:
            continue
        if text[match.end():].lstrip().startswith("("):  # a function or an aggregation
            continue
        names.add(ident)
    return names


_MEASUREMENT = re.compile(
    r'r\s*(?:\.\s*_measurement|\[\s*"_measurement"\s*\])\s*==\s*"((?:[^"\\]|\\.)*)"'
)


def flux_measurements(query: str) -> set[str]:
    """InfluxDB measurement names a Flux query filters on (``r._measurement == "x"``)."""
    return set(_MEASUREMENT.findall(query))


def family(name: str) -> str:
    """The metric family a series name belongs to (histogram/summary suffixes removed)."""
    for suffix in ("_bucket", "_count", "_sum"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def is_external(name: str) -> bool:
    return name in EXTERNAL_METRICS or name.startswith(EXTERNAL_PREFIXES)


@dataclass
class Query:
    source: str  # file relative to the monitoring directory, and where in it
    language: str  # "promql" or "flux"
    text: str


@dataclass
class References:
    metrics: dict[str, set[str]] = field(default_factory=dict)  # name -> sources
    measurements: dict[str, set[str]] = field(default_factory=dict)


def _rule_queries(root: Path) -> Iterator[Query]:
    for path in sorted((root / "rules").glob("*.yml")):
        for group in yamlio.load(path).get("groups", []):
            for rule in group.get("rules", []):
                name = rule.get("alert") or rule.get("record")
                yield Query(f"{path.relative_to(root)}:{name}", "promql", str(rule["expr"]))


def _panels(panels: Iterable[dict]) -> Iterator[dict]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def _datasource_type(ref: object) -> str:
    if isinstance(ref, dict):
        return str(ref.get("type", ""))
    return ""


def dashboard_queries(path: Path) -> Iterator[Query]:
    board = json.loads(path.read_text())
    for panel in _panels(board.get("panels", [])):
        for target in panel.get("targets", []):
            kind = _datasource_type(target.get("datasource")) or _datasource_type(panel.get("datasource"))
            where = f"{path.name}:{panel.get('title')}:{target.get('refId')}"
            if kind == "influxdb":
                yield Query(where, "flux", str(target.get("query", "")))
            elif "expr" in target:
                yield Query(where, "promql", str(target["expr"]))
    for variable in board.get("templating", {}).get("list", []):
        query = variable.get("query")
        if variable.get("type") == "query" and _datasource_type(variable.get("datasource")) == "prometheus":
            text = query.get("query", "") if isinstance(query, dict) else str(query or "")
            inner = re.fullmatch(r"\s*(?:label_values|query_result)\((.*)\)\s*", text)
            if inner:  # label_values(metric{...}, label): the metric is before the last comma
                text = inner.group(1).rsplit(",", 1)[0] if "label_values" in text else inner.group(1)
            yield Query(f"{path.name}:${variable.get('name')}", "promql", text)


def _grafana_alert_queries(root: Path) -> Iterator[Query]:
    for path in sorted((root / "grafana" / "provisioning" / "alerting").glob("*.y*ml")):
        for group in yamlio.load(path).get("groups", []):
            for rule in group.get("rules", []):
                for item in rule.get("data", []):
                    model = item.get("model", {})
                    if item.get("datasourceUid") != "__expr__" and "expr" in model:
                        yield Query(f"{path.relative_to(root)}:{rule.get('title')}", "promql", model["expr"])


def all_queries(root: Path = MONITORING_DIR) -> list[Query]:
    queries = list(_rule_queries(root))
    for path in sorted((root / "grafana" / "dashboards").glob("*.json")):
        queries.extend(dashboard_queries(path))
    queries.extend(_grafana_alert_queries(root))
    return queries


def references(root: Path = MONITORING_DIR) -> References:
    refs = References()
    for query in all_queries(root):
        if query.language == "flux":
            for name in flux_measurements(query.text):
                refs.measurements.setdefault(name, set()).add(query.source)
        else:
            for name in promql_metric_names(query.text):
                refs.metrics.setdefault(name, set()).add(query.source)
    return refs


def referenced_metrics(root: Path = MONITORING_DIR) -> set[str]:
    """Every metric name a rule, dashboard or Grafana alert queries in PromQL."""
    return set(references(root).metrics)


def referenced_measurements(root: Path = MONITORING_DIR) -> set[str]:
    """Every InfluxDB measurement a dashboard queries in Flux."""
    return set(references(root).measurements)


if __name__ == "__main__":  # python -m tests.monitoring.metric_names
    found = references()
    for metric in sorted(found.metrics):
        print(("external " if is_external(metric) else "") + metric)
    for measurement in sorted(found.measurements):
        print("measurement " + measurement)
