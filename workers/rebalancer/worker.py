from __future__ import annotations

from shared.lifecycle import WorkerContext
from shared.runtime import elect_until_stopped, open_services
from workers.rebalancer.settings import RebalancerSettings


async def run(ctx: WorkerContext, settings: RebalancerSettings) -> None:
    """Contend for the rebalance leader lock shared with cryptospreadedge-main."""
    services = await open_services(ctx, settings)
    await elect_until_stopped(ctx, services, settings)
