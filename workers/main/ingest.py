"""Market-data ingest: order books from every venue to ``md.orderbooks``.

Runs inside cryptospreadedge-main. The venue×symbol pairs are shared between main
replicas with :class:`~shared.coordination.WorkShare` (rendezvous hashing plus a lease
per pair), so each pair is polled by one replica and a book is published once: the
publish gate checks the lease and the book's id atomically in Redis. Unchanged books
(same id as the last published) are skipped.

Per venue, one task polls the pairs this replica owns every ``CSE_INGEST_INTERVAL_S``
through the gateway (which retries and honours rate limits). Metrics: books published
and skipped, fetch errors, and the age of the freshest book per venue (staleness), which
alerts use to detect lost connectivity. Top of book and spread go to the time-series
store at most every ``CSE_INGEST_TSDB_INTERVAL_S`` per pair.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from typing import Any

from shared.coordination import WorkShare
from shared.errors import CseError, TransientError
from shared.gateway import Gateway
from shared.logs import get_logger
from shared.messages import MD_ORDERBOOKS, OrderBook, now_ms
from shared.rediskeys import DEFAULT_PREFIX
from shared.runtime import Services
from workers.main.metrics import BOOK_AGE, BOOKS_PUBLISHED, BOOKS_UNCHANGED, FETCH_ERRORS, PAIRS_OWNED
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


class Ingest:
    """Polls the pairs this replica owns and publishes their books."""

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

    async def run(self, stopping: asyncio.Event) -> None:
        """Poll until ``stopping``; a loop that dies takes ingest (and the worker) down with
        its error. On stop, the polls in flight finish (a book sent is a book counted) for
        up to ``STOP_GRACE_S``, then the rest is cancelled."""
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
            self._update_staleness()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), period)

    def _update_staleness(self) -> None:
        now = now_ms()
        for venue in self.gateway.venues:
            if venue in self._freshest:
                BOOK_AGE.labels(venue).set(max(0.0, (now - self._freshest[venue]) / 1000))

    async def _venue_loop(self, venue: str, stopping: asyncio.Event) -> None:
        symbols = [p.split("|", 1)[1] for p in self.pairs if p.startswith(venue + "|")]
        while not stopping.is_set():
            started = time.monotonic()
            mine = [s for s in symbols if pair_key(venue, s) in self.share.owned]
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
        received = now_ms()
        if not raw.get("bids") or not raw.get("asks"):
            return False
        key = pair_key(venue, symbol)
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
        message = to_message(venue, symbol, raw, received, self.settings.depth)
        await self.services.bus.send(MD_ORDERBOOKS, message)
        BOOKS_PUBLISHED.labels(venue).inc()
        self.published += 1
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
