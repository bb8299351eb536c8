"""`cse bench ingest`: market data over websocket streams against REST polling.

1. **Throughput and latency of one ingest replica.** Venue-sims ticking every 100 ms (10
   book changes a second per pair, each sent as a ``@depth@100ms`` diff, each symbol on
   a phase of its own) with up to 50 symbols each; one
   :class:`~workers.main.ingest.Ingest` (this process) follows them all over ccxt.pro
   and publishes to the real broker, its leases in the real Redis. Per load (pairs x
   10/s offered), after every pair streams: the diff events the venues sent per second
   (offered), the books acknowledged by the broker per second (achieved; ccxt merges
   what a busy reader has not taken yet, so a saturated replica publishes fewer, fresher
   books), and venue event time -> broker acknowledgement p50/p99. The knee is the
   largest load where achieved >= 95 % of offered with p99 <= 25 ms. The 100-pair load
   runs again with every symbol's event sent at the same instant (``--ws-aligned``): a
   burst the replica handles one event after the other.
2. **Venue event -> opportunity** on the embedded stack (`cse dev up`'s: three venues,
   three arbitrage replicas): the broker timestamp of each opportunity minus the venue
   event time of the newest book it was detected on, p50/p99.
3. **REST request weight per minute**, streaming and polling, for 5, 50 and 200 pairs:
   measured by the venues (``weightUsed``) over a steady window, plus what streaming spent
   on snapshots to start. Binance allows 6,000 a minute per IP; the venues here are set
   to allow everything, so the polling figure is the demand, not what would be served.

4. **Another's fill -> the arbitrage balance view.** Market orders placed on a venue-sim
   outside the arbitrage (as the rebalancer's), one every 200 ms; a
   :class:`~workers.arbitrage.balances.BalanceBook` follows the venue's account stream. The
   time from each order's venue transaction time to the view holding its fill, p50/p99.
   Without the stream the fill waits for the next balance read: up to
   ``CSE_ARB_BALANCE_INTERVAL_S`` (5 s), half of it on average.

A JSON line is printed last.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from shared.bus import Bus
from shared.coordination import connect
from shared.gateway import Gateway
from shared.messages import ARB_OPPORTUNITIES, Codec, Opportunity
from shared.runtime import Services
from shared.settings import KafkaSettings, RedisSettings, VenueSettings
from tooling.devstack import infra
from tooling.venue_sim import DEV_API_KEY, DEV_API_SECRET
from workers.main.ingest import Ingest
from workers.main.settings import IngestSettings

P99_GOAL_MS = 25.0
LOADS = (50, 100, 110, 125, 150, 200)  # pairs, at 10 updates/s each
WEIGHT_PAIRS = (5, 50, 200)
BINANCE_WEIGHT_PER_MIN = 6000


class _NullTsdb:
    """The bench measures the bus path; top-of-book points are switched off."""

    def write(self, *_a: Any, **_k: Any) -> None:
        return None


def _layout(pairs: int) -> list[int]:
    """Symbols per venue: up to 50 each, on as few venues as that takes (at least 1)."""
    venues = max(1, -(-pairs // 50))
    base, extra = divmod(pairs, venues)
    return [base + (1 if i < extra else 0) for i in range(venues)]


def _state(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}/venue-sim/v1/state", timeout=10) as resp:
        return json.loads(resp.read())  # type: ignore[no-any-return]


@contextlib.contextmanager
def _venues(tmp: Path, pairs: int, tick_ms: int, aligned: bool = False
            ) -> Iterator[tuple[dict[str, str], list[str]]]:
    """Venue-sims carrying ``pairs`` symbols in all; (name -> url, every symbol)."""
    running: list[infra.Running] = []
    symbols_all: list[str] = []
    try:
        for i, n in enumerate(_layout(pairs)):
            symbols = [f"C{i:01d}{j:02d}/USDT" for j in range(n)]
            symbols_all.extend(symbols)
            spec = infra.venue_sim_spec(
                f"bench-{i}", infra.free_port(), 11, DEV_API_KEY, DEV_API_SECRET,
                tmp / f"bench-{i}.jsonl",
                ["--symbols", ",".join(symbols), "--tick-ms", str(tick_ms), "--levels", "100",
                 "--weight-limit", str(10**9), "--log-level", "warning",
                 *(["--ws-aligned"] if aligned else [])])
            running.append(infra.start(spec, tmp, timeout_s=60))
        yield {r.spec.name: f"http://127.0.0.1:{r.port}" for r in running}, symbols_all
    finally:
        for r in running:
            r.stop()


@contextlib.asynccontextmanager
async def _ingest(bootstrap: str, redis_url: str, venues: dict[str, str], symbols: list[str],
                  **settings: Any) -> AsyncIterator[Ingest]:
    """One ingest replica over ``venues`` (each venue carries only its own symbols)."""
    by_venue = {name: [s for s in symbols if s.startswith(f"C{name.rsplit('-', 1)[1]}")]
                for name in venues}
    redis = connect(RedisSettings(url=redis_url))
    stopping = asyncio.Event()
    kafka = KafkaSettings(bootstrap_servers=bootstrap, linger_ms=1)
    async with Bus(kafka) as bus:
        gateway = Gateway(VenueSettings(venues=",".join(f"{n}={u}" for n, u in venues.items()),
                                        symbols=",".join(symbols)))
        ingest = Ingest(IngestSettings(lease_ttl_s=10, tsdb_interval_s=0, **settings), gateway,
                        Services(bus, redis, _NullTsdb()), symbols,  # type: ignore[arg-type]
                        prefix=f"bench{time.monotonic_ns()}:")
        # each venue lists only its own symbols: the other pairs are not the venue's
        ingest.pairs = [f"{v}|{s}" for v, syms in by_venue.items() for s in syms]
        task = asyncio.create_task(ingest.run(stopping))
        try:
            yield ingest
        finally:
            stopping.set()
            await task
            await gateway.close()
            await redis.aclose()


async def _until(probe: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not probe():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        await asyncio.sleep(0.25)


def _all_streaming(ingest: Ingest, pairs: int) -> bool:
    state = ingest.stream_state()
    return sum(len(v["streaming"]) for v in state.values()) == pairs


def _events(venues: dict[str, str]) -> int:
    return sum(int(_state(u)["ws"]["events"]) for u in venues.values())


def _weight(venues: dict[str, str]) -> int:
    return sum(int(_state(u)["weightUsed"]) for u in venues.values())


async def throughput(bootstrap: str, redis_url: str, tmp: Path, pairs: int, seconds: float,
                     say: Callable[[str], None], aligned: bool = False) -> dict[str, Any]:
    """One load: ``pairs`` at 10 changes a second, followed by one replica."""
    with _venues(tmp, pairs, tick_ms=100, aligned=aligned) as (venues, symbols):
        async with _ingest(bootstrap, redis_url, venues, symbols) as ingest:
            await _until(lambda: _all_streaming(ingest, pairs), 120, f"{pairs} pairs streaming")
            await asyncio.sleep(2)  # the snapshots' burst is over
            lat: list[int] = []
            ingest.on_published = lambda book, acked: lat.append(acked - book.ts_venue_ms)
            events0, published0, t0 = _events(venues), ingest.published, time.monotonic()
            await asyncio.sleep(seconds)
            events1, published1, t1 = _events(venues), ingest.published, time.monotonic()
            ingest.on_published = None
    span = t1 - t0
    arr = np.array(lat, dtype=float)
    row = {
        "pairs": pairs, "aligned": aligned,
        "offered_per_s": round((events1 - events0) / span, 1),
        "achieved_per_s": round((published1 - published0) / span, 1),
        "event_to_bus_p50_ms": round(float(np.percentile(arr, 50)), 1) if len(arr) else None,
        "event_to_bus_p99_ms": round(float(np.percentile(arr, 99)), 1) if len(arr) else None,
    }
    say(f"{pairs:>4} pairs{' aligned' if aligned else ''}: offered {row['offered_per_s']:>7.1f}/s, published "
        f"{row['achieved_per_s']:>7.1f}/s, event->bus p50 {row['event_to_bus_p50_ms']} ms, "
        f"p99 {row['event_to_bus_p99_ms']} ms")
    return row


async def rest_weight(bootstrap: str, redis_url: str, tmp: Path, pairs: int, mode: str,
                      seconds: float) -> dict[str, Any]:
    """REST weight per minute one replica uses for ``pairs`` in ``mode`` (steady window)."""
    with _venues(tmp, pairs, tick_ms=200) as (venues, symbols):
        start_weight = _weight(venues)
        async with _ingest(bootstrap, redis_url, venues, symbols, mode=mode) as ingest:
            if mode == "stream":
                await _until(lambda: _all_streaming(ingest, pairs), 120, f"{pairs} pairs streaming")
            await asyncio.sleep(2)
            w0, t0 = _weight(venues), time.monotonic()
            await asyncio.sleep(seconds)
            w1, t1 = _weight(venues), time.monotonic()
    return {"pairs": pairs, "mode": mode, "per_min": round((w1 - w0) / (t1 - t0) * 60),
            "to_start": w0 - start_weight}


async def fill_to_view(redis_url: str, tmp: Path, orders: int) -> dict[str, Any]:
    """Another's market order -> the arbitrage balance view holding its fill, over the
    venue's account stream."""
    from workers.arbitrage.balances import BalanceBook

    spec = infra.venue_sim_spec("bench-acct", infra.free_port(), 11, DEV_API_KEY, DEV_API_SECRET,
                                tmp / "bench-acct.jsonl",
                                ["--symbols", "BTC/USDT", "--balances", "USDT=10000000,BTC=100",
                                 "--log-level", "warning"])
    venue = infra.start(spec, tmp, timeout_s=60)
    redis = connect(RedisSettings(url=redis_url))
    gateway = Gateway(VenueSettings(venues=f"bench-acct=http://127.0.0.1:{venue.port}", symbols="BTC/USDT"))
    stopping = asyncio.Event()
    lat: list[float] = []

    class Timed(BalanceBook):
        async def apply_streamed(self, venue: str, trade: dict[str, Any]) -> str:
            result = await super().apply_streamed(venue, trade)
            if result == "applied":  # the view holds it from now on
                lat.append(time.time() * 1000 - float(trade["timestamp"]))
            return result

    book = Timed(redis, ["bench-acct"], prefix=f"bench{time.monotonic_ns()}:")
    follower = None
    fills = 0
    try:
        await gateway.call("bench-acct", "load_markets")
        assert await book.read(gateway, "bench-acct") == "applied"
        follower = asyncio.create_task(book.follow(gateway, "bench-acct", stopping))
        client = gateway.stream_client("bench-acct")
        await _until(lambda: client is not None and bool(client.clients), 30, "the account stream")
        await asyncio.sleep(1)
        for i in range(orders):
            order = await gateway.call("bench-acct", "create_order", "BTC/USDT", "market",
                                       "buy" if i % 2 == 0 else "sell", 0.01, None,
                                       {"clientOrderId": f"rb-bench-{i}-{time.monotonic_ns()}"})
            fills += len(order.get("trades") or [])
            await asyncio.sleep(0.2)
        with contextlib.suppress(RuntimeError):
            await _until(lambda: len(lat) >= fills, 5, "every fill in the view")
    finally:
        stopping.set()
        if follower is not None:
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower
        await gateway.close()
        await redis.aclose()
        venue.stop()
    arr = np.array(lat, dtype=float)
    return {"orders": orders, "fills": fills, "seen": len(lat),
            "p50_ms": round(float(np.percentile(arr, 50)), 1) if len(arr) else None,
            "p99_ms": round(float(np.percentile(arr, 99)), 1) if len(arr) else None}


