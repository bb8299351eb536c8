"""Market-data ingest: order books from every venue to ``md.orderbooks``.

Runs inside cryptospreadedge-main. The venue×symbol pairs are shared between main
replicas with :class:`~shared.coordination.WorkShare` (rendezvous hashing plus a lease
per pair), so each pair is followed by one replica and a book is published once: the
publish gate checks the lease and the book's id atomically in Redis.

**Streams** (``CSE_INGEST_MODE=stream``, the default): per owned pair, a task follows the
venue's websocket diff stream through the gateway's ccxt.pro client
(``watch_order_book``): ccxt takes the REST snapshot, applies the diffs, and detects a
gap in their update ids (ChecksumError), after which the next watch resubscribes and
resyncs from a new snapshot (counted as a resync). A dropped connection (NetworkError) is
watched again after a backoff (counted as a reconnect). Each change of the book is
published once -- at most one per ``CSE_INGEST_MIN_INTERVAL_MS`` per pair when that is
set -- with the venue's event time (``ts_venue_ms``) and the receive time
(``ts_recv_ms``); the difference is observed as the stream's lag.

**Polling**, the fallback: a venue in ``CSE_INGEST_POLL_VENUES``, a venue ccxt.pro cannot
stream from, or ``CSE_INGEST_MODE=poll`` is polled over REST every ``CSE_INGEST_INTERVAL_S``;
so is, automatically, a streamed pair whose stream is down or has been silent for
``CSE_INGEST_STREAM_STALE_S``, until it delivers again. Unchanged polled books (same id as
the last published) are skipped.

Metrics: books published and skipped, fetch errors, the age of the freshest book per
venue (staleness, which alerts use), and for streams: pairs streaming and pairs polled
per venue, stream up per venue, resyncs, reconnects, the lag behind the venue's event
time on receipt and on the broker's acknowledgement. Top of book and spread go to the
time-series store at most every ``CSE_INGEST_TSDB_INTERVAL_S`` per pair.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import ccxt

from shared.backoff import Backoff
from shared.coordination import WorkShare
from shared.errors import CseError, TransientError
from shared.gateway import Gateway
from shared.logs import get_logger
from shared.messages import MD_ORDERBOOKS, OrderBook, now_ms
from shared.rediskeys import DEFAULT_PREFIX
from shared.runtime import Services
from workers.main.metrics import (
    BOOK_AGE,
    BOOKS_PUBLISHED,
    BOOKS_UNCHANGED,
    EVENT_TO_BUS,
    FETCH_ERRORS,
    PAIRS_OWNED,
    PAIRS_POLLED,
    PAIRS_STREAMING,
    STREAM_LAG,
    STREAM_RECONNECTS,
    STREAM_RESYNCS,
    STREAM_UP,
)
from workers.main.settings import IngestSettings

log = get_logger("ingest")

STOP_GRACE_S = 5.0  # how long a stopping ingest lets its polls in flight finish


def pair_key(venue: str, symbol: str) -> str:
    return f"{venue}|{symbol}"


def book_id(raw: dict[str, Any]) -> str:
    """The venue's identity of a book: its update id, else a digest of its top levels."""
    nonce = raw.get("nonce")
    if nonce is not None:
        return str(nonce)
    # stable across processes (unlike hash()), so replicas agree on it
    top = repr((raw.get("timestamp"), raw["bids"][:5], raw["asks"][:5])).encode()
    return hashlib.blake2b(top, digest_size=12).hexdigest()


def to_message(venue: str, symbol: str, raw: dict[str, Any], received_ms: int, depth: int
               ) -> OrderBook:
    venue_ts = raw.get("timestamp") or received_ms
    nonce = raw.get("nonce")
    return OrderBook(
        venue=venue,
        symbol=symbol,
        bids=[(float(p), float(q)) for p, q, *_ in raw["bids"][:depth]],
        asks=[(float(p), float(q)) for p, q, *_ in raw["asks"][:depth]],
        ts_venue_ms=int(venue_ts),
        ts_recv_ms=received_ms,
        seq=int(nonce) if isinstance(nonce, int) else 0,
    )


class _HotMetrics(NamedTuple):
    stream_lag: Any
    event_to_bus: Any
    published: Any


