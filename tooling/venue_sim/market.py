"""The price model: correlated, seeded, random-access in time.

The log-price of an asset in USD is

    log P(t) = log P0 + beta * F(t) + E(t)

where ``F`` is a market factor and ``E`` the asset's idiosyncratic part, each an
Ornstein-Uhlenbeck process with a long half-life (weeks), so prices wander like crypto
(annual vols 40-120%) but stay in a sensible range for ever. A symbol's "true" price is
``P_base / P_quote``. A venue sees it ``--lag-ms`` late, shifted by a static
``--price-offset-bps`` and disturbed by its own short-lived noise (another OU process,
stationary std ``--noise-bps``), so venues sharing a seed agree on the underlying prices
while their spreads open and close.

Every path is a deterministic function of ``(seed, component name, time)``, not of when
the process started: two venues started minutes apart with the same seed show the same
true price at the same wall-clock time, and candle history can be generated backwards.
This is done on three grids, each refining the coarser one with an exact OU bridge:

* hours since ``EPOCH_MS`` (2024-01-01): a plain AR(1) recursion whose shocks come from a
  generator keyed by (seed, component, block of 8784 hours);
* minutes: per day, 60 steps between consecutive hour points, conditioned on both ends;
* 200 ms steps: per hour, 300 steps between consecutive minute points.

Conditioning uses the Gaussian identity x_j = y_j + w_j (x_end - y_n) with
``w_j = a^(n-j) (1 - a^(2j)) / (1 - a^(2n))``, which is exact for OU processes: a finer
grid has the same law as simulating at that resolution from the start, and it agrees
with the coarser grid at every coarse point.
"""

from __future__ import annotations

import math
import zlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from itertools import accumulate

import numpy as np

from tooling.venue_sim.symbols import FACTOR_VOL, STABLES, SymbolSpec, asset_params

EPOCH_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z, a Monday: the model's time origin
FINE_MS = 200
MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
MS_PER_YEAR = 365.25 * DAY_MS
FINE_PER_MINUTE = MINUTE_MS // FINE_MS  # 300
FINE_PER_HOUR = HOUR_MS // FINE_MS  # 18000
MINUTES_PER_DAY = 1440
HOUR_BLOCK = 8784  # hours of shocks drawn per generator (one leap year)

LEVEL_MS = {"fine": FINE_MS, "minute": MINUTE_MS, "hour": HOUR_MS}
_LEVEL_CODE = {"hour": 0, "minute": 1, "fine": 2}

FACTOR_HALF_LIFE_MS = 90 * DAY_MS
IDIO_HALF_LIFE_MS = 45 * DAY_MS
NOISE_HALF_LIFE_MS = 8_000.0  # venue noise: cross-venue spreads close within seconds


def _rng(seed: int, crc: int, level: str, index: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(
        [seed, crc, _LEVEL_CODE[level], index])))