async def event_to_opportunity(seconds: float, say: Callable[[str], None]) -> dict[str, Any]:
    """Venue event -> opportunity published, on the embedded stack."""
    from aiokafka import AIOKafkaConsumer

    from tooling.bench.stack import healthy_stack

    with tempfile.TemporaryDirectory(prefix="cse-bench-ingest-") as tmp:
        async with healthy_stack(Path(tmp)) as sup:
            await asyncio.sleep(5)
            say(f"stack healthy; reading opportunities for {seconds:g} s")
            consumer = AIOKafkaConsumer(ARB_OPPORTUNITIES, bootstrap_servers=sup.endpoints["kafka"],
                                        group_id=None, auto_offset_reset="latest",
                                        enable_auto_commit=False, fetch_max_wait_ms=10)
            await consumer.start()
            lat: list[int] = []
            codec = Codec.for_topic(ARB_OPPORTUNITIES)
            try:
                end = time.monotonic() + seconds
                while time.monotonic() < end:
                    batch = await consumer.getmany(timeout_ms=200)
                    for records in batch.values():
                        for r in records:
                            opp = codec.decode(r.value)
                            if isinstance(opp, Opportunity) and opp.ts_venue_ms:
                                lat.append(r.timestamp - opp.ts_venue_ms)
            finally:
                await consumer.stop()
    arr = np.array(lat, dtype=float)
    return {"opportunities": len(lat),
            "p50_ms": round(float(np.percentile(arr, 50)), 1) if len(arr) else None,
            "p99_ms": round(float(np.percentile(arr, 99)), 1) if len(arr) else None}


