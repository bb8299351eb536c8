"""venue-sim's websocket API (``/ws-api/v3``): the user data stream, through an unmodified
ccxt.pro.binance (watch_orders, watch_balance, watch_my_trades) and frame by frame.

The venue ticks every 20 ms, so a resting order just inside the spread is crossed by the
moving market within a few seconds; the clock is paused while a test needs an order to stay
open. ccxt.pro subscribes (``userDataStream.subscribe.signature``) before anything trades, and
what it builds from the events must equal what the REST API answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import ccxt
import pytest

from shared.gateway import sim_client
from tests.conftest import eventually
from tests.integration.conftest import SimVenue, http, start_venue
from tooling.venue_sim import DEV_API_KEY, DEV_API_SECRET


@pytest.fixture(scope="module")
def venue(venue_sim_logs: Path) -> Iterator[SimVenue]:
    running = start_venue(venue_sim_logs, "user-stream", args=[
        "--tick-ms", "20", "--balances", "USDT=10000000,BTC=100,ETH=1000,SOL=10000,XRP=1000000"])
    yield running
    running.stop()


def cid(tag: str) -> str:
    return f"u-{tag}-{uuid.uuid4().hex[:12]}"


def set_clock(venue: SimVenue, paused: bool) -> None:
    status, _h, body = http(venue.url + "/venue-sim/v1/clock", "POST",
                            json.dumps({"paused": paused}).encode())
    assert status == 200 and body["paused"] is paused, body


@contextlib.contextmanager
def paused(venue: SimVenue) -> Iterator[None]:
    """The market clock stopped: books change only by orders meanwhile."""
    set_clock(venue, True)
    try:
        yield
    finally:
        set_clock(venue, False)


class Watcher:
    """A ccxt.pro client whose watch_orders, watch_balance and watch_my_trades run in loops, as
    an application's would; every order update it returned is kept, in order."""

    def __init__(self, ex: Any) -> None:
        self.ex = ex
        self.updates: list[tuple[str, str, float]] = []  # (order id, status, filled)
        self.tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        def orders(result: list[dict[str, Any]]) -> None:
            self.updates.extend((o["id"], o["status"], o["filled"]) for o in result)

        self.tasks = [asyncio.create_task(self._loop(self.ex.watch_orders, orders)),
                      asyncio.create_task(self._loop(self.ex.watch_balance, None)),
                      asyncio.create_task(self._loop(self.ex.watch_my_trades, None))]

    @staticmethod
    async def _loop(watch: Callable[[], Awaitable[Any]], seen: Callable[[Any], None] | None) -> None:
        while True:
            result = await watch()
            if seen is not None:
                seen(result)

    def statuses(self, order_id: str) -> list[str]:
        return [status for oid, status, _f in self.updates if oid == order_id]

    def order(self, order_id: str) -> dict[str, Any] | None:
        return next((o for o in (self.ex.orders or []) if o["id"] == order_id), None)

    def trades(self, order_id: str) -> list[dict[str, Any]]:
        return [t for t in (self.ex.myTrades or []) if t["order"] == order_id]

    def balance(self) -> dict[str, Any]:
        return self.ex.balance.get("spot") or {}

    def failed(self) -> list[BaseException]:
        return [e for t in self.tasks if t.done() and not t.cancelled()
                and (e := t.exception()) is not None]


@contextlib.asynccontextmanager
async def watching(venue: SimVenue) -> AsyncIterator[Watcher]:
    ex = sim_client(venue.url, DEV_API_KEY, DEV_API_SECRET, streaming=True)
    watcher = Watcher(ex)
    try:
        await ex.load_markets()
        # the subscription first, confirmed: ccxt lets concurrent watches through before the
        # reply, and events before it would be lost to them
        await asyncio.wait_for(ex.authenticate(), 5)
        watcher.start()
        await eventually(lambda: "spot" in ex.balance, 5, "ccxt.pro's balance cache")
        yield watcher
        assert not watcher.failed(), watcher.failed()
    finally:
        for task in watcher.tasks:
            task.cancel()
        await asyncio.gather(*watcher.tasks, return_exceptions=True)
        await ex.close()


