from __future__ import annotations

from shared.gateway import open_gateway
from shared.lifecycle import WorkerContext
from shared.runtime import open_services
from workers.rebalancer.loop import run_rebalancing
from workers.rebalancer.settings import RebalancerSettings


async def run(ctx: WorkerContext, settings: RebalancerSettings) -> None:
    """The rebalance loop, leader-elected with cryptospreadedge-main's integrated one."""
    services = await open_services(ctx, settings)
    gateway = await ctx.stack.enter_async_context(open_gateway(settings.venues))
    if settings.rebalance.enabled:
        await run_rebalancing(ctx, settings, services, gateway)
    else:
        ctx.health.state = "running"
        await ctx.stopping.wait()
