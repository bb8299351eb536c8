"""Grafana alert rules mirroring the Prometheus alert rules, for operators who alert from Grafana.

Each Prometheus alert is written ``<value> <op> <threshold>`` at the top level. Its Grafana
mirror queries ``<value>`` from the Prometheus data source (refId A), reduces it to the last
value (B) and applies the same threshold (C), with the same ``for``, labels and annotations
(``$value`` becomes ``$values.B.Value``).

Regenerate infrastructure/monitoring/grafana/provisioning/alerting/alert-rules.yml after
changing a rule file:  .venv/bin/python -m tooling.grafana_alerts
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tooling import yamlio

MONITORING_DIR = Path(__file__).resolve().parents[1] / "infrastructure" / "monitoring"

ALERTING_FILE = MONITORING_DIR / "grafana" / "provisioning" / "alerting" / "alert-rules.yml"
PROMETHEUS_UID = "cse-prometheus"
FOLDER = "CryptoSpreadEdge"
EVALUATORS = {">": "gt", "<": "lt"}
LOOKBACK_S = 600

_NUMBER = r"-?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"


@dataclass
class Condition:
    value: str  # PromQL of the value compared
    op: str  # ">" or "<"
    threshold: float


def _top_level(expr: str) -> str:
    """expr with every bracketed part and string blanked out (same length)."""
    out, depth, quote = [], 0, ""
    for char in expr:
        if quote:
            out.append(" ")
            if char == quote:
                quote = ""
            continue
        if char in "\"'`":
            quote = char
            out.append(" ")
        elif char in "([{":
            depth += 1
            out.append(" ")
        elif char in ")]}":
            depth -= 1
            out.append(" ")
        else:
            out.append(char if depth == 0 else " ")
    return "".join(out)


def split_condition(expr: str) -> Condition:
    """Split ``<value> <op> <threshold>``; refuse anything Grafana could not mirror as one threshold."""
    expr = " ".join(expr.split())
    match = re.search(rf"\s*(>|<)\s*({_NUMBER})\s*$", expr)
    if not match:
        raise ValueError(f"not '<value> > or < <number>': {expr}")
    value = expr[: match.start()].strip()
    top = _top_level(value)
    if re.search(r"\b(?:and|or|unless)\b|==|!=|>=|<=|[<>]", top):
        raise ValueError(f"the comparison is not the top-level operation: {expr}")
    return Condition(value, match.group(1), float(match.group(2)))


def _grafana_template(text: str) -> str:
    return re.sub(r"\$value\b", "$values.B.Value", text)


def _uid(alert: str) -> str:
    return ("cse-" + re.sub(r"[^a-z0-9]+", "-", alert.lower()))[:40]


def mirror(rule: dict[str, Any], group_interval: str) -> dict[str, Any]:
    cond = split_condition(str(rule["expr"]))
    threshold: float | int = int(cond.threshold) if cond.threshold.is_integer() else cond.threshold
    return {
        "uid": _uid(rule["alert"]),
        "title": rule["alert"],
        "condition": "C",
        "data": [
            {
                "refId": "A",
                "relativeTimeRange": {"from": LOOKBACK_S, "to": 0},
                "datasourceUid": PROMETHEUS_UID,
                "model": {"refId": "A", "expr": cond.value, "instant": True, "range": False,
                          "intervalMs": 15000, "maxDataPoints": 43200},
            },
            {
                "refId": "B",
                "datasourceUid": "__expr__",
                "model": {"refId": "B", "type": "reduce", "expression": "A", "reducer": "last",
                          "settings": {"mode": "dropNN"}},
            },
            {
                "refId": "C",
                "datasourceUid": "__expr__",
                "model": {"refId": "C", "type": "threshold", "expression": "B",
                          "conditions": [{"evaluator": {"type": EVALUATORS[cond.op],
                                                        "params": [threshold]}}]},
            },
        ],
        "noDataState": "OK",
        "execErrState": "Error",
        "for": rule.get("for", "0s"),
        "annotations": {k: _grafana_template(str(v)) for k, v in rule.get("annotations", {}).items()},
        "labels": dict(rule.get("labels", {})),
        "isPaused": False,
    }


def prometheus_alerts(root: Path = MONITORING_DIR) -> list[tuple[str, str, dict[str, Any]]]:
    """(group name, group interval, rule) for every alerting rule."""
    found = []
    for path in sorted((root / "rules").glob("*.yml")):
        for group in yamlio.load(path)["groups"]:
            for rule in group["rules"]:
                if "alert" in rule:
                    found.append((group["name"], group.get("interval", "1m"), rule))
    return found


def build(root: Path = MONITORING_DIR) -> dict[str, Any]:
    groups: dict[str, dict[str, Any]] = {}
    for name, interval, rule in prometheus_alerts(root):
        group = groups.setdefault(name, {"orgId": 1, "name": name, "folder": FOLDER,
                                         "interval": interval, "rules": []})
        group["rules"].append(mirror(rule, interval))
    return {"apiVersion": 1, "groups": list(groups.values())}


HEADER = """\
# Grafana unified-alerting rules mirroring infrastructure/monitoring/rules/*.yml: same
# names, PromQL value, threshold, `for`, labels and annotations. GENERATED, do not edit:
#   .venv/bin/python -m tooling.grafana_alerts
# (tests/monitoring checks that this file matches the Prometheus rules).
"""


def render(root: Path = MONITORING_DIR) -> str:
    return HEADER + yamlio.dump(build(root)) + "\n"


if __name__ == "__main__":
    ALERTING_FILE.parent.mkdir(parents=True, exist_ok=True)
    ALERTING_FILE.write_text(render())
    print(f"wrote {ALERTING_FILE}")
