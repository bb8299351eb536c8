"""Exponential backoff: jittered for retry loops, plain for periodic cycles that failed."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """``next()`` gives the next delay in seconds: doubling up to ``maximum``, jittered."""

    initial: float = 0.2
    maximum: float = 10.0
    factor: float = 2.0
    _current: float = field(default=0.0, init=False)

    def next(self) -> float:
        self._current = min(self.maximum, (self._current or self.initial / self.factor) * self.factor)
        return random.uniform(self._current / 2, self._current)

    def reset(self) -> None:
        self._current = 0.0


def next_delay(interval: float, failures: int, mult: float, maximum: float, enabled: bool = True) -> float:
    """Seconds until a periodic cycle's next run: ``interval × mult^failures`` after
    ``failures`` failed runs in a row, capped at ``maximum`` (``interval`` when disabled)."""
    if not enabled or failures <= 0:
        return interval
    return min(maximum, interval * mult ** failures)
