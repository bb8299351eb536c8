"""The Alertmanager configuration rendered from CSE_ALERT_* settings (tooling/alerting.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from shared.settings import SettingsError, load
from tooling import alerting
from tooling.devstack import infra

WEBHOOK = "https://oncall.example.com/hook/abc"
SLACK = "https://hooks.slack.example.com/services/T/B/secret"
EMAIL = {"CSE_ALERT_EMAIL_TO": "ops@example.com, risk@example.com", "CSE_ALERT_EMAIL_FROM": "cse@example.com",
         "CSE_ALERT_SMTP_SMARTHOST": "smtp.example.com:587"}


def settings(monkeypatch: pytest.MonkeyPatch, **env: str) -> alerting.AlertSettings:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return load(alerting.AlertSettings)


def receivers(config: dict[str, object]) -> dict[str, dict[str, object]]:
    return {r["name"]: r for r in config["receivers"]}  # type: ignore[attr-defined,index]


def test_every_channel_configured_routes_by_severity(monkeypatch: pytest.MonkeyPatch) -> None:
    s = settings(monkeypatch, CSE_ALERT_WEBHOOK_URL=WEBHOOK, CSE_ALERT_SLACK_URL=SLACK,
                 CSE_ALERT_SLACK_CHANNEL="#trading-alerts", **EMAIL)
    config = yaml.safe_load(alerting.render(s))
    got = receivers(config)
    assert set(got["critical"]) == {"name", "webhook_configs", "slack_configs", "email_configs"}
    assert set(got["warning"]) == {"name", "slack_configs", "email_configs"}  # no paging on warnings
    assert set(got["null"]) == {"name"}
    assert got["critical"]["webhook_configs"] == [{"url": WEBHOOK, "send_resolved": True}]
    assert got["critical"]["slack_configs"][0]["channel"] == "#trading-alerts"
    assert got["warning"]["email_configs"] == [{"to": "ops@example.com, risk@example.com",
                                                "send_resolved": True}]
    assert config["global"]["smtp_smarthost"] == "smtp.example.com:587"
    route = config["route"]
    assert route["receiver"] == "null" and route["group_by"] == ["alertname", "service"]
    assert [(r["receiver"], r["matchers"]) for r in route["routes"]] == [
        ("critical", ['severity="critical"']), ("warning", ['severity="warning"'])]
    assert route["routes"][0]["repeat_interval"] == "1h" and route["repeat_interval"] == "4h"
    assert config["inhibit_rules"] == [{"source_matchers": ['severity="critical"', 'service=~".+"'],
                                        "target_matchers": ['severity=~"warning|info"'],
                                        "equal": ["service"]}]
    assert alerting.notes(s) == []


def test_channels_not_configured_are_left_out_with_a_note(monkeypatch: pytest.MonkeyPatch) -> None:
    s = settings(monkeypatch, CSE_ALERT_WEBHOOK_URL=WEBHOOK)
    got = receivers(yaml.safe_load(alerting.render(s)))
    assert set(got["critical"]) == {"name", "webhook_configs"}
    assert set(got["warning"]) == {"name"}
    assert alerting.notes(s) == [
        "critical alerts: slack, email listed in CSE_ALERT_CRITICAL_CHANNELS but not configured, left out",
        "warning alerts: slack, email listed in CSE_ALERT_WARNING_CHANNELS but not configured, left out",
        "warning alerts reach no channel (configured: webhook)",
    ]


def test_nothing_configured_renders_a_valid_file_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    s = settings(monkeypatch)
    got = receivers(yaml.safe_load(alerting.render(s)))
    assert all(set(r) == {"name"} for r in got.values())
    assert alerting.notes(s)[0].startswith("no alert channel configured")


def test_secrets_come_from_files_named_after_the_variable(monkeypatch: pytest.MonkeyPatch,
                                                          tmp_path: Path) -> None:
    (tmp_path / "cse_alert_slack_url").write_text(SLACK + "\n")
    (tmp_path / "cse_alert_smtp_password").write_text("p4ss\n")
    for key, value in {**EMAIL, "CSE_ALERT_SMTP_USERNAME": "cse"}.items():
        monkeypatch.setenv(key, value)
    s = load(alerting.AlertSettings, _secrets_dir=str(tmp_path))
    config = yaml.safe_load(alerting.render(s))
    assert receivers(config)["critical"]["slack_configs"][0]["api_url"] == SLACK
    assert config["global"]["smtp_auth_password"] == "p4ss"
    assert SLACK not in repr(s) and "p4ss" not in repr(s)


@pytest.mark.parametrize(("env", "message"), [
    ({"CSE_ALERT_WEBHOOK_URL": "ftp://x"},
     "CSE_ALERT_WEBHOOK_URL='***': allowed: an http:// or https:// URL"),
    ({"CSE_ALERT_CRITICAL_CHANNELS": "webhook,pager"},
     "unknown channel 'pager'; allowed: webhook, slack, email"),
    ({"CSE_ALERT_GROUP_WAIT": "soon"}, "CSE_ALERT_GROUP_WAIT='soon': allowed: a duration"),
    ({"CSE_ALERT_SMTP_SMARTHOST": "smtp.example.com"}, "allowed: host:port"),
    ({"CSE_ALERT_EMAIL_TO": "ops"}, "'ops' is not an e-mail address"),
    ({"CSE_ALERT_EMAIL_TO": "ops@example.com"}, "CSE_ALERT_EMAIL_TO needs CSE_ALERT_EMAIL_FROM"),
    ({**EMAIL, "CSE_ALERT_SMTP_USERNAME": "cse"}, "CSE_ALERT_SMTP_USERNAME needs CSE_ALERT_SMTP_PASSWORD"),
])
def test_bad_settings_name_the_variable(monkeypatch: pytest.MonkeyPatch, env: dict[str, str],
                                        message: str) -> None:
    with pytest.raises(SettingsError) as exc:
        settings(monkeypatch, **env)
    assert message in str(exc.value)
    assert "ftp://x" not in str(exc.value)


def test_amtool_accepts_the_full_configuration(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    s = settings(monkeypatch, CSE_ALERT_WEBHOOK_URL=WEBHOOK, CSE_ALERT_SLACK_URL=SLACK, **EMAIL)
    path = tmp_path / "alertmanager.yml"
    path.write_text(alerting.render(s))
    r = subprocess.run([infra.system_binary("amtool", "prometheus-alertmanager"), "check-config", str(path)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "3 receivers" in r.stdout and "1 inhibit rules" in r.stdout


def test_the_command_writes_a_private_file_and_reports_what_it_cannot_write(tmp_path: Path) -> None:
    from workers.cli import main

    out = tmp_path / "alertmanager.yml"
    out.write_text("old")
    out.chmod(0o644)
    assert main(["alerts", "config", "-o", str(out)]) == 0
    assert out.stat().st_mode & 0o777 == 0o600 and "receivers:" in out.read_text()
    assert main(["alerts", "config", "-o", str(tmp_path / "missing" / "x.yml")]) == 2
    assert main(["alerts", "config", "--secrets-dir", str(tmp_path / "nope")]) == 2
