"""Every venue-sim refusal arrives as the ccxt exception class a Binance client expects."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import ccxt
import pytest

from tests.conftest import NotYet, eventually
from tests.integration.conftest import SimVenue, ccxt_client, http, start_venue


def cid() -> str:
    return f"e-{uuid.uuid4().hex[:16]}"


async def test_insufficient_funds(venue_sim: SimVenue) -> None:
    async with ccxt_client(venue_sim, "errors") as ex:
        await ex.load_markets()
        with pytest.raises(ccxt.InsufficientFunds):
            await ex.create_order("BTC/USDT", "limit", "buy", 100, 60_000)  # 6M USDT
        with pytest.raises(ccxt.InsufficientFunds):
            await ex.create_order("BTC/USDT", "market", "sell", 11, None)  # holds 10
        with pytest.raises(ccxt.InsufficientFunds):
            await ex.create_market_buy_order_with_cost("ETH/USDT", 2_000_000)
        balance = await ex.fetch_balance()
    assert balance["USDT"]["used"] == 0 and balance["USDT"]["total"] == 1_000_000


async def test_filter_failures(venue_sim: SimVenue) -> None:
    async with ccxt_client(venue_sim, "errors") as ex:
        await ex.load_markets()
        with pytest.raises(ccxt.InvalidOrder, match="LOT_SIZE"):
            await ex.create_order("BTC/USDT", "market", "buy", 20_000, None)  # maxQty 10000
        with pytest.raises(ccxt.InvalidOrder, match="PRICE_FILTER"):
            await ex.create_order("BTC/USDT", "limit", "sell", 0.001, 20_000_000)  # maxPrice 1e7
        with pytest.raises(ccxt.BadRequest, match="NOTIONAL"):
            await ex.create_order("BTC/USDT", "limit", "buy", 0.00001, 60_000)  # 0.6 USDT < 5
        with pytest.raises(ccxt.BadRequest, match="NOTIONAL"):
            await ex.create_order("BTC/USDT", "market", "buy", 0.00001, None)


async def test_bad_symbol_reaches_the_venue_and_is_refused(venue_sim: SimVenue) -> None:
    async with ccxt_client(venue_sim, "errors") as ex:
        await ex.load_markets()
        with pytest.raises(ccxt.BadSymbol):
            await ex.publicGetTicker24hr({"symbol": "NOPEUSDT"})
        with pytest.raises(ccxt.BadSymbol):
            await ex.publicGetDepth({"symbol": "btcusdt"})
        with pytest.raises(ccxt.BadSymbol):
            await ex.privatePostOrder({"symbol": "NOPEUSDT", "side": "BUY", "type": "MARKET",
                                       "quantity": "1"})


async def test_unknown_orders(venue_sim: SimVenue) -> None:
    async with ccxt_client(venue_sim, "errors") as ex:
        await ex.load_markets()
        with pytest.raises(ccxt.OrderNotFound):
            await ex.fetch_order("123456789", "BTC/USDT")
        with pytest.raises(ccxt.OrderNotFound):
            await ex.fetch_order(None, "BTC/USDT", {"origClientOrderId": "never-sent"})
        with pytest.raises(ccxt.OrderNotFound):
            await ex.cancel_order("123456789", "BTC/USDT")
        done = await ex.create_order("BTC/USDT", "market", "buy", 0.001, None)
        with pytest.raises(ccxt.OrderNotFound):  # filled: nothing left to cancel
            await ex.cancel_order(done["id"], "BTC/USDT")
        with pytest.raises(ccxt.OrderNotFound):  # another symbol's order is not found here
            await ex.fetch_order(done["id"], "ETH/USDT")


async def test_stale_timestamp_is_an_invalid_nonce(venue_sim: SimVenue) -> None:
    async with ccxt_client(venue_sim, "errors") as ex:
        ex.options["timeDifference"] = 15_000  # our clock 15 s behind: outside recvWindow 10 s
        with pytest.raises(ccxt.InvalidNonce):
            await ex.fetch_balance()
        ex.options["timeDifference"] = -5_000  # 5 s ahead of the server
        with pytest.raises(ccxt.InvalidNonce):
            await ex.fetch_balance()
        ex.options["timeDifference"] = 0
        assert (await ex.fetch_balance())["total"]["USDT"] > 0


async def test_wrong_secret_and_unknown_key_are_authentication_errors(venue_sim: SimVenue) -> None:
    async with ccxt_client(venue_sim, key="key-errors", secret="not-the-secret") as ex:
        with pytest.raises(ccxt.AuthenticationError, match="-1022"):
            await ex.fetch_balance()
    async with ccxt_client(venue_sim, key="nobody", secret="whatever") as ex:
        with pytest.raises(ccxt.AuthenticationError, match="-2015"):
            await ex.fetch_balance()
        with pytest.raises(ccxt.AuthenticationError):
            await ex.create_order("BTC/USDT", "market", "buy", 0.001, None)


async def test_signature_covers_percent_escapes_in_client_ids(venue_sim: SimVenue) -> None:
    async with ccxt_client(venue_sim, "errors") as ex:
        await ex.load_markets()
        weird = f"a:b/c.d_e-{uuid.uuid4().hex[:8]}"  # sent as a%3Ab%2Fc...
        order = await ex.create_order("ETH/USDT", "market", "buy", 0.01, None, {"clientOrderId": weird})
        found = await ex.fetch_order(None, "ETH/USDT", {"origClientOrderId": weird})
    assert order["clientOrderId"] == weird and found["id"] == order["id"]


async def test_a_reused_client_order_id_is_refused_and_never_filled_twice(venue_sim: SimVenue) -> None:
    async with ccxt_client(venue_sim, "errors") as ex:
        await ex.load_markets()
        client_id = cid()
        first = await ex.create_order("ETH/USDT", "market", "buy", 0.05, None, {"clientOrderId": client_id})
        before = await ex.fetch_balance()
        for side, kind, price in (("buy", "market", None), ("sell", "market", None),
                                  ("buy", "limit", first["average"] * 0.9)):
            with pytest.raises(ccxt.InvalidOrder, match="Duplicate order sent"):
                await ex.create_order("ETH/USDT", kind, side, 0.05, price, {"clientOrderId": client_id})
        # concurrent retries of the same id: exactly one may pass
        results = await asyncio.gather(*(ex.create_order("ETH/USDT", "market", "buy", 0.05, None,
                                                         {"clientOrderId": "dup-race-" + client_id[2:]})
                                         for _ in range(5)), return_exceptions=True)
        after = await ex.fetch_balance()
        trades = await ex.fetch_my_trades("ETH/USDT", params={"orderId": first["id"]})
    assert sum(1 for r in results if isinstance(r, dict)) == 1
    assert all(isinstance(r, ccxt.InvalidOrder) for r in results if not isinstance(r, dict))
    assert sum(t["amount"] for t in trades) == pytest.approx(0.05), "the first order filled once"
    # only the one race winner traded after the first order
    assert after["ETH"]["total"] - before["ETH"]["total"] == pytest.approx(0.05 * 0.999, rel=1e-9)


async def test_limit_maker_crossing_is_order_immediately_fillable(venue_sim: SimVenue) -> None:
    async with ccxt_client(venue_sim, "errors") as ex:
        await ex.load_markets()
        book = await ex.fetch_order_book("ETH/USDT", 5)
        with pytest.raises(ccxt.OrderImmediatelyFillable):
            await ex.create_order("ETH/USDT", "limit", "sell", 0.1, round(book["bids"][0][0] * 0.99, 2),
                                  {"postOnly": True})
        assert await ex.fetch_open_orders("ETH/USDT") == []


@pytest.fixture(scope="module")
def tight(venue_sim_logs: Path) -> Iterator[SimVenue]:
    running = start_venue(venue_sim_logs, "sim-tight", args=["--weight-limit", "60"])
    yield running
    running.stop()


async def test_request_weight_over_the_limit_is_http_429_ddos_protection(tight: SimVenue) -> None:
    async with ccxt_client(tight) as ex:
        await ex.load_markets()  # exchangeInfo: weight 20
        with pytest.raises(ccxt.DDoSProtection):
            for _ in range(20):
                await ex.fetch_order_book("BTC/USDT", 100)  # weight 5 each
        status, headers, body = http(f"{tight.url}/api/v3/depth?symbol=BTCUSDT", "GET")
        assert status == 429 and body["code"] == -1003
        assert 1 <= int(headers["Retry-After"]) <= 60
        assert int(headers["X-MBX-USED-WEIGHT-1M"]) <= 60
        # the limit is per key: signed calls with the API key have their own budget
        assert (await ex.fetch_balance())["total"]["USDT"] == 100_000


@pytest.fixture(scope="module")
def chaos(venue_sim_logs: Path) -> Iterator[SimVenue]:
    running = start_venue(venue_sim_logs, "sim-chaos", args=["--reject-rate", "0.5", "--latency-ms", "300"])
    yield running
    running.stop()


async def test_random_rejections_and_timeouts_with_the_order_still_placed(chaos: SimVenue) -> None:
    async with ccxt_client(chaos) as ex:
        await ex.load_markets()
        outcomes = await asyncio.gather(*(ex.create_order("BTC/USDT", "market", "buy", 0.001, None,
                                                          {"clientOrderId": f"chaos-{i}"})
                                          for i in range(16)), return_exceptions=True)
    placed = [o for o in outcomes if isinstance(o, dict)]
    refused = [o for o in outcomes if isinstance(o, Exception)]
    assert placed and refused, outcomes
    assert all(isinstance(e, ccxt.OperationFailed) for e in refused), refused
    # a client that gives up before the answer meets an order that was placed anyway
    async with ccxt_client(chaos, timeout_ms=100) as impatient:
        impatient.markets, impatient.markets_by_id = ex.markets, ex.markets_by_id
        impatient.symbols = ex.symbols
        late = await asyncio.gather(*(impatient.create_order("BTC/USDT", "market", "buy", 0.001, None,
                                                             {"clientOrderId": f"late-{i}"})
                                      for i in range(12)), return_exceptions=True)
    assert all(isinstance(e, ccxt.RequestTimeout) for e in late), late
    # the venue goes on with what the impatient client gave up on: wait until it answered all
    await eventually(lambda: (busy := chaos.state()["inFlight"]) == 0 or NotYet(f"{busy} in flight"), 10,
                     "the venue done with the late orders")
    async with ccxt_client(chaos) as ex:
        await ex.load_markets()
        found = await asyncio.gather(*(ex.fetch_order(None, "BTC/USDT", {"origClientOrderId": f"late-{i}"})
                                       for i in range(12)), return_exceptions=True)
    placed_late = [o for o in found if isinstance(o, dict)]
    assert all(isinstance(o, ccxt.OrderNotFound) for o in found if not isinstance(o, dict))
    assert placed_late and all(o["status"] == "closed" for o in placed_late)
