"""Scenario measurement on hand-made journals, reports and ledgers, checked against hand arithmetic."""

from __future__ import annotations

import json
import tomllib
from decimal import Decimal
from typing import Any

import pytest

from shared.messages import Execution, Opportunity, OpportunityLeg
from tooling.scenario.measure import Check, Collected, evaluate, fill_changes, value
from tooling.scenario.spec import parse

SCENARIO = """
name = "hand"
[marks]
BTC = 30000
ETH = 2000
[venues.x]
fee = 0.001
balances = { USDT = 10000, BTC = 0 }
[[venues.x.symbols]]
symbol = "BTC/USDT"
step = 0.0001
[[venues.x.books]]
at = 0
symbol = "BTC/USDT"
bids = [[29990, 1]]
asks = [[30000, 0.08]]
[venues.y]
fee = 0.001
balances = { USDT = 0, BTC = 1 }
[[venues.y.books]]
at = 0
symbol = "BTC/USDT"
bids = [[30100, 1]]
asks = [[30110, 1]]
"""


def scenario(expect: str = "", marks: str | None = None) -> Any:
    text = SCENARIO if marks is None else SCENARIO.replace("BTC = 30000\nETH = 2000", marks)
    return parse(tomllib.loads(text + expect), "hand.toml")


def fill(cid: str, side: str, price: str, qty: str, commission: str, asset: str, ts: int,
         order_id: int = 1, symbol: str = "BTC/USDT") -> dict[str, Any]:
    return {"ts": ts, "venue": "?", "account": "acct-0", "symbol": symbol, "orderId": order_id,
            "clientOrderId": cid, "tradeId": ts, "side": side.upper(), "type": "LIMIT", "price": price,
            "qty": qty, "quoteQty": format(Decimal(price) * Decimal(qty), "f"), "commission": commission,
            "commissionAsset": asset, "isMaker": False}


def report(parent: str, venue: str, cid: str, side: str, filled: float, amount: float = 0.08, *,
           status: str = "filled", source: str = "arbitrage", symbol: str = "BTC/USDT",
           error: str | None = None) -> Execution:
    return Execution(id=cid, source=source, parent_id=parent, venue=venue, symbol=symbol,  # type: ignore[arg-type]
                     side=side, client_order_id=cid, status=status, amount=amount,  # type: ignore[arg-type]
                     filled=filled, error=error, ts_ms=1)


def opportunity(oid: str, kind: str = "cross", buy: str = "x", sell: str = "y",
                path: list[str] | None = None, symbol: str = "BTC/USDT") -> Opportunity:
    return Opportunity(id=oid, kind=kind, symbol=symbol, buy_venue=buy, sell_venue=sell,  # type: ignore[arg-type]
                       quantity=0.08, buy_vwap=30000, sell_vwap=30100, buy_worst=30000, sell_worst=30100,
                       gross_profit=8, net_profit=3, edge_bps=13, ts_book_ms=1, ts_detect_ms=1,
                       path=path or [])


def ledger(balances: dict[str, str], conserved: bool = True) -> dict[str, Any]:
    return {"conserved": conserved, "locks_consistent": True, "fills": 0,
            "assets": {a: {"conserved": conserved} for a in balances},
            "accounts": {"acct-0": {a: {"free": v, "locked": "0"} for a, v in balances.items()}}}


BEFORE = {"x": ledger({"USDT": "10000", "BTC": "0"}), "y": ledger({"USDT": "0", "BTC": "1"})}


def collected(**kw: Any) -> Collected:
    kw.setdefault("ledgers_before", BEFORE)
    kw.setdefault("books", {("x", "BTC/USDT"): 10, ("y", "BTC/USDT"): 10})
    return Collected(**kw)


# One clean cross execution: buy 0.08 BTC on x at 30000, sell 0.08 on y at 30100, 0.1 % fees.
#   x: BTC +0.08 - 0.00008 (fee in the asset received) = +0.07992, USDT -2400
#   y: BTC -0.08, USDT +2408 - 2.408 = +2405.592
#   in all: BTC -0.00008 (x 30000 = -2.4), USDT +5.592  ->  PnL 3.192
CLEAN = dict(
    executions=[report("o1", "x", "cseo1b", "buy", 0.08), report("o1", "y", "cseo1s", "sell", 0.08)],
    opportunities={"o1": opportunity("o1")},
    journals={"x": [fill("cseo1b", "buy", "30000", "0.08", "0.00008", "BTC", 1000)],
              "y": [fill("cseo1s", "sell", "30100", "0.08", "2.408", "USDT", 1001)]},
    ledgers_after={"x": ledger({"USDT": "7600", "BTC": "0.07992"}),
                   "y": ledger({"USDT": "2405.592", "BTC": "0.92"})},
)


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


