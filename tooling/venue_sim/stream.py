"""Binance spot websocket market streams over the venue's books and fills.

Served on the venue's own port at Binance's paths: ``/ws`` and ``/ws/<name>`` (raw
streams; a ``<name>`` that is a stream subscribes to it, anything else -- ccxt.pro's
``/ws/0`` -- opens an empty connection), ``/stream`` and ``/stream?streams=a/b`` (combined:
every event wrapped as ``{"stream": name, "data": event}``). Requests, as on Binance::

    {"method": "SUBSCRIBE", "params": ["btcusdt@depth@100ms"], "id": 1}  -> {"result": null, "id": 1}
    {"method": "UNSUBSCRIBE", "params": [...], "id": 2}                  -> {"result": null, "id": 2}
    {"method": "LIST_SUBSCRIPTIONS", "id": 3}                            -> {"result": [...], "id": 3}
    {"method": "SET_PROPERTY", "params": ["combined", true], "id": 4}    -> {"result": null, "id": 4}
    {"method": "GET_PROPERTY", "params": ["combined"], "id": 5}          -> {"result": true, "id": 5}

and bad ones get Binance's error frame ``{"error": {"code": 2, "msg": "Invalid request:
..."}, "id": ...}`` (code 3 for text that is not JSON). A reply is queued before the first
event of what it subscribed, and subscribing twice does not double the events.

Streams: ``<symbol>@depth`` (every 1000 ms) and ``<symbol>@depth@100ms`` diff streams,
``<symbol>@bookTicker`` (each change of the best levels) and ``<symbol>@trade`` (each fill
of any account). The diffs carry every level touched since the previous event with its
size then ("0" once gone), and chain with the REST ``lastUpdateId`` as Binance documents:
each event's ``U`` is the previous event's ``u`` + 1, so a snapshot with id L is followed
by exactly one event with ``U <= L + 1 <= u``. Every change of a book is in them: model
ticks, replayed records, and what orders took (a trader sees its own fill).

Limits, as Binance's: a ping frame every ``--ws-ping-s`` (a client that does not answer is
dropped), the connection closed after ``--ws-lifetime-s`` (24 h by default; shorter to test
reconnects), more than ``--ws-message-rate`` incoming messages a second or 1024 streams on
one connection closes it, and a client too slow to read its events is dropped.

Faults for clients' resync paths: ``--ws-drop-rate`` / ``--ws-reorder-rate`` drop or delay
(behind the next) a fraction of the diff events, and ``POST /venue-sim/v1/ws/faults`` with
``{"drop": n, "reorder": n, "close": true, "refuse_s": s, "symbol": "BTCUSDT"}`` drops or
reorders the next n diff events (of one symbol, or any), closes every open connection and
refuses new ones (HTTP 503) for s seconds -- a stream outage while REST still answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np
from aiohttp import WSMsgType, web

from shared import logs
from tooling.venue_sim.book import Book, side_changes
from tooling.venue_sim.symbols import fmt

if TYPE_CHECKING:
    from tooling.venue_sim.config import VenueConfig
    from tooling.venue_sim.engine import Trade
    from tooling.venue_sim.symbols import SymbolSpec

log = logs.get_logger("venue-sim")

CADENCES = {"100ms": 100, "1000ms": 1000}  # depth stream suffix -> milliseconds
MAX_STREAMS = 1024  # per connection, as Binance
SLOT_S = 0.01  # the diff timers' resolution: a period of 100 ms has 10 slots
QUEUE_LIMIT = 10_000  # events waiting for a slow reader before it is dropped
METHODS = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY")
_encode = msgspec.json.Encoder().encode
# events whose "E" (event time) is written when the frame is sent: encoded without it
_STAMPED = (b'{"e":"depthUpdate",', b'{"e":"trade",')


def now_ms() -> int:
    return int(time.time() * 1000)


class RequestError(Exception):
    """A bad request frame: Binance's error code and message."""

    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg


