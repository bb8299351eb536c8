from __future__ import annotations

from typing import ClassVar

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from shared import names
from shared.settings import CommonSettings, SettingsPart, VenueSettings, split_list, split_pairs

FEE_FORM = "venue=fee with 0 <= fee < 0.1"


class ArbitrageParams(SettingsPart):
    """Detection and execution (``CSE_ARB_*``)."""

    model_config = SettingsConfigDict(env_prefix="CSE_ARB_")

    dry_run: bool = False
    taker_fee: float = Field(0.001, ge=0, lt=0.1, description="default taker fee of a venue")
    taker_fees: str = Field("", description="per-venue overrides: venue=fee,...")
    slippage_bps: float = Field(2.0, ge=0, le=1000)
    max_notional: float = Field(1000.0, gt=0, description="quote currency per trade")
    min_profit: float = Field(0.01, ge=0, description="quote currency")
    min_edge_bps: float = Field(1.0, ge=0, le=10_000)
    stale_ms: int = Field(3000, ge=1, le=600_000, description="a book older than this never trades")
    hedge_max_loss_bps: float = Field(50.0, ge=0, le=5000)
    balance_interval_s: float = Field(5.0, gt=0, le=3600, description="venue balance reads")
    balance_stream: bool = Field(True, description="apply others' fills from each venue's account stream")
    refresh_ms: int = Field(100, ge=0, le=600_000,
                            description="books older than this are fetched again before an execution")
    triangular: bool = False
    triangular_start: str = Field("USDT", description="start currencies, comma-separated")
    lease_s: float = Field(30.0, ge=1, le=3600, description="execution lease before a takeover")

    @field_validator("taker_fees")
    @classmethod
    def _fees_parse(cls, value: str) -> str:
        for venue, fee in split_pairs(value, FEE_FORM):
            try:
                ok = 0 <= float(fee) < 0.1
            except ValueError:
                ok = False
            if not ok:
                raise ValueError(f"{f'{venue}={fee}'!r} is not {FEE_FORM}")
        return value

    def fee_map(self) -> dict[str, float]:
        return {venue: float(fee) for venue, fee in split_pairs(self.taker_fees, FEE_FORM)}

    @property
    def start_currencies(self) -> tuple[str, ...]:
        return tuple(split_list(self.triangular_start))


class ArbitrageSettings(CommonSettings):
    """Settings of the arbitrage-worker service."""

    default_metrics_port: ClassVar[int] = 9003
    group_id: str = names.ARBITRAGE
    executor_group_id: str = "arbitrage-executor"
    triangular_group_id: str = "arbitrage-triangular"
    arb: ArbitrageParams = Field(default_factory=ArbitrageParams)
    venues: VenueSettings = Field(default_factory=VenueSettings)
