"""Order planning across venues, by hand-computed cases, and the backoff sequence."""

from __future__ import annotations

import pytest

from shared.backoff import next_delay
from shared.errors import PlanError
from workers.rebalancer.plan import Holding, plan_orders

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
    with pytest.raises(PlanError, match="no price for DOGE"):
        plan_orders([Holding("A", "DOGE", 5.0)], {}, {}, quote="USDT", plan_id="x", min_notional=1,
                    max_orders=1, **COST)


def test_backoff_sequence() -> None:
    seq = [next_delay(300, n, 2.0, 3600) for n in range(6)]
    assert seq == [300, 600, 1200, 2400, 3600, 3600]
    assert next_delay(300, 5, 2.0, 3600, enabled=False) == 300


def test_limits_come_from_each_venues_quotes_widened_by_the_slippage() -> None:
    quotes = {("A", "BTC/USDT"): (99.0, 101.0), ("B", "ETH/USDT"): (9.9, 10.1)}
    plan = plan_orders([Holding("A", "BTC", 1.0), Holding("B", "USDT", 100.0)],
                       {"BTC": 100.0, "ETH": 10.0}, {"BTC": 0.25, "ETH": 0.25, "USDT": 0.5},
                       quote="USDT", plan_id="q", min_notional=10, max_orders=10, quotes=quotes, **COST)
    sell, buy = plan.orders
    assert (sell.venue, sell.side, sell.price) == ("A", "sell", pytest.approx(99.0 * (1 - 0.0005)))
    assert (buy.venue, buy.side, buy.price) == ("B", "buy", pytest.approx(10.1 * (1 + 0.0005)))
    # 50 of ETH at the mid is 5 ETH; B's 100 USDT pays 5 ETH at the limit plus the fee
    assert buy.amount == pytest.approx(5.0) and buy.notional == pytest.approx(50.0)
    assert buy.amount * buy.price * 1.001 <= 100.0


def test_only_the_free_quantity_is_sold_and_only_free_quote_spent() -> None:
    holdings = [Holding("A", "BTC", 1.0, free=0.2), Holding("A", "USDT", 100.0, free=30.0)]
    plan = plan_orders(holdings, {"BTC": 100.0, "ETH": 10.0}, {"BTC": 0.0, "ETH": 1.0}, quote="USDT",
                       plan_id="f", min_notional=1, max_orders=10, **COST)
    assert plan.total_value == pytest.approx(200.0), "valued on the total"
    sells = [o for o in plan.orders if o.side == "sell"]
    buys = [o for o in plan.orders if o.side == "buy"]
    assert sum(o.amount for o in sells) == pytest.approx(0.2)
    proceeds = sum(o.amount * o.price * (1 - 0.001) for o in sells)
    assert sum(o.amount * o.price * 1.001 for o in buys) == pytest.approx(30.0 + proceeds)


def test_the_venues_own_minimum_notional_is_respected() -> None:
    plan = plan_orders([Holding("A", "USDT", 100.0)], {"ETH": 10.0}, {"ETH": 0.3}, quote="USDT",
                       plan_id="m", min_notional=1, max_orders=10,
                       venue_min_notional={("A", "ETH/USDT"): 50.0}, **COST)
    assert plan.orders == [] and plan.skipped_min_notional == 1


def test_balances_are_never_exceeded_on_random_portfolios() -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    assets = ["BTC", "ETH", "SOL"]
    amounts = st.floats(0, 50, allow_nan=False)

    @settings(max_examples=200, deadline=None)
    @given(qty=st.lists(amounts, min_size=8, max_size=8), free=st.lists(st.floats(0, 1), min_size=8,
                                                                       max_size=8),
           raw=st.lists(st.floats(0.01, 1), min_size=4, max_size=4),
           spread=st.floats(0, 0.01), max_orders=st.integers(1, 12))
    def check(qty, free, raw, spread, max_orders):
        prices = {"BTC": 100.0, "ETH": 10.0, "SOL": 1.0}
        names = [(v, a) for v in ("A", "B") for a in [*assets, "USDT"]]
        holdings = [Holding(v, a, q * (1 if a != "USDT" else 40), free=f * q * (1 if a != "USDT" else 40))
                    for (v, a), q, f in zip(names, qty, free, strict=True)]
        targets = dict(zip([*assets, "USDT"], [r / sum(raw) for r in raw], strict=True))
        quotes = {(v, f"{a}/USDT"): (p * (1 - spread), p * (1 + spread))
                  for v in ("A", "B") for a, p in prices.items()}
        plan = plan_orders(holdings, prices, targets, quote="USDT", plan_id="h", min_notional=1,
                           max_orders=max_orders, band=0.01, quotes=quotes, **COST)
        free_of = {(h.venue, h.asset): h.available for h in holdings}
        assert len(plan.orders) <= max_orders
        sides = [o.side for o in plan.orders]
        assert sides == sorted(sides, key=lambda s: s == "buy"), "sells first"
        cash = {v: free_of[(v, "USDT")] for v in ("A", "B")}
        for o in plan.orders:  # executed in plan order, at the worst (limit) price
            asset = o.symbol.split("/")[0]
            if o.side == "sell":
                free_of[(o.venue, asset)] -= o.amount
                assert free_of[(o.venue, asset)] >= -1e-9
                cash[o.venue] += o.amount * o.price * (1 - 0.001)
            else:
                cash[o.venue] -= o.amount * o.price * 1.001
                assert cash[o.venue] >= -1e-9
            assert o.notional >= 1

    check()
