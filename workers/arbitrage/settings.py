from __future__ import annotations

from typing import ClassVar

from shared.settings import CommonSettings


class ArbitrageSettings(CommonSettings):
    """Settings of the arbitrage-worker service."""

    default_metrics_port: ClassVar[int] = 9003
    group_id: str = "arbitrage-worker"
