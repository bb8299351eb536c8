"""A worker records the health port it bound where ``CSE_HEALTH_PORT_FILE`` says, so the
container healthcheck can probe /health with a bare socket instead of loading settings."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from shared.lifecycle import WorkerContext, serve
from shared.settings import ObservabilitySettings
from tests.conftest import eventually
from tests.deploy.conftest import ENTRYPOINT


async def test_serve_records_the_bound_port_and_the_probe_finds_it_healthy(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    port_file = tmp_path / "worker.port"
    monkeypatch.setenv("CSE_HEALTH_PORT_FILE", str(port_file))
    seen: dict[str, int] = {}
    release = asyncio.Event()

    async def body(ctx: WorkerContext) -> None:
        seen["port"] = ctx.metrics_port
        await release.wait()

    task = asyncio.create_task(serve("port-file-test", ObservabilitySettings(metrics_host="127.0.0.1"), 0,
                                     body, install_signals=False, serve_metrics=False))
    await eventually(lambda: "port" in seen, 5, "the worker running")
    assert port_file.read_text() == f"{seen['port']}\n" and seen["port"] > 0

    def probe() -> subprocess.CompletedProcess[str]:
        env = {"PATH": "/usr/bin:/bin", "CSE_HEALTH_PORT_FILE": str(port_file)}
        return subprocess.run(["sh", str(ENTRYPOINT), "--healthcheck"], capture_output=True, text=True,
                              timeout=30, env=env)

    result = await asyncio.to_thread(probe)
    assert result.returncode == 0, result.stderr
    release.set()
    assert await task == 0
    result = await asyncio.to_thread(probe)  # stopped: nothing listens
    assert result.returncode == 1 and "unhealthy" in result.stderr
