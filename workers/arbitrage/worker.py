from __future__ import annotations

from shared.lifecycle import WorkerContext
from shared.messages import MD_ORDERBOOKS
from shared.runtime import consume_until_stopped, consumer, count_only, open_services
from workers.arbitrage.settings import ArbitrageSettings


async def run(ctx: WorkerContext, settings: ArbitrageSettings) -> None:
    """Join the arbitrage consumer group over the order-book topic."""
    services = await open_services(ctx, settings)
    loop = consumer(services, settings, [MD_ORDERBOOKS], settings.group_id, count_only)
    await consume_until_stopped(ctx, [loop])
