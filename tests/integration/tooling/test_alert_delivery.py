"""Alert delivery end to end: a real Prometheus fires the stack's own ServiceDown rule, a real
Alertmanager (configured by ``cse alerts config`` from settings and a secret file) routes it by
severity to a local webhook receiver, and mutes the same service's warning.

Prometheus scrapes ``arbitrage-worker`` at a closed port (``up == 0``: ServiceDown, critical)
and Alertmanager itself as ``alertmanager`` (``up == 1``). Two test rules add warnings: one for
arbitrage-worker (inhibited by the critical) and one for alertmanager (delivered).
"""

from __future__ import annotations

import json
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import ROOT
from tests.conftest import WebhookReceiver, wait_for
from tooling import yamlio
from tooling.devstack import infra

RULES = ROOT / "infrastructure" / "monitoring" / "rules" / "availability.yml"
CSE = ROOT / ".venv" / "bin" / "cse"
HOST = infra.LOCALHOST

pytestmark = pytest.mark.slow


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver(HOST) as r:
        yield r


def render_config(tmp: Path, receiver: WebhookReceiver) -> Path:
    secrets = tmp / "secrets"
    secrets.mkdir()
    (secrets / "cse_alert_webhook_url").write_text(receiver.url + "\n")
    out = tmp / "alertmanager.yml"
    env = {"PATH": "/usr/bin:/bin", "CSE_ALERT_WARNING_CHANNELS": "webhook",
           "CSE_ALERT_GROUP_WAIT": "1s", "CSE_ALERT_GROUP_INTERVAL": "2s"}
    r = subprocess.run([str(CSE), "alerts", "config", "--secrets-dir", str(secrets), "-o", str(out)],
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert receiver.url not in r.stderr  # the secret is in the file only
    amtool = infra.system_binary("amtool", "prometheus-alertmanager")
    check = subprocess.run([amtool, "check-config", str(out)], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr
    return out


def rules_file(tmp: Path) -> Path:
    """The stack's own ServiceDown rule evaluated every second without its 1 m ``for``, plus two
    warnings of the test's."""
    service_down = next(r for g in yamlio.load(RULES)["groups"] for r in g["rules"]
                        if r.get("alert") == "ServiceDown")
    warning = {"labels": {"severity": "warning"}, "annotations": {"summary": "test warning"}}
    rules = {"groups": [{"name": "test", "interval": "1s", "rules": [
        {**service_down, "for": "0s"},
        # for 3s: the critical of the same service is at Alertmanager first
        {"alert": "WorkerSlow", "expr": 'up{job="arbitrage-worker"} < 1', "for": "3s", **warning},
        {"alert": "AlertmanagerScraped", "expr": 'up{job="alertmanager"} > 0', **warning},
    ]}]}
    path = tmp / "rules.yml"
    path.write_text(yamlio.dump(rules) + "\n")
    return path


def prometheus_config(tmp: Path, am_port: int) -> Path:
    closed = infra.free_port()  # nothing listens: the worker is down
    service_label = [{"source_labels": ["job"], "target_label": "service"}]
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules_file(tmp))],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"{HOST}:{am_port}"]}]}]},
        "scrape_configs": [
            {"job_name": "arbitrage-worker", "static_configs": [{"targets": [f"{HOST}:{closed}"]}],
             "relabel_configs": service_label},
            {"job_name": "alertmanager", "static_configs": [{"targets": [f"{HOST}:{am_port}"]}],
             "relabel_configs": service_label},
        ],
    }
    path = tmp / "prometheus.yml"
    path.write_text(yamlio.dump(config) + "\n")
    return path


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


@pytest.mark.timeout(120)
def test_a_firing_rule_reaches_the_webhook_routed_by_severity_and_inhibited(
        tmp_path: Path, receiver: WebhookReceiver) -> None:
    am_config = render_config(tmp_path, receiver)
    am_port, prom_port = infra.free_port(), infra.free_port()
    am_base, prom_base = f"http://{HOST}:{am_port}", f"http://{HOST}:{prom_port}"
    alertmanager = infra.start(infra.ProcessSpec(
        name="alertmanager", kind="infra", ports={"http": am_port},
        argv=[infra.system_binary("prometheus-alertmanager", "prometheus-alertmanager"),
              f"--config.file={am_config}", f"--storage.path={tmp_path / 'am-data'}",
              f"--web.listen-address={HOST}:{am_port}", "--cluster.listen-address="],
        ready=lambda: infra.http_ready(f"{am_base}/-/ready")), tmp_path)
    prometheus = infra.start(infra.ProcessSpec(
        name="prometheus", kind="infra", ports={"http": prom_port},
        argv=[infra.system_binary("prometheus", "prometheus"),
              f"--config.file={prometheus_config(tmp_path, am_port)}",
              f"--storage.tsdb.path={tmp_path / 'prom-data'}", f"--web.listen-address={HOST}:{prom_port}"],
        ready=lambda: infra.http_ready(f"{prom_base}/-/ready")), tmp_path)
    try:
        critical = wait_for(lambda: receiver.alerts("critical"), 60, "the critical notification")
        warning = wait_for(lambda: receiver.alerts("warning"), 60, "the warning notification")
        # WorkerSlow is at Alertmanager, muted by ServiceDown of the same service
        inhibited = wait_for(
            lambda: [a for a in get_json(f"{am_base}/api/v2/alerts?inhibited=true")
                     if a["labels"]["alertname"] == "WorkerSlow" and a["status"]["inhibitedBy"]],
            30, "WorkerSlow inhibited")
    finally:
        prometheus.stop()
        alertmanager.stop()

    down = critical[0]
    assert down["labels"]["alertname"] == "ServiceDown"
    assert down["labels"]["severity"] == "critical" and down["labels"]["service"] == "arbitrage-worker"
    assert down["status"] == "firing"
    assert down["annotations"]["summary"].startswith("arbitrage-worker task ")
    payload = next(p for p in receiver.payloads if p["receiver"] == "critical")
    assert payload["path"] == "/hook"
    assert payload["groupLabels"] == {"alertname": "ServiceDown", "service": "arbitrage-worker"}
    assert {a["labels"]["alertname"] for a in warning} == {"AlertmanagerScraped"}
    assert inhibited[0]["labels"]["service"] == "arbitrage-worker"
    # the muted warning never reached any receiver
    assert "WorkerSlow" not in {a["labels"]["alertname"] for p in receiver.payloads for a in p["alerts"]}