async def test_watch_orders_and_my_trades_see_a_market_order_as_rest_answered_it(venue: SimVenue
                                                                                 ) -> None:
    async with watching(venue) as w:
        ex = w.ex
        client_id = cid("mkt")
        with paused(venue):  # the book the amount is computed from is the one it meets
            book = await ex.fetch_order_book("BTC/USDT", 20)
            amount = round(book["asks"][0][1] + book["asks"][1][1] / 2, 5)  # two levels: two fills
            order = await ex.create_order("BTC/USDT", "market", "buy", amount, None,
                                          {"clientOrderId": client_id})
        assert order["status"] == "closed" and len(order["trades"]) >= 2
        seen = await eventually(lambda: (o := w.order(order["id"])) and o["status"] == "closed" and o,
                                5, "the market order closed on watch_orders")
        await eventually(lambda: len(w.trades(order["id"])) == len(order["trades"]), 5,
                         "its fills on watch_my_trades")
        trades = w.trades(order["id"])
    assert seen["clientOrderId"] == client_id == order["clientOrderId"]
    assert seen["filled"] == order["filled"] == amount
    assert seen["amount"] == order["amount"] and seen["remaining"] == 0
    assert seen["average"] == pytest.approx(order["average"], rel=1e-12)
    assert seen["cost"] == pytest.approx(order["cost"], rel=1e-12)
    assert seen["side"] == "buy" and seen["type"] == "market"
    assert w.statuses(order["id"])[-1] == "closed"
    want = [(t["id"], t["price"], t["amount"], t["fee"]["cost"], t["fee"]["currency"])
            for t in order["trades"]]
    got = [(t["id"], t["price"], t["amount"], t["fee"]["cost"], t["fee"]["currency"]) for t in trades]
    assert got == want
    assert {t["takerOrMaker"] for t in trades} == {"taker"} and {t["side"] for t in trades} == {"buy"}


async def test_a_resting_order_goes_open_then_the_moving_market_fills_it(venue: SimVenue) -> None:
    async with watching(venue) as w:
        ex = w.ex
        with paused(venue):  # open until we have seen them open
            # a buy a tick under the ask and a sell a tick over the bid: they rest, and
            # whichever way the market moves next, it crosses one of them
            book = await ex.fetch_order_book("ETH/USDT", 5)
            orders = {}
            for side, price in (("buy", round(book["asks"][0][0] - 0.01, 2)),
                                ("sell", round(book["bids"][0][0] + 0.01, 2))):
                client_id = cid(side)
                order = await ex.create_order("ETH/USDT", "limit", side, 0.05, price,
                                              {"clientOrderId": client_id})
                assert order["status"] == "open" and order["filled"] == 0
                orders[order["id"]] = (client_id, price)
            await eventually(lambda: all("open" in w.statuses(i) for i in orders), 5, "them open")
        seen = await eventually(lambda: next((o for i in orders if (o := w.order(i))
                                              and o["status"] == "closed"), None),
                                15, "the market crossing one of them, on watch_orders")
        for other in orders.keys() - {seen["id"]}:
            with contextlib.suppress(ccxt.OrderNotFound):  # filled too meanwhile
                await ex.cancel_order(other, "ETH/USDT")
        await eventually(lambda: w.trades(seen["id"]), 5, "its fill on watch_my_trades")
        trades = w.trades(seen["id"])
        rest = await ex.fetch_order(seen["id"], "ETH/USDT")
        rest_trades = await ex.fetch_my_trades("ETH/USDT", None, 50)
    client_id, price = orders[seen["id"]]
    statuses = w.statuses(seen["id"])
    assert statuses.index("open") < statuses.index("closed")
    assert rest["status"] == "closed" and rest["filled"] == seen["filled"] == 0.05
    assert seen["clientOrderId"] == client_id and seen["price"] == price == seen["average"]
    assert {t["takerOrMaker"] for t in trades} == {"maker"}
    assert {t["price"] for t in trades} == {price}
    rest_fills = {t["id"]: (t["amount"], t["fee"]["cost"]) for t in rest_trades
                  if t["order"] == seen["id"]}
    assert {t["id"]: (t["amount"], t["fee"]["cost"]) for t in trades} == rest_fills


async def test_a_canceled_order_and_watch_balance_agree_with_rest(venue: SimVenue) -> None:
    async with watching(venue) as w:
        ex = w.ex
        book = await ex.fetch_order_book("SOL/USDT", 5)
        price = round(book["bids"][0][0] * 0.95, 2)  # far below: it stays open
        client_id = cid("cxl")
        order = await ex.create_order("SOL/USDT", "limit", "buy", 1.0, price,
                                      {"clientOrderId": client_id})
        await eventually(lambda: "open" in w.statuses(order["id"]), 5, "the order open")
        rest = await ex.fetch_balance()
        assert rest["USDT"]["used"] == pytest.approx(price * 1.0, rel=1e-12)
        assert w.balance()["USDT"] == rest["USDT"], "the lock is on watch_balance"
        await ex.cancel_order(order["id"], "SOL/USDT")
        seen = await eventually(lambda: (o := w.order(order["id"])) and o["status"] == "canceled"
                                and o, 5, "the order canceled on watch_orders")
        assert seen["clientOrderId"] == client_id, "the order's id, not the cancel's"
        await ex.create_order("SOL/USDT", "market", "sell", 2.0)
        rest = await ex.fetch_balance()

        def same() -> bool:
            ws = w.balance()
            return all(ws.get(a) == rest[a] for a in ("SOL", "USDT"))

        await eventually(same, 5, f"watch_balance equal to REST: {rest['SOL']} {rest['USDT']}")
    assert rest["USDT"]["used"] == 0