def test_fill_changes_are_exact() -> None:
    changes = fill_changes(CLEAN["journals"]["x"] + CLEAN["journals"]["y"])  # type: ignore[operator]
    assert changes == {"BTC": Decimal("-0.00008"), "USDT": Decimal("5.592")}
    assert value(changes, {"BTC": Decimal(30000)}, "USDT") == (Decimal("3.192"), [])
    assert value(changes, {}, "USDT") == (Decimal("5.592"), ["BTC"])


def test_a_clean_cross_execution() -> None:
    sc = scenario("""
        [expect]
        executions = 1
        one_leg = 0
        refused_legs = 0
        pnl_total = 3.192
        pnl_tolerance = 0.0001
        [[expect.execution]]
        kind = "cross"
        symbol = "BTC/USDT"
        buy = "x"
        sell = "y"
        quantity = 0.08
        pnl = 3.192
        [expect.balances.x]
        BTC = 0.07992
        USDT = 7600
        """)
    report_ = evaluate(sc, collected(**CLEAN))
    failed = [c.line() for c in report_.checks if not c.passed]
    assert not failed, failed
    (ex,) = report_.executions
    assert (ex.kind, ex.buy, ex.sell, ex.quantity, ex.pnl, ex.one_leg) == (
        "cross", "x", "y", Decimal("0.08"), Decimal("3.192"), False)
    assert report_.pnl_total == Decimal("3.192")
    checks = by_name(report_.checks)
    assert checks["execution[0].quantity"].tolerance == 0.0001  # the lot step given for BTC/USDT
    assert checks["balances.x.BTC"].tolerance == 0.0001
    assert checks["balances.x.USDT"].tolerance == 0.0001  # the quote: pnl_tolerance
    summary = report_.summary()
    assert set(summary) == {"scenario", "passed", "checks", "executions", "one_leg", "executions_count",
                            "pnl_total", "elapsed_s"}
    assert summary["passed"] and summary["executions_count"] == 1 and summary["pnl_total"] == 3.192
    assert summary["executions"][0]["orders"][0]["client_order_id"] == "cseo1b"
    json.dumps(summary)  # plain JSON
    assert checks["pnl_total"].line() == "PASS pnl_total: expected 3.192 ± 0.0001, measured 3.192"


def test_a_one_leg_execution_with_its_hedge() -> None:
    # the buy leg filled 0.05 of 0.08, the sell leg all of it; the hedge bought 0.03 back on y.
    #   x buy   0.05 @ 30000: BTC +0.05 - 0.00005, USDT -1500
    #   y sell  0.08 @ 30100: BTC -0.08,            USDT +2408 - 2.408
    #   y hedge 0.03 @ 30110: BTC +0.03 - 0.00003, USDT -903.3
    #   BTC: 0.04995 - 0.08 + 0.02997 = -0.00008 -> -2.4;  USDT: -1500 + 2405.592 - 903.3 = 2.292
    #   PnL = 2.292 - 2.4 = -0.108
    data = collected(
        executions=[report("o2", "x", "cseo2b", "buy", 0.05, status="partial"),
                    report("o2", "y", "cseo2s", "sell", 0.08),
                    report("o2", "y", "cseo2h", "buy", 0.03, 0.03, source="hedge")],
        opportunities={"o2": opportunity("o2")},
        journals={"x": [fill("cseo2b", "buy", "30000", "0.05", "0.00005", "BTC", 2000)],
                  "y": [fill("cseo2s", "sell", "30100", "0.08", "2.408", "USDT", 2001, order_id=7),
                        fill("cseo2h", "buy", "30110", "0.03", "0.00003", "BTC", 2002, order_id=8)]},
        ledgers_after={"x": ledger({"USDT": "8500", "BTC": "0.04995"}),
                       "y": ledger({"USDT": "1502.292", "BTC": "0.94997"})},
    )
    rep = evaluate(scenario("[expect]\none_leg = 1\npnl_total = -0.108\n"), data)
    assert not [c.line() for c in rep.checks if not c.passed]
    (ex,) = rep.executions
    assert ex.one_leg and ex.quantity == Decimal("0.05") and ex.pnl == Decimal("-0.108")
    assert rep.pnl_total == Decimal("-0.108")


