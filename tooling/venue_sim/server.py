"""The HTTP side: Binance spot REST endpoints over the engine and a market source.

One catch-all aiohttp route dispatches on (method, path) through :data:`Venue.routes`,
so unknown paths, wrong methods, malformed parameters and unexpected exceptions all get
a JSON ``{"code", "msg"}`` body; nothing answers an HTML page or hangs.

Per request, in order: optional ``--latency-ms`` (half before handling), request weight
charged to the API key (or the client's address for unsigned calls; HTTP 429 with
``Retry-After`` over ``--weight-limit``), parameters parsed, key and signature checked
for signed endpoints, the handler, then the other half of the latency.

A background task advances the market every ``--tick-ms`` (200 by default): new books
from the source, and resting orders filled where those books cross them.

Endpoints (Binance spot paths): ``/api/v3/`` ping, time, exchangeInfo, depth, ticker/24hr,
ticker/bookTicker, ticker/price, avgPrice, trades, aggTrades, klines, uiKlines; signed
account, order (POST/GET/DELETE), order/test, openOrders (GET/DELETE), allOrders,
myTrades; ``/sapi/v1/asset/tradeFee`` (signed) and ``/sapi/v1/system/status``. Not
Binance: ``GET /venue-sim/v1/ledger`` (per-asset conservation, see :mod:`.engine`),
``GET /venue-sim/v1/state`` (mids, true prices, counters), ``POST /venue-sim/v1/clock``
(pause the market), and in replay mode
``GET /venue-sim/v1/replay`` and ``POST /venue-sim/v1/replay/start`` (see
:mod:`.replay`), none weighted nor signed. ``--order-latency-ms`` delays order placement
and cancellation only, before matching.

Websocket market streams (``/ws``, ``/ws/<n>``, ``/stream``) are served on the same port:
see :mod:`.stream`; ``POST /venue-sim/v1/ws/faults`` injects their faults.
Binance's websocket API ``/ws-api/v3`` (the user data stream ccxt.pro's watch_orders,
watch_balance and watch_my_trades subscribe to) too: see :mod:`.wsapi`.

Where it differs from Binance on purpose: klines have every interval but ``1M``; the trade tapes show
only fills of the venue's accounts; accounts trade against the simulated liquidity, never
with each other, and their resting orders do not appear in the book.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import msgspec
import numpy as np
from aiohttp import web

from shared import logs
from tooling.venue_sim import errors
from tooling.venue_sim.auth import Params, WeightLimiter, check_signed, parse_pairs
from tooling.venue_sim.book import BUY, SELL, Book
from tooling.venue_sim.config import VenueConfig
from tooling.venue_sim.engine import (
    LIMIT,
    LIMIT_MAKER,
    MARKET,
    TIME_IN_FORCE,
    Account,
    Engine,
    Journal,
    Order,
)
from tooling.venue_sim.errors import ApiError
from tooling.venue_sim.market import TrueModel, VenueEffects, VenueModel
from tooling.venue_sim.source import INTERVALS, MarketSource, ModelSource
from tooling.venue_sim.stream import StreamHub
from tooling.venue_sim.symbols import SymbolSpec, fmt, fmt8, make_spec
from tooling.venue_sim.wsapi import WsApi

log = logs.get_logger("venue-sim")

JSON = "application/json;charset=UTF-8"
DAY = 86_400_000
SUPPORTED_BUT_NOT_HERE = {"STOP_LOSS", "STOP_LOSS_LIMIT", "TAKE_PROFIT", "TAKE_PROFIT_LIMIT"}
ORDER_PARAMS = frozenset({
    "symbol", "side", "type", "timeInForce", "quantity", "quoteOrderQty", "price",
    "newClientOrderId", "newOrderRespType", "strategyId", "strategyType", "selfTradePreventionMode",
    "computeCommissionRates",
})
_KLINE_PARAMS = frozenset({"symbol", "interval", "startTime", "endTime", "limit", "timeZone"})
NO_LATENCY = frozenset({"/api/v3/ping", "/api/v3/time"})
TICK_STEP = 8  # symbols advanced between two turns of the event loop


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class Call:
    """One request, as handlers see it."""

    params: Params
    account: Account | None
    now: int
    request: web.Request
    body: str = ""


@dataclass(frozen=True)
class Endpoint:
    """A handler, its request weight, the parameters it reads, and whether it is signed."""

    handler: Callable[[Call], Any]
    weight: Callable[[Params], int]
    params: frozenset[str] = frozenset()
    signed: bool = False
    admin: bool = False
    json_body: bool = False  # the body is JSON for the handler, not form parameters


def _p(*names: str) -> frozenset[str]:
    return frozenset(names)


SIGNING = _p("timestamp", "recvWindow", "signature")


def _const(w: int) -> Callable[[Params], int]:
    return lambda _p: w


def _depth_weight(p: Params) -> int:
    raw = p.values.get("limit", "")
    limit = int(raw) if raw.isdigit() and len(raw) < 10 else 100
    return 5 if limit <= 100 else 25 if limit <= 500 else 50 if limit <= 1000 else 250


def _ticker_weight(p: Params) -> int:
    if "symbol" in p:
        return 2
    raw = p.values.get("symbols")
    if raw:
        n = raw.count(",") + 1
        return 2 if n <= 20 else 40 if n <= 100 else 80
    return 80


def _by_symbol(with_symbol: int, without: int) -> Callable[[Params], int]:
    return lambda p: with_symbol if "symbol" in p else without


class Venue:
    """A venue: its market source, matching engine, accounts and HTTP routes."""

    def __init__(self, config: VenueConfig, *, start_ms: int | None = None) -> None:
        self.config = config
        start = start_ms if start_ms is not None else now_ms()
        rng = np.random.default_rng([config.seed, zlib.crc32(config.name.encode())])
        self.source: MarketSource
        if config.replay is not None:
            from tooling.venue_sim.replay import ReplaySource

            replay_start = None if config.replay_hold else (
                config.replay_start_ms if config.replay_start_ms is not None else start)
            self.source = ReplaySource(config.replay, config.levels, rng, replay_start, config.quote,
                                       config.symbol_names if config.symbols_given else None)
            specs = self.source.specs
        else:
            specs = [make_spec(b, q) for b, q in config.symbols]
            effects = VenueEffects(config.name, config.noise_bps, config.price_offset_bps,
                                   config.lag_ms)
            model = VenueModel(TrueModel(config.seed), effects, specs)
            self.source = ModelSource(model, specs, config.levels, rng, config.fresh_levels)
        self.specs: dict[str, SymbolSpec] = {s.id: s for s in specs}
        self.journal = Journal(config.journal) if config.journal is not None else None
        self.engine = Engine(specs, venue=config.name, journal=self.journal,
                             reject_rate=config.reject_rate, seed=config.seed)
        assets = sorted({a for s in specs for a in (s.base, s.quote)})
        balances = config.starting_balances(assets)
        pairs = [(config.api_key, config.api_secret), *config.accounts]
        for i, (key, secret) in enumerate(pairs):
            self.engine.add_account(f"acct-{i}", key, secret, balances, config.maker_fee,
                                    config.taker_fee)
        self.limiter = WeightLimiter(config.weight_limit, config.weight_window_s)
        self.latency_rng = random.Random(config.seed)
        self.started_ms = start
        self.ticks = 0
        self.paused = False  # POST /venue-sim/v1/clock: books change only by orders meanwhile
        self.requests = 0
        self.weight_used = 0  # request weight charged since the start, every key together
        self.in_flight = 0  # requests received and not answered yet (latency included)
        self._exchange_info: list[dict[str, Any]] = [self._symbol_info(s) for s in specs]
        self.routes: dict[str, dict[str, Endpoint]] = self._routes()
        self.tick(start)
        self.hub = StreamHub(config, self.specs)
        self.hub.prime(self.engine.books)
        self.engine.observer = self.hub  # from now on every change of a book is streamed
        self.ws_api = WsApi(config, self.engine, self.limiter)
        self.engine.account_observer = self.ws_api  # and every change of an account's orders

    # --- the market clock --------------------------------------------------------------------------

    def tick(self, now: int) -> None:
        """New books for every symbol; resting orders that they cross are filled."""
        self.engine.advance(self.source, now)
        self.ticks += 1

    async def run_clock(self) -> None:
        """The market clock (a tick every ``--tick-ms``) and the websocket streams' events."""
        streams = asyncio.create_task(self.hub.run(), name="venue-sim-streams")
        try:
            await self._clock()
        finally:
            streams.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await streams

    async def _clock(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        tick_s = self.config.tick_ms / 1000.0
        while True:
            next_at += tick_s
            delay = next_at - loop.time()
            if delay < 0:  # fell behind (a slow request): skip, do not burst
                next_at = loop.time()
                delay = 0
            await asyncio.sleep(delay)
            if self.paused:
                continue
            try:
                await self._tick_in_steps(now_ms())
            except Exception:
                log.exception("tick_failed")

    async def _tick_in_steps(self, now: int) -> None:
        """:meth:`tick`, a few symbols at a time, letting the sockets and requests waiting
        meanwhile through between steps: with many symbols a whole tick would hold the
        loop for tens of milliseconds."""
        specs = list(self.engine.specs.values())
        for i in range(0, len(specs), TICK_STEP):
            if i:
                await asyncio.sleep(0)
            self.engine.advance(self.source, now, specs[i:i + TICK_STEP])
        self.ticks += 1

    # --- HTTP ------------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=256 * 1024)
        for path in ("/ws", "/ws/{name}", "/stream", "/stream/{name}"):
            app.router.add_get(path, self.hub.handle)
        app.router.add_get("/ws-api/v3", self.ws_api.handle)  # before the catch-all
        app.router.add_route("*", "/{tail:.*}", self.dispatch)
        return app

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        self.in_flight += 1
        try:
            return await self._dispatch(request)
        finally:
            self.in_flight -= 1

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        path = request.path
        endpoints = self.routes.get(path)
        extra: dict[str, str] = {}
        latency = self.config.latency_ms > 0 and endpoints is not None and path not in NO_LATENCY \
            and not next(iter(endpoints.values())).admin
        if latency:
            await asyncio.sleep(self._latency_s())
        if self.config.order_latency_ms and path == "/api/v3/order" and request.method in ("POST", "DELETE"):
            await asyncio.sleep(self.config.order_latency_ms / 1000.0)  # then it meets the book as it is
        try:
            if endpoints is None:
                raise ApiError(-1020, "This operation is not supported.", 404)
            endpoint = endpoints.get(request.method)
            if endpoint is None:
                raise ApiError(-1020, f"Method {request.method} is not supported on {path}.", 405)
            body = await self._call(request, endpoint, extra)
            response = web.Response(body=body, status=200, content_type="application/json",
                                    charset="utf-8")
        except ApiError as exc:
            response = self._error(exc)
        except web.HTTPException as exc:  # e.g. a body over client_max_size
            response = self._error(ApiError(-1100, exc.reason or "Bad request.", exc.status))
        except Exception:
            log.exception("handler_failed", method=request.method, path=path)
            response = self._error(errors.unknown_error())
        response.headers.update(extra)
        if latency:
            await asyncio.sleep(self._latency_s())
        return response

    def _latency_s(self) -> float:
        # each half: latency/2 with +-50% jitter, so replies do not arrive in lockstep
        return self.config.latency_ms / 2000.0 * self.latency_rng.uniform(0.5, 1.5)

    @staticmethod
    def _error(exc: ApiError) -> web.Response:
        response = web.Response(body=msgspec.json.encode(exc.body()), status=exc.status,
                                content_type="application/json", charset="utf-8")
        response.headers.update(exc.headers)
        return response

    async def _call(self, request: web.Request, endpoint: Endpoint, extra: dict[str, str]) -> bytes:
        raw_query = request.rel_url.raw_query_string
        raw_body = ""
        if request.can_read_body:
            try:
                raw_body = (await request.read()).decode("utf-8")
            except UnicodeDecodeError:
                raise ApiError(-1100, "Illegal characters found in a parameter.") from None
        params = Params([*parse_pairs(raw_query), *([] if endpoint.json_body else parse_pairs(raw_body))])
        now = now_ms()
        if not endpoint.admin:
            key = request.headers.get("X-MBX-APIKEY") or f"ip:{request.remote}"
            weight = endpoint.weight(params)
            self.weight_used += weight
            ok, used, retry = self.limiter.charge(key, weight, now)
            extra["X-MBX-USED-WEIGHT-1M"] = str(used)
            if not ok:
                if self.limiter.first_refusal(key):  # log once per key and minute
                    log.warning("rate_limited", by="ip" if key.startswith("ip:") else "api-key",
                                used=used, limit=self.limiter.limit, retry_after_s=retry)
                window = self.config.weight_window_s
                per = "1 MINUTE" if window == 60 else f"{window} SECOND"
                raise ApiError(-1003, f"Too much request weight used; current limit is "
                               f"{self.limiter.limit} request weight per {per}. Please use "
                               "WebSocket Streams for live updates to avoid polling the API.",
                               429, {"Retry-After": str(retry)})
        account = None
        if endpoint.signed:
            api_key = request.headers.get("X-MBX-APIKEY", "")
            if not api_key:
                raise ApiError(-2014, "API-key format invalid.", 401)
            account = self.engine.accounts.get(api_key)
            if account is None:
                raise ApiError(-2015, "Invalid API-key, IP, or permissions for action.", 401)
            check_signed(params, account.secret, raw_query, raw_body, now)
        # before the handler: an order must not be placed and then refused for a stray param
        accepted = endpoint.params | SIGNING if endpoint.signed else endpoint.params
        unread = [k for k in params.values if k not in accepted]
        if unread:
            raise errors.not_all_read(len(params.values) - len(unread), len(params.values))
        result = endpoint.handler(Call(params, account, now, request, raw_body))
        return result if isinstance(result, bytes) else msgspec.json.encode(result)

    # --- routes -----------------------------------------------------------------------------------

    def _routes(self) -> dict[str, dict[str, Endpoint]]:
        c = _const
        sym = _p("symbol")
        syms = _p("symbol", "symbols")
        window = _p("symbol", "orderId", "startTime", "endTime", "limit")
        order = ORDER_PARAMS | _p("stopPrice", "icebergQty", "trailingDelta")
        find = _p("symbol", "orderId", "origClientOrderId")
        return {
            "/api/v3/ping": {"GET": Endpoint(lambda _c: {}, c(1))},
            "/api/v3/time": {"GET": Endpoint(lambda call: {"serverTime": call.now}, c(1))},
            "/api/v3/exchangeInfo": {"GET": Endpoint(
                self.exchange_info, c(20), syms | _p("permissions", "showPermissionSets",
                                                     "symbolStatus"))},
            "/api/v3/depth": {"GET": Endpoint(self.depth, _depth_weight, _p("symbol", "limit"))},
            "/api/v3/ticker/24hr": {"GET": Endpoint(self.ticker_24hr, _ticker_weight,
                                                    syms | _p("type"))},
            "/api/v3/ticker/bookTicker": {"GET": Endpoint(self.book_ticker, _by_symbol(2, 4), syms)},
            "/api/v3/ticker/price": {"GET": Endpoint(self.price_ticker, _by_symbol(2, 4), syms)},
            "/api/v3/avgPrice": {"GET": Endpoint(self.avg_price, c(2), sym)},
            "/api/v3/trades": {"GET": Endpoint(self.recent_trades, c(25), _p("symbol", "limit"))},
            "/api/v3/aggTrades": {"GET": Endpoint(self.agg_trades, c(4), _p(
                "symbol", "fromId", "startTime", "endTime", "limit"))},
            "/api/v3/klines": {"GET": Endpoint(self.klines, c(2), _KLINE_PARAMS)},
            "/api/v3/uiKlines": {"GET": Endpoint(self.klines, c(2), _KLINE_PARAMS)},
            "/sapi/v1/system/status": {"GET": Endpoint(lambda _c: {"status": 0, "msg": "normal"},
                                                       c(1))},
            "/api/v3/account": {"GET": Endpoint(self.account, c(20), _p("omitZeroBalances"),
                                                signed=True)},
            "/api/v3/order": {
                "POST": Endpoint(self.new_order, c(1), order, signed=True),
                "GET": Endpoint(self.query_order, c(4), find, signed=True),
                "DELETE": Endpoint(self.cancel_order, c(1),
                                   find | _p("newClientOrderId", "cancelRestrictions"), signed=True),
            },
            "/api/v3/order/test": {"POST": Endpoint(self.test_order, c(1), order, signed=True)},
            "/api/v3/openOrders": {
                "GET": Endpoint(self.open_orders, _by_symbol(6, 80), sym, signed=True),
                "DELETE": Endpoint(self.cancel_all, c(1), sym, signed=True),
            },
            "/api/v3/allOrders": {"GET": Endpoint(self.all_orders, c(20), window, signed=True)},
            "/api/v3/myTrades": {"GET": Endpoint(self.my_trades, c(20), window | _p("fromId"),
                                                 signed=True)},
            "/sapi/v1/asset/tradeFee": {"GET": Endpoint(self.trade_fee, c(1), sym, signed=True)},
            "/venue-sim/v1/ledger": {"GET": Endpoint(lambda _c: self.engine.ledger(), c(0),
                                                     admin=True)},
            "/venue-sim/v1/state": {"GET": Endpoint(self.state, c(0), admin=True)},
            "/venue-sim/v1/replay": {"GET": Endpoint(self.replay_state, c(0), admin=True)},
            "/venue-sim/v1/replay/start": {"POST": Endpoint(self.replay_start, c(0), admin=True,
                                                            json_body=True)},
            "/venue-sim/v1/clock": {"POST": Endpoint(self.set_clock, c(0), admin=True,
                                                     json_body=True)},
            "/venue-sim/v1/ws/faults": {"POST": Endpoint(self.ws_faults, c(0), admin=True,
                                                         json_body=True)},
        }

    # --- parameter helpers --------------------------------------------------------------------

    def _spec(self, p: Params, required: bool = True) -> SymbolSpec | None:
        sid = p.text("symbol", required)
        if sid is None:
            return None
        spec = self.specs.get(sid)
        if spec is None:
            raise errors.invalid_symbol()
        return spec

    def _specs(self, p: Params) -> list[SymbolSpec]:
        """``symbol=X``, ``symbols=["X","Y"]`` (JSON) or neither (all symbols)."""
        one = self._spec(p, required=False)
        raw = p.text("symbols")
        if one is not None and raw is not None:
            raise errors.bad_combination()
        if one is not None:
            return [one]
        if raw is None:
            return list(self.specs.values())
        try:
            ids = json.loads(raw)
        except ValueError:
            ids = None
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
            raise errors.illegal("symbols", '^\\[("[A-Z0-9-_.]{1,20}"(,"[A-Z0-9-_.]{1,20}"){0,}){0,1}\\]$')
        out = []
        for sid in ids:
            spec = self.specs.get(sid)
            if spec is None:
                raise errors.invalid_symbol()
            out.append(spec)
        return out

    @staticmethod
    def _px(spec: SymbolSpec, ticks: int | None) -> str:
        return fmt8(ticks * spec.tick_f) if ticks is not None else "0.00000000"

    @staticmethod
    def _round(spec: SymbolSpec, price: float) -> str:
        return fmt8(round(price / spec.tick_f) * spec.tick_f)

    # --- market data ------------------------------------------------------------------------

    def _symbol_info(self, spec: SymbolSpec) -> dict[str, Any]:
        return {
            "symbol": spec.id, "status": "TRADING", "baseAsset": spec.base, "baseAssetPrecision": 8,
            "quoteAsset": spec.quote, "quotePrecision": 8, "quoteAssetPrecision": 8,
            "baseCommissionPrecision": 8, "quoteCommissionPrecision": 8,
            "orderTypes": [LIMIT, LIMIT_MAKER, MARKET],
            "icebergAllowed": False, "ocoAllowed": False, "otoAllowed": False,
            "quoteOrderQtyMarketAllowed": True, "allowTrailingStop": False,
            "cancelReplaceAllowed": False, "isSpotTradingAllowed": True,
            "isMarginTradingAllowed": False,
            "filters": [
                {"filterType": "PRICE_FILTER", "minPrice": fmt(spec.min_price),
                 "maxPrice": fmt(spec.max_price), "tickSize": fmt(spec.tick)},
                {"filterType": "LOT_SIZE", "minQty": fmt(spec.min_qty), "maxQty": fmt(spec.max_qty),
                 "stepSize": fmt(spec.step)},
                {"filterType": "NOTIONAL", "minNotional": fmt(spec.min_notional),
                 "applyMinToMarket": True, "maxNotional": fmt(spec.max_notional),
                 "applyMaxToMarket": False, "avgPriceMins": 5},
            ],
            "permissions": [], "permissionSets": [["SPOT"]],
            "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
            "allowedSelfTradePreventionModes": ["EXPIRE_MAKER"],
        }

    def exchange_info(self, call: Call) -> dict[str, Any]:
        # permissions, showPermissionSets, symbolStatus: accepted (see the route) and ignored
        wanted = {s.id for s in self._specs(call.params)}
        return {
            "timezone": "UTC", "serverTime": call.now,
            "rateLimits": [
                {"rateLimitType": "REQUEST_WEIGHT",
                 "interval": "MINUTE" if self.config.weight_window_s == 60 else "SECOND",
                 "intervalNum": 1 if self.config.weight_window_s == 60 else self.config.weight_window_s,
                 "limit": self.config.weight_limit},
            ],
            "exchangeFilters": [],
            "symbols": [s for s in self._exchange_info if s["symbol"] in wanted],
        }

    def depth(self, call: Call) -> bytes:
        spec = self._spec(call.params)
        limit = call.params.integer("limit", lo=1, hi=5000)
        assert spec is not None
        return self.engine.book(spec.id).depth_json(min(limit or 100, self.config.levels))

    def _ticker(self, spec: SymbolSpec, now: int, full: bool) -> dict[str, Any]:
        book = self.engine.book(spec.id)
        stats = self.source.stats_24h(spec, now)
        mid = book.mid or 0.0
        last = mid if stats is None else stats.last
        out: dict[str, Any] = {"symbol": spec.id}
        if stats is None:
            open_ = high = low = last
            volume = quote_volume = 0.0
            open_time, count = now - DAY, 0
        else:
            open_, high, low = stats.open, stats.high, stats.low
            volume, quote_volume = stats.volume, stats.quote_volume
            open_time, count = stats.open_time, stats.count
        change = last - open_
        if full:
            out.update({
                "priceChange": self._round(spec, change),
                "priceChangePercent": f"{(change / open_ * 100.0 if open_ else 0.0):.3f}",
                "weightedAvgPrice": self._round(spec, quote_volume / volume if volume else last),
                "prevClosePrice": self._round(spec, open_),
            })
        out.update({
            "lastPrice": self._round(spec, last), "lastQty": fmt(spec.min_qty), **self._top(spec, book),
            "openPrice": self._round(spec, open_), "highPrice": self._round(spec, high),
            "lowPrice": self._round(spec, low), "volume": fmt8(volume), "quoteVolume": fmt8(quote_volume),
            "openTime": open_time, "closeTime": now, "firstId": 1, "lastId": count, "count": count,
        })
        return out

    def _top(self, spec: SymbolSpec, book: Book) -> dict[str, str]:
        """Best bid and ask with their sizes, as the tickers show them."""
        return {
            "bidPrice": self._px(spec, book.best_bid),
            "bidQty": fmt8(int(book.bid_qty[0]) * spec.step_f) if len(book.bid_qty) else "0.00000000",
            "askPrice": self._px(spec, book.best_ask),
            "askQty": fmt8(int(book.ask_qty[0]) * spec.step_f) if len(book.ask_qty) else "0.00000000",
        }

    def _per_symbol(self, p: Params, row: Callable[[SymbolSpec], dict[str, Any]]) -> Any:
        """One row for ``symbol=X``, else a list for ``symbols=[...]`` or every symbol."""
        single = "symbol" in p
        rows = [row(s) for s in self._specs(p)]
        return rows[0] if single else rows

    def ticker_24hr(self, call: Call) -> Any:
        p = call.params
        kind = p.choice("type", ("FULL", "MINI"), errors.illegal("type", "^(FULL|MINI)$")) or "FULL"
        return self._per_symbol(p, lambda s: self._ticker(s, call.now, kind == "FULL"))

    def book_ticker(self, call: Call) -> Any:
        return self._per_symbol(call.params, lambda s: {"symbol": s.id,
                                                        **self._top(s, self.engine.book(s.id))})

    def price_ticker(self, call: Call) -> Any:
        return self._per_symbol(call.params, lambda s: {
            "symbol": s.id, "price": self._round(s, self.engine.book(s.id).mid or 0.0)})

    def avg_price(self, call: Call) -> dict[str, Any]:
        spec = self._spec(call.params)
        assert spec is not None
        return {"mins": 5, "price": self._round(spec, self.engine.book(spec.id).mid or 0.0),
                "closeTime": call.now}

    def recent_trades(self, call: Call) -> list[dict[str, Any]]:
        """The venue's own fills (all accounts): its simulated liquidity prints nothing."""
        spec = self._spec(call.params)
        limit = call.params.integer("limit", lo=1, hi=1000) or 500
        assert spec is not None
        return [t.public_json() for t in list(self.engine.tape[spec.id])[-limit:]]

    def agg_trades(self, call: Call) -> list[dict[str, Any]]:
        p = call.params
        spec = self._spec(p)
        from_id = p.integer("fromId")
        start, end, limit = self._window(p, max_span=3_600_000)
        if from_id is not None and (start is not None or end is not None):
            raise errors.bad_combination()
        assert spec is not None
        rows = [t for t in self.engine.tape[spec.id] if (from_id is None or t.id >= from_id)
                and (start is None or t.time >= start) and (end is None or t.time <= end)]
        rows = rows[:limit] if from_id is not None or start is not None else rows[-limit:]
        return [t.agg_json() for t in rows]

    def klines(self, call: Call) -> list[list[object]]:
        p = call.params
        spec = self._spec(p)
        interval = p.choice("interval", INTERVALS, errors.ApiError(-1120, "Invalid interval."),
                            required=True)
        start, end, limit = self._window(p, max_span=None)  # timeZone: accepted, candles stay in UTC
        assert spec is not None and interval is not None
        return self.source.klines(spec, interval, start, end, limit, call.now)

    def _replay(self) -> Any:
        from tooling.venue_sim.replay import ReplaySource

        if not isinstance(self.source, ReplaySource):
            raise ApiError(-1020, "Not in replay mode.", 409)
        return self.source

    def replay_state(self, call: Call) -> dict[str, Any]:
        """Where the replay is: its start, the recording's clock, each symbol's current record."""
        source = self._replay()
        return {"started_at_ms": source.start_ms, "record_time_ms": source.record_time(call.now),
                "records": {spec.symbol: source.current(spec, call.now) for spec in self.specs.values()}}

    def replay_start(self, call: Call) -> dict[str, Any]:
        """Start a held replay now, or at ``{"at_ms": ...}``."""
        source = self._replay()
        try:
            doc = json.loads(call.body) if call.body.strip() else {}
        except ValueError:
            raise ApiError(-1100, "The body must be JSON, e.g. {\"at_ms\": 1700000000000}.", 400) from None
        at_ms = doc.get("at_ms", call.now) if isinstance(doc, dict) else None
        if isinstance(at_ms, bool) or not isinstance(at_ms, int) or at_ms < 0:
            raise ApiError(-1100, "at_ms must be a non-negative integer (epoch milliseconds).", 400)
        try:
            source.start(at_ms)
        except ValueError as exc:
            raise ApiError(-1020, f"{exc}.", 409) from None
        log.info("replay_started", at_ms=at_ms)
        return {"started_at_ms": at_ms}

    def set_clock(self, call: Call) -> dict[str, Any]:
        """``{"paused": true}`` stops the market (books change only by orders), ``false``
        restarts it: lets a test compare a client's book with the venue's at rest."""
        try:
            doc = json.loads(call.body) if call.body.strip() else None
        except ValueError:
            doc = None
        if not isinstance(doc, dict) or not isinstance(doc.get("paused"), bool):
            raise ApiError(-1100, 'The body must be {"paused": true} or {"paused": false}.', 400)
        self.paused = doc["paused"]
        log.info("clock_paused" if self.paused else "clock_resumed")
        return {"paused": self.paused, "ticks": self.ticks}

    def ws_faults(self, call: Call) -> dict[str, Any]:
        """Drop or reorder the next diff events, close the open sockets (see :mod:`.stream`)."""
        try:
            doc = json.loads(call.body) if call.body.strip() else {}
            if not isinstance(doc, dict):
                raise ValueError("the body must be a JSON object")
            return self.hub.faults(doc)
        except ValueError as exc:
            raise ApiError(-1100, f"{exc}.", 400) from None

    def state(self, call: Call) -> dict[str, Any]:
        symbols = {}
        for spec in self.specs.values():
            book = self.engine.book(spec.id)
            row: dict[str, Any] = {"mid": book.mid, "bestBid": self._px(spec, book.best_bid),
                                   "bestAsk": self._px(spec, book.best_ask),
                                   "updateId": book.update_id, "time": book.ts_ms}
            if isinstance(self.source, ModelSource):
                row["trueMid"] = self.source.model.true_mid_at(spec, call.now)
            symbols[spec.symbol] = row
        cfg = self.config
        return {"name": cfg.name, "seed": cfg.seed, "now": call.now, "ticks": self.ticks,
                "requests": self.requests, "weightUsed": self.weight_used,
                "fills": self.engine.fills, "paused": self.paused,
                "inFlight": self.in_flight - 1,  # other than this one: a client may wait for 0
                "mode": "replay" if cfg.replay else "model", "noiseBps": cfg.noise_bps,
                "priceOffsetBps": cfg.price_offset_bps, "lagMs": cfg.lag_ms, "symbols": symbols,
                "ws": self.hub.state()}

    # --- account and orders -----------------------------------------------------------------

    def account(self, call: Call) -> dict[str, Any]:
        acct = call.account
        assert acct is not None
        omit = call.params.choice("omitZeroBalances", ("true", "false"),
                                  errors.illegal("omitZeroBalances", "^(true|false)$")) == "true"
        balances = acct.balances_json()
        if omit:
            balances = [b for b in balances if b["free"] != "0.00000000" or b["locked"] != "0.00000000"]
        maker, taker = acct.maker_fee, acct.taker_fee
        return {
            "makerCommission": int(maker * 10_000), "takerCommission": int(taker * 10_000),
            "buyerCommission": 0, "sellerCommission": 0,
            "commissionRates": {"maker": fmt(maker), "taker": fmt(taker), "buyer": "0.00000000",
                                "seller": "0.00000000"},
            "canTrade": True, "canWithdraw": False, "canDeposit": False, "brokered": False,
            "requireSelfTradePrevention": False, "preventSor": False,
            "updateTime": acct.update_time or self.started_ms, "accountType": "SPOT",
            "balances": balances, "permissions": ["SPOT"], "uid": 1000 + int(acct.label.split("-")[1]),
        }

    def _parse_order(self, call: Call) -> tuple[SymbolSpec, dict[str, Any], str]:
        p = call.params
        spec = self._spec(p)
        side = p.choice("side", (BUY, SELL), ApiError(-1117, "Invalid side."), required=True)
        otype = p.text("type", required=True)
        if otype in SUPPORTED_BUT_NOT_HERE:
            raise ApiError(-1014, "Unsupported order combination.")
        if otype not in (LIMIT, LIMIT_MAKER, MARKET):
            raise ApiError(-1116, "Invalid orderType.")
        tif = p.text("timeInForce")
        qty = p.decimal("quantity")
        quote_qty = p.decimal("quoteOrderQty")
        price = p.decimal("price")
        client_id = p.text("newClientOrderId")
        if client_id is not None and not _client_id_ok(client_id):
            raise errors.illegal("newClientOrderId", errors.CLIENT_ID_RANGE)
        resp = p.choice("newOrderRespType", ("ACK", "RESULT", "FULL"),
                        ApiError(-1136, "Invalid newOrderRespType.")) or "FULL"
        # strategyId, strategyType, computeCommissionRates: accepted (ORDER_PARAMS) and ignored
        p.choice("selfTradePreventionMode", ("NONE", "EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"),
                 errors.illegal("selfTradePreventionMode",
                                "^(NONE|EXPIRE_TAKER|EXPIRE_MAKER|EXPIRE_BOTH)$"))
        extra = [k for k in p.values if k not in ORDER_PARAMS and k not in SIGNING]
        if extra:  # stopPrice, icebergQty, trailingDelta...: not for the order types we take
            raise errors.not_required(extra[0])
        if otype != MARKET:  # LIMIT and LIMIT_MAKER
            _check_limit_params(otype, tif, price, qty, quote_qty)
        else:
            _check_market_params(tif, price, qty, quote_qty)
        assert spec is not None and side is not None
        args = {"side": side, "otype": otype, "tif": tif, "qty": qty, "quote_qty": quote_qty,
                "price": price, "client_id": client_id}
        return spec, args, resp

    def new_order(self, call: Call) -> dict[str, Any]:
        spec, args, resp = self._parse_order(call)
        assert call.account is not None
        order = self.engine.place(call.account, spec, now_ms=call.now, **args)
        assert order is not None
        log.debug("order_placed", order_id=order.order_id, symbol=spec.symbol, side=order.side,
                  type=order.type, status=order.status, executed=str(order.executed))
        if resp == "ACK":
            return order.ack_json()
        return order.result_json(full=resp == "FULL")

    def test_order(self, call: Call) -> dict[str, Any]:
        spec, args, _resp = self._parse_order(call)
        assert call.account is not None
        self.engine.place(call.account, spec, now_ms=call.now, test=True, **args)
        return {}

    def _find(self, call: Call, missing: Callable[[], ApiError]) -> Order:
        p = call.params
        spec = self._spec(p)
        order_id = p.integer("orderId")
        client_id = p.text("origClientOrderId")
        if order_id is None and client_id is None:
            raise ApiError(-1102, "Param 'origClientOrderId' or 'orderId' must be sent, but both "
                                  "were empty/null!")
        assert spec is not None and call.account is not None
        order = self.engine.find(call.account, spec, order_id, client_id)
        if order is None:
            raise missing()
        return order

    def query_order(self, call: Call) -> dict[str, Any]:
        return self._find(call, errors.no_such_order).query_json()

    def cancel_order(self, call: Call) -> dict[str, Any]:
        p = call.params
        new_id = p.text("newClientOrderId")
        if new_id is not None and not _client_id_ok(new_id):
            raise errors.illegal("newClientOrderId", errors.CLIENT_ID_RANGE)
        p.choice("cancelRestrictions", ("ONLY_NEW", "ONLY_PARTIALLY_FILLED"),
                 errors.illegal("cancelRestrictions", "^(ONLY_NEW|ONLY_PARTIALLY_FILLED)$"))
        order = self._find(call, errors.unknown_order)
        if not order.is_open:
            raise errors.unknown_order()
        self.engine.cancel(order, call.now)
        return order.cancel_json(new_id or self.engine.new_client_id(), call.now)

    def cancel_all(self, call: Call) -> list[dict[str, Any]]:
        spec = self._spec(call.params)
        acct = call.account
        assert spec is not None and acct is not None
        orders = [o for o in acct.open_orders.values() if o.spec.id == spec.id]
        if not orders:
            raise errors.unknown_order()
        out = []
        for order in sorted(orders, key=lambda o: o.order_id):
            self.engine.cancel(order, call.now)
            out.append(order.cancel_json(self.engine.new_client_id(), call.now))
        return out

    def open_orders(self, call: Call) -> list[dict[str, Any]]:
        spec = self._spec(call.params, required=False)
        acct = call.account
        assert acct is not None
        return [o.query_json() for o in sorted(acct.open_orders.values(), key=lambda o: o.order_id)
                if spec is None or o.spec.id == spec.id]

    @staticmethod
    def _window(p: Params, max_span: int | None = DAY) -> tuple[int | None, int | None, int]:
        """startTime, endTime and limit (1-1000, default 500); the span capped unless None."""
        start = p.integer("startTime")
        end = p.integer("endTime")
        limit = p.integer("limit", lo=1, hi=1000) or 500
        if start is not None and end is not None:
            if start > end:
                raise ApiError(-1023, "Start time is greater than end time.")
            if max_span is not None and end - start > max_span:
                raise ApiError(-1127, f"More than {max_span // 3_600_000} hours between startTime "
                                      "and endTime.")
        return start, end, limit

    def all_orders(self, call: Call) -> list[dict[str, Any]]:
        p = call.params
        spec = self._spec(p)
        from_id = p.integer("orderId")
        start, end, limit = self._window(p)
        acct = call.account
        assert spec is not None and acct is not None
        rows = [o for o in acct.orders.values() if o.spec.id == spec.id
                and (from_id is None or o.order_id >= from_id)
                and (start is None or o.time >= start) and (end is None or o.time <= end)]
        rows.sort(key=lambda o: o.order_id)
        rows = rows[:limit] if from_id is not None or start is not None else rows[-limit:]
        return [o.query_json() for o in rows]

    def my_trades(self, call: Call) -> list[dict[str, Any]]:
        p = call.params
        spec = self._spec(p)
        order_id = p.integer("orderId")
        from_id = p.integer("fromId")
        start, end, limit = self._window(p)
        if from_id is not None and (start is not None or end is not None):
            raise errors.bad_combination()
        acct = call.account
        assert spec is not None and acct is not None
        rows = [t for t in acct.trades if t.symbol == spec.id
                and (order_id is None or t.order_id == order_id)
                and (from_id is None or t.id >= from_id)
                and (start is None or t.time >= start) and (end is None or t.time <= end)]
        rows = rows[:limit] if from_id is not None or start is not None else rows[-limit:]
        return [t.to_json() for t in rows]

    def trade_fee(self, call: Call) -> list[dict[str, Any]]:
        specs = [s for s in [self._spec(call.params, required=False)] if s] or list(self.specs.values())
        acct = call.account
        assert acct is not None
        return [{"symbol": s.id, "makerCommission": str(acct.maker_fee),
                 "takerCommission": str(acct.taker_fee)} for s in specs]


def _client_id_ok(value: str) -> bool:
    return 1 <= len(value) <= 36 and all(c.isascii() and (c.isalnum() or c in "._:/-") for c in value)


def _check_limit_params(otype: str, tif: str | None, price: Decimal | None, qty: Decimal | None,
                        quote_qty: Decimal | None) -> None:
    """LIMIT and LIMIT_MAKER: a price and a quantity, no quoteOrderQty; a timeInForce for LIMIT only."""
    if otype == LIMIT_MAKER:
        if tif is not None:
            raise errors.not_required("timeInForce")
    elif tif is None:
        raise errors.mandatory("timeInForce")
    elif tif not in TIME_IN_FORCE:
        raise ApiError(-1115, "Invalid timeInForce.")
    if price is None:
        raise errors.mandatory("price")
    if qty is None:
        raise errors.mandatory("quantity")
    if quote_qty is not None:
        raise errors.not_required("quoteOrderQty")


def _check_market_params(tif: str | None, price: Decimal | None, qty: Decimal | None,
                         quote_qty: Decimal | None) -> None:
    """MARKET: exactly one of quantity and quoteOrderQty; no price, no timeInForce."""
    if tif is not None:
        raise errors.not_required("timeInForce")
    if price is not None:
        raise errors.not_required("price")
    if qty is None and quote_qty is None:
        raise ApiError(-1102, "Param 'quantity' or 'quoteOrderQty' must be sent, but both "
                              "were empty/null!")
    if qty is not None and quote_qty is not None:
        raise errors.bad_combination()