async def _run(quick: bool, say: Callable[[str], None]) -> dict[str, Any]:
    window = 6.0 if quick else 12.0
    loads = LOADS[:2] if quick else LOADS
    with tempfile.TemporaryDirectory(prefix="cse-bench-ingest-") as scratch:
        tmp = Path(scratch)
        kafka = infra.start(infra.tansu_spec(infra.free_port()), tmp, timeout_s=60)
        redis = infra.start(infra.redis_spec(infra.free_port(), tmp / "redis"), tmp, timeout_s=30)
        try:
            bootstrap, redis_url = f"127.0.0.1:{kafka.port}", f"redis://127.0.0.1:{redis.port}/0"
            say(f"1/4 one ingest replica over streams, {', '.join(map(str, loads))} pairs at 10 "
                f"updates/s, {window:g} s each")
            rows = [await throughput(bootstrap, redis_url, tmp, n, window, say) for n in loads]
            say("     the same 100 pairs with every symbol's event at the same instant (--ws-aligned)")
            aligned = await throughput(bootstrap, redis_url, tmp, 100, window, say, aligned=True)
            say(f"3/4 REST weight per minute, streaming vs polling, {', '.join(map(str, WEIGHT_PAIRS))} "
                "pairs")
            weights: dict[str, dict[str, Any]] = {}
            for n in WEIGHT_PAIRS:
                for mode in ("stream", "poll"):
                    w = await rest_weight(bootstrap, redis_url, tmp, n, mode, window / 2)
                    weights[f"{mode}_{n}"] = w
                    say(f"{n:>4} pairs {mode:<6}: {w['per_min']:>8} weight/min steady"
                        + (f" ({w['to_start']} to start: the snapshots)" if mode == "stream" else ""))
            say("4/4 another's fill -> the arbitrage balance view, over the account stream")
            fills = await fill_to_view(redis_url, tmp, 40 if quick else 150)
            say(f"     {fills['seen']} of {fills['fills']} fills in the view: p50 {fills['p50_ms']} ms, "
                f"p99 {fills['p99_ms']} ms (reads alone: up to 5,000 ms, 2,500 on average)")
        finally:
            kafka.stop()
            redis.stop()
    say("2/4 venue event -> opportunity on the embedded stack")
    opp = await event_to_opportunity(20.0 if quick else 60.0, say)
    say(f"     {opp['opportunities']} opportunities: p50 {opp['p50_ms']} ms, p99 {opp['p99_ms']} ms")
    good = [r for r in rows if r["achieved_per_s"] >= 0.95 * r["offered_per_s"]
            and (r["event_to_bus_p99_ms"] or 1e9) <= P99_GOAL_MS]
    knee = max(good, key=lambda r: r["pairs"]) if good else None
    at_100 = next((r for r in rows if r["pairs"] == 100), rows[-1])
    return {
        "bench": "ingest", "quick": quick, "loads": rows, "aligned_100": aligned,
        "knee_pairs": knee["pairs"] if knee else 0,
        "sustained_updates_per_s": knee["achieved_per_s"] if knee else 0.0,
        "event_to_bus_p50_ms": at_100["event_to_bus_p50_ms"],
        "event_to_bus_p99_ms": at_100["event_to_bus_p99_ms"],
        "event_to_bus_p99_ms_aligned_100": aligned["event_to_bus_p99_ms"],
        "event_to_opportunity_p50_ms": opp["p50_ms"],
        "event_to_opportunity_p99_ms": opp["p99_ms"],
        "opportunities": opp["opportunities"],
        **{f"rest_weight_per_min_{'streaming' if k.startswith('stream') else 'polling'}_{v['pairs']}":
           v["per_min"] for k, v in weights.items()},
        "rest_weight_to_start_streaming_200": weights["stream_200"]["to_start"],
        "binance_weight_limit_per_min": BINANCE_WEIGHT_PER_MIN,
        "fill_to_balance_view_p50_ms": fills["p50_ms"],
        "fill_to_balance_view_p99_ms": fills["p99_ms"],
        "fills_seen": fills["seen"], "fills_reported": fills["fills"],
    }


def bench_ingest(quick: bool = False, say: Callable[[str], None] = print) -> dict[str, Any]:
    return asyncio.run(_run(quick, say))

