"""Market-data ingest: real ccxt polling real venue-sims, books on the real broker."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator

import msgspec
import pytest

from shared.bus import Bus
from shared.coordination import connect
from shared.gateway import Gateway
from shared.messages import MD_ORDERBOOKS, OrderBook
from shared.runtime import Services
from shared.settings import DEV_SIM_API_KEY, DEV_SIM_API_SECRET, VenueSettings
from shared.timeseries import TimeSeriesWriter
from tests.conftest import NotYet, eventually, read_topic
from tests.integration.shared.test_timeseries import export
from tooling.devstack import infra
from workers.main.ingest import Ingest
from workers.main.settings import IngestSettings

pytestmark = pytest.mark.slow
NAMES = ["ing-a", "ing-b", "ing-c"]
SYMBOLS = ["BTC/USDT", "ETH/USDT"]


@pytest.fixture(scope="module")
def venues(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    tmp = tmp_path_factory.mktemp("venues")
    running = []
    try:
        for i, name in enumerate(NAMES):
            spec = infra.venue_sim_spec(name, infra.free_port(), 11, DEV_SIM_API_KEY,
                                        DEV_SIM_API_SECRET, tmp / f"{name}.jsonl",
                                        ["--noise-bps", str(2 + 3 * i)])
            running.append(infra.start(spec, tmp))
        yield {r.spec.name: f"http://127.0.0.1:{r.port}" for r in running}
    finally:
        for r in running:
            r.stop()


async def test_two_replicas_publish_every_venue_and_no_book_twice(
        venues, kafka_settings, redis_settings, store_settings) -> None:
    settings = VenueSettings(venues=",".join(f"{n}={u}" for n, u in venues.items()),
                             symbols=",".join(SYMBOLS))
    ingest_settings = IngestSettings(interval_s=0.2, lease_ttl_s=3, tsdb_interval_s=0.5)
    redis = connect(redis_settings)
    stopping = asyncio.Event()
    async with Bus(kafka_settings) as bus, TimeSeriesWriter(store_settings) as tsdb:
        services = Services(bus, redis, tsdb)
        gateways = [Gateway(settings), Gateway(settings)]
        replicas = [Ingest(ingest_settings, gw, services, SYMBOLS, prefix=redis_settings.key_prefix,
                           member=f"replica-{i}") for i, gw in enumerate(gateways)]
        started = time.time() * 1000
        clock = time.monotonic()
        tasks = [asyncio.create_task(r.run(stopping)) for r in replicas]

        async def both_publish_and_every_pair_is_stored_twice() -> bool | NotYet:
            # read off the event loop: the replicas keep polling and publishing meanwhile
            stored = await asyncio.to_thread(spread_series, store_settings.url)
            points = {pair: len(r["values"]) for pair, r in stored.items()}
            published = [r.published for r in replicas]
            done = len(points) == len(NAMES) * len(SYMBOLS) and min(points.values()) >= 2
            return (done and min(published) > 0) or NotYet({"published": published, "points": points})

        try:
            # the pairs are shared out (each replica publishes) and downsampled points reach the store
            await eventually(both_publish_and_every_pair_is_stored_twice, 30,
                             "both replicas publishing and two points of every pair stored", interval_s=0.5)
        finally:
            stopping.set()
            await asyncio.gather(*tasks)
            ran_s = time.monotonic() - clock
            for gw in gateways:
                await gw.close()
            await redis.aclose()

    books = await read_books(kafka_settings.bootstrap_servers, started)
    assert {b.venue for b in books} == set(NAMES)
    assert {(b.venue, b.symbol) for b in books} == {(v, s) for v in NAMES for s in SYMBOLS}
    ids = Counter((b.venue, b.symbol, b.seq) for b in books)
    assert [k for k, n in ids.items() if n > 1] == [], "a book was published twice"
    assert all(r.published > 0 for r in replicas), [r.published for r in replicas]
    assert sum(r.published for r in replicas) == len(books)
    for b in books:
        assert b.bids[0][0] < b.asks[0][0] and len(b.bids) == 20
        assert b.ts_recv_ms >= b.ts_venue_ms - 1000

    # top of book and spread, downsampled, in the time-series store
    series = spread_series(store_settings.url)
    assert set(series) == {(v, s) for v in NAMES for s in SYMBOLS}
    per_pair = [len(r["values"]) for r in series.values()]
    assert all(2 <= n <= ran_s / 0.5 + 2 for n in per_pair), (per_pair, ran_s)  # about one per 0.5 s
    assert all(0 < v < 100 for r in series.values() for v in r["values"])


def spread_series(store: str) -> dict[tuple[str, str], dict]:
    """The stored spread series of this module's venues, by (venue, symbol)."""
    rows = export(store, '{__name__="md_top_of_book_spread_bps"}')
    return {(r["metric"]["venue"], r["metric"]["symbol"]): r for r in rows if r["metric"]["venue"] in NAMES}


async def read_books(bootstrap: str, since_ms: float) -> list[OrderBook]:
    books = [msgspec.json.decode(r.value, type=OrderBook)
             for r in await read_topic(bootstrap, MD_ORDERBOOKS, idle_s=2)]
    return [b for b in books if b.venue in NAMES and b.ts_recv_ms >= since_ms]