def test_legs_that_did_not_match_without_a_hedge_are_one_leg_too() -> None:
    data = collected(executions=[report("o3", "x", "cseo3b", "buy", 0.0, status="canceled"),
                                 report("o3", "y", "cseo3s", "sell", 0.08)],
                     journals={"y": [fill("cseo3s", "sell", "30100", "0.08", "2.408", "USDT", 5)]},
                     ledgers_after={"x": ledger({"USDT": "10000", "BTC": "0"}),
                                    "y": ledger({"USDT": "2405.592", "BTC": "0.92"})})
    # no opportunity record read back: buy/sell venues come from the legs
    (ex,) = evaluate(scenario(), data).executions
    assert ex.one_leg and (ex.buy, ex.sell, ex.kind) == ("x", "y", "cross")
    # sold 0.08 BTC above the mark: -0.08 x 30000 + 2408 - 2.408 = 5.592
    assert ex.pnl == Decimal("5.592") and ex.quantity == 0
    # drift recorded for an opportunity, or its Redis outcome, also make it one-leg
    clean = collected(**CLEAN)
    clean.drift = [{"opportunity": "o1", "venue": "x", "asset": "BTC", "quantity": 0.01}]
    assert evaluate(scenario(), clean).executions[0].one_leg
    clean = collected(**CLEAN, states={"o1": {"state": "done", "outcome": "one_leg"}})
    assert evaluate(scenario(), clean).executions[0].one_leg


def test_opportunities_that_filled_nothing_are_not_executions_but_refusals_count() -> None:
    data = collected(**{**CLEAN, "executions": [
        *CLEAN["executions"],  # type: ignore[list-item]
        report("o4", "x", "cseo4b", "buy", 0.0, status="rejected", error="insufficient balance"),
        report("o4", "y", "cseo4s", "sell", 0.0, status="canceled")]})
    rep = evaluate(scenario("[expect]\nexecutions = 1\nrefused_legs = 0\n"), data)
    checks = by_name(rep.checks)
    assert checks["executions"].passed and len(rep.executions) == 1
    assert not checks["refused_legs"].passed and checks["refused_legs"].measured == 1
    assert "insufficient balance" in checks["refused_legs"].line()


def test_executions_are_ordered_by_first_fill() -> None:
    late = [report("a", "x", "cseab", "buy", 0.01, 0.01), report("a", "y", "cseas", "sell", 0.01, 0.01)]
    early = [report("b", "x", "csebb", "buy", 0.02, 0.02), report("b", "y", "csebs", "sell", 0.02, 0.02)]
    journals = {"x": [fill("cseab", "buy", "30000", "0.01", "0", "BTC", 900, 1),
                      fill("csebb", "buy", "30000", "0.02", "0", "BTC", 500, 2)],
                "y": [fill("cseas", "sell", "30100", "0.01", "0", "USDT", 901, 3),
                      fill("csebs", "sell", "30100", "0.02", "0", "USDT", 501, 4)]}
    rep = evaluate(scenario(), collected(executions=late + early, journals=journals))
    assert [e.id for e in rep.executions] == ["b", "a"]
    assert [float(e.pnl) for e in rep.executions] == [2.0, 1.0]  # 100 USDT per BTC, no fees


def test_triangular_quantity_is_the_first_legs_fill() -> None:
    path = ["BTC/USDT", "ETH/BTC", "ETH/USDT"]
    # buy 0.01 BTC for 300 USDT, buy 0.15 ETH for 0.01 BTC, sell 0.15 ETH for 303 USDT: +3 USDT
    journals = {"x": [fill("cset1", "sell", "2020", "0.15", "0", "USDT", 3, 3, "ETH/USDT"),
                      fill("cset0", "buy", "30000", "0.01", "0", "BTC", 1, 1, "BTC/USDT"),
                      fill("cset2", "buy", "0.066666", "0.15", "0", "ETH", 2, 2, "ETH/BTC")]}
    reports = [report("t", "x", "cset1", "sell", 0.15, 0.15, symbol="ETH/USDT"),
               report("t", "x", "cset2", "buy", 0.15, 0.15, symbol="ETH/BTC"),
               report("t", "x", "cset0", "buy", 0.01, 0.01, symbol="BTC/USDT")]
    data = collected(executions=reports, journals=journals,
                     opportunities={"t": opportunity("t", "triangular", "x", "x", path)})
    (ex,) = evaluate(scenario(), data).executions
    assert (ex.kind, ex.symbol, ex.buy, ex.sell, ex.quantity) == ("triangular", "BTC/USDT", "x", "x",
                                                                   Decimal("0.01"))
    # the detected legs, when the opportunity lists them, say which order came first
    legs = [OpportunityLeg(symbol=s, side="buy", amount=1, vwap=1, worst=1, book_ms=1)
            for s in ("ETH/BTC", "ETH/USDT", "BTC/USDT")]
    data.opportunities["t"].legs = legs
    assert evaluate(scenario(), data).executions[0].quantity == Decimal("0.15")
    # BTC: +0.01 - 0.15 x 0.066666 = +0.0000001 (x 30000 = 0.003); ETH 0; USDT -300 + 303
    assert ex.pnl == Decimal("3.003") and not ex.one_leg
    # without a mark for ETH... ETH nets to zero, so only BTC needs one
    rep = evaluate(scenario(marks="BTC = 30000"), data)
    assert by_name(rep.checks)["every changed asset has a mark"].passed