@dataclass(eq=False)
class Connection:
    """One client's socket: its streams, its outgoing queue, its incoming message times."""

    ws: web.WebSocketResponse
    combined: bool
    peer: str
    streams: set[str] = field(default_factory=set)
    # (stream, event) for events, (None, text) for replies; (None, "") ends the writer
    queue: asyncio.Queue[tuple[str | None, bytes | str]] = field(
        default_factory=lambda: asyncio.Queue(QUEUE_LIMIT))
    received: deque[float] = field(default_factory=deque)
    dropped: str | None = None  # why the server is closing it

    def push(self, stream: str, event: bytes) -> None:
        self._put((stream, event))

    def send(self, text: str) -> None:
        self._put((None, text))

    def _put(self, item: tuple[str | None, bytes | str]) -> None:
        if self.dropped is not None:
            return
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.dropped = "too slow to read its events"

    def render(self, stream: str, event: bytes) -> str:
        """The frame of an event: its event time ``E`` stamped now, as it goes on the wire
        (so the venue's own ticking never counts as a client's delay), wrapped for a
        combined stream."""
        for prefix in _STAMPED:
            if event.startswith(prefix):
                event = b"%s\"E\":%d,%s" % (prefix, now_ms(), event[len(prefix):])
                break
        text = event.decode()
        return f'{{"stream":"{stream}","data":{text}}}' if self.combined else text


@dataclass
class _Pending:
    """Levels touched since the last diff event of one symbol at one cadence."""

    first: int  # U of the next event
    bids: dict[int, int] = field(default_factory=dict)  # price ticks -> lots (0: gone)
    asks: dict[int, int] = field(default_factory=dict)


