"""Alert delivery: the stack's Alertmanager configuration, rendered from settings and secrets.

Prometheus sends every firing rule to Alertmanager, and so does Grafana (its notification
policy hands everything to the same Alertmanager), so one routing table serves both:

* **grouping** by ``alertname`` and ``service`` (the Prometheus job a rule's series came from);
* **routing by severity**: ``critical`` to the critical channels (default: webhook, Slack,
  e-mail; repeated every ``CSE_ALERT_CRITICAL_REPEAT_INTERVAL``), ``warning`` to the warning
  channels (default: Slack, e-mail); anything else (``info``) is not notified and stays in the
  Alertmanager and Prometheus UIs;
* **inhibition**: while a critical alert of a service fires, that service's warnings and infos
  are muted (a dead worker does not also page for its stale heartbeat and lag).

Channels: a generic JSON webhook (an on-call bridge), a Slack-compatible incoming webhook
(Slack, Mattermost, Rocket.Chat) and e-mail over SMTP. Their secrets (URLs, the SMTP
password) come from files named after the variable (``cse_alert_webhook_url``, ...) in the
secrets directory, or from the environment; the rest from ``CSE_ALERT_*`` variables. A channel
listed for a severity but not configured is left out with a note on stderr.

``cse alerts config`` prints the file (YAML); the deploy script renders it inside the image it
deploys and stores it as the Swarm secret ``alertmanager_conf``.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from shared.settings import SettingsPart, split_list
from tooling import yamlio

CHANNELS = ("webhook", "slack", "email")
Severity = Literal["critical", "warning"]
# Prometheus/Alertmanager durations: 30s, 5m, 1h30m, 1d ...
_DURATION = re.compile(r"^(?:\d+y)?(?:\d+w)?(?:\d+d)?(?:\d+h)?(?:\d+m)?(?:\d+s)?(?:\d+ms)?$")
_CHANNEL_LIST = "of webhook, slack, email; comma-separated"
_SMARTHOST = re.compile(r"^[^:\s/]+:\d{1,5}$")

SLACK_TITLE = ('[{{ .Status | toUpper }}] {{ .CommonLabels.alertname }}'
               '{{ if .CommonLabels.service }} ({{ .CommonLabels.service }}){{ end }}')
SLACK_TEXT = ("{{ range .Alerts }}*{{ .Labels.severity }}* {{ .Annotations.summary }}\n"
              "{{ .Annotations.description }}\n{{ end }}")


class AlertSettings(SettingsPart):
    """Where alerts are delivered (``CSE_ALERT_*``)."""

    model_config = SettingsConfigDict(env_prefix="CSE_ALERT_")

    webhook_url: SecretStr = Field(SecretStr(""), description="an http(s) URL receiving Alertmanager's JSON")
    slack_url: SecretStr = Field(SecretStr(""), description="a Slack-compatible incoming webhook URL")
    slack_channel: str = ""
    email_to: str = Field("", description="addresses, comma-separated")
    email_from: str = ""
    smtp_smarthost: str = Field("", description="host:port")
    smtp_username: str = ""
    smtp_password: SecretStr = SecretStr("")
    smtp_require_tls: bool = True
    critical_channels: str = Field("webhook,slack,email", description=_CHANNEL_LIST)
    warning_channels: str = Field("slack,email", description=_CHANNEL_LIST)
    group_wait: str = Field("30s", description="a duration such as 30s, 5m, 1h")
    group_interval: str = Field("5m", description="a duration such as 30s, 5m, 1h")
    repeat_interval: str = Field("4h", description="a duration such as 30s, 5m, 1h")
    critical_repeat_interval: str = Field("1h", description="a duration such as 30s, 5m, 1h")

    @field_validator("webhook_url", "slack_url")
    @classmethod
    def _http_url(cls, value: SecretStr) -> SecretStr:
        url = value.get_secret_value()
        if url and not re.match(r"^https?://[^\s/]+", url):
            raise ValueError("allowed: an http:// or https:// URL (or empty: channel off)")
        return value

    @field_validator("critical_channels", "warning_channels")
    @classmethod
    def _channels(cls, value: str) -> str:
        unknown = [c for c in split_list(value) if c not in CHANNELS]
        if unknown:
            raise ValueError(f"unknown channel {unknown[0]!r}; allowed: {_CHANNEL_LIST.removeprefix('of ')}")
        return value

    @field_validator("group_wait", "group_interval", "repeat_interval", "critical_repeat_interval")
    @classmethod
    def _duration(cls, value: str) -> str:
        if not value or not _DURATION.match(value):
            raise ValueError("allowed: a duration such as 30s, 5m, 1h30m, 1d")
        return value

    @field_validator("smtp_smarthost")
    @classmethod
    def _smarthost(cls, value: str) -> str:
        if value and not _SMARTHOST.match(value):
            raise ValueError("allowed: host:port, e.g. smtp.example.com:587")
        return value

    @field_validator("email_to", "email_from")
    @classmethod
    def _addresses(cls, value: str) -> str:
        bad = [a for a in split_list(value) if not re.match(r"^[^@\s]+@[^@\s]+$", a)]
        if bad:
            raise ValueError(f"{bad[0]!r} is not an e-mail address")
        return value

    @model_validator(mode="after")
    def _email_complete(self) -> AlertSettings:
        if self.email_to and not (self.email_from and self.smtp_smarthost):
            raise ValueError("CSE_ALERT_EMAIL_TO needs CSE_ALERT_EMAIL_FROM and CSE_ALERT_SMTP_SMARTHOST")
        if self.smtp_username and not self.smtp_password.get_secret_value():
            raise ValueError("CSE_ALERT_SMTP_USERNAME needs CSE_ALERT_SMTP_PASSWORD (or the secret file "
                             "cse_alert_smtp_password)")
        return self

    def configured(self) -> list[str]:
        """The channels that have what they need, in CHANNELS order."""
        have = {"webhook": bool(self.webhook_url.get_secret_value()),
                "slack": bool(self.slack_url.get_secret_value()),
                "email": bool(self.email_to)}
        return [c for c in CHANNELS if have[c]]

    def listed(self, severity: Severity) -> list[str]:
        """The channels CSE_ALERT_<SEVERITY>_CHANNELS names, configured or not."""
        return split_list(self.critical_channels if severity == "critical" else self.warning_channels)

    def channels(self, severity: Severity) -> list[str]:
        """The listed channels that are configured: where the severity's alerts go."""
        configured = self.configured()
        return [c for c in self.listed(severity) if c in configured]