def test_a_changed_asset_without_a_mark_fails_by_name() -> None:
    rep = evaluate(scenario(marks="ETH = 2000"), collected(**CLEAN))
    check = by_name(rep.checks)["every changed asset has a mark"]
    assert not check.passed and check.measured == ["BTC"]
    assert check.line() == ("FAIL every changed asset has a mark: expected [], measured [BTC] "
                            "(add them to [marks]: BTC)")


def test_an_order_placed_twice_and_journals_that_disagree_fail() -> None:
    data = collected(**CLEAN)
    data.journals = {"x": [fill("cseo1b", "buy", "30000", "0.04", "0", "BTC", 1, order_id=1),
                           fill("cseo1b", "buy", "30000", "0.03", "0", "BTC", 2, order_id=2),
                           fill("stray", "buy", "30000", "0.01", "0", "BTC", 3, order_id=3)],
                     "y": CLEAN["journals"]["y"]}  # type: ignore[index]
    checks = by_name(evaluate(scenario(), data).checks)
    twice = checks["every client order id placed at most once per venue"]
    assert not twice.passed and "x cseo1b (2 orders)" in twice.detail
    agree = checks["journal fills == orders.executions filled"]
    assert not agree.passed and agree.measured == 2
    assert "x cseo1b: journal 0.07, reported 0.08" in agree.detail
    assert "x stray: journal 0.01, never reported" in agree.detail


def test_pnl_that_does_not_add_up_a_broken_ledger_and_an_unsettled_run_fail() -> None:
    data = collected(**CLEAN)
    data.ledgers_after = {"x": ledger({"USDT": "7600", "BTC": "0.07992"}, conserved=False),
                          "y": ledger({"USDT": "2405.592", "BTC": "0.9"})}  # 0.02 BTC gone elsewhere
    data.settled, data.settle_note = False, "timeout after 30 s: 1 opportunities not done"
    data.crashed = ["arbitrage-2"]
    data.books = {("x", "BTC/USDT"): 3}
    checks = by_name(evaluate(scenario(), data).checks)
    adds = checks["executions' pnl adds up to pnl_total"]
    assert not adds.passed and adds.expected == pytest.approx(3.192 - 600) and adds.measured == 3.192
    assert not checks["ledger conserved: x"].passed and checks["ledger conserved: y"].passed
    assert checks["settled"].line() == ("FAIL settled: expected every opportunity done, executions quiet "
                                        "1 s, measured timeout after 30 s: 1 opportunities not done")
    assert not checks["no process exited before the end"].passed
    assert checks["every venue's books reached the workers"].measured == ["y BTC/USDT"]


def test_missing_ledgers_fail_instead_of_crashing() -> None:
    data = collected(**{**CLEAN, "ledgers_after": {"x": CLEAN["ledgers_after"]["x"]}})  # type: ignore[index]
    rep = evaluate(scenario("[expect.balances.y]\nBTC = 1\n"), data)
    checks = by_name(rep.checks)
    assert not checks["ledger conserved: y"].passed and not checks["balances.y.BTC"].passed


def test_expected_executions_that_did_not_happen() -> None:
    rep = evaluate(scenario("[[expect.execution]]\nbuy = 'x'\n[[expect.execution]]\nbuy = 'x'\n"),
                   collected(**CLEAN))
    checks = by_name(rep.checks)
    assert checks["execution[0].buy"].passed
    assert not checks["execution[1]"].passed and not checks["executions"].passed
    assert not rep.passed and rep.summary()["passed"] is False
