"""Reading a metric's current value in tests through prometheus-client's public API."""

from __future__ import annotations

from typing import Any


def value(metric: Any, *label_values: str, **labels: str) -> float:
    """The value of a gauge's or counter's sample, the child picked by its label values (in
    the metric's label order) or by name; 0.0 for a child never touched, as a new one reads.

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
    return 0.0
