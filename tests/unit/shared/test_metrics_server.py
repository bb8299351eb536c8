"""The metrics/health endpoint, with and without /metrics."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient, TestServer

from shared.health import Health, build_app
from workers.rebalancer.settings import RebalancerSettings


@pytest.mark.parametrize("serve_metrics", [True, False])
async def test_health_always_metrics_on_request(serve_metrics: bool) -> None:
    health = Health("t", heartbeat_timeout_s=5)
    health.state = "running"
    async with TestClient(TestServer(build_app(health, serve_metrics))) as client:
        assert (await client.get("/health")).status == 200
        metrics = await client.get("/metrics")
        assert metrics.status == (200 if serve_metrics else 404)
        if serve_metrics:
            assert "cse_worker_up" in await metrics.text()


def test_rebalance_prometheus_flag_switches_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CSE_REBALANCE_PROMETHEUS", "0")
    assert RebalancerSettings().metrics_enabled is False
    monkeypatch.setenv("CSE_REBALANCE_PROMETHEUS", "1")
    assert RebalancerSettings().metrics_enabled is True


async def test_a_stale_heartbeat_fails_health() -> None:
    health = Health("t", heartbeat_timeout_s=0.01)
    health.last_beat -= 1
    async with TestClient(TestServer(build_app(health))) as client:
        response = await client.get("/health")
        assert response.status == 503 and (await response.json())["status"] == "fail"
