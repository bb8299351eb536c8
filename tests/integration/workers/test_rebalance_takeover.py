"""Two portfolio-rebalancer processes, one Redis: only the leader trades; SIGKILL it, the other takes over."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import ROOT
from tests.conftest import wait_for
from tests.integration.conftest import SimVenue, start_venue
from tooling.devstack import infra

pytestmark = pytest.mark.slow
TTL_S = 2


@pytest.fixture
def venue(venue_sim_logs: Path) -> Iterator[SimVenue]:
    running = start_venue(venue_sim_logs, "tk-a", seed=5, args=["--balances", "BTC=2,ETH=10,USDT=50000"])
    yield running
    running.stop()


def events(log: Path) -> list[dict]:
    out = []
    for line in log.read_text().splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def leader_gauge(port: int) -> float | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith('cse_leader{lock="rebalance"}'):
            return float(line.split()[-1])
    return None


@pytest.mark.timeout(120)
def test_only_the_leader_trades_and_the_survivor_takes_over_after_sigkill(
        tmp_path: Path, venue: SimVenue, kafka, redis_server, victoria, redis_settings) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CSE_")}
    env.update({
        "CSE_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{kafka.port}",
        "CSE_REDIS_URL": f"redis://127.0.0.1:{redis_server.port}/0",
        "CSE_REDIS_KEY_PREFIX": redis_settings.key_prefix,
        "CSE_INFLUX_URL": f"http://127.0.0.1:{victoria.port}",
        "CSE_VENUES": f"tk-a={venue.url}",
        "CSE_SYMBOLS": "BTC/USDT,ETH/USDT",
        "CSE_LOG_FORMAT": "json",
        "CSE_METRICS_HOST": "127.0.0.1",
        "CSE_REBALANCE_INTERVAL": "1",
        "CSE_REBALANCE_BACKOFF_MAX": "2",
        "CSE_REBALANCE_LOCK_TTL": str(TTL_S),
        "CSE_REBALANCE_MIN_NOTIONAL": "10",
        "CSE_REBALANCE_SLIPPAGE_BPS": "30",
        "CSE_REBALANCE_USE_REAL_COV": "0",
        "PYTHONUNBUFFERED": "1",
    })
    procs: dict[str, tuple[subprocess.Popen[bytes], int, Path]] = {}
    try:
        for name in ("rb-1", "rb-2"):
            port = infra.free_port()
            log = tmp_path / f"{name}.log"
            with open(log, "wb") as out:
                proc = subprocess.Popen([sys.executable, "-m", "workers.rebalancer"], cwd=ROOT,
                                        env={**env, "CSE_METRICS_PORT": str(port)},
                                        stdout=out, stderr=subprocess.STDOUT)
            procs[name] = (proc, port, log)

        def leaders() -> list[str]:
            return [n for n, (_, port, _) in procs.items() if leader_gauge(port) == 1.0]

        def cycles(name: str) -> list[dict]:
            return [e for e in events(procs[name][2]) if e.get("event") == "rebalance_cycle"]

        wait_for(lambda: len(leaders()) == 1 and any(cycles(n) for n in procs), 60, "a leader's first cycle")
        (leader,) = leaders()
        (other,) = [n for n in procs if n != leader]
        wait_for(lambda: len(cycles(leader)) >= 3, 30, "three cycles of the leader")
        assert leader_gauge(procs[other][1]) == 0.0
        assert cycles(other) == [], "the follower ran a cycle"
        orders = [e for e in events(procs[leader][2])
                  if e.get("event") == "audit" and e.get("action") == "order" and e.get("audit") is True]
        assert orders, "the drifted portfolio was not traded"
        assert cycles(leader)[-1]["orders"] == 0, "later cycles place nothing: the portfolio is in band"
        fills = [json.loads(line) for line in venue.journal.read_text().splitlines()]
        assert {f["clientOrderId"] for f in fills} == {o["client_order_id"] for o in orders}

        killed_at = time.monotonic()
        procs[leader][0].send_signal(signal.SIGKILL)
        procs[leader][0].wait(10)
        wait_for(lambda: bool(cycles(other)), 30, "the survivor's first cycle")
        took = time.monotonic() - killed_at
        assert took < TTL_S + 5, f"takeover took {took:.1f}s with a {TTL_S}s lock"
        assert leader_gauge(procs[other][1]) == 1.0
        assert all(e["status"] == "executed" for e in cycles(other))
    finally:
        for proc, _, _ in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc, _, _ in procs.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