async def test_a_bad_signature_or_an_unknown_key_is_refused_and_ccxt_raises(venue: SimVenue) -> None:
    for key, secret, code in ((DEV_API_KEY, "not-the-secret", -1022),
                              ("no-such-key", DEV_API_SECRET, -2015)):
        ex = sim_client(venue.url, key, secret, streaming=True)
        try:
            await ex.load_markets()
            with pytest.raises(Exception) as raised:
                await asyncio.wait_for(ex.watch_orders(), 5)
        finally:
            await ex.close()
        # ccxt 4.5.90 maps the error to AuthenticationError, then its own cleanup deletes the
        # subscription flag a second time: what surfaces is a KeyError raised while handling it
        error = raised.value
        auth = error if isinstance(error, ccxt.AuthenticationError) else error.__context__
        assert isinstance(auth, ccxt.AuthenticationError), repr(error)
        assert f'"code":{code}' in str(auth)


# --- the protocol, frame by frame ------------------------------------------------------------------


def signed(params: dict[str, Any], secret: str = DEV_API_SECRET) -> dict[str, Any]:
    """Binance's ws-api signature: HMAC-SHA256 of the params sorted by name, ``k=v&...``."""
    payload = "&".join(f"{k}={v}" for k, v in sorted(params.items()))
    return {**params, "signature": hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()}


def subscribe(rid: Any, **override: Any) -> dict[str, Any]:
    params = {"apiKey": DEV_API_KEY, "timestamp": int(time.time() * 1000), **override}
    return {"id": rid, "method": "userDataStream.subscribe.signature", "params": signed(params)}


class Socket:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws

    async def ask(self, request: dict[str, Any] | str) -> dict[str, Any]:
        """Send a request; its reply (events before it are skipped)."""
        await self.ws.send_str(request if isinstance(request, str) else json.dumps(request))
        while True:
            frame = json.loads((await asyncio.wait_for(self.ws.receive(), 5)).data)
            if "status" in frame:
                return frame

    async def events(self, seconds: float) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                msg = await asyncio.wait_for(self.ws.receive(), left)
            except TimeoutError:
                break
            out.append(json.loads(msg.data))
        return out


@contextlib.asynccontextmanager
async def socket(venue: SimVenue, query: str = "") -> AsyncIterator[Socket]:
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(venue.url.replace("http", "ws") + "/ws-api/v3" + query) as ws:
            yield Socket(ws)


async def test_requests_get_binances_replies_and_errors(venue: SimVenue) -> None:
    async with socket(venue) as s:
        pong = await s.ask({"id": 1, "method": "ping"})
        assert pong["id"] == 1 and pong["status"] == 200 and pong["result"] == {}
        assert pong["rateLimits"][0]["rateLimitType"] == "REQUEST_WEIGHT"
        assert (await s.ask({"id": "t", "method": "v3/time"}))["result"]["serverTime"] > 0
        bad = {
            "{nope": (None, 400, -1135),
            json.dumps({"id": "a b", "method": "ping"}): (None, 400, -1135),
            json.dumps({"id": 2, "method": "order.teleport"}): (2, 400, -1020),
            json.dumps({"id": 3, "method": "ping", "params": {"x": 1}}): (3, 400, -1104),
            json.dumps({"id": 4, "method": "userDataStream.subscribe"}): (4, 401, -1002),
            json.dumps(subscribe(5, apiKey="nobody")): (5, 401, -2015),
            json.dumps(subscribe(6, timestamp=int(time.time() * 1000) - 20_000)): (6, 400, -1021),
            json.dumps({"id": 7, "method": "userDataStream.subscribe.signature", "params": {
                "apiKey": DEV_API_KEY, "timestamp": int(time.time() * 1000), "signature": "0" * 64}}):
                (7, 400, -1022),
            json.dumps({"id": 8, "method": "userDataStream.subscribe.signature",
                        "params": signed({"timestamp": int(time.time() * 1000)})}): (8, 400, -1102),
            json.dumps({"id": 9, "method": "userDataStream.unsubscribe"}): (9, 400, -2036),
        }
        for text, (rid, status, code) in bad.items():
            reply = await s.ask(text)
            assert (reply["id"], reply["status"], reply["error"]["code"]) == (rid, status, code), text
        reply = await s.ask(subscribe(10))
        assert reply == {"id": 10, "status": 200, "result": {"subscriptionId": 0},
                         "rateLimits": reply["rateLimits"]}
        assert (await s.ask(subscribe(11)))["error"]["code"] == -2035, "one subscription an account"
        listed = await s.ask({"id": 12, "method": "session.subscriptions", "params": {
            "returnRateLimits": False}})
        assert listed == {"id": 12, "status": 200, "result": [{"subscriptionId": 0}]}
    async with socket(venue, "?returnRateLimits=false") as s:
        assert await s.ask({"id": None, "method": "ping"}) == {"id": None, "status": 200, "result": {}}
    status, _h, body = http(venue.url + "/ws-api/v3")  # not an upgrade: a JSON error, not a hang
    assert status == 400 and "websocket" in body["msg"]


