from __future__ import annotations

from pydantic import Field

from shared.gateway import VenueSettings
from shared.settings import CommonSettings, RebalanceSettings


class RebalancerSettings(CommonSettings):
    """Settings of the portfolio-rebalancer service (the CSE_REBALANCE_* variables)."""

    rebalance: RebalanceSettings = Field(default_factory=RebalanceSettings)
    venues: VenueSettings = Field(default_factory=VenueSettings)

    @property
    def metrics_enabled(self) -> bool:
        """``CSE_REBALANCE_PROMETHEUS``: 0 keeps ``/metrics`` off (health routes stay)."""
        return self.rebalance.prometheus

    @property
    def metrics_port(self) -> int:
        """``CSE_METRICS_PORT`` if set, else ``CSE_REBALANCE_PROM_PORT`` (9001)."""
        port = self.obs.metrics_port
        return port if port is not None else self.rebalance.prom_port
