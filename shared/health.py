"""The metrics and health HTTP endpoint of every worker.

One aiohttp server per process serves ``/metrics`` (Prometheus text format),
``/health`` (liveness: the worker loop beat recently) and ``/ready`` (readiness: the
checks the worker registered, e.g. Kafka and Redis reachable). It runs on the worker's
event loop, so a blocked loop shows up as a failed health check, as it should.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from shared.metrics import WORKER_HEARTBEAT

ReadyCheck = Callable[[], Awaitable[bool]]


class Health:
    """Heartbeat and readiness checks of one worker."""

    def __init__(self, worker: str, heartbeat_timeout_s: float = 30.0):
        self.worker = worker
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.last_beat = time.monotonic()
        self.checks: dict[str, ReadyCheck] = {}
        self.state = "starting"

    def beat(self) -> None:
        self.last_beat = time.monotonic()
        WORKER_HEARTBEAT.labels(self.worker).set(time.time())

    def add_check(self, name: str, check: ReadyCheck) -> None:
        self.checks[name] = check

    def alive(self) -> bool:
        return time.monotonic() - self.last_beat < self.heartbeat_timeout_s

    async def ready(self) -> dict[str, bool]:
        results: dict[str, bool] = {}
        for name, check in self.checks.items():
            try:
                results[name] = bool(await asyncio.wait_for(check(), 3))
            except Exception:
                results[name] = False
        return results


async def _metrics(_request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


def build_app(health: Health, serve_metrics: bool = True) -> web.Application:
    async def healthz(_request: web.Request) -> web.Response:
        age = time.monotonic() - health.last_beat
        ok = health.alive() and health.state in ("starting", "running")
        body = {"worker": health.worker, "state": health.state, "heartbeat_age_s": round(age, 3)}
        return web.json_response({"status": "ok" if ok else "fail", **body}, status=200 if ok else 503)

    async def readyz(_request: web.Request) -> web.Response:
        checks = await health.ready()
        ok = all(checks.values()) and health.state == "running"
        return web.json_response(
            {"status": "ok" if ok else "fail", "state": health.state, "checks": checks},
            status=200 if ok else 503,
        )

    app = web.Application()
    if serve_metrics:
        app.router.add_get("/metrics", _metrics)
    app.router.add_get("/health", healthz)
    app.router.add_get("/ready", readyz)
    return app


class MetricsServer:
    """``/metrics``, ``/health`` and ``/ready`` on ``host:port`` (port 0 picks a free one).

    With ``serve_metrics`` off only the health routes answer (the container healthcheck
    still needs them)."""

    def __init__(self, health: Health, host: str, port: int, serve_metrics: bool = True):
        self.health = health
        self.host = host
        self.port = port
        self.serve_metrics = serve_metrics
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> MetricsServer:
        self._runner = web.AppRunner(build_app(self.health, self.serve_metrics), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        addresses = self._runner.addresses  # the bound (host, port, ...) of the one site: port 0 resolved
        if addresses:
            self.port = addresses[0][1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
