"""The one order → report conversion: statuses, and fees in the quote currency."""

from __future__ import annotations

import pytest

from shared.orders import execution_report, order_status, planned_report, quote_fee


def test_fees_are_reported_in_the_quote_whatever_the_venue_charged_in() -> None:
    # 0.5 BTC bought at an average of 30,000: 0.0005 BTC fee (= 15 USDT) plus 3 USDT;
    # a fee in BNB has no price here and is left to the venue's ledger
    order = {"filled": 0.5, "average": 30_000.0, "price": 30_010.0,
             "fees": [{"cost": 0.0005, "currency": "BTC"}, {"cost": 3.0, "currency": "USDT"},
                      {"cost": 0.01, "currency": "BNB"}]}
    assert quote_fee(order, "BTC/USDT") == pytest.approx(0.0005 * 30_000 + 3.0)
    report = execution_report(order, source="rebalancer", parent_id="p", venue="a", symbol="BTC/USDT",
                              side="buy", client_order_id="c1", amount=0.5)
    assert report.fee == pytest.approx(18.0) and report.fee_currency == "USDT"
    assert report.status == "filled" and report.filled == 0.5 and report.average == 30_000.0


def test_a_single_fee_field_counts_and_the_limit_prices_it_without_an_average() -> None:
    order = {"filled": 0.0, "price": 2_000.0, "fee": {"cost": 0.001, "currency": "ETH"}}
    assert quote_fee(order, "ETH/USDT") == pytest.approx(2.0)
    assert quote_fee(None, "ETH/USDT") == 0.0


@pytest.mark.parametrize(("order", "refused", "status"), [
    (None, True, "rejected"),
    (None, False, "failed"),
    ({"filled": 1.0, "status": "closed"}, False, "filled"),
    ({"filled": 1.0 - 1e-12, "status": "closed"}, False, "filled"),  # float noise is whole
    ({"filled": 0.4, "status": "expired"}, False, "partial"),
    ({"filled": 0.0, "status": "expired"}, False, "canceled"),
    ({"filled": 0.0, "status": "canceled"}, False, "canceled"),
    ({"filled": 0.0, "status": "rejected"}, False, "rejected"),
    ({"filled": 0.0, "status": "open"}, False, "open"),
    ({"filled": 0.0}, False, "canceled"),
])
def test_status(order: dict | None, refused: bool, status: str) -> None:
    assert order_status(order, 1.0, refused=refused) == status


def test_a_report_of_no_order_keeps_the_error_and_no_fee() -> None:
    report = execution_report(None, source="arbitrage", parent_id="o", venue="b", symbol="SOL/USDT",
                              side="sell", client_order_id="c2", amount=3.0, refused=True,
                              error="b create_order: InsufficientFunds")
    assert (report.status, report.filled, report.fee, report.order_id) == ("rejected", 0.0, 0.0, None)
    assert report.error.startswith("b create_order")


def test_a_planned_report_is_a_dry_run() -> None:
    report = planned_report(source="hedge", parent_id="o", venue="a", symbol="BTC/USDT", side="buy",
                            client_order_id="c3", amount=0.1, price=30_000.0)
    assert report.status == "planned" and report.dry_run and report.average == 30_000.0
