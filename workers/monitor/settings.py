from __future__ import annotations

from typing import ClassVar

from shared.settings import CommonSettings


class MonitorSettings(CommonSettings):
    """Settings of the portfolio-monitor service."""

    default_metrics_port: ClassVar[int] = 9002
    group_id: str = "portfolio-monitor"
