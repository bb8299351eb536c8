"""Prometheus metrics shared by every worker, and the metrics/health HTTP endpoint.

One aiohttp server per process serves ``/metrics`` (Prometheus text format),
``/health`` (liveness: the worker loop beat recently) and ``/ready`` (readiness: the
checks the worker registered, e.g. Kafka and Redis reachable). It runs on the worker's
event loop, so a blocked loop shows up as a failed health check, as it should.
"""

from __future__ import annotations

import asyncio
import time
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Iterator, Sequence

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import CollectorRegistry


class LoopHistogram:
    """A histogram for a hot path of the event loop, exposed like a prometheus-client one.

    ``observe`` is a bisection and two additions — no lock, no per-bucket loop — about a
    tenth of ``Histogram.observe``; that is safe because everything that touches it,
    ``/metrics`` included, runs on the one event loop. Values may be observed in a unit of
    their own (``scale``: observed units per exposed unit, e.g. 1000 for milliseconds
    exposed as seconds, so the hot path can use integer milliseconds); ``buckets`` are
    given in the exposed unit. No labels.
    """

    def __init__(self, name: str, documentation: str, buckets: Sequence[float], *, scale: float = 1.0,
                 registry: CollectorRegistry | None = REGISTRY):
        self.name = name
        self.documentation = documentation
        self.buckets = [float(b) for b in buckets]
        self.scale = scale
        self._bounds = [b * scale for b in self.buckets]
        self._counts = [0] * (len(self._bounds) + 1)  # the last one: above every bound
        self._sum = 0.0
        if registry is not None:
            registry.register(self)

    def observe(self, value: float) -> None:
        self._counts[bisect_left(self._bounds, value)] += 1
        self._sum += value

    def describe(self) -> list[HistogramMetricFamily]:
        return [HistogramMetricFamily(self.name, self.documentation)]

    def collect(self) -> Iterator[HistogramMetricFamily]:
        cumulative, total = [], 0
        for bound, count in zip(self.buckets, self._counts, strict=False):
            total += count
            cumulative.append((repr(bound), total))
        cumulative.append(("+Inf", total + self._counts[-1]))
        yield HistogramMetricFamily(self.name, self.documentation, buckets=cumulative,
                                    sum_value=self._sum / self.scale)


# Bus (shared.bus)
BUS_PRODUCED = Counter("cse_bus_messages_produced_total", "Messages produced", ["topic"])
BUS_CONSUMED = Counter(
    "cse_bus_messages_consumed_total", "Messages handled by a consumer", ["topic", "group"]
)
BUS_DEAD_LETTERED = Counter(
    "cse_bus_messages_dead_lettered_total", "Messages sent to a dead-letter topic", ["topic", "group"]
)
BUS_CONSUMER_LAG = Gauge(
    "cse_bus_consumer_lag_messages", "High watermark minus position", ["group", "topic", "partition"]
)
BUS_CONSUMER_REBUILDS = Counter(
    "cse_bus_consumer_rebuilds_total", "Consumers rebuilt after a stall or broker loss", ["group"]
)
BUS_ERRORS = Counter("cse_bus_errors_total", "Kafka errors by operation", ["op"])
BUS_PARTITIONS = Gauge("cse_bus_partitions_assigned", "Partitions assigned to this consumer-group member",
                       ["group"])

# Time-series store (shared.timeseries)
TSDB_WRITTEN = Counter("cse_tsdb_points_written_total", "Points accepted by the store")
TSDB_FAILURES = Counter("cse_tsdb_write_failures_total", "Failed write attempts")
TSDB_DROPPED = Counter("cse_tsdb_points_dropped_total", "Points dropped because the buffer was full")
TSDB_BUFFERED = Gauge("cse_tsdb_points_buffered", "Points waiting to be written")

# Process
WORKER_INFO = Gauge("cse_worker_up", "1 while the worker runs", ["worker"])
WORKER_HEARTBEAT = Gauge("cse_worker_heartbeat_timestamp_seconds", "Last loop heartbeat", ["worker"])

DEPENDENCY_UP = Gauge("cse_dependency_up", "1 if the dependency answered the last probe",
                      ["dependency"])

ReadyCheck = Callable[[], Awaitable[bool]]


class Health:
    """Heartbeat and readiness checks of one worker."""

    def __init__(self, worker: str, heartbeat_timeout_s: float = 30.0):
        self.worker = worker
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.last_beat = time.monotonic()
        self.checks: dict[str, ReadyCheck] = {}
        self.state = "starting"

    def beat(self) -> None:
        self.last_beat = time.monotonic()
        WORKER_HEARTBEAT.labels(self.worker).set(time.time())

    def add_check(self, name: str, check: ReadyCheck) -> None:
        self.checks[name] = check

    def alive(self) -> bool:
        return time.monotonic() - self.last_beat < self.heartbeat_timeout_s

    async def ready(self) -> dict[str, bool]:
        results: dict[str, bool] = {}
        for name, check in self.checks.items():
            try:
                results[name] = bool(await asyncio.wait_for(check(), 3))
            except Exception:
                results[name] = False
        return results


async def _metrics(_request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


def build_app(health: Health, serve_metrics: bool = True) -> web.Application:
    async def healthz(_request: web.Request) -> web.Response:
        age = time.monotonic() - health.last_beat
        ok = health.alive() and health.state in ("starting", "running")
        body = {"worker": health.worker, "state": health.state, "heartbeat_age_s": round(age, 3)}
        return web.json_response({"status": "ok" if ok else "fail", **body}, status=200 if ok else 503)

    async def readyz(_request: web.Request) -> web.Response:
        checks = await health.ready()
        ok = all(checks.values()) and health.state == "running"
        return web.json_response(
            {"status": "ok" if ok else "fail", "state": health.state, "checks": checks},
            status=200 if ok else 503,
        )

    app = web.Application()
    if serve_metrics:
        app.router.add_get("/metrics", _metrics)
    app.router.add_get("/health", healthz)
    app.router.add_get("/ready", readyz)
    return app


class MetricsServer:
    """``/metrics``, ``/health`` and ``/ready`` on ``host:port`` (port 0 picks a free one).

    With ``serve_metrics`` off only the health routes answer (the container healthcheck
    still needs them)."""

    def __init__(self, health: Health, host: str, port: int, serve_metrics: bool = True):
        self.health = health
        self.host = host
        self.port = port
        self.serve_metrics = serve_metrics
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> MetricsServer:
        self._runner = web.AppRunner(build_app(self.health, self.serve_metrics), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        server = site._server
        if server is not None and server.sockets:
            self.port = server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

# Coordination
LEADER = Gauge("cse_leader", "1 while this process holds the leader lock", ["lock"])

# Exchange gateway (shared.gateway)
EXCHANGE_REQUESTS = Counter(
    "cse_exchange_requests_total", "Calls to a venue through ccxt", ["venue", "method"]
)
EXCHANGE_ERRORS = Counter(
    "cse_exchange_errors_total", "Failed calls to a venue, by ccxt exception class", ["venue", "error"]
)
EXCHANGE_RETRIES = Counter("cse_exchange_retries_total", "Calls retried after a transient error",
                           ["venue"])
EXCHANGE_LATENCY = Histogram(
    "cse_exchange_request_seconds", "Latency of venue calls", ["venue", "method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
EXCHANGE_UP = Gauge("cse_exchange_up", "1 if the last call to the venue got an answer", ["venue"])
EXCHANGE_BACKOFF = Gauge(
    "cse_exchange_backoff_seconds", "Remaining cool-down after a rate limit", ["venue"]
)
