"""Batching writer to the time-series store over the InfluxDB v2 write API.

``write()`` is synchronous and O(1): it renders one line of line protocol into an
in-memory buffer and returns, so callers on the hot path never wait on the store. A
background task flushes every ``flush_interval_s`` or as soon as ``batch_size`` lines
are waiting, through influxdb-client's asyncio client. A failed batch is counted,
kept at the front of the buffer and retried with backoff; when the buffer exceeds
``max_buffer`` the oldest lines are dropped and counted (the store being down must not
exhaust memory). ``close()`` makes a last flush within a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Mapping

from influxdb_client import Point, WritePrecision
from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync

from shared import metrics
from shared.backoff import Backoff
from shared.logs import get_logger
from shared.settings import StoreSettings

log = get_logger("timeseries")

FieldValue = float | int | str | bool


class TimeSeriesWriter:
    def __init__(self, settings: StoreSettings):
        self.settings = settings
        self._buffer: deque[str] = deque()
        self._client: InfluxDBClientAsync | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._flush_lock = asyncio.Lock()
        self._closing = False
        self.written = 0
        self.failures = 0
        self.dropped = 0

    async def __aenter__(self) -> TimeSeriesWriter:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        self._client = InfluxDBClientAsync(
            url=self.settings.url,
            token=self.settings.token.get_secret_value() or "unused",
            org=self.settings.org,
            timeout=int(self.settings.timeout_s * 1000),
        )
        self._task = asyncio.create_task(self._run(), name="tsdb-flush")

    def write(self, measurement: str, tags: Mapping[str, str], fields: Mapping[str, FieldValue],
              ts_ms: int | None = None) -> None:
        """Queue one point (never blocks, never raises for a store outage)."""
        point = Point(measurement)
        for k, v in tags.items():
            point.tag(k, v)
        for name, value in fields.items():
            point.field(name, value)
        point.time(ts_ms if ts_ms is not None else time.time_ns() // 1_000_000, WritePrecision.MS)
        self.write_line(point.to_line_protocol())

    def write_line(self, line: str) -> None:
        if not line:
            return
        self._buffer.append(line)
        overflow = len(self._buffer) - self.settings.max_buffer
        if overflow > 0:
            for _ in range(overflow):
                self._buffer.popleft()
            self.dropped += overflow
            metrics.TSDB_DROPPED.inc(overflow)
        metrics.TSDB_BUFFERED.set(len(self._buffer))
        if len(self._buffer) >= self.settings.batch_size:
            self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._buffer)

    async def flush(self) -> bool:
        """Write everything buffered; False if the store refused (lines stay buffered)."""
        assert self._client is not None, "writer not started"
        async with self._flush_lock:  # one writer at a time, or a batch would go twice
            return await self._flush_locked(self._client)

    async def _flush_locked(self, client: InfluxDBClientAsync) -> bool:
        while self._buffer:
            n = min(self.settings.batch_size, len(self._buffer))
            batch = [self._buffer[i] for i in range(n)]
            try:
                await client.write_api().write(
                    bucket=self.settings.bucket,
                    org=self.settings.org,
                    record="\n".join(batch),
                    write_precision=WritePrecision.MS,  # type: ignore[arg-type]  # influxdb_client's hint is wrong: WritePrecision.MS is the str "ms"
                )
            except Exception as exc:  # the client raises ApiException, aiohttp and OS errors
                self.failures += 1
                metrics.TSDB_FAILURES.inc()
                log.warning("tsdb_write_failed", error=repr(exc)[:300], pending=len(self._buffer))
                return False
            for _ in range(n):
                self._buffer.popleft()
            self.written += n
            metrics.TSDB_WRITTEN.inc(n)
            metrics.TSDB_BUFFERED.set(len(self._buffer))
        return True

    async def _run(self) -> None:
        backoff = Backoff(initial=0.5, maximum=30.0)
        delay = self.settings.flush_interval_s
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)
            self._wake.clear()
            if await self.flush():
                backoff.reset()
                delay = self.settings.flush_interval_s
            else:
                delay = backoff.next()

    async def close(self, timeout_s: float = 5.0) -> None:
        self._closing = True
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._client is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.flush(), timeout_s)
            if self._buffer:
                log.warning("tsdb_unflushed_on_close", lines=len(self._buffer))
            await self._client.close()
            self._client = None