async def test_events_reach_a_subscription_until_it_unsubscribes(venue: SimVenue) -> None:
    async with socket(venue) as s:
        assert (await s.ask(subscribe("sub")))["status"] == 200
        rest = sim_client(venue.url, DEV_API_KEY, DEV_API_SECRET)
        try:
            await rest.load_markets()
            with paused(venue):  # the books the amounts are computed from are those they meet
                book = await rest.fetch_order_book("XRP/USDT", 5)
                amount = round(book["bids"][0][1] + 1000)  # two levels: two fills
                order = await rest.create_order("XRP/USDT", "market", "sell", amount)
                # by quote amount (1.5 levels): FILLED is known at its end; IOC for more than
                # the best level: the rest expires
                asks = book["asks"]
                spend = await rest.create_market_buy_order_with_cost(
                    "XRP/USDT", round(asks[0][0] * asks[0][1] + asks[1][0] * asks[1][1] / 2, 2))
                top = (await rest.fetch_order_book("XRP/USDT", 5))["asks"][0]
                ioc = await rest.create_order("XRP/USDT", "limit", "buy", top[1] + 1000, top[0],
                                              {"timeInForce": "IOC"})
            frames = await s.events(1.0)
            assert {f["subscriptionId"] for f in frames} == {0}
            events = [f["event"] for f in frames]
            assert len(order["trades"]) == 2 == len(spend["trades"]) and len(ioc["trades"]) == 1
            reports = [e for e in events if e["e"] == "executionReport" and e["i"] == int(order["id"])]
            assert [r["x"] for r in reports] == ["NEW", *["TRADE"] * len(order["trades"])]
            assert reports[-1]["X"] == "FILLED" and reports[-1]["z"] == reports[-1]["q"]
            for report, fill in zip(reports[1:], order["trades"], strict=True):
                assert (report["t"], float(report["L"]), float(report["l"]), float(report["n"]),
                        report["N"]) == (int(fill["id"]), fill["price"], fill["amount"],
                                         fill["fee"]["cost"], "USDT")
            folded = {b["a"]: (float(b["f"]), float(b["l"])) for e in events
                      if e["e"] == "outboundAccountPosition" for b in e["B"]}  # the last of each
            account = await rest.fetch_balance()
            assert folded == {a: (account[a]["free"], account[a]["used"]) for a in ("XRP", "USDT")}
            by_order = {int(o["id"]): [e for e in events if e["e"] == "executionReport"
                                       and e["i"] == int(o["id"])] for o in (spend, ioc)}
            for done, final in ((spend, "FILLED"), (ioc, "EXPIRED")):
                reports = by_order[int(done["id"])]
                assert [r["x"] for r in reports] == ["NEW", *["TRADE"] * len(done["trades"]),
                                                     *(["EXPIRED"] if final == "EXPIRED" else [])]
                assert [r["X"] for r in reports[1:]] == ["PARTIALLY_FILLED"] * (len(reports) - 2) + [final]
                assert float(reports[-1]["z"]) == done["filled"]
            assert ioc["status"] == "expired"
            assert {float(r["q"]) for r in by_order[int(spend["id"])][1:]} == {spend["filled"]}, \
                "a quote amount order's size is what it bought"

            reply = await s.ask({"id": "bye", "method": "userDataStream.unsubscribe"})
            assert reply["result"] == {}
            after = await s.events(0.5)
            assert [f["event"]["e"] for f in after] == ["eventStreamTerminated"]
            await rest.create_order("XRP/USDT", "market", "sell", 100.0)
            assert await s.events(0.5) == [], "nothing after unsubscribing"
        finally:
            await rest.close()
