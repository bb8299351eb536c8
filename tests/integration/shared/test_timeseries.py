"""The time-series writer against a real victoria-metrics (InfluxDB v2 write API)."""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
import uuid

from shared.settings import StoreSettings
from shared.timeseries import TimeSeriesWriter
from tests.conftest import NotYet, eventually


def export(base: str, match: str) -> list[dict]:
    urllib.request.urlopen(f"{base}/internal/force_flush", timeout=5).read()
    query = urllib.parse.urlencode({"match[]": match})
    with urllib.request.urlopen(f"{base}/api/v1/export?{query}", timeout=5) as resp:
        return [json.loads(line) for line in resp.read().decode().splitlines() if line]


async def test_points_written_are_read_back_from_the_store(store_settings: StoreSettings) -> None:
    measurement = f"test_{uuid.uuid4().hex[:8]}"
    now = int(time.time() * 1000) - 10_000
    async with TimeSeriesWriter(store_settings) as writer:
        for i in range(1200):  # more than two batches
            writer.write(measurement, {"exchange": f"ex{i % 3}", "symbol": "BTC/USDT"},
                         {"value": float(i), "qty": i}, ts_ms=now + i)
        assert await writer.flush()
    assert writer.written == 1200 and writer.failures == 0

    def all_points() -> list[dict] | NotYet:
        rows = export(store_settings.url, f'{{__name__=~"{measurement}_.*"}}')
        found = sum(len(r["values"]) for r in rows)
        return rows if found == 2400 else NotYet(f"{found} points")

    rows = await eventually(all_points, 5, "the 2400 points searchable", interval_s=0.1)
    series = {(r["metric"]["__name__"], r["metric"]["exchange"]): r for r in rows}
    assert set(series) == {(f"{measurement}_{f}", f"ex{e}") for f in ("value", "qty") for e in range(3)}
    ex1 = series[(f"{measurement}_value", "ex1")]
    assert ex1["values"] == [float(i) for i in range(1, 1200, 3)]
    assert ex1["timestamps"] == [now + i for i in range(1, 1200, 3)]
    assert ex1["metric"]["symbol"] == "BTC/USDT"


async def test_a_store_outage_is_counted_and_retried_without_losing_points(tmp_path) -> None:
    from tooling.devstack import infra

    port = infra.free_port()
    settings = StoreSettings(url=f"http://127.0.0.1:{port}", flush_interval_s=0.1, timeout_s=1)
    now = int(time.time() * 1000) - 5_000
    async with TimeSeriesWriter(settings) as writer:
        t0 = time.monotonic()
        for i in range(50):
            writer.write("outage_probe", {"k": "v"}, {"value": float(i)}, ts_ms=now + i)
        assert time.monotonic() - t0 < 0.1, "write() must not wait on the store"
        await eventually(lambda: writer.failures >= 2 or NotYet(f"{writer.failures} failures"), 10,
                         "failed attempts counted and retried")
        assert writer.pending == 50, "a failed batch stays buffered"

        store = infra.start(infra.victoria_metrics_spec(port, tmp_path / "vm"), tmp_path)
        try:
            # the retry backoff may have grown
            await eventually(lambda: writer.pending == 0 or NotYet(f"{writer.pending} pending"), 40,
                             "the buffered batch written once the store is back", interval_s=0.1)
            assert writer.pending == 0 and writer.written == 50
            rows = export(settings.url, '{__name__="outage_probe_value"}')
            assert [len(r["values"]) for r in rows] == [50]
        finally:
            store.stop()


async def test_buffer_is_bounded_and_drops_are_counted() -> None:
    from tooling.devstack import infra

    settings = StoreSettings(url=f"http://127.0.0.1:{infra.free_port()}", max_buffer=10,
                             flush_interval_s=60)
    writer = TimeSeriesWriter(settings)
    await writer.start()
    try:
        for i in range(25):
            writer.write("bounded", {}, {"value": i})
        assert writer.pending == 10 and writer.dropped == 15
    finally:
        writer._buffer.clear()
        await writer.close()
