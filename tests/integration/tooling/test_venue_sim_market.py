"""venue-sim market data through an unmodified ccxt binance client, and malformed raw requests."""

from __future__ import annotations

import asyncio
import math
import time

import aiohttp
import numpy as np

from tests.integration.conftest import SimVenue, ccxt_client, http

SYMBOLS = {"BTC/USDT", "ETH/USDT", "SOL/USDT", "BNB/USDT", "XRP/USDT", "DOGE/USDT", "ADA/USDT",
           "ETH/BTC"}


async def test_load_markets_gives_spot_markets_with_filters(venue_sim: SimVenue) -> None:
    async with ccxt_client(venue_sim) as ex:
        markets = await ex.load_markets()
    assert set(markets) == SYMBOLS
    btc = markets["BTC/USDT"]
    assert btc["spot"] and btc["active"] and btc["id"] == "BTCUSDT"
    assert (btc["base"], btc["quote"]) == ("BTC", "USDT")
    assert btc["precision"]["price"] == 0.01 and btc["precision"]["amount"] == 1e-05
    assert btc["limits"]["cost"]["min"] == 5.0 and btc["limits"]["amount"]["max"] == 10_000.0
    assert markets["ETH/BTC"]["limits"]["cost"]["min"] == 0.0001  # 5 USD worth of BTC, rounded
    assert btc["info"]["orderTypes"] == ["LIMIT", "LIMIT_MAKER", "MARKET"]


async def test_order_book_has_realistic_depth(venue_sim: SimVenue) -> None:
    async with ccxt_client(venue_sim) as ex:
        await ex.load_markets()
        for limit in (5, 20, 100, 500, 1000):
            book = await ex.fetch_order_book("BTC/USDT", limit)
            assert len(book["bids"]) == len(book["asks"]) == limit
        book = await ex.fetch_order_book("BTC/USDT", 1000)
        default = await ex.fetch_order_book("ETH/USDT")
    assert len(default["bids"]) == 100  # Binance's default
    bids, asks = np.array(book["bids"]), np.array(book["asks"])
    assert np.all(np.diff(bids[:, 0]) < 0) and np.all(np.diff(asks[:, 0]) > 0)
    mid = (bids[0, 0] + asks[0, 0]) / 2
    spread_bps = (asks[0, 0] - bids[0, 0]) / mid * 1e4
    assert 0.1 < spread_bps < 5, spread_bps
    for side in (bids, asks):
        ticks = side[:, 0] / 0.01
        assert np.allclose(ticks, np.round(ticks), atol=1e-6), "prices on the tick"
        lots = side[:, 1] / 1e-5
        assert np.allclose(lots, np.round(lots), atol=1e-6), "sizes on the lot"
        notional = side[:, 0] * side[:, 1]
        assert notional[-100:].mean() > 20 * notional[:10].mean(), "size grows away from the mid"
    assert 0.01 < (asks[-1, 0] - bids[-1, 0]) / mid < 0.3, "1000 levels span a few percent"
    assert book["nonce"] > 0
    assert book["timestamp"] is None, "Binance spot's depth has no time; ccxt.pro relies on that"


async def test_tickers_and_bids_asks(venue_sim: SimVenue) -> None:
    async with ccxt_client(venue_sim) as ex:
        await ex.load_markets()
        ticker = await ex.fetch_ticker("ETH/USDT")
        every = await ex.fetch_tickers()
        some = await ex.fetch_tickers(["BTC/USDT", "SOL/USDT"])
        books = await ex.fetch_bids_asks()
        two = await ex.fetch_bids_asks(["BTC/USDT", "ETH/BTC"])
    assert ticker["symbol"] == "ETH/USDT"
    assert 0 < ticker["bid"] < ticker["ask"] and ticker["low"] <= ticker["last"] <= ticker["high"]
    assert ticker["open"] > 0 and ticker["baseVolume"] > 0 and ticker["quoteVolume"] > 0
    assert abs(ticker["timestamp"] - time.time() * 1000) < 5000
    assert set(every) == SYMBOLS and set(some) == {"BTC/USDT", "SOL/USDT"}
    assert set(books) == SYMBOLS and set(two) == {"BTC/USDT", "ETH/BTC"}
    for row in books.values():
        assert 0 < row["bid"] < row["ask"] and row["bidVolume"] > 0 and row["askVolume"] > 0
    # the triangle is consistent: ETH/BTC is close to ETH/USDT / BTC/USDT
    implied = every["ETH/USDT"]["last"] / every["BTC/USDT"]["last"]
    assert abs(every["ETH/BTC"]["last"] / implied - 1) < 0.002


