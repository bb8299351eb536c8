"""Settings of the portfolio-rebalancer service: the deployment guide's ``CSE_REBALANCE_*``
variables, with its defaults, plus the shared parts."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from shared.settings import (
    CommonSettings,
    ObservabilitySettings,
    Port,
    SettingsPart,
    VenueSettings,
    split_pairs,
)


def parse_asset_map(text: str, *, positive: bool = False) -> dict[str, float]:
    """``"BTC=0.3, ETH=-0.1"`` -> ``{"BTC": 0.3, "ETH": -0.1}``; ValueError says what is wrong."""
    form = "ASSET=number; allowed: ASSET=number,... e.g. BTC=0.3,ETH=0.2"
    out: dict[str, float] = {}
    for name, number in split_pairs(text, form):
        item, asset = f"{name}={number}", name.upper()
        try:
            value = float(number) if asset.isalnum() else None
        except ValueError:
            value = None
        if value is None or value != value or abs(value) == float("inf"):
            raise ValueError(f"{item!r} is not {form}")
        if positive and value <= 0:
            raise ValueError(f"{item!r}: allowed: a positive number")
        out[asset] = value
    return out


METHOD_ALIASES = {"risk-parity": "rp", "mean-variance": "mv"}


class RebalanceSettings(SettingsPart):
    """The rebalance variables of the deployment guide, with its defaults."""

    model_config = SettingsConfigDict(env_prefix="CSE_REBALANCE_")

    enabled: bool = True
    interval: float = Field(300.0, gt=0, le=86_400, description="seconds between cycles")
    method: Literal["rp", "mv"] = "rp"
    use_real_cov: bool = True
    vol_target_enabled: bool = True
    vol_target: float = Field(0.01, gt=0, le=1, description="daily volatility")
    dry_run: bool = False
    max_orders: int = Field(10, ge=1, le=1000)
    fee_rate: float = Field(0.001, ge=0, lt=0.1)
    slippage_bps: float = Field(5.0, ge=0, le=1000)
    min_notional: float = Field(10.0, ge=0)
    backoff_enabled: bool = True
    backoff_mult: float = Field(2.0, ge=1, le=100)
    backoff_max: float = Field(3600.0, gt=0, le=7 * 86_400, description="seconds")
    prometheus: bool = True
    prom_port: Port = 9001
    # Beyond the deployment guide: how the target is built and how close is close enough.
    band: float = Field(0.01, ge=0, lt=0.5, description="no-trade band, in portfolio weight")
    risk_aversion: float = Field(2.5, gt=0, le=1000, description="mv: lambda in mu'w - lambda/2 w'Sw")
    mv_objective: Literal["utility", "min_variance", "max_sharpe"] = "utility"
    expected_returns: str = Field("", description="mv: ASSET=annual return,... (else shrunk history)")
    risk_budgets: str = Field("", description="rp: ASSET=budget,... (others 1; normalised)")
    max_weight: float = Field(1.0, gt=0, le=1, description="mv: largest weight of one asset")
    lock_ttl: float = Field(15.0, ge=1, le=600, description="seconds a dead leader holds the lock")

    @field_validator("method", mode="before")
    @classmethod
    def _method_alias(cls, value: Any) -> Any:
        """The deployment guide's words for the methods ("risk-parity ou mean-variance")."""
        if isinstance(value, str):
            return METHOD_ALIASES.get(value.strip().lower().replace("_", "-"), value)
        return value

    @field_validator("expected_returns", "risk_budgets")
    @classmethod
    def _asset_map_valid(cls, value: str, info: Any) -> str:
        parse_asset_map(value, positive=info.field_name == "risk_budgets")
        return value

    @property
    def expected_returns_map(self) -> dict[str, float]:
        return parse_asset_map(self.expected_returns)

    @property
    def risk_budgets_map(self) -> dict[str, float]:
        return parse_asset_map(self.risk_budgets, positive=True)

    @model_validator(mode="after")
    def _backoff_covers_interval(self) -> RebalanceSettings:
        if self.backoff_enabled and self.backoff_max < self.interval:
            raise ValueError(
                f"CSE_REBALANCE_BACKOFF_MAX={self.backoff_max:g} is below "
                f"CSE_REBALANCE_INTERVAL={self.interval:g}; allowed: a value >= the interval"
            )
        return self



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

    @classmethod
    def probe_port(cls) -> int:
        """:attr:`metrics_port` from the port settings alone (see CommonSettings.probe_port)."""
        port = ObservabilitySettings().metrics_port
        return port if port is not None else RebalanceSettings().prom_port
