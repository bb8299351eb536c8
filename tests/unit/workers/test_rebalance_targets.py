"""How the engine turns the rebalance settings into target weights (no exchange involved)."""

from __future__ import annotations

import numpy as np
import pytest

from shared import allocation
from shared.errors import CseError
from workers.rebalancer.engine import DAYS_PER_YEAR, RebalanceEngine
from workers.rebalancer.settings import RebalanceSettings

ASSETS = ["BTC", "ETH", "SOL"]
COV = np.array([[0.0016, 0.0012, 0.0010], [0.0012, 0.0025, 0.0015], [0.0010, 0.0015, 0.0049]])


def engine(**settings: object) -> RebalanceEngine:
    return RebalanceEngine(RebalanceSettings(**settings), gateway=None, symbols=["BTC/USDT"])  # type: ignore[arg-type]


def test_risk_budgets_set_the_risk_contributions_and_the_vol_target_scales_them() -> None:
    e = engine(method="rp", risk_budgets="BTC=2", vol_target=0.02)
    targets, predicted = e.targets(ASSETS, COV, np.zeros(3))
    w = np.array([targets[a] for a in ASSETS])
    rc = allocation.risk_contributions(w, COV)
    assert rc / rc.sum() == pytest.approx([0.5, 0.25, 0.25], abs=1e-10)
    assert predicted == pytest.approx(0.02, rel=1e-12)
    assert float(np.sqrt(w @ COV @ w)) == pytest.approx(0.02, rel=1e-12)
    assert targets["USDT"] == pytest.approx(1 - w.sum())


def test_mean_variance_uses_configured_annual_returns_and_caps_each_weight() -> None:
    e = engine(method="mv", vol_target_enabled=False, expected_returns="SOL=3.65", max_weight=0.5,
               risk_aversion=1.0)
    mu = e._expected(ASSETS, np.array([0.001, 0.001, -0.5]))
    assert mu == pytest.approx([0.001, 0.001, 3.65 / DAYS_PER_YEAR])
    targets, _ = e.targets(ASSETS, COV, mu)
    assert targets["SOL"] == pytest.approx(0.5, abs=1e-12), "SOL is the best asset but capped"
    assert sum(targets[a] for a in ASSETS) == pytest.approx(1.0)
    assert max(targets[a] for a in ASSETS) <= 0.5 + 1e-12
    uncapped, _ = engine(method="mv", vol_target_enabled=False, risk_aversion=1.0).targets(ASSETS, COV, mu)
    assert uncapped["SOL"] > 0.5


def test_an_impossible_weight_cap_is_named() -> None:
    e = engine(method="mv", max_weight=0.3)
    with pytest.raises(CseError, match=r"CSE_REBALANCE_MAX_WEIGHT=0\.3 cannot hold"):
        e.targets(ASSETS, COV, np.zeros(3))


def test_the_previous_weights_warm_start_the_next_solve() -> None:
    e = engine(method="mv", vol_target_enabled=False)
    e.targets(ASSETS, COV, np.array([0.001, 0.002, 0.003]))
    assert e._last_weights is not None and e._last_weights[0] == ASSETS
    again, _ = e.targets(ASSETS, COV * 1.01, np.array([0.001, 0.002, 0.003]))
    assert sum(again.values()) == pytest.approx(1.0)
