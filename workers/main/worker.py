from __future__ import annotations

import asyncio

from aiohttp import web

from shared.gateway import open_gateway
from shared.health import build_app
from shared.lifecycle import WorkerContext
from shared.runtime import consumer, open_services
from workers.main.api import API_GROUP, RECENT_TOPICS, Api, add_routes
from workers.main.ingest import Ingest
from workers.main.settings import MainSettings
from workers.rebalancer.loop import run_rebalancing


async def run(ctx: WorkerContext, settings: MainSettings) -> None:
    """Serve the API, ingest market data and contend for the rebalance lock."""
    services = await open_services(ctx, settings)
    gateway = await ctx.stack.enter_async_context(open_gateway(settings.venues))

    # the API serves the same /health and /ready as the metrics port, plus /api/ and /
    app = build_app(ctx.health, serve_metrics=False)
    api = Api(settings, services.redis, gateway, ctx.health)
    add_routes(app, api)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    ctx.stack.push_async_callback(runner.cleanup)
    await web.TCPSite(runner, settings.api.host, settings.api.port, reuse_address=True).start()
    ctx.log.info("api_listening", port=settings.api.port, venues=gateway.venues)

    # the recent feeds behind /api/opportunities, /executions, /rebalance/last (one group for
    # every replica: each message is kept once, in Redis, for all of them)
    feed = consumer(services, settings, list(RECENT_TOPICS), API_GROUP, api.remember)
    tasks = [asyncio.create_task(feed.run(), name="api-feed")]
    if settings.ingest.enabled and gateway.venues:
        ingest = Ingest(settings.ingest, gateway, services, settings.venues.symbol_list,
                        prefix=settings.redis.key_prefix)
        tasks.append(asyncio.create_task(ingest.run(ctx.stopping), name="ingest"))
    if settings.rebalance.enabled:
        await run_rebalancing(ctx, settings, services, gateway)
    else:
        ctx.health.state = "running"
        await ctx.stopping.wait()
    feed.stop()
    await asyncio.gather(*tasks)