def _channel_configs(s: AlertSettings, channel: str) -> dict[str, Any]:
    if channel == "webhook":
        return {"webhook_configs": [{"url": s.webhook_url.get_secret_value(), "send_resolved": True}]}
    if channel == "slack":
        slack: dict[str, Any] = {"api_url": s.slack_url.get_secret_value(), "send_resolved": True,
                                 "title": SLACK_TITLE, "text": SLACK_TEXT}
        if s.slack_channel:
            slack["channel"] = s.slack_channel
        return {"slack_configs": [slack]}
    return {"email_configs": [{"to": ", ".join(split_list(s.email_to)), "send_resolved": True}]}


def _receiver(s: AlertSettings, name: Severity) -> dict[str, Any]:
    receiver: dict[str, Any] = {"name": name}
    for channel in s.channels(name):
        receiver.update(_channel_configs(s, channel))
    return receiver


def build(s: AlertSettings) -> dict[str, Any]:
    """The Alertmanager configuration (a dict ready for YAML)."""
    glob: dict[str, Any] = {"resolve_timeout": "5m"}
    if "email" in s.configured():
        glob.update({"smtp_smarthost": s.smtp_smarthost, "smtp_from": s.email_from,
                     "smtp_require_tls": s.smtp_require_tls})
        if s.smtp_username:
            glob["smtp_auth_username"] = s.smtp_username
            glob["smtp_auth_password"] = s.smtp_password.get_secret_value()
    return {
        "global": glob,
        "route": {
            "receiver": "null",
            "group_by": ["alertname", "service"],
            "group_wait": s.group_wait,
            "group_interval": s.group_interval,
            "repeat_interval": s.repeat_interval,
            "routes": [
                {"receiver": "critical", "matchers": ['severity="critical"'],
                 "repeat_interval": s.critical_repeat_interval},
                {"receiver": "warning", "matchers": ['severity="warning"']},
            ],
        },
        # Only a critical alert that names its service mutes: one without a service label
        # would otherwise mute every warning without one.
        "inhibit_rules": [
            {"source_matchers": ['severity="critical"', 'service=~".+"'],
             "target_matchers": ['severity=~"warning|info"'],
             "equal": ["service"]},
        ],
        "receivers": [{"name": "null"}, _receiver(s, "critical"), _receiver(s, "warning")],
    }


def notes(s: AlertSettings) -> list[str]:
    """What an operator should know about the rendered routing (channels left out)."""
    configured = s.configured()
    if not configured:
        return ["no alert channel configured (CSE_ALERT_WEBHOOK_URL, CSE_ALERT_SLACK_URL, "
                "CSE_ALERT_EMAIL_TO): alerts are only visible in Alertmanager and Prometheus"]
    out = []
    severities: tuple[Severity, ...] = ("critical", "warning")
    for severity in severities:
        missing = [c for c in s.listed(severity) if c not in configured]
        if missing:
            var = f"CSE_ALERT_{severity.upper()}_CHANNELS"
            out.append(f"{severity} alerts: {', '.join(missing)} listed in {var} but not configured, "
                       "left out")
        if not s.channels(severity):
            out.append(f"{severity} alerts reach no channel (configured: {', '.join(configured)})")
    return out


HEADER = """\
# Alertmanager configuration of the CryptoSpreadEdge stack, rendered by `cse alerts config`
# from CSE_ALERT_* settings and secrets (tooling/alerting.py). It holds webhook URLs and
# passwords: it is a Swarm secret, never a file in the repository.
"""


def render(s: AlertSettings) -> str:
    return HEADER + yamlio.dump(build(s)) + "\n"
