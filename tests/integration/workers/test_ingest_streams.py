"""Ingest over websocket streams: real ccxt.pro following a real venue-sim, books on the
real broker, leases in the real Redis.

Streaming is the default: REST is used for the snapshots only, every change of a book is
published once with the venue's event time; an outage of the streams (sockets closed and
refused while REST answers) turns the pairs to polling until the streams are back; a gap
in the diffs is resynced; ``min_interval_ms`` coalesces.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from shared.bus import Bus
from shared.coordination import connect
from shared.gateway import Gateway
from shared.messages import MD_ORDERBOOKS, OrderBook
from shared.runtime import Services
from shared.settings import VenueSettings
from shared.timeseries import TimeSeriesWriter
from tests.conftest import eventually, read_topic
from tests.integration.conftest import SimVenue, http, start_venue
from tests.metric_values import value
from workers.main.ingest import Ingest
from workers.main.metrics import STREAM_RECONNECTS, STREAM_RESYNCS, STREAM_UP
from workers.main.settings import IngestSettings

pytestmark = pytest.mark.slow
VENUE = "stream-a"
SYMBOLS = ["BTC/USDT", "ETH/USDT"]


@pytest.fixture(scope="module")
def venue(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimVenue]:
    running = start_venue(tmp_path_factory.mktemp("streams"), VENUE)
    yield running
    running.stop()


@contextlib.asynccontextmanager
async def ingesting(venue: SimVenue, kafka_settings: Any, redis_settings: Any, store_settings: Any,
                    **overrides: Any) -> AsyncIterator[Ingest]:
    settings = VenueSettings(venues=f"{VENUE}={venue.url}", symbols=",".join(SYMBOLS))
    redis = connect(redis_settings)
    stopping = asyncio.Event()
    async with Bus(kafka_settings) as bus, TimeSeriesWriter(store_settings) as tsdb:
        gateway = Gateway(settings)
        ingest = Ingest(IngestSettings(lease_ttl_s=3, tsdb_interval_s=0, **overrides), gateway,
                        Services(bus, redis, tsdb), SYMBOLS, prefix=redis_settings.key_prefix,
                        member=f"stream-test-{time.monotonic_ns()}")
        task = asyncio.create_task(ingest.run(stopping))
        try:
            yield ingest
        finally:
            stopping.set()
            await task
            await gateway.close()
            await redis.aclose()


def faults(venue: SimVenue, doc: dict[str, Any]) -> None:
    status, _h, body = http(venue.url + "/venue-sim/v1/ws/faults", "POST", json.dumps(doc).encode())
    assert status == 200, body


def streaming(ingest: Ingest) -> bool:
    state = ingest.stream_state()[VENUE]
    return state["mode"] == "stream" and state["streaming"] == sorted(SYMBOLS)


async def books_since(bootstrap: str, since_ms: float) -> list[OrderBook]:
    books = [msgspec.json.decode(r.value, type=OrderBook)
             for r in await read_topic(bootstrap, MD_ORDERBOOKS, idle_s=1.5)]
    return [b for b in books if b.venue == VENUE and b.ts_recv_ms >= since_ms]


async def test_streams_by_default_with_rest_for_snapshots_only(
        venue: SimVenue, kafka_settings, redis_settings, store_settings) -> None:
    async with ingesting(venue, kafka_settings, redis_settings, store_settings) as ingest:
        await eventually(lambda: streaming(ingest), 15, "both pairs streaming")
        weight_before, since = venue.state()["weightUsed"], time.time() * 1000
        published_before = ingest.published
        await asyncio.sleep(2)
        weight = venue.state()["weightUsed"] - weight_before
        published = ingest.published - published_before
        assert value(STREAM_UP, VENUE) == 1
    assert weight == 0, f"REST weight {weight} used while streaming (snapshots were taken before)"
    # the venue ticks every 200 ms: about 5 changes a second per pair, each published once
    assert published >= 2 * 3 * 2, published
    books = await books_since(kafka_settings.bootstrap_servers, since)
    for symbol in SYMBOLS:
        seqs = [b.seq for b in books if b.symbol == symbol]
        assert seqs == sorted(set(seqs)) and len(seqs) >= 6, "each version once, in order"
    assert all(0 <= b.ts_recv_ms - b.ts_venue_ms < 1000 for b in books), "the venue's event time"
    assert all(len(b.bids) == 20 and b.bids[0][0] < b.asks[0][0] for b in books)


async def test_a_stream_outage_is_polled_over_rest_until_the_streams_are_back(
        venue: SimVenue, kafka_settings, redis_settings, store_settings) -> None:
    async with ingesting(venue, kafka_settings, redis_settings, store_settings,
                         interval_s=0.2) as ingest:
        await eventually(lambda: streaming(ingest), 15, "both pairs streaming")
        reconnects = value(STREAM_RECONNECTS, VENUE) or 0.0
        faults(venue, {"close": True, "refuse_s": 4})
        await eventually(lambda: ingest.stream_state()[VENUE]["polled"] == sorted(SYMBOLS), 5,
                         "both pairs polled while the streams are down")
        await eventually(lambda: value(STREAM_UP, VENUE) == 0, 5, "stream down in the gauge")
        weight, published = venue.state()["weightUsed"], ingest.published
        await asyncio.sleep(1.5)
        assert venue.state()["weightUsed"] > weight, "REST polling during the outage"
        assert ingest.published > published, "books keep flowing during the outage"
        assert (value(STREAM_RECONNECTS, VENUE) or 0.0) > reconnects
        await eventually(lambda: streaming(ingest), 20, "streaming again after the outage")
        await eventually(lambda: value(STREAM_UP, VENUE) == 1, 5, "stream up again")


async def test_a_gap_in_the_diffs_is_resynced_and_publishing_goes_on(
        venue: SimVenue, kafka_settings, redis_settings, store_settings) -> None:
    async with ingesting(venue, kafka_settings, redis_settings, store_settings) as ingest:
        await eventually(lambda: streaming(ingest), 15, "both pairs streaming")
        resyncs = value(STREAM_RESYNCS, VENUE) or 0.0
        since = time.time() * 1000
        faults(venue, {"drop": 1, "symbol": "BTCUSDT"})
        await eventually(lambda: (value(STREAM_RESYNCS, VENUE) or 0.0) > resyncs, 10, "a resync")
        published = ingest.published
        await eventually(lambda: ingest.published >= published + 10, 10, "publishing after it")
    books = await books_since(kafka_settings.bootstrap_servers, since)
    seqs = [b.seq for b in books if b.symbol == "BTC/USDT"]
    assert seqs == sorted(set(seqs)), "no version twice, none out of order across the resync"


async def test_min_interval_coalesces_changes(
        venue: SimVenue, kafka_settings, redis_settings, store_settings) -> None:
    async with ingesting(venue, kafka_settings, redis_settings, store_settings,
                         min_interval_ms=600) as ingest:
        await eventually(lambda: streaming(ingest), 15, "both pairs streaming")
        since, published = time.time() * 1000, ingest.published
        await asyncio.sleep(3)
        published = ingest.published - published
    assert 2 * 3 <= published <= 2 * (3 / 0.6 + 1), published
    books = await books_since(kafka_settings.bootstrap_servers, since)
    btc = sorted(b.ts_recv_ms for b in books if b.symbol == "BTC/USDT")
    assert all(b - a >= 550 for a, b in itertools.pairwise(btc)), btc


def test_bad_ingest_settings_name_the_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from shared.settings import SettingsError, load
    from workers.main.settings import MainSettings

    monkeypatch.setenv("CSE_VENUES", "a=http://127.0.0.1:1")
    monkeypatch.setenv("CSE_INGEST_MODE", "websocket")
    with pytest.raises(SettingsError, match="CSE_INGEST_MODE"):
        load(MainSettings)
    monkeypatch.setenv("CSE_INGEST_MODE", "stream")
    monkeypatch.setenv("CSE_INGEST_POLL_VENUES", "b")
    with pytest.raises(SettingsError, match="CSE_INGEST_POLL_VENUES: 'b' is not one of CSE_VENUES"):
        load(MainSettings)
