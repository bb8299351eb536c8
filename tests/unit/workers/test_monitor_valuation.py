"""The monitor's arithmetic by hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from shared.portfolio import median_mids
from workers.monitor import valuation as val


def test_median_mid_across_venues_and_valuation_by_asset_and_venue() -> None:
    quotes = {("a", "BTC/USDT"): (99.0, 101.0), ("b", "BTC/USDT"): (101.0, 103.0),
              ("c", "BTC/USDT"): (200.0, 202.0), ("a", "ETH/USDT"): (9.0, 11.0)}
    prices = median_mids(quotes)
    assert prices == {"BTC": 102.0, "ETH": 10.0}
    v = val.value({("a", "BTC"): 1.0, ("b", "BTC"): 0.5, ("a", "USDT"): 47.0, ("b", "ETH"): 2.0,
                   ("b", "DOGE"): 3.0}, prices, "USDT")
    assert v.total == pytest.approx(153.0 + 47.0 + 20.0)
    assert v.by_venue == pytest.approx({"a": 149.0, "b": 71.0})
    assert v.allocation == pytest.approx({"BTC": 153 / 220, "USDT": 47 / 220, "ETH": 20 / 220})
    assert v.missing_prices == ["DOGE"]


def test_pnl_against_baselines_and_drawdown_from_the_peak() -> None:
    assert val.pnl({"a": 120.0, "b": 80.0, "new": 5.0}, {"a": 100.0, "b": 100.0}) == \
        {"a": 20.0, "b": -20.0, "new": 0.0}
    assert val.drawdown(90.0, 100.0) == pytest.approx(0.1)
    assert val.drawdown(110.0, 100.0) == 0.0
    assert val.drawdown(5.0, 0.0) == 0.0


def test_correlation_of_returns_finds_the_most_correlated_pair() -> None:
    rng = np.random.default_rng(1)
    common = rng.normal(0, 0.01, 200)
    closes = {
        "BTC": list(100 * np.exp(np.cumsum(common + rng.normal(0, 0.001, 200)))),
        "ETH": list(10 * np.exp(np.cumsum(common + rng.normal(0, 0.001, 200)))),
        "SOL": list(5 * np.exp(np.cumsum(rng.normal(0, 0.01, 200)))),
        "FLAT": [1.0] * 200,  # no variance: left out
    }
    assets, matrix = val.correlation(closes)
    assert assets == ["BTC", "ETH", "SOL"]
    assert np.allclose(np.diag(matrix), 1.0) and np.allclose(matrix, matrix.T)
    top, pair = val.max_pairwise(assets, matrix)
    assert pair == ("BTC", "ETH") and top > 0.95
    assert abs(matrix[0, 2]) < 0.3
    assert val.max_pairwise(["BTC"], np.eye(1)) == (0.0, None)
