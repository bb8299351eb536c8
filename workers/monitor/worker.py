from __future__ import annotations

from shared.lifecycle import WorkerContext
from shared.messages import TOPICS
from shared.runtime import consume_until_stopped, consumer, count_only, open_services
from workers.monitor.settings import MonitorSettings


async def run(ctx: WorkerContext, settings: MonitorSettings) -> None:
    """Follow every topic in the monitor's own consumer group."""
    services = await open_services(ctx, settings)
    loop = consumer(services, settings, list(TOPICS), settings.group_id, count_only)
    await consume_until_stopped(ctx, [loop])
