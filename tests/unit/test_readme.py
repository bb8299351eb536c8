"""The README lists every metric the workers export and every alert the rules define."""

from __future__ import annotations

import importlib

import yaml

from tests import ROOT

WORKER_MODULES = ["workers.main.worker", "workers.rebalancer.worker", "workers.arbitrage.worker",
                  "workers.monitor.worker"]


def test_every_exported_metric_is_listed() -> None:
    from prometheus_client import REGISTRY

    for module in WORKER_MODULES:
        importlib.import_module(module)
    readme = (ROOT / "README.md").read_text()
    names = [family.name + ("_total" if family.type == "counter" else "")
             for family in REGISTRY.collect() if family.name.startswith(("cse_", "portfolio_"))]
    assert len(names) >= 40
    missing = [n for n in names if f"`{n}`" not in readme]
    assert not missing, f"not in the README's metric table: {missing}"


def test_every_alert_is_listed() -> None:
    readme = (ROOT / "README.md").read_text()
    alerts = [r["alert"] for p in sorted((ROOT / "infrastructure/monitoring/rules").glob("*.yml"))
              for g in yaml.safe_load(p.read_text())["groups"] for r in g["rules"] if "alert" in r]
    assert len(alerts) >= 30
    missing = [a for a in alerts if f"`{a}`" not in readme]
    assert not missing, f"not in the README's alert table: {missing}"
