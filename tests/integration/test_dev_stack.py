"""`cse dev up`: the embedded stack comes up healthy and leaves nothing behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).parents[2]


def cse(*args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "workers.cli", *args], cwd=ROOT, text=True,
                          capture_output=True, timeout=30, **kw)  # type: ignore[call-overload]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purposes
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


@pytest.mark.timeout(180)
def test_dev_up_is_healthy_then_stops_cleanly(tmp_path: Path) -> None:
    run_dir = tmp_path / "stack"
    out = open(tmp_path / "supervisor.out", "w")
    sup = subprocess.Popen(
        [sys.executable, "-m", "workers.cli", "dev", "up", "--run-dir", str(run_dir),
         "--api-port", "0", "--main-metrics-port", "0", "--monitor-metrics-port", "0"],
        cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        snap: dict = {}
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            status = cse("dev", "status", "--run-dir", str(run_dir), "--json")
            snap = json.loads(status.stdout) if status.stdout else {}
            if status.returncode == 0:
                break
            assert sup.poll() is None, (tmp_path / "supervisor.out").read_text()
            time.sleep(0.5)
        else:
            raise AssertionError(f"stack not healthy within 90s: {json.dumps(snap, indent=1)}")

        # ingest polls the three paper venues: books per second per venue show up
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            snap = json.loads(cse("dev", "status", "--run-dir", str(run_dir), "--json").stdout)
            rates = {p["name"]: p["msgs_per_s"] for p in snap["processes"] if p["kind"] == "venue"}
            if len(rates) == 3 and all(r > 0 for r in rates.values()):
                break
            time.sleep(0.5)
        else:
            raise AssertionError(f"no books per second per venue: {rates}")
        procs = {p["name"]: p for p in snap["processes"]}
        assert {"kafka", "redis", "victoria-metrics", "sim-a", "sim-b", "sim-c",
                "cryptospreadedge-main",
                "portfolio-rebalancer", "arbitrage-worker-1", "arbitrage-worker-2",
                "arbitrage-worker-3", "portfolio-monitor"} == set(procs)
        assert all(p["healthy"] and p["pid"] for p in procs.values())
        # the human view is the same snapshot
        table = cse("dev", "status", "--run-dir", str(run_dir))
        assert table.returncode == 0 and "stack: HEALTHY" in table.stdout
        # the API and a worker's metrics answer on the ports the status reports
        api = procs["cryptospreadedge-main"]["ports"]["api"]
        with urllib.request.urlopen(f"http://127.0.0.1:{api}/health", timeout=5) as resp:
            assert json.loads(resp.read())["status"] == "ok"
        metrics_port = procs["portfolio-monitor"]["ports"]["metrics"]
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
            assert b"cse_worker_up" in r.read()
        pids = [p["pid"] for p in procs.values()]

        sup.send_signal(signal.SIGTERM)
        assert sup.wait(60) == 0
        deadline = time.monotonic() + 5
        while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [pid for pid in pids if alive(pid)] == [], "children left behind"
        after = cse("dev", "status", "--run-dir", str(run_dir))
        assert after.returncode == 1 and "stopped" in after.stderr
        for name in ("arbitrage-worker-1", "portfolio-monitor"):
            lines = (run_dir / "logs" / f"{name}.log").read_text().splitlines()
            events = [json.loads(line)["event"] for line in lines if line.startswith("{")]
            assert events[-1] == "worker_stopped" and "worker_draining" in events
    finally:
        if sup.poll() is None:
            os.killpg(sup.pid, signal.SIGKILL)
            sup.wait(10)
        out.close()


def test_dev_status_without_a_stack_says_how_to_start_one(tmp_path: Path) -> None:
    result = cse("dev", "status", "--run-dir", str(tmp_path))
    assert result.returncode == 1
    assert "cse dev up" in result.stderr
