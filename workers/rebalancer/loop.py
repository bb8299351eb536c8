"""The leader-elected rebalance loop shared by portfolio-rebalancer and cryptospreadedge-main.

Every process that runs it contends for the Redis lock ``rebalance`` (TTL + fencing
token); only the holder runs cycles. Before a cycle the holder records its token as the
highest used (:meth:`~shared.coordination.LeaderLock.check_fence`), so a paused leader that
wakes up after losing the lock is refused instead of rebalancing twice. A failed cycle
multiplies the wait by ``CSE_REBALANCE_BACKOFF_MULT`` up to ``CSE_REBALANCE_BACKOFF_MAX``
(``portfolio_rebalance_backoff_active`` is 1 meanwhile); a good one resets it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from redis.exceptions import RedisError

from shared import metrics
from shared.backoff import next_delay
from shared.coordination import LeaderElector, LeaderLock
from shared.errors import CseError, StaleLeader
from shared.gateway import Gateway
from shared.halt import Halt
from shared.lifecycle import WorkerContext
from shared.logs import get_logger
from shared.rediskeys import DEFAULT_PREFIX, RedisKeys
from workers.rebalancer import engine as eng
from workers.rebalancer import metrics as rebalance_metrics
from workers.rebalancer.settings import RebalanceSettings

log = get_logger("rebalance.loop")

LOCK = "rebalance"


class RebalanceLoop:
    def __init__(self, settings: RebalanceSettings, engine: eng.RebalanceEngine, redis: Any, *,
                 prefix: str = DEFAULT_PREFIX, ttl_s: float = 15.0, owner: str | None = None):
        self.settings = settings
        self.engine = engine
        self.lock = LeaderLock(redis, LOCK, ttl_s=ttl_s, prefix=prefix, owner=owner)
        self.elector = LeaderElector(self.lock)
        self.redis = redis
        self.trigger_key = RedisKeys(prefix).rebalance_trigger()
        self.halt = engine.halt or Halt(redis, prefix)  # checked before each cycle
        self.failures = 0
        self.cycles = 0

    def delay(self) -> float:
        s = self.settings
        return next_delay(s.interval, self.failures, s.backoff_mult, s.backoff_max, s.backoff_enabled)

    async def run_once(self) -> bool:
        """One cycle if this process leads; True if it ran one successfully."""
        token = self.lock.token
        if not self.elector.is_leader.is_set() or token is None:
            return False
        if not self.engine.gateway.venues:
            log.warning("rebalance_idle_no_venues", hint="set CSE_VENUES")
            return False
        try:
            halted = await self.halt.state()
            if halted["halted"]:
                log.warning("rebalance_skipped_halted", reason=halted.get("reason", ""))
                return False
            await self.lock.check_fence(token)
            await self.engine.cycle(f"{int(time.time())}-{token}", token)
        except StaleLeader:
            log.warning("rebalance_refused_stale_leader", fence=token)
            return False
        except CseError as exc:  # allocation, plan, exchange, broker, store: back off and retry
            self.failures += 1
            rebalance_metrics.ERRORS.inc()
            rebalance_metrics.BACKOFF_ACTIVE.set(1 if self.settings.backoff_enabled else 0)
            log.warning("rebalance_cycle_failed", error=str(exc)[:300], failures=self.failures,
                        next_in_s=round(self.delay(), 1))
            return False
        self.failures = 0
        self.cycles += 1
        rebalance_metrics.BACKOFF_ACTIVE.set(0)
        return True

    async def _wait(self, stopping: asyncio.Event, seconds: float) -> None:
        """Sleep ``seconds``, or less if stopping or, as leader, if a cycle was requested."""
        deadline = time.monotonic() + seconds
        while not stopping.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            try:
                await asyncio.wait_for(stopping.wait(), min(left, 1.0))
            except TimeoutError:
                pass
            if self.elector.is_leader.is_set():
                try:
                    requested = await self.redis.getdel(self.trigger_key)
                except RedisError:
                    requested = None
                if requested is not None:
                    log.info("rebalance_requested", by=requested.decode(errors="replace"))
                    return

    async def run(self, stopping: asyncio.Event) -> None:
        elector = asyncio.create_task(self.elector.run(), name="rebalance-elector")
        metrics.LEADER.labels(LOCK).set(0)
        try:
            while not stopping.is_set():
                with_leader = self.elector.is_leader.is_set()
                metrics.LEADER.labels(LOCK).set(1 if with_leader else 0)
                await self.run_once()
                wait = self.delay() if with_leader else self.lock.ttl_ms / 1000 / 3
                await self._wait(stopping, wait)
        finally:
            self.elector.stop()
            await elector
            metrics.LEADER.labels(LOCK).set(0)


async def run_rebalancing(ctx: WorkerContext, settings: Any, services: Any, gateway: Gateway) -> None:
    """Run the loop until the worker stops (both services call this)."""
    engine = eng.RebalanceEngine(settings.rebalance, gateway, settings.venues.symbol_list,
                                 bus=services.bus, redis=services.redis, tsdb=services.tsdb,
                                 prefix=settings.redis.key_prefix,
                                 halt=Halt(services.redis, settings.redis.key_prefix))
    loop = RebalanceLoop(settings.rebalance, engine, services.redis, prefix=settings.redis.key_prefix,
                         ttl_s=settings.rebalance.lock_ttl)
    ctx.health.state = "running"
    await loop.run(ctx.stopping)
