from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from shared.settings import Port, SettingsPart
from workers.monitor.settings import MonitorParams
from workers.rebalancer.settings import RebalancerSettings


class IngestSettings(SettingsPart):
    """Market-data ingest in the main service."""

    model_config = SettingsConfigDict(env_prefix="CSE_INGEST_")

    enabled: bool = True
    # stream: follow each venue's websocket diff streams (ccxt.pro), polling a pair over REST
    # only while its stream is down or silent; poll: REST polling only
    mode: Literal["stream", "poll"] = "stream"
    poll_venues: str = Field("", description="comma-separated venues always polled over REST")
    interval_s: float = Field(0.5, gt=0, le=60, description="seconds between polls of a pair")
    depth: int = Field(20, ge=1, le=1000, description="levels per side")
    lease_ttl_s: float = Field(6.0, ge=1, le=300)
    tsdb_interval_s: float = Field(1.0, ge=0, le=3600, description="0 disables")
    min_interval_ms: int = Field(0, ge=0, le=60_000,
                                 description="at most one book per pair this often (0: every change)")
    stream_stale_s: float = Field(5.0, ge=0.5, le=300,
                                  description="a stream silent this long is polled until it speaks")

    @property
    def poll_venue_list(self) -> list[str]:
        return [v.strip() for v in self.poll_venues.split(",") if v.strip()]


class ApiSettings(SettingsPart):
    """The HTTP API of the main service."""

    model_config = SettingsConfigDict(env_prefix="CSE_API_")

    host: str = "0.0.0.0"
    port: Port = 8000
    # Bearer token of the mutating endpoints (Swarm: the secret file /run/secrets/CSE_API_TOKEN).
    # Empty: mutating endpoints answer 403.
    token: SecretStr = SecretStr("")
    # Behind nginx (the Swarm stack): take the client address from X-Real-IP for the audit log.
    trust_proxy: bool = False
    recent_size: int = Field(500, ge=10, le=100_000, description="items kept per recent feed")
    preview_cache_s: float = Field(10.0, ge=0, le=3600, description="seconds a plan preview is reused")


class MainSettings(RebalancerSettings):
    """Settings of cryptospreadedge-main: the rebalancer's, plus the API and ingest."""

    api: ApiSettings = Field(default_factory=ApiSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    monitor: MonitorParams = Field(default_factory=MonitorParams)  # whose valuation the API shows

    @model_validator(mode="after")
    def _poll_venues_are_venues(self) -> MainSettings:
        known = [s.name for s in self.venues.venue_specs]
        unknown = [v for v in self.ingest.poll_venue_list if v not in known]
        if unknown:
            raise ValueError(f"CSE_INGEST_POLL_VENUES: {unknown[0]!r} is not one of CSE_VENUES "
                             f"({', '.join(known) or 'none'})")
        return self
