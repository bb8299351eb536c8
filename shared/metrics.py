"""The shared library's Prometheus metrics (``cse_*``), grouped by the module that owns
them, and :class:`LoopHistogram` for hot paths.

Each service's own metrics live in its package (``workers/<service>/metrics.py``); the
HTTP endpoint that serves them all is :mod:`shared.health`.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
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

# Coordination (shared.coordination, shared.halt)
LEADER = Gauge("cse_leader", "1 while this process holds the leader lock", ["lock"])
HALTED = Gauge("cse_trading_halted", "1 while the trading halt (kill switch) is on, as this worker sees it")

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
