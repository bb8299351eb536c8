"""The main API on real Redis, the broker and a venue-sim: reads, validation, auth, halt, audit, page."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from shared.gateway import Gateway
from shared.halt import Halt, HaltWatch
from shared.health import Health, build_app
from shared.rediskeys import RedisKeys
from shared.settings import VenueSettings
from tests.conftest import NotYet, eventually
from tests.integration.conftest import SimVenue, start_venue
from workers.main.api import Api, add_routes
from workers.main.openapi import spec
from workers.main.settings import ApiSettings, MainSettings

pytestmark = pytest.mark.slow
TOKEN = "t0ken-" + uuid.uuid4().hex
AUTH = {"Authorization": f"Bearer {TOKEN}", "X-Actor": "alice"}
SYMBOLS = ["BTC/USDT", "ETH/USDT"]


@pytest.fixture(scope="module")
def venue(venue_sim_logs: Path) -> Iterator[SimVenue]:
    running = start_venue(venue_sim_logs, "api-a", seed=3, args=["--balances", "BTC=2,ETH=30,USDT=20000"])
    yield running
    running.stop()


@pytest.fixture
async def api(redis_client, redis_settings, venue) -> AsyncIterator[tuple[TestClient, Api]]:
    settings = MainSettings(redis=redis_settings, api=ApiSettings(token=SecretStr(TOKEN)),
                            venues=VenueSettings(venues=f"api-a={venue.url}", symbols=",".join(SYMBOLS)))
    health = Health("cryptospreadedge-main")
    health.state = "running"
    async with Gateway(settings.venues) as gateway:
        app = build_app(health, serve_metrics=False)
        the_api = Api(settings, redis_client, gateway, health)
        add_routes(app, the_api)
        async with TestClient(TestServer(app)) as client:
            yield client, the_api


async def audit_records(client: TestClient) -> list[dict[str, Any]]:
    resp = await client.get("/api/audit", params={"limit": "20"})
    return (await resp.json())["items"]


async def test_every_route_is_in_the_openapi_document_and_nothing_else(api) -> None:
    client, _ = api
    doc = await (await client.get("/api/openapi.json")).json()
    assert doc == json.loads(json.dumps(spec())) and doc["openapi"].startswith("3.")
    routed = {(r.method.lower(), r.resource.canonical) for r in client.app.router.routes()
              if r.method != "HEAD" and r.resource is not None and r.resource.canonical != "/"}
    described = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert routed == described


async def test_the_api_root_lists_every_endpoint_and_the_status_page_has_a_path(api) -> None:
    client, _ = api
    resp = await client.get("/api/")
    assert resp.status == 200
    doc = await resp.json()
    listed = {(e["method"], e["path"]) for e in doc["endpoints"]}
    assert ("GET", "/api/portfolio") in listed and ("PUT", "/api/halt") in listed
    assert all(e["summary"] for e in doc["endpoints"]) and doc["openapi"] == "/api/openapi.json"
    page = await client.get(doc["status_page"])
    assert page.status == 200 and "CryptoSpreadEdge" in await page.text()
    assert page.content_type == "text/html"


async def test_bad_requests_get_a_4xx_that_says_why(api) -> None:
    client, _ = api
    cases = [
        ("GET", "/api/opportunities?limit=0", 400, "limit must be an integer from 1 to 500"),
        ("GET", "/api/opportunities?limit=abc", 400, "limit must be an integer"),
        ("GET", "/api/executions?source=whale", 400, "source must be one of arbitrage, rebalancer, hedge"),
        ("GET", "/api/portfolio?verbose=1", 400, "unknown query parameter(s): verbose"),
        ("GET", "/api/nothing-here", 404, "no route GET /api/nothing-here"),
        ("DELETE", "/api/halt", 405, "Method Not Allowed"),
    ]
    for method, path, status, says in cases:
        resp = await client.request(method, path)
        body = await resp.json()
        assert (resp.status, body["status"]) == (status, status), (path, body)
        assert says in body["error"], (path, body)


async def test_mutations_need_the_bearer_token_and_valid_json_and_are_audited(api) -> None:
    client, _ = api
    resp = await client.put("/api/halt", json={"halted": True})
    assert resp.status == 401 and "bearer token" in (await resp.json())["error"]
    resp = await client.put("/api/halt", json={"halted": True},
                            headers={"Authorization": "Bearer wrong", "X-Actor": "mallory"})
    assert resp.status == 401 and (await resp.json())["error"] == "invalid bearer token"
    denied = [r for r in await audit_records(client) if r["action"] == "halt.set"]
    assert denied[0]["outcome"] == "denied (401)" and denied[0]["actor"].startswith("mallory@")
    for body, headers, status, says in [
        ("not json", {"Content-Type": "application/json"}, 400, "not valid JSON"),
        ("halted=1", {"Content-Type": "text/plain"}, 415, "application/json"),
        ("[true]", {"Content-Type": "application/json"}, 422, "JSON object"),
        ("{}", {"Content-Type": "application/json"}, 422, "halted is required"),
        ('{"halted": "yes"}', {"Content-Type": "application/json"}, 422, "true or false"),
        ('{"halted": true, "why": "x"}', {"Content-Type": "application/json"}, 422, "unknown field(s): why"),
        ('{"halted": true, "reason": "' + "x" * 201 + '"}', {"Content-Type": "application/json"}, 422,
         "at most 200"),
    ]:
        resp = await client.put("/api/halt", data=body, headers={**AUTH, **headers})
        assert resp.status == status and says in (await resp.json())["error"], (body, await resp.text())
    resp = await client.put("/api/halt", json={"halted": True}, headers={**AUTH, "X-Actor": "<script>"})
    assert resp.status == 400 and "X-Actor" in (await resp.json())["error"]


async def test_without_a_configured_token_mutations_are_refused(redis_client, redis_settings) -> None:
    settings = MainSettings(redis=redis_settings, api=ApiSettings(token=SecretStr("")),
                            venues=VenueSettings(venues=""))
    async with Gateway(settings.venues) as gateway:
        app = build_app(Health("m"), serve_metrics=False)
        add_routes(app, Api(settings, redis_client, gateway, Health("m")))
        async with TestClient(TestServer(app)) as client:
            resp = await client.post("/api/rebalance", headers={"Authorization": "Bearer anything"})
            assert resp.status == 403 and "no API token is configured" in (await resp.json())["error"]


async def test_halt_reaches_a_running_worker_at_once_and_persists(api, redis_client,
                                                                  redis_settings) -> None:
    client, _ = api
    watch = HaltWatch(Halt(redis_client, redis_settings.key_prefix), recheck_s=60)  # pub/sub only
    stopping = asyncio.Event()
    task = asyncio.create_task(watch.run(stopping))

    async def subscribed() -> bool | NotYet:
        (_channel, listeners), = await redis_client.pubsub_numsub(watch.halt.channel)
        return listeners >= 1 or NotYet(listeners)

    try:
        await eventually(subscribed, 5, "the watch subscribed to the halt channel")
        assert watch.halted is False
        started = time.monotonic()
        resp = await client.put("/api/halt", json={"halted": True, "reason": "exchange incident"},
                                headers=AUTH)
        assert resp.status == 200, await resp.text()
        await asyncio.wait_for(watch.changed.wait(), 2)
        assert watch.halted is True and time.monotonic() - started < 2
        # persisted: a worker started now sees it
        late = HaltWatch(Halt(redis_client, redis_settings.key_prefix))
        assert await late.refresh() is True
        state = await (await client.get("/api/halt")).json()
        assert state["halted"] and state["reason"] == "exchange incident" and state["by"].startswith("alice@")
        watch.changed.clear()
        resp = await client.put("/api/halt", json={"halted": False}, headers=AUTH)
        await asyncio.wait_for(watch.changed.wait(), 2)
        assert watch.halted is False
    finally:
        stopping.set()
        await task
    records = [r for r in await audit_records(client) if r["action"] == "halt.set" and r["outcome"] == "ok"]
    assert [r["halted"] for r in records[:2]] == [False, True]
    assert all(r["actor"].startswith("alice@") and r["ts_ms"] > 0 for r in records[:2])


async def test_portfolio_comes_from_the_monitor_and_recent_feeds_from_the_broker(
        api, redis_client, redis_settings, kafka_settings) -> None:
    from shared.bus import Bus, ConsumerLoop
    from shared.messages import ARB_OPPORTUNITIES, ORDERS_EXECUTIONS, Execution, now_ms

    client, the_api = api
    resp = await client.get("/api/portfolio")
    assert resp.status == 503 and "portfolio-monitor" in (await resp.json())["error"]
    doc = {"total_value": 123.0, "quote": "USDT", "allocation": {"USDT": 1.0}, "drawdown": 0.0,
           "pnl_by_exchange": {"api-a": 0.0}, "pnl_total": 0.0}
    await redis_client.set(RedisKeys(redis_settings.key_prefix).monitor("main", "latest"), json.dumps(doc))
    assert await (await client.get("/api/portfolio")).json() == doc

    group = f"api-test-{uuid.uuid4().hex[:6]}"
    ids = [f"e{i}-{uuid.uuid4().hex[:6]}" for i in range(3)]
    async with Bus(kafka_settings) as bus:
        await bus.ensure_topics()
        for i, eid in enumerate(ids):
            await bus.send(ORDERS_EXECUTIONS, Execution(
                id=eid, source="rebalancer" if i else "arbitrage", parent_id="p", venue="api-a",
                symbol="BTC/USDT", side="buy", client_order_id=eid, status="filled", amount=1.0,
                ts_ms=now_ms()))
        loop = ConsumerLoop(bus, kafka_settings, [ORDERS_EXECUTIONS, ARB_OPPORTUNITIES], group,
                            the_api.remember)
        task = asyncio.create_task(loop.run())
        try:
            async def all_listed() -> list[dict] | NotYet:
                items = (await (await client.get("/api/executions?limit=500")).json())["items"]
                return items if set(ids) <= {i["id"] for i in items} else NotYet(len(items))

            items = await eventually(all_listed, 30, "the executions reaching the API", interval_s=0.2)
        finally:
            loop.stop()
            await task
    mine = [i for i in items if i["id"] in ids]
    assert [i["id"] for i in mine] == ids[::-1], "newest first"
    only = (await (await client.get("/api/executions", params={"source": "arbitrage",
                                                                "limit": "500"})).json())["items"]
    assert ids[0] in {i["id"] for i in only} and all(i["source"] == "arbitrage" for i in only)


async def test_the_plan_is_computed_on_demand_without_trading_and_a_trigger_is_recorded(
        api, redis_client, redis_settings, venue) -> None:
    client, _ = api
    fills_before = venue.journal.read_text() if venue.journal.exists() else ""
    resp = await client.get("/api/rebalance/plan")
    plan = await resp.json()
    assert resp.status == 200, plan
    assert plan["dry_run"] is True and plan["status"] == "planned" and not plan["cached"]
    assert set(plan["target_weights"]) == {"BTC", "ETH", "USDT"} and plan["total_value"] > 0
    again = await (await client.get("/api/rebalance/plan")).json()
    assert again["cached"] is True and again["id"] == plan["id"]
    assert (venue.journal.read_text() if venue.journal.exists() else "") == fills_before, "it traded"

    resp = await client.post("/api/rebalance", json={"reason": "after deposit"}, headers=AUTH)
    assert resp.status == 202, await resp.text()
    assert (await redis_client.get(f"{redis_settings.key_prefix}rebalance:trigger")).startswith(b"alice@")
    (record,) = [r for r in (await audit_records(client))[:1]]
    assert (record["action"], record["outcome"], record["reason"]) == ("rebalance.trigger", "accepted",
                                                                       "after deposit")


async def test_the_status_page_renders_the_portfolio_in_headless_chromium(api, redis_client,
                                                                          redis_settings, tmp_path) -> None:
    import shutil

    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("chromium is missing: run scripts/bootstrap.sh (it installs Debian's chromium)")
    client, _ = api
    doc = {"total_value": 98765.43, "quote": "USDT", "allocation": {"BTC": 0.6, "USDT": 0.4},
           "drawdown": 0.0123, "pnl_by_exchange": {"api-a": -12.5}, "pnl_total": -12.5}
    await redis_client.set(RedisKeys(redis_settings.key_prefix).monitor("main", "latest"), json.dumps(doc))
    await client.put("/api/halt", json={"halted": True, "reason": "drill"}, headers=AUTH)
    url = str(client.make_url("/"))
    proc = await asyncio.create_subprocess_exec(
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--dump-dom", url,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        await client.put("/api/halt", json={"halted": False}, headers=AUTH)
    dom = out.decode()
    assert proc.returncode == 0, err.decode()[-2000:]
    assert "98,765.43 USDT" in dom or "98765.43 USDT" in dom, dom[-3000:]
    assert "TRADING HALTED: drill" in dom
    assert "60.00 %" in dom and "-12.5" in dom
    assert '<span id="updated" class="muted">updated ' in dom, "the page did not reach /api/status"


async def test_behind_the_proxy_the_audit_names_the_real_client(redis_client, redis_settings) -> None:
    for trust, expected in ((True, "alice@203.0.113.7"), (False, "alice@127.0.0.1")):
        settings = MainSettings(redis=redis_settings, venues=VenueSettings(venues=""),
                                api=ApiSettings(token=SecretStr(TOKEN), trust_proxy=trust))
        async with Gateway(settings.venues) as gateway:
            app = build_app(Health("m"), serve_metrics=False)
            add_routes(app, Api(settings, redis_client, gateway, Health("m")))
            async with TestClient(TestServer(app)) as client:
                resp = await client.put("/api/halt", json={"halted": False},
                                        headers={**AUTH, "X-Real-IP": "203.0.113.7"})
                assert resp.status == 200
                (latest, *_) = await audit_records(client)
                assert latest["actor"] == expected
