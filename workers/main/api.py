"""The HTTP API of cryptospreadedge-main (aiohttp), under ``/api/``, plus the status page at ``/``.

Reads:
    ``GET /api/status``         the portfolio and pipeline at a glance (what the status page shows)
    ``GET /api/portfolio``      value, allocation by symbol and exchange, PnL, drawdown (the monitor's)
    ``GET /api/opportunities``  recent arbitrage opportunities (``?limit=``)
    ``GET /api/executions``     recent orders and fills (``?limit=&source=``)
    ``GET /api/rebalance/plan`` the plan a cycle would make now (computed on demand, dry run)
    ``GET /api/rebalance/last`` the last rebalance plans and their outcome
    ``GET /api/halt``           the trading halt
    ``GET /api/audit``          the recent audit trail
    ``GET /api/openapi.json``   this API, described
Writes (bearer token, audited):
    ``POST /api/rebalance``     ask the rebalance leader for a cycle now
    ``PUT /api/halt``           halt or resume trading on every worker at once

Every error is JSON ``{"error": ..., "status": ...}`` with a 4xx for a bad request.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import re
import time
from typing import Any

import msgspec
from aiohttp import web
from aiokafka import ConsumerRecord
from redis.exceptions import RedisError

from shared import names
from shared.audit import AuditTrail
from shared.coordination import LeaderLock
from shared.errors import AllocationError, CseError, PlanError, TransientError
from shared.gateway import Gateway
from shared.halt import Halt
from shared.logs import get_logger
from shared.messages import ARB_OPPORTUNITIES, ORDERS_EXECUTIONS, PORTFOLIO_REBALANCE, now_ms
from shared.rediskeys import RedisKeys
from workers.main.openapi import spec
from workers.main.settings import MainSettings
from workers.main.status_page import PAGE
from workers.rebalancer import engine as eng
from workers.rebalancer.loop import LOCK

log = get_logger("api")

RECENT_TOPICS = (ARB_OPPORTUNITIES, ORDERS_EXECUTIONS, PORTFOLIO_REBALANCE)
API_GROUP = "cryptospreadedge-api"
SOURCES = ("arbitrage", "rebalancer", "hedge")
MAX_LIMIT = 500
MAX_BODY = 16 * 1024
ACTOR_RE = re.compile(r"^[A-Za-z0-9_.@ -]{1,64}$")

KEY: web.AppKey[Api] = web.AppKey("api")


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class Api:
    def __init__(self, settings: MainSettings, redis: Any, gateway: Gateway, health: Any):
        self.settings = settings
        self.redis = redis
        self.gateway = gateway
        self.health = health
        prefix = settings.redis.key_prefix
        self.prefix = prefix
        self.keys = RedisKeys(prefix)
        self.halt = Halt(redis, prefix)
        self.trail = AuditTrail(redis, prefix)
        self.lock = LeaderLock(redis, LOCK, prefix=prefix)
        self._preview: tuple[float, dict[str, Any]] | None = None
        self._preview_lock = asyncio.Lock()

    # -- recent feeds (filled by the API's consumer group) -----------------------------------
    def recent_key(self, topic: str) -> str:
        return self.keys.recent(topic)

    async def remember(self, message: object, record: ConsumerRecord) -> None:
        """Consumer handler: keep the newest ``recent_size`` messages of each feed in Redis."""
        key = self.recent_key(record.topic)
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.lpush(key, msgspec.json.encode(message))
                pipe.ltrim(key, 0, self.settings.api.recent_size - 1)
                await pipe.execute()
        except RedisError as exc:
            raise TransientError(f"redis unavailable: {exc}") from exc

    async def recent(self, topic: str, limit: int) -> list[dict[str, Any]]:
        rows = await self.redis.lrange(self.recent_key(topic), 0, limit - 1)
        return [json.loads(r) for r in rows]

    async def preview(self) -> dict[str, Any]:
        """The plan a cycle would make now (dry run), reused for ``CSE_API_PREVIEW_CACHE_S``."""
        async with self._preview_lock:  # one preview at a time
            cached = self._preview
            if cached and time.monotonic() - cached[0] < self.settings.api.preview_cache_s:
                return {**cached[1], "cached": True}
            engine = eng.RebalanceEngine(self.settings.rebalance, self.gateway,
                                         self.settings.venues.symbol_list)
            try:
                message, plan = await engine.cycle(f"preview-{int(time.time())}", preview=True)
            except (AllocationError, PlanError) as exc:  # the portfolio's data admit no plan
                raise ApiError(422, f"could not compute the plan: {str(exc)[:300]}") from exc
            except CseError as exc:  # a venue, the broker or the store failed
                raise ApiError(502, f"could not compute the plan: {str(exc)[:300]}") from exc
            doc = {**msgspec.to_builtins(message), "total_value": plan.total_value,
                   "est_cost": plan.est_cost, "skipped_min_notional": plan.skipped_min_notional,
                   "skipped_max_orders": plan.skipped_max_orders, "within_band": plan.within_band}
            self._preview = (time.monotonic(), doc)
            return {**doc, "cached": False}

    # -- helpers ------------------------------------------------------------------------------
    def actor(self, request: web.Request) -> str:
        """Who is calling: ``X-Actor`` if given (validated), else the token holder, with the address."""
        name = request.headers.get("X-Actor", "api-token")
        if not ACTOR_RE.match(name):
            raise ApiError(400, "X-Actor must be 1-64 letters, digits, spaces or _.@-")
        return f"{name}@{self.client_address(request)}"

    def client_address(self, request: web.Request) -> str:
        """The caller's address: nginx's ``X-Real-IP`` when ``CSE_API_TRUST_PROXY=1``."""
        if self.settings.api.trust_proxy:
            forwarded = request.headers.get("X-Real-IP", "").strip()
            if forwarded and len(forwarded) <= 64:
                return forwarded
        return request.remote or "-"

    async def guard(self, request: web.Request, action: str) -> str:
        """Authorize a mutating call; a refused one is audited too. Returns the actor."""
        try:
            self.authorize(request)
            return self.actor(request)
        except ApiError as exc:
            name = request.headers.get("X-Actor", "anonymous")
            who = f"{name if ACTOR_RE.match(name) else 'invalid-actor'}@{self.client_address(request)}"
            await self.trail.record(action, actor=who, outcome=f"denied ({exc.status})", error=exc.message)
            raise

    def authorize(self, request: web.Request) -> None:
        token = self.settings.api.token.get_secret_value()
        if not token:
            raise ApiError(403, "mutating endpoints are disabled: no API token is configured "
                                "(CSE_API_TOKEN or the secret file /run/secrets/CSE_API_TOKEN)")
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given:
            raise ApiError(401, "missing bearer token: send 'Authorization: Bearer <token>'")
        if not hmac.compare_digest(given.strip().encode(), token.encode()):
            raise ApiError(401, "invalid bearer token")

    async def json_body(self, request: web.Request, *, required: bool) -> dict[str, Any]:
        if not request.can_read_body:
            if required:
                raise ApiError(400, "a JSON object body is required")
            return {}
        if request.content_type != "application/json":
            raise ApiError(415, f"content type must be application/json, got {request.content_type!r}")
        if (request.content_length or 0) > MAX_BODY:
            raise ApiError(413, f"body larger than {MAX_BODY} bytes")
        raw = await request.content.read(MAX_BODY + 1)
        if len(raw) > MAX_BODY:
            raise ApiError(413, f"body larger than {MAX_BODY} bytes")
        try:
            body = json.loads(raw or b"null")
        except ValueError as exc:
            raise ApiError(400, f"body is not valid JSON: {exc}") from exc
        if body is None and not required:
            return {}
        if not isinstance(body, dict):
            raise ApiError(422, "body must be a JSON object")
        return body


def _limit(request: web.Request, default: int = 50) -> int:
    raw = request.query.get("limit", str(default))
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"limit must be an integer from 1 to {MAX_LIMIT}, got {raw!r}") from None
    if not 1 <= value <= MAX_LIMIT:
        raise ApiError(400, f"limit must be an integer from 1 to {MAX_LIMIT}, got {value}")
    return value


def _only(request: web.Request, allowed: set[str]) -> None:
    unknown = sorted(set(request.query) - allowed)
    if unknown:
        raise ApiError(400, f"unknown query parameter(s): {', '.join(unknown)}; allowed: "
                            f"{', '.join(sorted(allowed)) or 'none'}")


@web.middleware
async def errors(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return web.json_response({"error": exc.message, "status": exc.status}, status=exc.status)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        reason = exc.reason if exc.status != 404 else f"no route {request.method} {request.path}"
        return web.json_response({"error": reason, "status": exc.status}, status=exc.status,
                                 headers={k: v for k, v in exc.headers.items() if k == "Allow"})
    except (TransientError, RedisError) as exc:
        log.warning("api_dependency_unavailable", path=request.path, error=str(exc)[:200])
        return web.json_response({"error": f"a dependency is unavailable: {str(exc)[:200]}", "status": 503},
                                 status=503)


# -- handlers ----------------------------------------------------------------------------------
async def status(request: web.Request) -> web.Response:
    api = request.app[KEY]
    _only(request, set())
    portfolio = await _portfolio_doc(api)
    holder = await api.lock.holder()
    plans = await api.recent(PORTFOLIO_REBALANCE, 1)
    checks = await api.health.ready()
    return web.json_response({
        "service": names.MAIN,
        "ts_ms": now_ms(),
        "halt": await api.halt.state(),
        "portfolio": portfolio,
        "rebalance": {"leader": holder[0] if holder else None, "last": plans[0] if plans else None},
        "recent": {t: await api.redis.llen(api.recent_key(t)) for t in RECENT_TOPICS},
        "dependencies": checks,
        "venues": api.gateway.venues,
    })


async def _portfolio_doc(api: Api) -> dict[str, Any] | None:
    raw = await api.redis.get(api.keys.monitor(api.settings.monitor.account, "latest"))
    return json.loads(raw) if raw else None


async def portfolio(request: web.Request) -> web.Response:
    api = request.app[KEY]
    _only(request, set())
    doc = await _portfolio_doc(api)
    if doc is None:
        raise ApiError(503, "the portfolio has not been valued yet: is portfolio-monitor running "
                            "with CSE_VENUES set?")
    return web.json_response(doc)


async def opportunities(request: web.Request) -> web.Response:
    api = request.app[KEY]
    _only(request, {"limit"})
    items = await api.recent(ARB_OPPORTUNITIES, _limit(request))
    return web.json_response({"items": items, "count": len(items)})


async def executions(request: web.Request) -> web.Response:
    api = request.app[KEY]
    _only(request, {"limit", "source"})
    limit = _limit(request)
    source = request.query.get("source")
    if source is not None and source not in SOURCES:
        raise ApiError(400, f"source must be one of {', '.join(SOURCES)}, got {source!r}")
    items = await api.recent(ORDERS_EXECUTIONS, api.settings.api.recent_size if source else limit)
    if source:
        items = [i for i in items if i.get("source") == source][:limit]
    return web.json_response({"items": items, "count": len(items)})


async def rebalance_plan(request: web.Request) -> web.Response:
    api = request.app[KEY]
    _only(request, set())
    if not api.gateway.venues:
        raise ApiError(409, "no venues configured: set CSE_VENUES")
    return web.json_response(await api.preview())


async def rebalance_last(request: web.Request) -> web.Response:
    api = request.app[KEY]
    _only(request, {"limit"})
    items = await api.recent(PORTFOLIO_REBALANCE, _limit(request, 10))
    return web.json_response({"items": items, "count": len(items)})


async def rebalance_trigger(request: web.Request) -> web.Response:
    api = request.app[KEY]
    _only(request, set())
    actor = await api.guard(request, "rebalance.trigger")
    body = await api.json_body(request, required=False)
    _fields(body, ("reason",))
    reason = _reason(body)
    if not api.settings.rebalance.enabled:
        await api.trail.record("rebalance.trigger", actor=actor, outcome="refused", reason=reason)
        raise ApiError(409, "rebalancing is disabled (CSE_REBALANCE_ENABLED=0)")
    await api.redis.set(api.keys.rebalance_trigger(), actor, ex=600)
    holder = await api.lock.holder()
    await api.trail.record("rebalance.trigger", actor=actor, outcome="accepted", reason=reason)
    return web.json_response({"requested": True, "leader": holder[0] if holder else None,
                              "note": "the rebalance leader runs a cycle within about a second"},
                             status=202)


def _fields(body: dict[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise ApiError(422, f"unknown field(s): {', '.join(unknown)}; allowed: {', '.join(allowed)}")


def _reason(body: dict[str, Any]) -> str:
    reason = body.get("reason", "")
    if not isinstance(reason, str) or len(reason) > 200:
        raise ApiError(422, "reason must be a string of at most 200 characters")
    return reason


async def halt_get(request: web.Request) -> web.Response:
    api = request.app[KEY]
    _only(request, set())
    return web.json_response(await api.halt.state())


async def halt_put(request: web.Request) -> web.Response:
    api = request.app[KEY]
    _only(request, set())
    actor = await api.guard(request, "halt.set")
    body = await api.json_body(request, required=True)
    _fields(body, ("halted", "reason"))
    halted = body.get("halted")
    if not isinstance(halted, bool):
        raise ApiError(422, "halted is required and must be true or false")
    reason = _reason(body)
    try:
        state = await api.halt.set(halted, reason=reason, by=actor)
    except TransientError:
        await api.trail.record("halt.set", actor=actor, outcome="failed", halted=halted, reason=reason)
        raise
    await api.trail.record("halt.set", actor=actor, outcome="ok", halted=halted, reason=reason)
    return web.json_response(state)


async def audit_recent(request: web.Request) -> web.Response:
    api = request.app[KEY]
    _only(request, {"limit"})
    items = await api.trail.recent(_limit(request))
    return web.json_response({"items": items, "count": len(items)})


async def openapi(_request: web.Request) -> web.Response:
    return web.json_response(spec())


async def page(_request: web.Request) -> web.Response:
    return web.Response(text=PAGE, content_type="text/html")


async def index(_request: web.Request) -> web.Response:
    """``/api/``: every endpoint with what it answers, from the OpenAPI document."""
    paths = spec()["paths"]
    endpoints = [{"method": method.upper(), "path": path, "summary": op["summary"]}
                 for path, ops in paths.items() if path.startswith("/api/") for method, op in ops.items()]
    return web.json_response({"service": names.MAIN, "endpoints": endpoints,
                              "openapi": "/api/openapi.json", "status_page": STATUS_PAGE})


STATUS_PAGE = "/status/"  # also at "/" when the API is reached directly

ROUTES: list[tuple[str, str, Any]] = [
    ("GET", "/api/", index),
    ("GET", STATUS_PAGE, page),
    ("GET", "/api/status", status),
    ("GET", "/api/portfolio", portfolio),
    ("GET", "/api/opportunities", opportunities),
    ("GET", "/api/executions", executions),
    ("GET", "/api/rebalance/plan", rebalance_plan),
    ("GET", "/api/rebalance/last", rebalance_last),
    ("POST", "/api/rebalance", rebalance_trigger),
    ("GET", "/api/halt", halt_get),
    ("PUT", "/api/halt", halt_put),
    ("GET", "/api/audit", audit_recent),
    ("GET", "/api/openapi.json", openapi),
]


def add_routes(app: web.Application, api: Api) -> None:
    """Mount the API on an app that already serves ``/health`` and ``/ready``."""
    app[KEY] = api
    app.middlewares.append(errors)
    app.router.add_get("/", page)
    for method, path, handler in ROUTES:
        app.router.add_route(method, path, handler)
