"""venue-sim's websocket streams, driven by an unmodified ccxt.pro.binance and by raw frames.

The venue ticks every 20 ms (50 book versions a second per symbol) while a trader takes
liquidity and rests orders that the market fills; ccxt.pro follows eight symbols' diff
streams. With the market paused, the book ccxt.pro holds must equal the venue's REST depth
at the same update id, level for level -- after thousands of versions with fills among
them, and after dropped and reordered events and closed sockets, which ccxt must detect
and resync from.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import ccxt
import pytest

from shared.gateway import sim_client
from tests.conftest import eventually
from tests.integration.conftest import SimVenue, ccxt_client, http, start_venue
from tooling.venue_sim import DEV_API_KEY, DEV_API_SECRET

SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT", "BNB/USDT", "XRP/USDT", "DOGE/USDT", "ADA/USDT",
           "ETH/BTC"]


@pytest.fixture(scope="module")
def fast(venue_sim_logs: Path) -> Iterator[SimVenue]:
    venue = start_venue(venue_sim_logs, "streams", args=["--tick-ms", "20", "--weight-limit", "10000000"])
    yield venue
    venue.stop()


def post(venue: SimVenue, path: str, doc: dict[str, Any]) -> dict[str, Any]:
    status, _h, body = http(venue.url + path, "POST", json.dumps(doc).encode())
    assert status == 200, body
    return body  # type: ignore[no-any-return]


class Follower:
    """ccxt.pro watching every symbol, each in its own loop that watches again after an
    error -- what a client does; counts what it saw."""

    def __init__(self, venue: SimVenue) -> None:
        self.ex = sim_client(venue.url, DEV_API_KEY, DEV_API_SECRET, streaming=True)
        self.errors: Counter[str] = Counter()
        self.updates = 0
        self.stop = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        await self.ex.load_markets()
        self.tasks = [asyncio.create_task(self._follow(s)) for s in SYMBOLS]

    async def _follow(self, symbol: str) -> None:
        while not self.stop.is_set():
            try:
                await self.ex.watch_order_book(symbol)
                self.updates += 1
            except ccxt.ChecksumError:
                self.errors["checksum"] += 1
            except ccxt.NetworkError:
                self.errors["network"] += 1
                await asyncio.sleep(0.2)

    async def close(self) -> None:
        self.stop.set()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.ex.close()

    def book(self, symbol: str) -> Any:
        return self.ex.orderbooks.get(symbol)


@contextlib.asynccontextmanager
async def following(venue: SimVenue) -> AsyncIterator[Follower]:
    follower = Follower(venue)
    await follower.start()
    try:
        yield follower
    finally:
        await follower.close()


async def trade(venue: SimVenue, stop: asyncio.Event, counts: Counter[str]) -> None:
    """Market orders that take liquidity, and limit orders just inside the book that the
    moving market fills later."""
    rng = random.Random(5)
    async with ccxt_client(venue) as ex:
        await ex.load_markets()
        while not stop.is_set():
            symbol = rng.choice(SYMBOLS[:4])
            side = rng.choice(["buy", "sell"])
            amount = ex.markets[symbol]["limits"]["amount"]["min"] or 0.001
            notional_min = 12.0
            book = await ex.fetch_order_book(symbol, 5)
            mid = (book["bids"][0][0] + book["asks"][0][0]) / 2
            amount = max(amount, notional_min / mid) * rng.uniform(1, 40)
            if rng.random() < 0.7:
                await ex.create_order(symbol, "market", side, amount)
                counts["market"] += 1
            else:
                price = mid * (0.9999 if side == "buy" else 1.0001)
                await ex.create_order(symbol, "limit", side, amount, price)
                counts["limit"] += 1
            await asyncio.sleep(0.05)


async def assert_books_equal_at_rest(venue: SimVenue, follower: Follower, *, take: float = 0.0
                                     ) -> int:
    """Pause the market; once ccxt has the last version, its book is the venue's, level for
    level; returns the update ids checked (summed over the symbols); resumes the market.

    With ``take``, a market buy of that much BTC walks the paused book first: only the
    stream can tell ccxt what it took."""
    post(venue, "/venue-sim/v1/clock", {"paused": True})
    try:
        if take:
            async with ccxt_client(venue) as ex:
                order = await ex.create_order("BTC/USDT", "market", "buy", take)
            assert len(order["trades"]) >= 2, "the order walks several levels"
        total = 0
        for symbol in SYMBOLS:
            market_id = symbol.replace("/", "")
            rest: dict[str, Any] = {}

            def same_version(symbol: str = symbol, market_id: str = market_id,
                             rest: dict[str, Any] = rest) -> bool:
                rest.update(venue.get(f"/api/v3/depth?symbol={market_id}&limit=5000")[2])
                book = follower.book(symbol)
                return book is not None and book["nonce"] == rest["lastUpdateId"]

            await eventually(same_version, 15, f"ccxt.pro's {symbol} book at the venue's update id")
            book = follower.book(symbol)
            for side in ("bids", "asks"):
                want = [[float(p), float(q)] for p, q in rest[side]]
                got = [list(level) for level in book[side]]
                assert got == want, f"{symbol} {side}: ccxt.pro's book differs from the venue's " \
                                    f"at update id {rest['lastUpdateId']}"
            total += rest["lastUpdateId"]
        return total
    finally:
        post(venue, "/venue-sim/v1/clock", {"paused": False})


async def test_ccxt_pro_keeps_the_venues_book_through_thousands_of_diffs_and_fills(fast: SimVenue
                                                                                     ) -> None:
    start_ids = sum(fast.state()["symbols"][s]["updateId"] for s in SYMBOLS)
    fills_before = fast.state()["fills"]
    counts: Counter[str] = Counter()
    async with following(fast) as follower:
        stop = asyncio.Event()
        trader = asyncio.create_task(trade(fast, stop, counts))
        await asyncio.sleep(7)
        stop.set()
        await trader
        checked = await assert_books_equal_at_rest(fast, follower, take=1.2)
        assert not follower.errors, f"no resync without a fault: {dict(follower.errors)}"
    fills = fast.state()["fills"] - fills_before
    versions = checked - start_ids
    assert versions >= 2000, f"only {versions} book versions streamed"
    assert follower.updates >= 500, follower.updates
    assert counts["market"] >= 20 and fills >= 20, (counts, fills)


async def test_dropped_and_reordered_diffs_and_closed_sockets_are_detected_and_resynced(
        fast: SimVenue) -> None:
    async with following(fast) as follower:
        await eventually(lambda: follower.updates >= 50, 15, "ccxt.pro following")
        await assert_books_equal_at_rest(fast, follower)
        for fault, detected in (({"drop": 1, "symbol": "BTCUSDT"}, "checksum"),
                                ({"reorder": 1, "symbol": "ETHUSDT"}, "checksum"),
                                ({"close": True}, "network")):
            before = follower.errors[detected]
            answer = post(fast, "/venue-sim/v1/ws/faults", fault)
            if "close" in fault:
                assert answer["closed"] >= 1
            await eventually(lambda b=before, d=detected: follower.errors[d] > b, 15,
                             f"ccxt.pro noticing {fault}")
            seen = follower.updates
            await eventually(lambda s=seen: follower.updates >= s + 40, 15, "following again")
            await assert_books_equal_at_rest(fast, follower)
    assert fast.state()["ws"]["droppedEvents"] >= 1


# --- the protocol, frame by frame ------------------------------------------------------------------


@contextlib.asynccontextmanager
async def socket(venue: SimVenue, path: str) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(venue.url.replace("http", "ws") + path) as ws:
            yield ws


async def frames(ws: aiohttp.ClientWebSocketResponse, seconds: float) -> list[Any]:
    out: list[Any] = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            msg = await asyncio.wait_for(ws.receive(), left)
        except TimeoutError:
            break
        if msg.type != aiohttp.WSMsgType.TEXT:
            out.append(msg.type)
            break
        out.append(json.loads(msg.data))
    return out


async def test_subscribe_replies_first_and_a_second_subscribe_does_not_double(fast: SimVenue) -> None:
    async with socket(fast, "/stream/0") as ws:
        for _ in range(2):
            await ws.send_json({"method": "SUBSCRIBE", "params": ["btcusdt@depth@100ms"], "id": 7})
        got = await frames(ws, 1.5)
        assert got[0] == {"result": None, "id": 7}
        events = [f["data"] for f in got if "stream" in f]
        assert all(f["stream"] == "btcusdt@depth@100ms" for f in got if "stream" in f)
        # each SUBSCRIBE answered once (the second reply may follow the first events)
        assert [f for f in got if "id" in f] == [{"result": None, "id": 7}] * 2
        assert all(f["data"]["e"] == "depthUpdate" for f in got if "stream" in f)
        ids = [(e["U"], e["u"]) for e in events]
        assert len(ids) >= 5 and len(set(ids)) == len(ids), "each event once"
        assert all(b[0] == a[1] + 1 for a, b in itertools.pairwise(ids)), "U = previous u + 1"
        await ws.send_json({"method": "LIST_SUBSCRIPTIONS", "id": 8})
        await ws.send_json({"method": "UNSUBSCRIBE", "params": ["btcusdt@depth@100ms"], "id": 9})
        replies = [f for f in await frames(ws, 0.6) if "id" in f]
        assert replies == [{"result": ["btcusdt@depth@100ms"], "id": 8}, {"result": None, "id": 9}]
        assert not [f for f in await frames(ws, 0.5) if "stream" in f], "nothing after UNSUBSCRIBE"


async def test_raw_streams_book_ticker_and_a_traders_own_fill(fast: SimVenue) -> None:
    async with socket(fast, "/ws/btcusdt@trade") as ws:
        await ws.send_json({"method": "SUBSCRIBE", "params": ["btcusdt@bookTicker"], "id": 1})
        async with ccxt_client(fast) as ex:
            order = await ex.create_order("BTC/USDT", "market", "buy", 0.01)
        got = await frames(ws, 1.0)
    assert all("stream" not in f for f in got), "raw streams are not wrapped"
    trades = [f for f in got if f.get("e") == "trade"]
    assert {t["t"] for t in trades} >= {int(t["id"]) for t in order["trades"]}, \
        "the trader's own fills are on the trade stream"
    tickers = [f for f in got if "b" in f and "e" not in f]
    assert tickers and all(set(t) == {"u", "s", "b", "B", "a", "A"} for t in tickers)
    assert float(tickers[-1]["b"]) < float(tickers[-1]["a"])


async def test_bad_requests_get_binances_error_frames(fast: SimVenue) -> None:
    async with socket(fast, "/ws") as ws:
        for text in ("{nope", json.dumps({"params": [], "id": 1}),
                     json.dumps({"method": "SUBSCRIBE", "params": ["nosuch@depth"], "id": 2}),
                     json.dumps({"method": "WATCH", "id": 3})):
            await ws.send_str(text)
            await asyncio.sleep(0.25)  # under the message-rate limit
        got = [f for f in await frames(ws, 0.5) if "error" in f]
    assert [f["error"]["code"] for f in got] == [3, 2, 2, 2]
    assert "missing field `method`" in got[1]["error"]["msg"] and got[1]["id"] == 1
    assert "nosuch@depth" in got[2]["error"]["msg"]
    assert "unknown variant `WATCH`" in got[3]["error"]["msg"]
    status, _h, body = http(fast.url + "/ws")  # not an upgrade: a JSON error, not a hang
    assert status == 400 and "websocket" in body["msg"]


async def test_too_many_messages_close_the_connection(fast: SimVenue) -> None:
    async with socket(fast, "/ws") as ws:
        for i in range(8):
            await ws.send_json({"method": "LIST_SUBSCRIPTIONS", "id": i})
        got = await frames(ws, 2)
    assert aiohttp.WSMsgType.CLOSE in got or aiohttp.WSMsgType.CLOSED in got
    assert len([f for f in got if isinstance(f, dict)]) <= 5
    assert ws.close_code == 1008


async def test_a_connection_ends_at_its_lifetime(venue_sim_logs: Path) -> None:
    venue = start_venue(venue_sim_logs, "short-lived", args=["--ws-lifetime-s", "1"])
    try:
        async with socket(venue, "/stream?streams=btcusdt@depth@100ms") as ws:
            started = time.monotonic()
            got = await frames(ws, 5)
            lasted = time.monotonic() - started
        assert any(isinstance(f, dict) and f["stream"] == "btcusdt@depth@100ms" for f in got)
        assert got[-1] in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert 0.8 < lasted < 3
    finally:
        venue.stop()
