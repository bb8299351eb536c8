"""Opening the shared clients of a worker and consuming until asked to stop."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from shared import coordination, metrics
from shared.bus import Bus, ConsumerLoop, Handler
from shared.lifecycle import WorkerContext
from shared.settings import CommonSettings
from shared.timeseries import TimeSeriesWriter

PROBE_INTERVAL_S = 5.0
DEPENDENCY_LABEL = {"store": "influxdb"}  # the alert rules' name for the time-series store


@dataclass
class Services:
    bus: Bus
    redis: aioredis.Redis
    tsdb: TimeSeriesWriter


async def open_services(ctx: WorkerContext, settings: CommonSettings) -> Services:
    """Connect Kafka, Redis and the store on ``ctx.stack``; register readiness checks."""
    bus = await ctx.stack.enter_async_context(Bus(settings.kafka))
    redis = coordination.connect(settings.redis)
    ctx.stack.push_async_callback(redis.aclose)
    tsdb = await ctx.stack.enter_async_context(TimeSeriesWriter(settings.store))

    async def kafka_ok() -> bool:
        return not await bus.topics_missing()

    async def redis_ok() -> bool:
        return bool(await redis.ping())

    async def store_ok() -> bool:
        return tsdb.failures == 0 or await tsdb.flush()

    ctx.health.add_check("kafka", kafka_ok)
    ctx.health.add_check("redis", redis_ok)
    ctx.health.add_check("store", store_ok)
    ctx.background(_probe_dependencies(ctx), "probe")
    return Services(bus, redis, tsdb)


async def _probe_dependencies(ctx: WorkerContext, every_s: float = PROBE_INTERVAL_S) -> None:
    """``cse_dependency_up{dependency}`` for the alerts: the readiness checks, every few seconds."""
    while not ctx.stopping.is_set():
        for name, ok in (await ctx.health.ready()).items():
            metrics.DEPENDENCY_UP.labels(DEPENDENCY_LABEL.get(name, name)).set(1 if ok else 0)
        if await ctx.sleep(every_s):
            return


async def consume_until_stopped(ctx: WorkerContext, loops: list[ConsumerLoop]) -> None:
    """Run consumer loops; when ``ctx.stopping`` is set, let each commit and leave."""
    tasks = [asyncio.create_task(loop.run(), name=f"consume-{loop.group_id}") for loop in loops]
    ctx.health.state = "running"
    stop_wait = asyncio.create_task(ctx.stopping.wait())
    await asyncio.wait([*tasks, stop_wait], return_when=asyncio.FIRST_COMPLETED)
    for loop in loops:
        loop.stop()
    stop_wait.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
            raise result


def consumer(services: Services, settings: CommonSettings, topics: list[str], group: str,
             handler: Handler, message_types: dict[str, type[Any]] | None = None,
             auto_offset_reset: str = "earliest") -> ConsumerLoop:
    """A consumer loop of the worker's bus; ``message_types`` reads a topic as another type;
    ``auto_offset_reset="latest"``: a new group starts at the end instead of the start."""
    return ConsumerLoop(services.bus, settings.kafka, topics, group, handler, message_types=message_types,
                        auto_offset_reset=auto_offset_reset)

