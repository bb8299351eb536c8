from __future__ import annotations

from typing import ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared import names
from shared.settings import CommonSettings, SettingsPart, VenueSettings


class MonitorParams(SettingsPart):
    """What the portfolio monitor measures and how often (``CSE_MONITOR_*``)."""

    model_config = SettingsConfigDict(env_prefix="CSE_MONITOR_")

    account: str = Field("main", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    poll_interval_s: float = Field(10.0, ge=0.2, le=3600, description="seconds between balance polls")
    correlation_interval_s: float = Field(300.0, ge=1, le=86_400,
                                          description="seconds between correlation estimates")
    correlation_candles: int = Field(168, ge=10, le=1000, description="hourly candles per estimate")
    correlation_min_weight: float = Field(0.01, ge=0, lt=1,
                                          description="positions below this weight are left out")


class MonitorSettings(CommonSettings):
    """Settings of the portfolio-monitor service."""

    default_metrics_port: ClassVar[int] = 9002
    group_id: str = names.MONITOR
    monitor: MonitorParams = Field(default_factory=MonitorParams)
    venues: VenueSettings = Field(default_factory=VenueSettings)