@functools.cache
def _hot_metrics(venue: str) -> _HotMetrics:
    """A venue's metric children on the per-book path, looked up once (``labels()`` costs
    about 5 µs a call, three calls a book)."""
    return _HotMetrics(STREAM_LAG.labels(venue), EVENT_TO_BUS.labels(venue), BOOKS_PUBLISHED.labels(venue))


class Ingest:
    """Follows (or polls) the pairs this replica owns and publishes their books."""

    def __init__(self, settings: IngestSettings, gateway: Gateway, services: Services,
                 symbols: list[str], *, prefix: str = DEFAULT_PREFIX, member: str | None = None):
        self.settings = settings
        self.gateway = gateway
        self.services = services
        self.pairs = [pair_key(v, s) for v in gateway.venues for s in symbols]
        self.share = WorkShare(services.redis, "ingest", member=member,
                               ttl_s=settings.lease_ttl_s, prefix=prefix)
        self._last_tsdb: dict[str, float] = {}
        self._freshest: dict[str, int] = {}
        self.published = 0
        self.streamed_venues = [v for v in gateway.venues if self._streams(v)]
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self._heard: dict[str, float] = {}  # pair -> monotonic time of its stream's last book
        self._started: dict[str, float] = {}  # pair -> when its current watcher started
        self._down: set[str] = set()  # streamed pairs whose stream failed and is not back
        self._last_publish: dict[str, float] = {}
        self._stream_last: dict[str, int] = {}  # pair -> update id of its last streamed book
        self._publishing = 0  # watchers in the middle of publishing a book
        self._idle = asyncio.Event()  # set while none is
        self._idle.set()
        # told of each book the broker acknowledged, with the ack time (the ingest bench)
        self.on_published: Callable[[OrderBook, int], None] | None = None

    def _streams(self, venue: str) -> bool:
        if self.settings.mode != "stream" or venue in self.settings.poll_venue_list:
            return False
        if self.gateway.stream_client(venue) is None:
            log.info("ingest_polls_venue", venue=venue, why="ccxt.pro cannot stream from it")
            return False
        return True

    async def run(self, stopping: asyncio.Event) -> None:
        """Ingest until ``stopping``; a loop that dies takes ingest (and the worker) down with
        its error. On stop, the polls in flight finish (a book sent is a book counted) for
        up to ``STOP_GRACE_S``, then the rest is cancelled."""
        log.info("ingest_started", mode=self.settings.mode, streamed=self.streamed_venues,
                 polled=[v for v in self.gateway.venues if v not in self.streamed_venues])
        tasks = [asyncio.create_task(self._venue_loop(v, stopping), name=f"ingest-{v}")
                 for v in self.gateway.venues]
        tasks.append(asyncio.create_task(self._share_loop(stopping), name="ingest-share"))
        stop = asyncio.create_task(stopping.wait())
        try:
            done, _ = await asyncio.wait([stop, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for task in done - {stop}:
                task.result()  # a loop ended before the stop: raise what ended it
        finally:
            stop.cancel()
            if not stopping.is_set():
                for t in tasks:
                    t.cancel()
            _, late = await asyncio.wait(tasks, timeout=STOP_GRACE_S)
            for t in late:
                t.cancel()
            for outcome in await asyncio.gather(*tasks, return_exceptions=True):
                if isinstance(outcome, Exception):  # failed while finishing: said, not raised over
                    log.warning("ingest_stop_failed", error=repr(outcome)[:200])
            # a watcher publishing a book finishes it (a book sent is a book counted); then
            # the watchers, all waiting for their next book, are cancelled
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), STOP_GRACE_S)
            watchers = list(self._watchers.values())
            for w in watchers:
                w.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)
            await self.share.leave()

    async def _share_loop(self, stopping: asyncio.Event) -> None:
        period = self.settings.lease_ttl_s / 3
        while not stopping.is_set():
            try:
                owned = await self.share.refresh(self.pairs)
                PAIRS_OWNED.set(len(owned))
            except TransientError as exc:
                PAIRS_OWNED.set(0)
                log.warning("ingest_share_failed", error=str(exc))
            self._start_watchers(stopping)
            self._update_gauges()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), min(period, 1.0))

    def _update_gauges(self) -> None:
        now = now_ms()
        for venue in self.gateway.venues:
            if venue in self._freshest:
                BOOK_AGE.labels(venue).set(max(0.0, (now - self._freshest[venue]) / 1000))
            owned = [p for p in self.share.owned if p.startswith(venue + "|")]
            if venue in self.streamed_venues:
                polled = [p for p in owned if self._needs_poll(p)]
                PAIRS_STREAMING.labels(venue).set(sum(1 for p in owned if self._stream_ok(p)))
                PAIRS_POLLED.labels(venue).set(len(polled))
                STREAM_UP.labels(venue).set(0 if polled else 1)
            else:
                PAIRS_STREAMING.labels(venue).set(0)
                PAIRS_POLLED.labels(venue).set(len(owned))

    def stream_state(self) -> dict[str, dict[str, Any]]:
        """Per venue: how its pairs owned here are ingested (for the API and status)."""
        out: dict[str, dict[str, Any]] = {}
        for venue in self.gateway.venues:
            owned = sorted(p.split("|", 1)[1] for p in self.share.owned if p.startswith(venue + "|"))
            if venue not in self.streamed_venues:
                out[venue] = {"mode": "poll", "streaming": [], "polled": owned}
                continue
            out[venue] = {"mode": "stream",
                          "streaming": [s for s in owned if self._stream_ok(pair_key(venue, s))],
                          "polled": [s for s in owned if self._needs_poll(pair_key(venue, s))]}
        return out

    # --- streams ------------------------------------------------------------------------------

    def _stream_ok(self, pair: str) -> bool:
        """The pair's stream delivered within the stale time and has not failed since."""
        heard = self._heard.get(pair)
        return pair not in self._down and heard is not None and \
            time.monotonic() - heard < self.settings.stream_stale_s

    def _needs_poll(self, pair: str) -> bool:
        """A streamed pair to poll: its stream failed, or has not delivered within the stale
        time (since it started, or since its last book)."""
        if self._stream_ok(pair):
            return False
        started = self._started.get(pair)
        return pair in self._down or started is None or \
            time.monotonic() - started >= self.settings.stream_stale_s

    def _start_watchers(self, stopping: asyncio.Event) -> None:
        for pair in self.share.owned:
            venue, symbol = pair.split("|", 1)
            if venue not in self.streamed_venues:
                continue
            task = self._watchers.get(pair)
            if task is None or task.done():
                if task is not None and not task.cancelled() and task.exception() is not None:
                    log.error("ingest_watcher_died", pair=pair, error=repr(task.exception())[:300])
                self._started[pair] = time.monotonic()  # it has the stale time to deliver
                self._watchers[pair] = asyncio.create_task(self._watch(venue, symbol, stopping),
                                                           name=f"watch-{pair}")

    async def _watch(self, venue: str, symbol: str, stopping: asyncio.Event) -> None:
        """Follow one pair's stream while this replica owns it."""
        client = self.gateway.stream_client(venue)
        pair = pair_key(venue, symbol)
        backoff = Backoff(initial=0.5, maximum=30.0)
        min_gap = self.settings.min_interval_ms / 1000.0
        try:
            while not stopping.is_set() and pair in self.share.owned:
                try:
                    raw = await client.watch_order_book(symbol)
                except ccxt.ChecksumError as exc:  # a gap in the diffs: the next watch resyncs
                    STREAM_RESYNCS.labels(venue).inc()
                    log.info("stream_resync", venue=venue, symbol=symbol, error=str(exc)[:200])
                    continue
                except (ccxt.NetworkError, ccxt.ExchangeError) as exc:
                    self._down.add(pair)
                    STREAM_RECONNECTS.labels(venue).inc()
                    delay = backoff.next()
                    log.warning("stream_down", venue=venue, symbol=symbol, retry_in_s=round(delay, 2),
                                error=f"{type(exc).__name__}: {str(exc)[:200]}")
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stopping.wait(), delay)
                    continue
                received = now_ms()
                if pair in self._down:
                    self._down.discard(pair)
                    log.info("stream_up", venue=venue, symbol=symbol)
                backoff.reset()
                self._heard[pair] = time.monotonic()
                venue_ts = raw.get("timestamp")
                if venue_ts:
                    _hot_metrics(venue).stream_lag.observe(max(0.0, (received - venue_ts) / 1000))
                self._publishing += 1
                self._idle.clear()
                try:
                    await self.publish(venue, symbol, raw, received, streamed=True)
                finally:
                    self._publishing -= 1
                    if not self._publishing:
                        self._idle.set()
                if min_gap:
                    wait = self._last_publish.get(pair, 0.0) + min_gap - time.monotonic()
                    if wait > 0:
                        await asyncio.sleep(wait)
        finally:
            last = self._stream_last.pop(pair, None)
            if last is not None:  # what the next owner's first book is compared with
                with contextlib.suppress(Exception):
                    await self.share.note_published(pair, str(last))
            if pair not in self.share.owned and not stopping.is_set():
                with contextlib.suppress(Exception):  # another replica follows it now
                    await client.un_watch_order_book(symbol)

    # --- polling ------------------------------------------------------------------------------

    async def _venue_loop(self, venue: str, stopping: asyncio.Event) -> None:
        """Poll the venue's pairs that are not streamed, or whose stream is not delivering."""
        symbols = [p.split("|", 1)[1] for p in self.pairs if p.startswith(venue + "|")]
        streamed = venue in self.streamed_venues
        while not stopping.is_set():
            started = time.monotonic()
            mine = [s for s in symbols if pair_key(venue, s) in self.share.owned
                    and (not streamed or self._needs_poll(pair_key(venue, s)))]
            if mine:
                await asyncio.gather(*(self.poll(venue, s) for s in mine))
            elapsed = time.monotonic() - started
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), max(0.0, self.settings.interval_s - elapsed))

    async def poll(self, venue: str, symbol: str) -> bool:
        """Fetch one book and publish it if it is new; True if published."""
        try:
            raw = await self.gateway.call(venue, "fetch_order_book", symbol, self.settings.depth,
                                          retries=1)
        except CseError as exc:
            FETCH_ERRORS.labels(venue).inc()
            log.warning("book_fetch_failed", venue=venue, symbol=symbol, error=str(exc)[:200])
            return False
        return await self.publish(venue, symbol, raw, now_ms())

    async def publish(self, venue: str, symbol: str, raw: dict[str, Any], received: int,
                      *, streamed: bool = False) -> bool:
        """Publish a book (from a stream or a poll) unless it was published already.

        A polled book, and the first book of a stream, pass the Redis gate (lease and last
        id checked atomically). The stream's later books, whose update ids only grow, are
        published while our lease surely lasts (:meth:`WorkShare.holds`) and their id is
        new here: no round trip to Redis on the hot path."""
        if not raw.get("bids") or not raw.get("asks"):
            return False
        key = pair_key(venue, symbol)
        message = to_message(venue, symbol, raw, received, self.settings.depth)
        last = self._stream_last.get(key) if streamed else None
        if last is not None and self.share.holds(key):
            if message.seq <= last:
                return False
        else:
            try:
                verdict = await self.share.gate(key, book_id(raw))
            except TransientError as exc:  # Redis away: without the gate we cannot rule out duplicates
                log.warning("ingest_gate_failed", error=repr(exc)[:200])
                return False
            if verdict == 0:
                BOOKS_UNCHANGED.labels(venue).inc()
                return False
            if verdict < 0:
                return False
        if streamed:
            self._stream_last[key] = message.seq
        else:
            self._stream_last.pop(key, None)  # a poll in between: the stream's next book is gated
        await self.services.bus.send(MD_ORDERBOOKS, message)  # returns once the broker acked
        acked = now_ms()
        hot = _hot_metrics(venue)
        if raw.get("timestamp"):  # the venue's own time: streamed books
            hot.event_to_bus.observe(max(0.0, (acked - message.ts_venue_ms) / 1000))
        if self.on_published is not None:
            self.on_published(message, acked)
        hot.published.inc()
        self.published += 1
        self._last_publish[key] = time.monotonic()
        self._freshest[venue] = max(self._freshest.get(venue, 0), message.ts_venue_ms)
        self._write_series(message)
        return True

    def _write_series(self, book: OrderBook) -> None:
        interval = self.settings.tsdb_interval_s
        if interval <= 0:
            return
        key = pair_key(book.venue, book.symbol)
        now = time.monotonic()
        if now - self._last_tsdb.get(key, 0.0) < interval:
            return
        self._last_tsdb[key] = now
        bid, bid_qty = book.bids[0]
        ask, ask_qty = book.asks[0]
        mid = (bid + ask) / 2
        self.services.tsdb.write(
            "md_top_of_book", {"venue": book.venue, "symbol": book.symbol},
            {"bid": bid, "ask": ask, "mid": mid, "bid_qty": bid_qty, "ask_qty": ask_qty,
             "spread_bps": (ask - bid) / mid * 1e4},
            ts_ms=book.ts_venue_ms,
        )