async def test_ohlcv_history_exists_right_after_start(venue_sim: SimVenue) -> None:
    async with ccxt_client(venue_sim) as ex:
        await ex.load_markets()
        minutes = await ex.fetch_ohlcv("BTC/USDT", "1m", limit=1000)
        hours = await ex.fetch_ohlcv("ETH/USDT", "1h", limit=1000)
        default = await ex.fetch_ohlcv("SOL/USDT", "1h")
        since = minutes[100][0]
        page = await ex.fetch_ohlcv("BTC/USDT", "1m", since=since, limit=50)
        until = await ex.fetch_ohlcv("BTC/USDT", "1m", limit=10, params={"until": since})
        ticker = await ex.fetch_ticker("BTC/USDT")
        days = await ex.fetch_ohlcv("BTC/USDT", "1d", limit=100)
    assert len(minutes) == 1000 and len(hours) == 1000 and len(default) == 500
    for candles, step in ((minutes, 60_000), (hours, 3_600_000), (days, 86_400_000)):
        arr = np.array(candles)
        assert np.all(np.diff(arr[:, 0]) == step), "consecutive, ascending"
        assert np.all(arr[:, 2] >= np.maximum(arr[:, 1], arr[:, 4]) - 1e-9)
        assert np.all(arr[:, 3] <= np.minimum(arr[:, 1], arr[:, 4]) + 1e-9)
        assert np.all(arr[:, 5] > 0)
    assert minutes[-1][0] <= time.time() * 1000 < minutes[-1][0] + 120_000
    assert abs(minutes[-1][4] / ticker["last"] - 1) < 0.002, "the live candle closes at the mid"
    assert page[0][0] == since and len(page) == 50
    assert until[-1][0] == since and len(until) == 10
    # crypto-like volatility, measurable from the history (40-120% a year, +- sampling)
    closes = np.array(hours)[:, 4]
    vol = np.diff(np.log(closes)).std() * math.sqrt(24 * 365)
    assert 0.3 < vol < 1.5, vol


async def test_status_time_and_admin_state(venue_sim: SimVenue) -> None:
    async with ccxt_client(venue_sim) as ex:
        status = await ex.fetch_status()
        server_time = await ex.fetch_time()
    assert status["status"] == "ok"
    assert abs(server_time - time.time() * 1000) < 5000
    state = venue_sim.state()
    assert state["mode"] == "model" and state["seed"] == 42 and state["ticks"] > 0


