"""Binance spot's WebSocket API at ``/ws-api/v3``: the user data stream of the venue's accounts.

What ccxt.pro needs for spot ``watch_orders``, ``watch_balance`` and ``watch_my_trades``:
ccxt 4.5 opens ``urls['api']['ws']['ws-api']['spot']`` and subscribes with
``userDataStream.subscribe.signature`` (no listen key, no ``session.logon`` for spot), then
reads the events of that subscription. Served on the venue's own port, in Binance's formats.
ccxt's ``*_ws`` request methods (``create_order_ws``, ``fetch_balance_ws``, ...) use the same
path with ``order.place``, ``account.status`` and the like: not served (-1020), trading goes
through REST.

Requests are JSON text frames ``{"id", "method", "params"}`` (``id``: an integer, a string of
up to 36 ``[a-zA-Z0-9-_]``, or null, echoed back; a ``v3/`` prefix of the method is accepted)::

    {"id": "1", "method": "userDataStream.subscribe.signature",
     "params": {"apiKey": "...", "recvWindow": 10000, "timestamp": 1700000000000, "signature": "..."}}
        -> {"id": "1", "status": 200, "result": {"subscriptionId": 0}, "rateLimits": [...]}
    {"id": 2, "method": "userDataStream.unsubscribe", "params": {"subscriptionId": 0}}  (none: all)
        -> {"id": 2, "status": 200, "result": {}, ...}, then {"subscriptionId": 0, "event":
           {"e": "eventStreamTerminated", "E": ms}} for each subscription it ended
    {"id": 3, "method": "session.subscriptions"}  -> "result": [{"subscriptionId": 0}]
    {"id": 4, "method": "session.status"}         -> "result": {..., "userDataStream": true}
    {"id": 5, "method": "ping"}                   -> "result": {}
    {"id": 6, "method": "time"}                   -> "result": {"serverTime": ms}

The signature is Binance's (and ccxt's ``sign_params``): HMAC-SHA256, hex, of every param but
``signature``, sorted by name, as ``name=value`` joined by ``&``; the timestamp rule is the
REST one (:func:`.auth.check_signed`, wall clock, ``recvWindow`` 5000 by default, at most
60000). Failures are ``{"id", "status", "error": {"code", "msg"}, "rateLimits"}`` with
Binance's codes: -1102 (a mandatory param missing), -2015 with status 401 (an apiKey no
account has), -1021 (timestamp outside the window), -1131 (recvWindow over 60000), -1022
(bad signature), -1104 (a param the method does not read), -2035 (the account is already
subscribed on this connection), -2036 (unsubscribing what is not subscribed), -2042 (65535
subscriptions in a connection's life), -1002 with 401 (``userDataStream.subscribe`` needs a
logged-on session, which this venue has not), -1135 with id null (text that is not a JSON
object, a bad id) and -1020 (any other method: Binance's wording for it is not documented).
A request is always answered; no error closes the connection. ccxt maps -2015 and -1022 to
AuthenticationError (4.5.90 then raises a KeyError from its own cleanup, with that error as
its context).

Events, to every subscription of the account that changed, each frame
``{"subscriptionId": n, "event": {...}}`` (ccxt unwraps ``event``):

* ``executionReport`` for each change of an order: ``NEW`` when accepted (every order,
  market ones too, as Binance), ``TRADE`` per fill with that fill's ``l``/``L``/``Y``,
  ``n``/``N`` (its commission), ``t`` (trade id), ``m`` (maker) and ``X`` =
  ``PARTIALLY_FILLED`` or ``FILLED``; ``CANCELED`` (``C`` is the order's client id, ``c`` a
  new one, as Binance's cancel) and ``EXPIRED`` (market orders the book could not fill,
  IOC/FOK remainders). Resting orders filled by the market clock report their fills the same
  way, as makers.
* ``outboundAccountPosition`` after each of those that changed the account's balances, with
  the assets whose ``free``/``locked`` changed.

Requests are charged to the client's address on the venue's REST weight limiter
(``--weight-limit``; 2 to connect, 1 for ``ping``/``time``, 2 for the others): over it, status
429 with -1003. ``rateLimits`` is in every reply unless ``returnRateLimits`` is false (in the
params, or ``?returnRateLimits=false`` in the URL). As on the market streams: a ping frame
every ``--ws-ping-s``, the connection closed after ``--ws-lifetime-s``, a client too slow to
read its events dropped.

Where it differs from Binance: the ``c`` of a ``CANCELED`` report is not the id the REST
cancel answered (the engine never sees that id); a market order by ``quoteOrderQty`` shows
``q`` = 0 in its ``NEW`` report and its executed quantity after (its ``origQty``, as REST).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import string
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import msgspec
from aiohttp import WSMsgType, web

from shared import logs
from tooling.venue_sim import errors
from tooling.venue_sim.auth import Params, WeightLimiter, check_signed
from tooling.venue_sim.engine import CANCELED, FILLED, MARKET, NEW, PARTIALLY_FILLED
from tooling.venue_sim.errors import ApiError
from tooling.venue_sim.symbols import fmt

if TYPE_CHECKING:
    from collections.abc import Callable

    from tooling.venue_sim.config import VenueConfig
    from tooling.venue_sim.engine import Account, Engine, Order, Trade

log = logs.get_logger("venue-sim")

QUEUE_LIMIT = 10_000  # frames waiting for a slow reader before it is dropped
MAX_SUBSCRIPTION_IDS = 65_535  # per connection, over its life (Binance's -2042)
ZERO = Decimal(0)
_ID = re.compile(r"^[a-zA-Z0-9_-]{1,36}$")
_ID_CHARS = string.ascii_letters + string.digits
_encode = msgspec.json.Encoder().encode
BAD_ID = ("Invalid 'id' in JSON request; expected an integer, a string matching "
          "'^[a-zA-Z0-9-_]{1,36}$', or null.")
SUBSCRIPTION_ACTIVE = "User Data Stream subscription already active."
SUBSCRIPTION_INACTIVE = "User Data Stream subscription not active."


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(eq=False)
class Session:
    """One client's connection: its subscriptions (id -> account) and its outgoing queue."""

    ws: web.WebSocketResponse
    peer: str
    rate_limits: bool  # whether replies carry rateLimits unless a request says otherwise
    connected_ms: int
    subscriptions: dict[int, Account] = field(default_factory=dict)
    next_id: int = 0
    queue: asyncio.Queue[str] = field(default_factory=lambda: asyncio.Queue(QUEUE_LIMIT))
    dropped: str | None = None  # why the server is closing it

    def send(self, text: str) -> None:
        if self.dropped is not None:
            return
        try:
            self.queue.put_nowait(text)
        except asyncio.QueueFull:
            self.dropped = "too slow to read its events"


