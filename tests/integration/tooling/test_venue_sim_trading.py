"""Trading on venue-sim with an unmodified ccxt binance client (account "trading")."""

from __future__ import annotations

import contextlib
import uuid
from typing import Any

import pytest

from tests.conftest import eventually
from tests.integration.conftest import BALANCES, SimVenue, ccxt_client

FEE = 0.001


def cid(tag: str) -> str:
    return f"t-{tag}-{uuid.uuid4().hex[:12]}"


async def market_order(ex: Any, symbol: str, side: str, amount: float, client_id: str
                       ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """A market order between two balance reads: (before, order, after)."""
    before = await ex.fetch_balance()
    order = await ex.create_order(symbol, "market", side, amount, None, {"clientOrderId": client_id})
    after = await ex.fetch_balance()
    return before, order, after


async def test_balance_is_the_starting_balance(venue_sim: SimVenue) -> None:
    async with ccxt_client(venue_sim, "perf") as ex:
        balance = await ex.fetch_balance()
    assert balance["USDT"] == {"free": 1_000_000.0, "used": 0.0, "total": 1_000_000.0}
    assert {a: balance["total"][a] for a in BALANCES} == BALANCES


async def test_market_buy_walks_the_book_and_charges_the_taker_fee(venue_sim: SimVenue) -> None:
    async with ccxt_client(venue_sim, "trading") as ex:
        await ex.load_markets()
        book = await ex.fetch_order_book("DOGE/USDT", 20)
        amount = float(round(sum(size for _p, size in book["asks"][:4])))  # a few levels deep
        client_id = cid("mkt")
        before, order, after = await market_order(ex, "DOGE/USDT", "buy", amount, client_id)
    assert order["status"] == "closed" and order["clientOrderId"] == client_id
    assert order["filled"] == amount
    fills = order["trades"]
    assert len(fills) >= 2, "took more than the best level"
    assert [f["price"] for f in fills] == sorted(f["price"] for f in fills)
    assert fills[0]["price"] < fills[-1]["price"]
    vwap = sum(f["price"] * f["amount"] for f in fills) / sum(f["amount"] for f in fills)
    assert order["average"] == pytest.approx(vwap, rel=1e-9)
    assert abs(vwap / book["asks"][0][0] - 1) < 0.005
    assert order["fee"]["currency"] == "DOGE"
    assert order["fee"]["cost"] == pytest.approx(amount * FEE, rel=1e-9)
    assert after["DOGE"]["total"] - before["DOGE"]["total"] == pytest.approx(amount * (1 - FEE),
                                                                             rel=1e-9)
    assert before["USDT"]["total"] - after["USDT"]["total"] == pytest.approx(order["cost"], rel=1e-9)


async def test_market_sell_pays_the_fee_in_the_quote_asset(venue_sim: SimVenue) -> None:
    async with ccxt_client(venue_sim, "trading") as ex:
        await ex.load_markets()
        before, order, after = await market_order(ex, "ETH/USDT", "sell", 0.5, cid("sell"))
    assert order["status"] == "closed" and order["fee"]["currency"] == "USDT"
    assert order["fee"]["cost"] == pytest.approx(order["cost"] * FEE, rel=1e-9)
    assert before["ETH"]["total"] - after["ETH"]["total"] == pytest.approx(0.5, abs=1e-12)
    assert after["USDT"]["total"] - before["USDT"]["total"] == pytest.approx(order["cost"] * (1 - FEE),
                                                                             rel=1e-9)


async def test_market_buy_by_cost_spends_at_most_the_cost(venue_sim: SimVenue) -> None:
    async with ccxt_client(venue_sim, "trading") as ex:
        await ex.load_markets()
        order = await ex.create_market_buy_order_with_cost("SOL/USDT", 250)
        trades = await ex.fetch_my_trades("SOL/USDT")
    assert order["status"] == "closed"
    assert 249 < order["cost"] <= 250 and order["amount"] == order["filled"] > 0
    assert order["info"]["origQuoteOrderQty"] == "250.00000000"
    assert {t["order"] for t in trades} >= {order["id"]}


async def test_limit_order_rests_is_found_by_id_and_client_id_and_cancels(venue_sim: SimVenue) -> None:
    async with ccxt_client(venue_sim, "trading") as ex:
        await ex.load_markets()
        book = await ex.fetch_order_book("ETH/USDT", 5)
        price = round(book["bids"][0][0] * 0.98, 2)  # far from the market: stays open
        before = await ex.fetch_balance()
        client_id = cid("rest")
        order = await ex.create_order("ETH/USDT", "limit", "buy", 1.0, price, {"clientOrderId": client_id})
        locked = await ex.fetch_balance()
        by_id = await ex.fetch_order(order["id"], "ETH/USDT")
        by_client = await ex.fetch_order(None, "ETH/USDT", {"origClientOrderId": client_id})
        open_here = await ex.fetch_open_orders("ETH/USDT")
        open_all = await ex.fetch_open_orders()
        canceled = await ex.cancel_order(order["id"], "ETH/USDT")
        after = await ex.fetch_balance()
        final = await ex.fetch_order(order["id"], "ETH/USDT")
        all_orders = await ex.fetch_orders("ETH/USDT")
    assert order["status"] == "open" and order["filled"] == 0 and order["price"] == price
    assert by_id["id"] == by_client["id"] == order["id"] and by_client["clientOrderId"] == client_id
    assert order["id"] in {o["id"] for o in open_here} and order["id"] in {o["id"] for o in open_all}
    assert locked["USDT"]["used"] - before["USDT"]["used"] == pytest.approx(price * 1.0, rel=1e-9)
    assert canceled["status"] == "canceled" and canceled["info"]["origClientOrderId"] == client_id
    assert after["USDT"] == before["USDT"], "the lock is released on cancel"
    assert final["status"] == "canceled" and final["clientOrderId"] == client_id
    assert order["id"] in {o["id"] for o in all_orders}


async def test_resting_limit_fills_as_maker_when_the_market_crosses_it(venue_sim: SimVenue) -> None:
    async with ccxt_client(venue_sim, "trading") as ex:
        await ex.load_markets()
        maker: list[tuple[dict[str, Any], dict[str, Any]]] = []
        for _attempt in range(5):
            book = await ex.fetch_order_book("BTC/USDT", 5)
            # a tick inside each side of the spread: whichever way the mid moves next, the
            # book crosses one of them on a later tick
            buy = await ex.create_order("BTC/USDT", "limit", "buy", 0.001,
                                        round(book["asks"][0][0] - 0.01, 2), {"clientOrderId": cid("mb")})
            sell = await ex.create_order("BTC/USDT", "limit", "sell", 0.001,
                                         round(book["bids"][0][0] + 0.01, 2), {"clientOrderId": cid("ms")})
            resting = [o for o in (buy, sell) if o["status"] == "open"]

            async def one_crossed(orders: list[dict[str, Any]] = resting) -> bool:
                states = [await ex.fetch_order(o["id"], "BTC/USDT") for o in orders]
                return any(o["status"] == "closed" for o in states)

            if resting:
                # not crossed within 5 s (the mid stayed between them): cancel them, try again
                with contextlib.suppress(AssertionError):
                    await eventually(one_crossed, 5, "the market crossing a resting order", interval_s=0.2)
            for order in resting:
                done = await ex.fetch_order(order["id"], "BTC/USDT")
                if done["status"] == "open":
                    await ex.cancel_order(order["id"], "BTC/USDT")
                    continue
                trades = await ex.fetch_my_trades("BTC/USDT", params={"orderId": order["id"]})
                maker += [(done, t) for t in trades]
            if maker:
                break
    assert maker, "the market never crossed a resting order"
    for done, trade in maker:
        assert done["status"] == "closed" and done["filled"] == pytest.approx(0.001)
        assert trade["takerOrMaker"] == "maker" and trade["price"] == done["price"], "at its own price"
        assert trade["fee"]["cost"] == pytest.approx(trade["amount"] * FEE if trade["side"] == "buy"
                                                     else trade["cost"] * FEE)


async def test_ioc_fills_what_crosses_and_expires_the_rest(venue_sim: SimVenue) -> None:
    async with ccxt_client(venue_sim, "trading") as ex:
        await ex.load_markets()
        for _attempt in range(10):  # the book may move away between reading it and the order
            book = await ex.fetch_order_book("SOL/USDT", 5)
            best_ask, size = book["asks"][0]
            amount = round(size * 10, 3)
            order = await ex.create_order("SOL/USDT", "limit", "buy", amount, best_ask,
                                          {"timeInForce": "IOC", "clientOrderId": cid("ioc")})
            assert order["status"] == "expired" and order["timeInForce"] == "IOC"
            if order["filled"] > 0:
                break
        open_orders = await ex.fetch_open_orders("SOL/USDT")
        balance = await ex.fetch_balance()
    assert 0 < order["filled"] < amount
    assert order["remaining"] == pytest.approx(amount - order["filled"])
    assert all(t["price"] <= best_ask for t in order["trades"])
    assert order["id"] not in {o["id"] for o in open_orders}
    assert balance["USDT"]["used"] == 0, "the unfilled rest released its lock"


async def test_fok_is_all_or_nothing(venue_sim: SimVenue) -> None:
    async with ccxt_client(venue_sim, "trading") as ex:
        await ex.load_markets()
        book = await ex.fetch_order_book("SOL/USDT", 5)
        best_ask, size = book["asks"][0]
        too_big = await ex.create_order("SOL/USDT", "limit", "buy", round(size * 10, 3), best_ask,
                                        {"timeInForce": "FOK", "clientOrderId": cid("fok1")})
        book = await ex.fetch_order_book("SOL/USDT", 5)
        best_ask, size = book["asks"][0]
        fits = await ex.create_order("SOL/USDT", "limit", "buy", max(round(size / 2, 3), 0.1),
                                     round(best_ask * 1.001, 2),
                                     {"timeInForce": "FOK", "clientOrderId": cid("fok2")})
    assert too_big["status"] == "expired" and too_big["filled"] == 0 and too_big["trades"] == []
    assert fits["status"] == "closed" and fits["remaining"] == 0


async def test_limit_maker_rests_or_is_refused_if_it_would_take(venue_sim: SimVenue) -> None:
    import ccxt

    async with ccxt_client(venue_sim, "trading") as ex:
        await ex.load_markets()
        book = await ex.fetch_order_book("BTC/USDT", 5)
        passive = round(book["bids"][0][0] * 0.99, 2)
        order = await ex.create_order("BTC/USDT", "limit", "buy", 0.001, passive,
                                      {"postOnly": True, "clientOrderId": cid("lm")})
        with pytest.raises(ccxt.OrderImmediatelyFillable):
            await ex.create_order("BTC/USDT", "limit", "buy", 0.001, round(book["asks"][0][0] * 1.01, 2),
                                  {"postOnly": True, "clientOrderId": cid("lmx")})
        canceled = await ex.cancel_all_orders("BTC/USDT")
    assert order["status"] == "open" and order["type"] == "limit" and order["postOnly"]
    assert order["info"]["type"] == "LIMIT_MAKER"
    assert order["id"] in {o["id"] for o in canceled}


async def test_my_trades_and_trading_fees(venue_sim: SimVenue) -> None:
    async with ccxt_client(venue_sim, "trading") as ex:
        await ex.load_markets()
        order = await ex.create_order("XRP/USDT", "market", "buy", 100, None, {"clientOrderId": cid("mt")})
        trades = await ex.fetch_my_trades("XRP/USDT")
        since = await ex.fetch_my_trades("XRP/USDT", since=order["timestamp"])
        fees = await ex.fetch_trading_fees()
        one = await ex.fetch_trading_fee("BTC/USDT")
        tape = await ex.fetch_trades("XRP/USDT")
        recent = await ex.fetch_trades("XRP/USDT", params={"fetchTradesMethod": "publicGetTrades"})
    mine = [t for t in trades if t["order"] == order["id"]]
    assert mine and sum(t["amount"] for t in mine) == pytest.approx(100)
    assert all(t["side"] == "buy" and t["takerOrMaker"] == "taker" for t in mine)
    assert all(t["fee"]["currency"] == "XRP" for t in mine)
    assert {t["id"] for t in mine} <= {t["id"] for t in since}
    assert set(fees) >= {"BTC/USDT", "ETH/BTC"} and fees["ETH/BTC"]["taker"] == FEE
    assert one["maker"] == FEE and one["taker"] == FEE
    # the public tape shows the venue's fills; a taker buy prints as buyer-is-taker
    for public in (tape, recent):
        printed = {t["id"]: t for t in public}
        assert {t["id"] for t in mine} <= set(printed)
        assert all(printed[t["id"]]["side"] == "buy" for t in mine)


async def test_triangle_cross_pair_trades_in_btc(venue_sim: SimVenue) -> None:
    async with ccxt_client(venue_sim, "trading") as ex:
        await ex.load_markets()
        before, order, after = await market_order(ex, "ETH/BTC", "buy", 0.1, cid("x"))
    assert order["status"] == "closed" and order["fee"]["currency"] == "ETH"
    assert before["BTC"]["total"] - after["BTC"]["total"] == pytest.approx(order["cost"], rel=1e-9)