class StreamHub:
    """Connections, subscriptions and the events of every stream of one venue."""

    def __init__(self, config: VenueConfig, specs: dict[str, SymbolSpec]) -> None:
        self.config = config
        self.specs = specs
        self.by_stream_name = {}
        for spec in specs.values():
            low = spec.id.lower()
            self.by_stream_name.update({f"{low}@depth": (spec.id, "depth", 1000),
                                        f"{low}@depth@100ms": (spec.id, "depth", 100),
                                        f"{low}@depth@1000ms": (spec.id, "depth", 1000),
                                        f"{low}@bookTicker": (spec.id, "bookTicker", 0),
                                        f"{low}@trade": (spec.id, "trade", 0)})
        self._phases = {sid: i for i, sid in enumerate(specs)}  # a symbol's slot in the period
        # (symbol, kind, cadence) -> its stream names, built once (asked on every book change)
        self._names: dict[tuple[str, str, int], list[str]] = {}
        for name, (sid, kind, cadence) in self.by_stream_name.items():
            self._names.setdefault((sid, kind, cadence if kind == "depth" else 0), []).append(name)
        self.subs: dict[str, set[Connection]] = {}
        self.connections: set[Connection] = set()
        self._seen: dict[str, tuple[np.ndarray, ...]] = {}  # the arrays of the last version
        self._ids: dict[str, int] = {}  # its update id
        self._pending: dict[tuple[str, int], _Pending] = {}
        self._top: dict[str, tuple[int, int, int, int]] = {}
        self._held: dict[tuple[str, int], tuple[list[Connection], list[str], bytes]] = {}
        self.fault_drop: dict[str | None, int] = {}
        self.fault_reorder: dict[str | None, int] = {}
        self.rng = random.Random(config.seed)
        self.refuse_until = 0.0  # new connections refused (HTTP 503) until then
        self.events = 0  # diff events sent
        self.dropped_events = 0

    # --- what the engine tells -----------------------------------------------------------------

    def _subscribed(self, symbol: str, kind: str, cadence: int = 0) -> list[tuple[str, set[Connection]]]:
        """The symbol's streams of ``kind`` (at ``cadence``) that have subscribers."""
        return [(n, group) for n in self._names[(symbol, kind, cadence)] if (group := self.subs.get(n))]

    def prime(self, books: dict[str, Book]) -> None:
        """Start every symbol's chain at its current book (before any client connects)."""
        empty = np.zeros(0, dtype=np.int64)
        for sid in self.specs:
            book = books.get(sid)
            self._seen[sid] = (book.bid_px, book.bid_qty, book.ask_px, book.ask_qty) if book else (
                empty, empty, empty, empty)
            self._ids[sid] = book.update_id if book else 0
            for cadence in (100, 1000):
                self._pending[(sid, cadence)] = _Pending(self._ids[sid] + 1)

    def book_changed(self, book: Book) -> None:
        sid = book.spec.id
        old = self._seen[sid]
        self._seen[sid] = (book.bid_px, book.bid_qty, book.ask_px, book.ask_qty)
        self._ids[sid] = book.update_id
        changes: tuple[dict[int, int], dict[int, int]] | None = None  # computed once, if wanted
        for cadence in (100, 1000):
            if not self._subscribed(sid, "depth", cadence):
                # nobody listens: the next event starts after this version, so a subscriber's
                # chain is gap-free from the moment it subscribes
                self._pending[(sid, cadence)] = _Pending(book.update_id + 1)
                continue
            if changes is None:
                changes = (_changes(old[0], old[1], book.bid_px, book.bid_qty),
                           _changes(old[2], old[3], book.ask_px, book.ask_qty))
            pending = self._pending[(sid, cadence)]
            pending.bids.update(changes[0])
            pending.asks.update(changes[1])
        self._book_ticker(book)

    def _book_ticker(self, book: Book) -> None:
        top = (book.best_bid or 0, int(book.bid_qty[0]) if len(book.bid_qty) else 0,
               book.best_ask or 0, int(book.ask_qty[0]) if len(book.ask_qty) else 0)
        sid = book.spec.id
        if self._top.get(sid) == top:
            return
        self._top[sid] = top
        listeners = self._subscribed(sid, "bookTicker")
        if not listeners:
            return
        spec = book.spec
        event = _encode({"u": book.update_id, "s": sid, "b": _px(top[0], spec), "B": _qty(top[1], spec),
                         "a": _px(top[2], spec), "A": _qty(top[3], spec)})
        for name, conns in listeners:
            for conn in conns:
                conn.push(name, event)

    def traded(self, trade: Trade) -> None:
        listeners = self._subscribed(trade.symbol, "trade")
        if not listeners:
            return
        event = _encode({"e": "trade", "s": trade.symbol, "t": trade.id,
                         "p": fmt(trade.price), "q": fmt(trade.qty), "T": trade.time,
                         "m": trade.buyer_is_maker, "M": True})
        for name, conns in listeners:
            for conn in conns:
                conn.push(name, event)

    # --- diff events -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Send the diff events: every 100 ms for ``@100ms``, every 1000 ms for ``@depth``.

        Each symbol keeps its own timer, at a phase of its own within the period (a tenth
        of the symbols every 10 ms), as a venue whose symbols are served apart would;
        ``--ws-aligned`` sends every symbol's event at once instead (the bursty case)."""
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        n = 0
        while True:
            next_at += SLOT_S
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            if next_at < loop.time() - 0.1:
                next_at = loop.time()  # fell behind: skip, do not burst
            n += 1
            try:
                self.flush(100, n % 10)
                if n % 10 == 0 or not self.config.ws_aligned:
                    self.flush(1000, n % 100)
            except Exception:
                log.exception("stream_flush_failed")

    def _phase(self, sid: str, slots: int) -> int:
        return 0 if self.config.ws_aligned else self._phases[sid] % slots

    def flush(self, cadence: int, slot: int | None = None) -> None:
        """Send the pending diff of every symbol at ``cadence`` whose phase is ``slot`` (of
        10 for 100 ms, of 100 for 1000 ms; None: every symbol)."""
        slots = cadence // 10
        for (sid, c), pending in list(self._pending.items()):
            if c != cadence or not (pending.bids or pending.asks):
                continue
            if slot is not None and self._phase(sid, slots) != slot % slots:
                continue
            last = self._ids[sid]
            listeners = self._subscribed(sid, "depth", cadence)
            self._pending[(sid, c)] = _Pending(last + 1)
            if not listeners:
                continue
            spec = self.specs[sid]
            event = _encode({
                "e": "depthUpdate", "s": sid, "U": pending.first, "u": last,
                "b": [[_px(p, spec), _qty(q, spec)] for p, q in sorted(pending.bids.items(), reverse=True)],
                "a": [[_px(p, spec), _qty(q, spec)] for p, q in sorted(pending.asks.items())],
            })
            conns = [conn for _, group in listeners for conn in group]
            names = [name for name, group in listeners for _ in group]
            held = self._held.pop((sid, c), None)
            if self._fault(self.fault_drop, sid, self.config.ws_drop_rate):
                self.dropped_events += 1
                log.info("ws_event_dropped", symbol=sid, first=pending.first, last=last)
            elif held is None and self._fault(self.fault_reorder, sid, self.config.ws_reorder_rate):
                self._held[(sid, c)] = (conns, names, event)  # sent after the next one
                log.info("ws_event_delayed", symbol=sid, first=pending.first, last=last)
            else:
                self._send(conns, names, event)
            if held is not None:
                self._send(*held)

    def _send(self, conns: list[Connection], names: list[str], event: bytes) -> None:
        self.events += 1
        for conn, name in zip(conns, names, strict=True):
            conn.push(name, event)

    def _fault(self, counts: dict[str | None, int], sid: str, rate: float) -> bool:
        for key in (sid, None):
            if counts.get(key, 0) > 0:
                counts[key] -= 1
                return True
        return rate > 0 and self.rng.random() < rate

    def faults(self, doc: dict[str, Any]) -> dict[str, Any]:
        """``POST /venue-sim/v1/ws/faults``: drop/reorder the next n events, close sockets."""
        symbol = doc.get("symbol")
        if symbol is not None and symbol not in self.specs:
            raise ValueError(f"unknown symbol {symbol!r}")
        for name, counts in (("drop", self.fault_drop), ("reorder", self.fault_reorder)):
            n = doc.get(name, 0)
            if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                raise ValueError(f"{name} must be a non-negative integer")
            if n:
                counts[symbol] = counts.get(symbol, 0) + n
        refuse = doc.get("refuse_s", 0)
        if isinstance(refuse, bool) or not isinstance(refuse, int | float) or not 0 <= refuse <= 3600:
            raise ValueError("refuse_s must be a number of seconds in [0, 3600]")
        if refuse:
            self.refuse_until = time.monotonic() + refuse
        closed = 0
        if doc.get("close"):
            for conn in list(self.connections):
                self._expire(conn, "closed on request")
                closed += 1
        return {"drop": dict(self.fault_drop), "reorder": dict(self.fault_reorder), "closed": closed}

    def state(self) -> dict[str, Any]:
        return {"connections": len(self.connections), "events": self.events,
                "droppedEvents": self.dropped_events,
                "subscriptions": {k: len(v) for k, v in sorted(self.subs.items()) if v}}

    # --- connections --------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        # no permessage-deflate (Binance's streams do not compress): it would cost both ends
        ws = web.WebSocketResponse(heartbeat=self.config.ws_ping_s, max_msg_size=64 * 1024,
                                   compress=False)
        if time.monotonic() < self.refuse_until:
            return web.json_response({"code": -1001, "msg": "Streams are unavailable; retry later."},
                                     status=503)
        if not ws.can_prepare(request).ok:
            return web.json_response({"code": -1020, "msg": "A websocket upgrade is expected here."},
                                     status=400)
        combined = request.path.startswith("/stream")
        initial = self._initial_streams(request, combined)
        if isinstance(initial, web.Response):
            return initial
        await ws.prepare(request)
        conn = Connection(ws, combined, request.remote or "?")
        self.connections.add(conn)
        self._subscribe(conn, initial)
        writer = asyncio.create_task(self._writer(conn), name="ws-writer")
        lifetime = asyncio.get_running_loop().call_later(self.config.ws_lifetime_s, self._expire, conn,
                                                         "connection lifetime reached")
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    if not self._rate_ok(conn):
                        conn.dropped = "too many messages"
                        break
                    reply = self._request(conn, msg.data)
                    if reply:  # a SUBSCRIBE queued its own, before its first event
                        conn.send(reply)
                elif msg.type == WSMsgType.BINARY:
                    conn.send(_error(3, "Invalid JSON: binary frames are not accepted", None))
                if conn.dropped is not None:
                    break
        finally:
            lifetime.cancel()
            self._unsubscribe(conn, list(conn.streams))
            self.connections.discard(conn)
            if not writer.done():
                try:
                    conn.queue.put_nowait((None, ""))
                except asyncio.QueueFull:
                    writer.cancel()
                with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                    await asyncio.wait_for(writer, 5)
            if not ws.closed:
                code = 1008 if conn.dropped == "too many messages" else 1000
                await ws.close(code=code, message=(conn.dropped or "").encode()[:120])
        return ws

    def _initial_streams(self, request: web.Request, combined: bool) -> list[str] | web.Response:
        """Streams named by the path (``/ws/<stream>``, ``/stream?streams=a/b``), or a 400."""
        initial: list[str] = []
        tail = request.match_info.get("name", "")
        if tail and not tail.isdigit():  # ccxt.pro's /ws/0, /stream/1: a connection index
            initial.append(tail)
        if combined and request.query.get("streams"):
            initial.extend(s for s in request.query["streams"].split("/") if s)
        bad = [s for s in initial if s not in self.by_stream_name]
        if bad or len(initial) > MAX_STREAMS:
            what = bad[0] if bad else f"more than {MAX_STREAMS} streams"
            return web.json_response({"code": -1121, "msg": f"Invalid stream: {what}."}, status=400)
        return initial

    def _expire(self, conn: Connection, reason: str) -> None:
        """Close ``conn`` from the server's side once what is queued before now is sent."""
        conn.dropped = conn.dropped or reason
        with contextlib.suppress(asyncio.QueueFull):
            conn.queue.put_nowait((None, ""))

    async def _writer(self, conn: Connection) -> None:
        """Send the connection's queue in order; an empty string (or a drop) ends it."""
        try:
            while True:
                stream, body = await conn.queue.get()
                if not body or conn.ws.closed:
                    break
                text = body if isinstance(body, str) else conn.render(stream or "", body)
                await conn.ws.send_str(text)
                if conn.dropped is not None and conn.queue.empty():
                    break
        except (ConnectionError, RuntimeError):
            pass
        finally:
            if conn.dropped is not None and not conn.ws.closed:
                log.info("ws_closed_by_server", peer=conn.peer, reason=conn.dropped)
                code = 1008 if conn.dropped == "too many messages" else 1000
                with contextlib.suppress(Exception):
                    await conn.ws.close(code=code, message=conn.dropped.encode()[:120])

    def _rate_ok(self, conn: Connection) -> bool:
        now = time.monotonic()
        conn.received.append(now)
        while conn.received and conn.received[0] <= now - 1.0:
            conn.received.popleft()
        return len(conn.received) <= self.config.ws_message_rate

    def _request(self, conn: Connection, text: str) -> str:
        """The reply to one request frame ("" when a SUBSCRIBE queued its own)."""
        try:
            doc = json.loads(text)
        except ValueError as exc:
            return _error(3, f"Invalid JSON: {exc}", None)
        rid = doc.get("id") if isinstance(doc, dict) else None
        try:
            method, params = _parse_request(doc)
            if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
                unknown = [p for p in params if p not in self.by_stream_name]
                if unknown:
                    raise RequestError(2, f"Invalid request: invalid stream `{unknown[0]}`")
                if method == "UNSUBSCRIBE":
                    self._unsubscribe(conn, params)
                    return _reply(None, rid)
                if len(conn.streams | set(params)) > MAX_STREAMS:
                    raise RequestError(2, f"Invalid request: more than {MAX_STREAMS} streams")
                conn.send(_reply(None, rid))  # the reply before any event of what it subscribes
                self._subscribe(conn, params)
                return ""
            if method == "LIST_SUBSCRIPTIONS":
                return _reply(sorted(conn.streams), rid)
            if method == "SET_PROPERTY":
                conn.combined = params[1]
                return _reply(None, rid)
            return _reply(conn.combined, rid)  # GET_PROPERTY
        except RequestError as exc:
            return _error(exc.code, exc.msg, None if exc.code == 2 and "request ID" in exc.msg else rid)

    def _subscribe(self, conn: Connection, names: list[str]) -> None:
        for name in names:
            if name in conn.streams:
                continue  # a second SUBSCRIBE does not double the events
            conn.streams.add(name)
            self.subs.setdefault(name, set()).add(conn)

    def _unsubscribe(self, conn: Connection, names: list[str]) -> None:
        for name in names:
            conn.streams.discard(name)
            group = self.subs.get(name)
            if group is not None:
                group.discard(conn)


