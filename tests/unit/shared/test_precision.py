"""Amounts and limit prices on a venue's precision (a real ccxt binance client, markets set by hand)."""

from __future__ import annotations

import ccxt
import pytest

from shared.precision import amount_floor, limit_price, lot_step, min_amount


@pytest.fixture(scope="module")
def client() -> ccxt.binance:
    ex = ccxt.binance()
    ex.set_markets([{
        "id": "BTCUSDT", "symbol": "BTC/USDT", "base": "BTC", "quote": "USDT", "baseId": "BTC",
        "quoteId": "USDT", "spot": True, "type": "spot", "active": True,
        "precision": {"amount": 0.0001, "price": 0.01},
        "limits": {"amount": {"min": 0.0001, "max": 9000.0}, "cost": {"min": 5.0}},
    }])
    return ex


def test_amounts_truncate_to_lots_but_forgive_float_noise(client: ccxt.binance) -> None:
    assert lot_step(client, "BTC/USDT") == 0.0001
    # the trader's case: 0.08 − 0.07 is 0.009999999999999995 in floats, and is 100 lots
    assert amount_floor(client, "BTC/USDT", 0.08 - 0.07) == 0.01
    assert client.amount_to_precision("BTC/USDT", 0.08 - 0.07) == "0.0099"  # what ccxt alone does
    assert amount_floor(client, "BTC/USDT", 0.123456) == 0.1234
    assert amount_floor(client, "BTC/USDT", 0.00009) == 0.0
    assert amount_floor(client, "BTC/USDT", 0.0) == 0.0
    assert amount_floor(client, "BTC/USDT", -1.0) == 0.0


def test_limits_round_to_the_safe_side_of_the_tick(client: ccxt.binance) -> None:
    assert limit_price(client, "BTC/USDT", "buy", 30006.004) == 30006.0
    assert limit_price(client, "BTC/USDT", "sell", 30006.004) == 30006.01
    # a hair off a tick is that tick, on both sides
    assert limit_price(client, "BTC/USDT", "buy", 30000 * 1.0000000000001 - 0.00000001) == 30000.0
    assert limit_price(client, "BTC/USDT", "buy", 29999.999999999996) == 30000.0
    assert limit_price(client, "BTC/USDT", "sell", 30000.000000000004) == 30000.0
    assert limit_price(client, "BTC/USDT", "sell", 30000.0) == 30000.0


def test_the_minimum_amount_counts_the_minimum_cost(client: ccxt.binance) -> None:
    assert min_amount(client, "BTC/USDT", 30000.0) == pytest.approx(5.0 / 30000.0)
    assert min_amount(client, "BTC/USDT", 1e9) == 0.0001
