"""Reading a metric's current value in tests through prometheus-client's public API."""

from __future__ import annotations

from typing import Any


def value(metric: Any, *label_values: str, **labels: str) -> float | None:
    """The value of a gauge's or counter's sample, the child picked by its label values (in
    the metric's label order) or by name. A counter child not exported yet reads 0.0 (it has
    counted nothing); a gauge child not exported is None, so asserting its value fails.

    It goes through ``collect()``, what an exposition reads, never the client's private state.
    """
    for family in metric.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        for sample in family.samples:
            if sample.name != name:
                continue
            if label_values and tuple(sample.labels.values()) != label_values:
                continue
            if labels and any(sample.labels.get(k) != v for k, v in labels.items()):
                continue
            return float(sample.value)
        if family.type == "counter":
            return 0.0
    return None
