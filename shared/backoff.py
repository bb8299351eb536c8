"""Exponential backoff with full jitter, shared by every retry loop."""

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
