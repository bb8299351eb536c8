"""Order planning across venues, by hand-computed cases, and the backoff sequence."""

from __future__ import annotations

import pytest

from workers.rebalancer.plan import Holding, next_delay, plan_orders

COST = dict(fee_rate=0.001, slippage_bps=5.0)  # 0.15 % of notional


def test_overweight_asset_is_sold_where_it_is_held() -> None:
    plan = plan_orders([Holding("A", "BTC", 1.0), Holding("B", "USDT", 100.0)], {"BTC": 100.0},
                       {"BTC": 0.25, "USDT": 0.75}, quote="USDT", plan_id="p1", min_notional=10,
                       max_orders=10, **COST)
    assert plan.total_value == 200.0
    assert plan.current_weights == {"BTC": 0.5, "USDT": 0.5}
    (order,) = plan.orders
    assert (order.venue, order.symbol, order.side) == ("A", "BTC/USDT", "sell")
    assert order.notional == pytest.approx(50.0) and order.amount == pytest.approx(0.5)
    assert order.est_cost == pytest.approx(50.0 * 0.0015)
    assert plan.skipped == 0


def test_buys_use_the_richest_venue_and_never_spend_more_than_it_has() -> None:
    plan = plan_orders([Holding("A", "USDT", 100.0), Holding("B", "USDT", 60.0)], {"ETH": 10.0},
                       {"ETH": 0.75}, quote="USDT", plan_id="p2", min_notional=10, max_orders=10, **COST)
    # 120 of ETH to buy: A can pay for 100/1.0015, B the rest
    assert [(o.venue, o.side) for o in plan.orders] == [("A", "buy"), ("B", "buy")]
    a, b = plan.orders
    assert a.notional * 1.0015 == pytest.approx(100.0)
    assert a.notional + b.notional == pytest.approx(120.0)
    assert b.notional * 1.0015 <= 60.0


def test_sell_proceeds_fund_buys_on_the_same_venue_and_sells_come_first() -> None:
    plan = plan_orders([Holding("A", "BTC", 1.0), Holding("A", "USDT", 0.0)], {"BTC": 100.0, "ETH": 10.0},
                       {"BTC": 0.5, "ETH": 0.5}, quote="USDT", plan_id="p3", min_notional=10,
                       max_orders=10, **COST)
    assert [o.side for o in plan.orders] == ["sell", "buy"]
    sell, buy = plan.orders
    assert sell.notional == pytest.approx(50.0)
    assert buy.notional * 1.0015 == pytest.approx(50.0 * (1 - 0.0015))


def test_min_notional_band_and_max_orders_are_counted() -> None:
    holdings = [Holding("A", "USDT", 1000.0), Holding("A", "BTC", 0.1)]
    prices = {"BTC": 1000.0, "ETH": 100.0, "SOL": 10.0, "XRP": 1.0}
    targets = {"BTC": 0.105, "ETH": 0.3, "SOL": 0.2, "XRP": 0.008}
    plan = plan_orders(holdings, prices, targets, quote="USDT", plan_id="p4", min_notional=10,
                       max_orders=1, band=0.005, **COST)
    # total 1100: BTC 0.105 - 0.0909 = 0.0141 > band -> buy 15.5; ETH 330; SOL 220;
    # XRP 8.8 is over the band (5.5) but under the minimum notional -> skipped;
    # of the three viable buys only the largest (ETH) is kept
    assert plan.skipped_min_notional == 1
    assert plan.skipped_max_orders == 2
    (order,) = plan.orders
    assert order.symbol == "ETH/USDT" and order.notional == pytest.approx(330.0)
    banded = plan_orders(holdings, prices, {"BTC": 0.095}, quote="USDT", plan_id="p5",
                         min_notional=10, max_orders=10, band=0.01, **COST)
    assert banded.orders == [] and banded.within_band == ["BTC"]


def test_unlisted_markets_are_not_used_and_ids_are_deterministic() -> None:
    args = dict(quote="USDT", plan_id="plan-abc", min_notional=1, max_orders=10, **COST)
    holdings = [Holding("A", "USDT", 100.0), Holding("B", "USDT", 100.0)]
    plan = plan_orders(holdings, {"ETH": 10.0}, {"ETH": 0.2}, listed={"A": set(), "B": {"ETH/USDT"}},
                       **args)
    assert {o.venue for o in plan.orders} == {"B"}
    again = plan_orders(holdings, {"ETH": 10.0}, {"ETH": 0.2}, listed={"A": set(), "B": {"ETH/USDT"}},
                        **args)
    assert [o.client_order_id for o in plan.orders] == [o.client_order_id for o in again.orders]
    assert plan.orders[0].client_order_id == "rbplan-abc00b"


def test_a_missing_price_is_named() -> None:
    with pytest.raises(ValueError, match="no price for DOGE"):
        plan_orders([Holding("A", "DOGE", 5.0)], {}, {}, quote="USDT", plan_id="x", min_notional=1,
                    max_orders=1, **COST)


def test_backoff_sequence() -> None:
    seq = [next_delay(300, n, 2.0, 3600) for n in range(6)]
    assert seq == [300, 600, 1200, 2400, 3600, 3600]
    assert next_delay(300, 5, 2.0, 3600, enabled=False) == 300
