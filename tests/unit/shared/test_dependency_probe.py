"""cse_dependency_up follows the worker's readiness checks, under the alert rules' names."""

from __future__ import annotations

import asyncio
import contextlib

from shared import metrics
from shared.health import Health
from shared.lifecycle import WorkerContext
from shared.runtime import _probe_dependencies
from shared.settings import ObservabilitySettings
from tests.conftest import eventually
from tests.metric_values import value


async def test_each_readiness_check_becomes_a_dependency_gauge() -> None:
    health = Health("probe-test")
    state = {"redis": True}

    async def redis_ok() -> bool:
        return state["redis"]

    async def store_ok() -> bool:
        raise OSError("connection refused")

    health.add_check("redis", redis_ok)
    health.add_check("store", store_ok)
    async with contextlib.AsyncExitStack() as stack:
        ctx = WorkerContext("probe-test", ObservabilitySettings(), asyncio.Event(), health, stack, 0)
        for name in ("redis", "influxdb"):  # neither up nor down until a probe says (one pass sets both)
            metrics.DEPENDENCY_UP.labels(name).set(-1)
        task = asyncio.create_task(_probe_dependencies(ctx, every_s=0.05))
        await eventually(lambda: value(metrics.DEPENDENCY_UP, "redis") != -1, 2, "a first probe")
        assert value(metrics.DEPENDENCY_UP, "redis") == 1
        assert value(metrics.DEPENDENCY_UP, "influxdb") == 0, "store is named influxdb"
        state["redis"] = False
        await eventually(lambda: value(metrics.DEPENDENCY_UP, "redis") == 0, 2, "redis down on a later probe")
        ctx.stopping.set()
        await asyncio.wait_for(task, 1)