class _Lru(OrderedDict[int, np.ndarray]):
    """A small least-recently-used cache of generated blocks."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def put(self, key: int, value: np.ndarray) -> None:
        self[key] = value
        self.move_to_end(key)
        if len(self) > self.size:
            self.popitem(last=False)


def _bridge(x0: np.ndarray, x1: np.ndarray, shocks: np.ndarray, a: float, w: np.ndarray
            ) -> np.ndarray:
    """Rows of OU paths from ``x0`` to ``x1``: shape (n, k+1) for shocks of shape (n, k).

    ``shocks`` are already scaled by the step's noise scale.
    """
    n, k = shocks.shape
    y = np.empty((n, k + 1))
    y[:, 0] = x0
    for j in range(k):  # k is 60 or 300; each step is vectorised over the n rows
        np.multiply(y[:, j], a, out=y[:, j + 1])
        y[:, j + 1] += shocks[:, j]
    y += (x1 - y[:, -1])[:, None] * w[None, :]
    y[:, -1] = x1  # exactly the coarse point, no rounding drift
    return y


class OUComponent:
    """One Ornstein-Uhlenbeck process x(t), x(EPOCH) = 0, evaluated on three grids.

    ``sigma_annual`` is the instantaneous volatility (what returns over minutes to hours
    measure); the stationary std is ``sigma / sqrt(2 theta)``.
    """

    def __init__(self, seed: int, key: str, sigma_annual: float, half_life_ms: float,
                 *, minute_cache: int = 48, fine_cache: int = 6) -> None:
        if sigma_annual < 0 or half_life_ms <= 0:
            raise ValueError("sigma must be >= 0 and the half-life > 0")
        self.seed = seed
        self.key = key
        self.crc = zlib.crc32(key.encode())
        self.theta = math.log(2.0) / half_life_ms  # per ms
        self.sigma = sigma_annual / math.sqrt(MS_PER_YEAR)  # per sqrt(ms)
        self._hours = np.zeros(1)
        self._minute_cache = _Lru(minute_cache)
        self._fine_cache = _Lru(fine_cache)
        self._a_hour, self._s_hour = self._step(HOUR_MS)
        self._a_min, self._s_min = self._step(MINUTE_MS)
        self._a_fine, self._s_fine = self._step(FINE_MS)
        self._w_min = self._weights(MINUTE_MS, 60)
        self._w_fine = self._weights(FINE_MS, FINE_PER_MINUTE)

    def _step(self, dt_ms: float) -> tuple[float, float]:
        a = math.exp(-self.theta * dt_ms)
        s = self.sigma * math.sqrt(-math.expm1(-2.0 * self.theta * dt_ms) / (2.0 * self.theta))
        return a, s

    def _weights(self, dt_ms: float, k: int) -> np.ndarray:
        j = np.arange(k + 1, dtype=float)
        td = self.theta * dt_ms
        num = np.exp(-td * (k - j)) * -np.expm1(-2.0 * td * j)
        return num / -math.expm1(-2.0 * td * k)

    @property
    def stationary_std(self) -> float:
        return self.sigma / math.sqrt(2.0 * self.theta)

    # --- hour grid: a recursion from the epoch, extended as time passes ---------------------

    def hour_points(self, h0: int, h1: int) -> np.ndarray:
        """x at hours ``h0..h1`` (inclusive) since the epoch; hours before it are 0."""
        if h1 < 0:
            return np.zeros(h1 - h0 + 1)
        self._extend_hours(h1)
        if h0 >= 0:
            return self._hours[h0:h1 + 1]
        return np.concatenate([np.zeros(-h0), self._hours[:h1 + 1]])

    def _extend_hours(self, h1: int) -> None:
        have = len(self._hours)
        if h1 < have:
            return
        shocks = []
        for block in range((have - 1) // HOUR_BLOCK, (h1 - 1) // HOUR_BLOCK + 1):
            draws = _rng(self.seed, self.crc, "hour", block).standard_normal(HOUR_BLOCK)
            lo = max(have - 1, block * HOUR_BLOCK) - block * HOUR_BLOCK
            hi = min(h1, (block + 1) * HOUR_BLOCK) - block * HOUR_BLOCK
            shocks.append(draws[lo:hi])
        scaled = (np.concatenate(shocks) * self._s_hour).tolist()
        a = self._a_hour
        # ~20k steps since the epoch: a C-level accumulate is fast enough
        path = list(accumulate(scaled, lambda x, e: a * x + e, initial=float(self._hours[-1])))
        self._hours = np.concatenate([self._hours, np.asarray(path[1:])])

    # --- minute grid: one day per block --------------------------------------------------
    # Blocks missing from the cache are made together, so a long candle request is one
    # vectorised pass; each block still draws from its own generator, so the values never
    # depend on which blocks were made together.

    def _minute_days(self, days: list[int]) -> dict[int, np.ndarray]:
        hours = [self.hour_points(d * 24, d * 24 + 24) for d in days]
        shocks = np.concatenate([_rng(self.seed, self.crc, "minute", d).standard_normal((24, 60))
                                 for d in days]) * self._s_min
        y = _bridge(np.concatenate([h[:-1] for h in hours]), np.concatenate([h[1:] for h in hours]),
                    shocks, self._a_min, self._w_min)
        return {d: np.concatenate([y[n * 24:(n + 1) * 24, :60].ravel(), y[(n + 1) * 24 - 1, -1:]])
                for n, d in enumerate(days)}  # 1441 points a day

    def minute_points(self, m0: int, m1: int) -> np.ndarray:
        """x at minutes ``m0..m1`` (inclusive) since the epoch."""
        blocks = self._blocks(self._minute_cache, m0, m1, MINUTES_PER_DAY, self._minute_days)
        return self._gather(m0, m1, MINUTES_PER_DAY, blocks)

    # --- 200 ms grid: one hour per block -------------------------------------------------

    def _fine_hours(self, hours: list[int]) -> dict[int, np.ndarray]:
        minutes = [self.minute_points(h * 60, h * 60 + 60) for h in hours]
        shocks = np.concatenate([_rng(self.seed, self.crc, "fine", h).standard_normal(
            (60, FINE_PER_MINUTE)) for h in hours]) * self._s_fine
        y = _bridge(np.concatenate([m[:-1] for m in minutes]),
                    np.concatenate([m[1:] for m in minutes]), shocks, self._a_fine, self._w_fine)
        return {h: np.concatenate([y[n * 60:(n + 1) * 60, :FINE_PER_MINUTE].ravel(),
                                   y[(n + 1) * 60 - 1, -1:]])
                for n, h in enumerate(hours)}  # 18001 points an hour

    def fine_points(self, f0: int, f1: int) -> np.ndarray:
        """x at 200 ms steps ``f0..f1`` (inclusive) since the epoch."""
        blocks = self._blocks(self._fine_cache, f0, f1, FINE_PER_HOUR, self._fine_hours)
        return self._gather(f0, f1, FINE_PER_HOUR, blocks)

    def fine_at(self, i: int) -> float:
        if i < 0:
            return 0.0
        hour = i // FINE_PER_HOUR
        block = self._fine_cache.get(hour)
        if block is None:
            block = self._blocks(self._fine_cache, i, i, FINE_PER_HOUR, self._fine_hours)[hour]
        return float(block[i % FINE_PER_HOUR])

    @staticmethod
    def _blocks(cache: _Lru, i0: int, i1: int, size: int,
                make: Callable[[list[int]], dict[int, np.ndarray]]) -> dict[int, np.ndarray]:
        """The blocks covering points ``i0..i1``: cached ones, the missing ones made at once."""
        out: dict[int, np.ndarray] = {}
        if i1 < 0:
            return out
        missing = []
        for b in range(max(i0, 0) // size, i1 // size + 1):
            block = cache.get(b)
            if block is None:
                missing.append(b)
            else:
                cache.move_to_end(b)
                out[b] = block
        if missing:
            made = make(missing)
            out.update(made)
            for b in missing:
                cache.put(b, made[b])
        return out

    def points(self, level: str, i0: int, i1: int) -> np.ndarray:
        if level == "hour":
            return self.hour_points(i0, i1)
        if level == "minute":
            return self.minute_points(i0, i1)
        return self.fine_points(i0, i1)

    @staticmethod
    def _gather(i0: int, i1: int, size: int, blocks: dict[int, np.ndarray]) -> np.ndarray:
        parts = []
        if i0 < 0:
            parts.append(np.zeros(min(i1, -1) - i0 + 1))
            i0 = 0
        i = i0
        while i <= i1:
            b = i // size
            lo = i - b * size
            hi = min(i1 - b * size, size - 1)
            parts.append(blocks[b][lo:hi + 1])
            i = (b + 1) * size
        return parts[0] if len(parts) == 1 else np.concatenate(parts)


def sigma_for_std(std: float, half_life_ms: float) -> float:
    """The annual sigma of an OU process whose stationary std is ``std``."""
    theta = math.log(2.0) / half_life_ms
    return std * math.sqrt(2.0 * theta) * math.sqrt(MS_PER_YEAR)


class TrueModel:
    """The seeded "true" USD prices of every asset: factor plus idiosyncratic parts."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.factor = OUComponent(seed, "factor", FACTOR_VOL, FACTOR_HALF_LIFE_MS)
        self._idio: dict[str, OUComponent] = {}

    def idio(self, asset: str) -> OUComponent:
        comp = self._idio.get(asset)
        if comp is None:
            comp = OUComponent(self.seed, f"idio:{asset}", asset_params(asset).idio_vol,
                               IDIO_HALF_LIFE_MS)
            self._idio[asset] = comp
        return comp

    def log_usd(self, asset: str, level: str, i0: int, i1: int) -> np.ndarray:
        """log USD price of ``asset`` at grid points ``i0..i1``."""
        p = asset_params(asset)
        if asset in STABLES:
            return np.full(i1 - i0 + 1, math.log(p.price))
        return (math.log(p.price) + p.beta * self.factor.points(level, i0, i1)
                + self.idio(asset).points(level, i0, i1))

    def log_usd_fine_at(self, asset: str, i: int) -> float:
        p = asset_params(asset)
        if asset in STABLES:
            return math.log(p.price)
        return math.log(p.price) + p.beta * self.factor.fine_at(i) + self.idio(asset).fine_at(i)