@dataclass(frozen=True)
class Method:
    """A request method: its weight, the params it reads, its handler."""

    weight: int
    params: frozenset[str]
    handler: Callable[[Session, Params, int], tuple[Any, list[str]]]  # result, frames after


class WsApi:
    """The ``/ws-api/v3`` connections of one venue, and the user data events of its accounts
    (the engine's :class:`~tooling.venue_sim.engine.AccountObserver`)."""

    def __init__(self, config: VenueConfig, engine: Engine, limiter: WeightLimiter) -> None:
        self.config = config
        self.engine = engine
        self.limiter = limiter
        self.sessions: set[Session] = set()
        self.listeners: dict[str, dict[Session, int]] = {}  # api key -> session -> subscriptionId
        # per api key, the (free, locked) of each asset as the subscribers last saw it
        self._reported: dict[str, dict[str, tuple[Decimal, Decimal]]] = {}
        # TRADE reports of a quoteOrderQty market order, held until its end tells their status
        self._held: dict[int, list[dict[str, Any]]] = {}
        self.rng = random.Random(f"{config.seed}:ws-api")
        self._execution_id = 0
        self.events = 0
        self.methods: dict[str, Method] = {
            "ping": Method(1, frozenset(), lambda _s, _p, _n: ({}, [])),
            "time": Method(1, frozenset(), lambda _s, _p, now: ({"serverTime": now}, [])),
            "session.status": Method(2, frozenset(), self._status),
            "session.subscriptions": Method(2, frozenset(), lambda s, _p, _n: (
                [{"subscriptionId": i} for i in sorted(s.subscriptions)], [])),
            "userDataStream.subscribe.signature": Method(
                2, frozenset({"apiKey", "timestamp", "recvWindow", "signature"}), self._subscribe),
            "userDataStream.subscribe": Method(2, frozenset(), self._not_logged_on),
            "userDataStream.unsubscribe": Method(2, frozenset({"subscriptionId"}), self._unsubscribe),
        }

    # --- what the engine tells ------------------------------------------------------------

    def order_created(self, order: Order) -> None:
        self._guarded(order, "NEW", None)

    def order_filled(self, order: Order, trade: Trade) -> None:
        self._guarded(order, "TRADE", trade)

    def order_finished(self, order: Order) -> None:
        self._guarded(order, order.status, None)

    def _guarded(self, order: Order, execution: str, trade: Trade | None) -> None:
        # called in the middle of the engine's bookkeeping: a bug here must not cut it short
        try:
            self._order_changed(order, execution, trade)
        except Exception:
            log.exception("ws_api_event_failed", order_id=order.order_id, execution=execution)

    def _order_changed(self, order: Order, execution: str, trade: Trade | None) -> None:
        acct = order.account
        if not self.listeners.get(acct.api_key):
            self._held.pop(order.order_id, None)
            return
        by_quote = order.type == MARKET and order.orig_quote_qty > 0
        if execution == "TRADE":
            report = self._report(order, execution, trade)
            if by_quote:  # FILLED or not is known at its end (budget spent, or book exhausted)
                self._held.setdefault(order.order_id, []).append(report)
                return
            self._publish(acct, report)
        else:
            held = self._held.pop(order.order_id, [])
            for i, report in enumerate(held):  # the order has ended: its size is known
                report["q"] = fmt(order.orig_qty)
                last = i == len(held) - 1
                report["X"] = FILLED if last and execution == FILLED else PARTIALLY_FILLED
                self._publish(acct, report)
            if execution != FILLED:  # a FILLED order's last TRADE report said it
                self._publish(acct, self._report(order, execution, None))
        self._positions(acct, (order.spec.base, order.spec.quote))

    def _report(self, order: Order, execution: str, trade: Trade | None) -> dict[str, Any]:
        """An ``executionReport`` of the order as it is now (``trade``: the fill it reports)."""
        if execution == "TRADE":
            done = order.orig_qty > 0 and order.executed >= order.orig_qty
            status = FILLED if done else PARTIALLY_FILLED
        else:
            status = order.status  # NEW when accepted, else how it ended
        client_id, orig_client_id = order.client_id, ""
        if execution == CANCELED:  # as Binance: the cancel's own id, the order's in C
            client_id = "".join(self.rng.choices(_ID_CHARS, k=22))
            orig_client_id = order.client_id
        self._execution_id += 1
        none = "0.00000000"
        report: dict[str, Any] = {
            "e": "executionReport", "E": now_ms(), "s": order.spec.id, "c": client_id,
            "S": order.side, "o": order.type, "f": order.time_in_force, "q": fmt(order.orig_qty),
            "p": fmt(order.price), "P": none, "F": none, "g": -1, "C": orig_client_id,
            "x": execution, "X": status, "r": "NONE", "i": order.order_id,
            "l": fmt(trade.qty) if trade else none, "z": fmt(order.executed),
            "L": fmt(trade.price) if trade else none,
            "n": fmt(trade.commission) if trade else "0",
            "N": trade.commission_asset if trade else None,
            "T": trade.time if trade else order.update_time, "t": trade.id if trade else -1,
            "I": self._execution_id,
            "w": order.type != MARKET and status in (NEW, PARTIALLY_FILLED),
            "m": trade.is_maker if trade else False, "M": False, "O": order.time,
            "Z": fmt(order.cum_quote), "Y": fmt(trade.quote_qty) if trade else none,
            "Q": fmt(order.orig_quote_qty),
        }
        if order.type != MARKET:
            report["W"] = order.time  # working time: it went to the book
        report["V"] = "EXPIRE_MAKER"
        return report

    def _positions(self, acct: Account, assets: tuple[str, ...]) -> None:
        """``outboundAccountPosition`` with the assets whose balances the subscribers have
        not seen yet (none: no event)."""
        seen = self._reported.setdefault(acct.api_key, {})
        changed = []
        for asset in assets:
            now = (acct.free.get(asset, ZERO), acct.locked.get(asset, ZERO))
            if seen.get(asset) != now:
                seen[asset] = now
                changed.append({"a": asset, "f": fmt(now[0]), "l": fmt(now[1])})
        if changed:
            self._publish(acct, {"e": "outboundAccountPosition", "E": now_ms(),
                                 "u": acct.update_time, "B": changed})

    def _publish(self, acct: Account, event: dict[str, Any]) -> None:
        text = _encode(event).decode()
        self.events += 1
        for session, sid in self.listeners.get(acct.api_key, {}).items():
            session.send(f'{{"subscriptionId":{sid},"event":{text}}}')

    # --- requests ------------------------------------------------------------------------------

    def _status(self, session: Session, _p: Params, now: int) -> tuple[Any, list[str]]:
        return {"apiKey": None, "authorizedSince": None, "connectedSince": session.connected_ms,
                "returnRateLimits": session.rate_limits, "serverTime": now,
                "userDataStream": bool(session.subscriptions)}, []

    @staticmethod
    def _not_logged_on(_s: Session, _p: Params, _n: int) -> tuple[Any, list[str]]:
        # Binance serves it to sessions logged on with an Ed25519 key (session.logon): not here
        raise ApiError(-1002, "You are not authorized to execute this request.", 401)

    def _subscribe(self, session: Session, p: Params, now: int) -> tuple[Any, list[str]]:
        api_key = p.text("apiKey", required=True)
        acct = self.engine.accounts.get(api_key or "")
        if acct is None:
            raise ApiError(-2015, "Invalid API-key, IP, or permissions for action.", 401)
        payload = "&".join(f"{k}={v}" for k, v in sorted(p.values.items()) if k != "signature")
        check_signed(p, acct.secret, payload, "", now)
        if any(a is acct for a in session.subscriptions.values()):
            raise ApiError(-2035, SUBSCRIPTION_ACTIVE)
        if session.next_id >= MAX_SUBSCRIPTION_IDS:
            raise ApiError(-2042, "Maximum subscription ID reached for this connection.")
        sid = session.next_id
        session.next_id += 1
        session.subscriptions[sid] = acct
        self.listeners.setdefault(acct.api_key, {})[session] = sid
        # from now on an event lists what changed since this moment
        self._reported[acct.api_key] = {a: (acct.free.get(a, ZERO), acct.locked.get(a, ZERO))
                                        for a in set(acct.free) | set(acct.locked)}
        log.info("ws_api_subscribed", account=acct.label, subscription=sid, peer=session.peer)
        return {"subscriptionId": sid}, []

    def _unsubscribe(self, session: Session, p: Params, now: int) -> tuple[Any, list[str]]:
        sid = p.integer("subscriptionId")
        if sid is None:
            ended = sorted(session.subscriptions)
        elif sid in session.subscriptions:
            ended = [sid]
        else:
            ended = []
        if not ended:
            raise ApiError(-2036, SUBSCRIPTION_INACTIVE)
        frames = []
        for i in ended:
            self._drop(session, i)
            frames.append(_encode({"subscriptionId": i, "event": {"e": "eventStreamTerminated",
                                                                  "E": now}}).decode())
        return {}, frames

    def _drop(self, session: Session, sid: int) -> None:
        acct = session.subscriptions.pop(sid)
        group = self.listeners.get(acct.api_key, {})
        group.pop(session, None)
        if not group:
            self.listeners.pop(acct.api_key, None)
        log.info("ws_api_unsubscribed", account=acct.label, subscription=sid, peer=session.peer)

    def _request(self, session: Session, text: str) -> list[str]:
        """The frames answering one request: its reply, then what follows it."""
        now = now_ms()
        doc: Any = None
        with contextlib.suppress(ValueError):
            doc = json.loads(text)
        rid = doc.get("id") if isinstance(doc, dict) else None
        name = doc.get("method") if isinstance(doc, dict) else None
        if isinstance(name, str) and name.startswith("v3/"):
            name = name[3:]
        method = self.methods.get(name) if isinstance(name, str) else None
        ok, used, retry = self.limiter.charge(f"ip:{session.peer}", method.weight if method else 1, now)
        show = session.rate_limits
        try:
            if not isinstance(doc, dict):
                rid = None
                raise ApiError(-1135, "Invalid JSON Request")
            if not (rid is None or (isinstance(rid, int) and not isinstance(rid, bool))
                    or (isinstance(rid, str) and _ID.match(rid))):
                rid = None
                raise ApiError(-1135, BAD_ID)
            params = doc.get("params", {})
            if not isinstance(params, dict):
                raise ApiError(-1135, "JSON sent for parameter 'params' is not valid")
            if "returnRateLimits" in params:
                if not isinstance(params["returnRateLimits"], bool):
                    raise errors.illegal("returnRateLimits", "^(true|false)$")
                show = params["returnRateLimits"]
            if not ok:
                self._refused(session, used, retry)
            if name is None or name == "":
                raise errors.mandatory("method")
            if method is None:
                raise ApiError(-1020, "This operation is not supported.")
            p = Params((k, _text(v)) for k, v in params.items())
            unread = [k for k in p.values if k not in method.params and k != "returnRateLimits"]
            if unread:
                raise errors.not_all_read(len(p.values) - len(unread), len(p.values))
            result, after = method.handler(session, p, now)
            return [self._frame(rid, 200, used, show, result=result), *after]
        except ApiError as exc:
            error: dict[str, Any] = {"code": exc.code, "msg": exc.msg}
            if exc.status == 429:
                error["data"] = {"serverTime": now, "retryAfter": now + retry * 1000}
            return [self._frame(rid, exc.status, used, show, error=error)]

    def _refused(self, session: Session, used: int, retry: int) -> None:
        key = f"ip:{session.peer}"
        if self.limiter.first_refusal(key):  # log once per address and window
            log.warning("rate_limited", by="ip", used=used, limit=self.limiter.limit,
                        retry_after_s=retry, api="ws-api")
        window = self.config.weight_window_s
        per = "1 MINUTE" if window == 60 else f"{window} SECOND"
        raise ApiError(-1003, f"Too much request weight used; current limit is {self.limiter.limit} "
                              f"request weight per {per}. Please use WebSocket Streams for live "
                              "updates to avoid polling the API.", 429)

    def _frame(self, rid: Any, status: int, used: int, show: bool, *, result: Any = None,
               error: dict[str, Any] | None = None) -> str:
        out: dict[str, Any] = {"id": rid, "status": status}
        if error is None:
            out["result"] = result
        else:
            out["error"] = error
        if show:
            window = self.config.weight_window_s
            out["rateLimits"] = [{"rateLimitType": "REQUEST_WEIGHT",
                                  "interval": "MINUTE" if window == 60 else "SECOND",
                                  "intervalNum": 1 if window == 60 else window,
                                  "limit": self.limiter.limit, "count": used}]
        return _encode(out).decode()

    # --- connections --------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(heartbeat=self.config.ws_ping_s, max_msg_size=64 * 1024)
        if not ws.can_prepare(request).ok:
            return web.json_response({"code": -1020, "msg": "A websocket upgrade is expected here."},
                                     status=400)
        flag = request.query.get("returnRateLimits", "true")
        if flag not in ("true", "false"):
            return web.json_response(errors.illegal("returnRateLimits", "^(true|false)$").body(),
                                     status=400)
        await ws.prepare(request)
        session = Session(ws, request.remote or "?", flag == "true", now_ms())
        self.limiter.charge(f"ip:{session.peer}", 2, session.connected_ms)  # connecting: 2
        self.sessions.add(session)
        writer = asyncio.create_task(self._writer(session), name="ws-api-writer")
        lifetime = asyncio.get_running_loop().call_later(self.config.ws_lifetime_s, self._expire,
                                                         session, "connection lifetime reached")
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    for frame in self._request(session, msg.data):
                        session.send(frame)
                elif msg.type == WSMsgType.BINARY:  # SBE is not served
                    session.send(self._frame(None, 400, 0, False, error={
                        "code": -1135, "msg": "Invalid JSON Request"}))
                if session.dropped is not None:
                    break
        finally:
            lifetime.cancel()
            for sid in list(session.subscriptions):
                self._drop(session, sid)
            self.sessions.discard(session)
            if not writer.done():
                try:
                    session.queue.put_nowait("")
                except asyncio.QueueFull:
                    writer.cancel()
                with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                    await asyncio.wait_for(writer, 5)
            if not ws.closed:
                await ws.close(code=1000, message=(session.dropped or "").encode()[:120])
        return ws

    def _expire(self, session: Session, reason: str) -> None:
        """Close ``session`` from the server's side once what is queued before now is sent."""
        session.dropped = session.dropped or reason
        with contextlib.suppress(asyncio.QueueFull):
            session.queue.put_nowait("")

    async def _writer(self, session: Session) -> None:
        """Send the session's queue in order; an empty string (or a drop) ends it."""
        try:
            while True:
                text = await session.queue.get()
                if not text or session.ws.closed:
                    break
                await session.ws.send_str(text)
                if session.dropped is not None and session.queue.empty():
                    break
        except (ConnectionError, RuntimeError):
            pass
        finally:
            if session.dropped is not None and not session.ws.closed:
                log.info("ws_api_closed_by_server", peer=session.peer, reason=session.dropped)
                with contextlib.suppress(Exception):
                    await session.ws.close(code=1000, message=session.dropped.encode()[:120])


def _text(value: Any) -> str:
    """A JSON param's value as Binance signs it: strings as they are, ``true``/``false``."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    return json.dumps(value, separators=(",", ":"))
