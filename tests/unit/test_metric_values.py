"""The tests' metric reader: public collect(), right sample, right child."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from tests.metric_values import value


def test_reads_gauges_and_counters_by_label_values_or_names() -> None:
    registry = CollectorRegistry()
    level = Gauge("t_level", "a gauge", registry=registry)
    hits = Counter("t_hits", "a counter", ["venue", "method"], registry=registry)
    level.set(2.5)
    hits.labels("a", "get").inc(3)
    hits.labels("b", "get").inc()
    assert value(level) == 2.5
    assert value(hits, "a", "get") == 3.0  # the _total sample, not _created
    assert value(hits, venue="b", method="get") == 1.0
    assert value(hits, "b", "put") == 0.0  # a counter never touched has counted nothing
    states = Gauge("t_state", "a labelled gauge", ["venue"], registry=registry)
    states.labels("a").set(0)
    assert value(states, "a") == 0.0
    assert value(states, "b") is None  # never exported: an assertion on it must fail
