from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import Port, _Part
from workers.main.ingest import IngestSettings
from workers.rebalancer.settings import RebalancerSettings


class ApiSettings(_Part):
    """The HTTP API of the main service."""

    model_config = SettingsConfigDict(env_prefix="CSE_API_")

    host: str = "0.0.0.0"
    port: Port = 8000


class MainSettings(RebalancerSettings):
    """Settings of cryptospreadedge-main: the rebalancer's, plus the API and ingest."""

    api: ApiSettings = Field(default_factory=ApiSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