def _parse_request(doc: Any) -> tuple[str, list[Any]]:
    """(method, params) of a request frame, or the :class:`RequestError` Binance answers."""
    if not isinstance(doc, dict):
        raise RequestError(2, "Invalid request: expected an object")
    rid = doc.get("id")
    if not (rid is None or (isinstance(rid, int) and not isinstance(rid, bool))
            or (isinstance(rid, str) and 0 < len(rid) <= 36)):
        raise RequestError(2, "Invalid request: request ID must be an unsigned integer")
    method = doc.get("method")
    if method is None:
        raise RequestError(2, "Invalid request: missing field `method`")
    if method not in METHODS:
        raise RequestError(2, f"Invalid request: unknown variant `{method}`, expected one of "
                              + ", ".join(f"`{m}`" for m in METHODS))
    extra = set(doc) - {"method", "params", "id"}
    if extra:
        raise RequestError(0, f"Unknown property: {sorted(extra)[0]}")
    params = doc.get("params", [])
    if not isinstance(params, list):
        raise RequestError(2, "Invalid request: params must be an array")
    if method in ("SUBSCRIBE", "UNSUBSCRIBE") and not all(isinstance(p, str) for p in params):
        raise RequestError(2, "Invalid request: stream names must be strings")
    if method in ("SET_PROPERTY", "GET_PROPERTY"):
        if params[:1] != ["combined"] or len(params) != (2 if method == "SET_PROPERTY" else 1):
            raise RequestError(0, "Unknown property")
        if method == "SET_PROPERTY" and not isinstance(params[1], bool):
            raise RequestError(1, "Invalid value type: expected Boolean")
    return method, params


def _reply(result: Any, rid: Any) -> str:
    return _encode({"result": result, "id": rid}).decode()


def _changes(old_px: np.ndarray, old_qty: np.ndarray, new_px: np.ndarray, new_qty: np.ndarray
             ) -> dict[int, int]:
    px, qty = side_changes(old_px, old_qty, new_px, new_qty)
    return dict(zip(px.tolist(), qty.tolist(), strict=True))


def _error(code: int, msg: str, rid: Any) -> str:
    return _encode({"error": {"code": code, "msg": msg}, "id": rid}).decode()


def _px(ticks: int, spec: SymbolSpec) -> str:
    return f"{ticks * spec.tick_f:.8f}"


def _qty(lots: int, spec: SymbolSpec) -> str:
    return f"{lots * spec.step_f:.8f}"