def test_malformed_requests_get_a_400_json_body_never_a_500(venue_sim: SimVenue) -> None:
    form = {"Content-Type": "application/x-www-form-urlencoded", "X-MBX-APIKEY": "venue-sim-dev-key"}
    cases: list[tuple[str, str, bytes | None, dict[str, str], int, int]] = [
        ("GET", "/api/v3/depth?symbol=", None, {}, 400, -1102),
        ("GET", "/api/v3/depth", None, {}, 400, -1102),
        ("GET", "/api/v3/depth?symbol=BTCUSDT&limit=abc", None, {}, 400, -1100),
        ("GET", "/api/v3/depth?symbol=BTCUSDT&limit=-5", None, {}, 400, -1100),
        ("GET", "/api/v3/depth?symbol=BTCUSDT&limit=99999", None, {}, 400, -1130),
        ("GET", "/api/v3/depth?symbol=BTCUSDT&symbol=ETHUSDT", None, {}, 400, -1101),
        ("GET", "/api/v3/depth?symbol=BTCUSDT&bogus=1", None, {}, 400, -1104),
        ("GET", "/api/v3/depth?symbol=%FF%FE", None, {}, 400, -1100),
        ("GET", "/api/v3/depth?symbol=NOPE", None, {}, 400, -1121),
        ("GET", "/api/v3/klines?symbol=BTCUSDT&interval=7m", None, {}, 400, -1120),
        ("GET", "/api/v3/klines?symbol=BTCUSDT", None, {}, 400, -1102),
        ("GET", "/api/v3/klines?symbol=BTCUSDT&interval=1m&limit=5000", None, {}, 400, -1130),
        ("GET", "/api/v3/klines?symbol=BTCUSDT&interval=1m&startTime=9&endTime=1", None, {}, 400, -1023),
        ("GET", "/api/v3/ticker/24hr?symbols=notjson", None, {}, 400, -1100),
        ("GET", "/api/v3/ticker/24hr?symbols=%5B%22NOPE%22%5D", None, {}, 400, -1121),
        ("GET", "/api/v3/ticker/24hr?symbol=BTCUSDT&symbols=%5B%5D", None, {}, 400, -1128),
        ("POST", "/api/v3/order", b"garbage", form, 400, -1102),
        ("POST", "/api/v3/order", b"\xff\xfe\x00garbage", form, 400, -1100),
        ("POST", "/api/v3/order", b'{"symbol": "BTCUSDT"}', form, 400, -1102),
        ("POST", "/api/v3/order", b"symbol=BTCUSDT&timestamp=1&signature=zz", form, 400, -1021),
        ("POST", "/api/v3/order", b"symbol=BTCUSDT", {}, 401, -2014),
        ("GET", "/api/v3/account", None, {"X-MBX-APIKEY": "nobody"}, 401, -2015),
        ("GET", "/api/v3/account?timestamp=abc&signature=00", None, form, 400, -1100),
        ("GET", "/api/v3/account?timestamp=1&recvWindow=70000&signature=00", None, form, 400, -1131),
        ("GET", "/api/v3/nothing-here", None, {}, 404, -1020),
        ("PUT", "/api/v3/depth?symbol=BTCUSDT", None, {}, 405, -1020),
    ]
    for method, path, body, headers, status, code in cases:
        got_status, _h, got = http(venue_sim.url + path, method, body, headers)
        assert (got_status, got["code"]) == (status, code), (method, path, got)
        assert isinstance(got["msg"], str) and got["msg"]
    # a body far over the limit is refused with JSON as well
    got_status, _h, got = http(venue_sim.url + "/api/v3/order", "POST", b"a=" + b"x" * 400_000, form)
    assert got_status == 413 and got["code"] == -1100


async def test_hundreds_of_requests_per_second(venue_sim: SimVenue) -> None:
    paths = ["/api/v3/depth?symbol=BTCUSDT&limit=20", "/api/v3/ticker/bookTicker?symbol=ETHUSDT",
             "/api/v3/depth?symbol=ETHUSDT&limit=1000", "/api/v3/ticker/24hr?symbol=SOLUSDT",
             "/api/v3/depth?symbol=SOLUSDT&limit=100"]
    n = 1000
    async with aiohttp.ClientSession(f"{venue_sim.url}") as session:
        sem = asyncio.Semaphore(32)

        async def one(i: int) -> int:
            async with sem, session.get(paths[i % len(paths)]) as resp:
                await resp.read()
                return resp.status

        t0 = time.perf_counter()
        statuses = await asyncio.gather(*(one(i) for i in range(n)))
        elapsed = time.perf_counter() - t0
    assert statuses == [200] * n
    # the client shares the machine; the server alone does several times this
    assert n / elapsed > 250, f"{n / elapsed:.0f} requests/s"


def test_depth_is_json_with_lastupdateid_on_raw_get(venue_sim: SimVenue) -> None:
    status, headers, body = http(venue_sim.url + "/api/v3/depth?symbol=ETHBTC&limit=5")
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    assert set(body) >= {"lastUpdateId", "bids", "asks"} and len(body["bids"]) == 5
    assert int(headers["X-MBX-USED-WEIGHT-1M"]) >= 5