@dataclass(frozen=True)
class VenueEffects:
    """How one venue distorts the true prices."""

    name: str
    noise_bps: float = 0.0
    offset_bps: float = 0.0
    lag_ms: int = 0


class VenueModel:
    """A venue's mid prices: the true price, late, offset and noisy."""

    def __init__(self, truth: TrueModel, effects: VenueEffects, specs: list[SymbolSpec]) -> None:
        self.truth = truth
        self.effects = effects
        self.specs = {s.id: s for s in specs}
        self._log_offset = math.log1p(effects.offset_bps / 1e4)
        self._noise: dict[str, OUComponent] = {}
        if effects.noise_bps > 0:
            for spec in specs:
                # keyed by venue name: same seed, different venue -> independent noise
                self._noise[spec.id] = OUComponent(
                    truth.seed, f"noise:{effects.name}:{spec.id}",
                    sigma_for_std(effects.noise_bps / 1e4, NOISE_HALF_LIFE_MS),
                    NOISE_HALF_LIFE_MS, minute_cache=8, fine_cache=3)

    def _lag_steps(self, level: str) -> int:
        return round(self.effects.lag_ms / LEVEL_MS[level])

    def log_mid(self, spec: SymbolSpec, level: str, i0: int, i1: int) -> np.ndarray:
        """log mid (in the quote asset) at grid points ``i0..i1`` of ``level``."""
        lag = self._lag_steps(level)
        x = (self.truth.log_usd(spec.base, level, i0 - lag, i1 - lag)
             - self.truth.log_usd(spec.quote, level, i0 - lag, i1 - lag) + self._log_offset)
        noise = self._noise.get(spec.id)
        if noise is not None:
            x = x + noise.points(level, i0, i1)
        return x

    def mid_at(self, spec: SymbolSpec, t_ms: int) -> float:
        """The venue's mid at wall time ``t_ms`` (on the 200 ms grid)."""
        i = (t_ms - EPOCH_MS) // FINE_MS
        j = i - self._lag_steps("fine")
        x = (self.truth.log_usd_fine_at(spec.base, j) - self.truth.log_usd_fine_at(spec.quote, j)
             + self._log_offset)
        noise = self._noise.get(spec.id)
        if noise is not None:
            x += noise.fine_at(i)
        return math.exp(x)

    def true_mid_at(self, spec: SymbolSpec, t_ms: int) -> float:
        """The underlying price, without this venue's lag, offset and noise."""
        i = (t_ms - EPOCH_MS) // FINE_MS
        return math.exp(self.truth.log_usd_fine_at(spec.base, i)
                        - self.truth.log_usd_fine_at(spec.quote, i))
