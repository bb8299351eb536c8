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

from tests import ROOT
from tests.conftest import NotYet, wait_for

pytestmark = pytest.mark.slow


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


@pytest.mark.timeout(240)
def test_dev_up_is_healthy_then_stops_cleanly(tmp_path: Path) -> None:
    run_dir = tmp_path / "stack"
    env_file = tmp_path / "stack.env"
    # cycles every 3 s so the test sees two; arbitrage plans only, so only the rebalancer trades
    env_file.write_text("CSE_REBALANCE_INTERVAL=3\nCSE_REBALANCE_MAX_ORDERS=40\n"
                        "CSE_REBALANCE_SLIPPAGE_BPS=30\nCSE_ARB_DRY_RUN=1\n")
    out = open(tmp_path / "supervisor.out", "w")
    sup = subprocess.Popen(
        [sys.executable, "-m", "workers.cli", "dev", "up", "--run-dir", str(run_dir),
         "--api-port", "0", "--main-metrics-port", "0", "--monitor-metrics-port", "0",
         "--env-file", str(env_file)],
        cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        def healthy() -> dict | NotYet:
            status = cse("dev", "status", "--run-dir", str(run_dir), "--json")
            snap = json.loads(status.stdout) if status.stdout else {}
            assert sup.poll() is None, (tmp_path / "supervisor.out").read_text()
            return snap if status.returncode == 0 else NotYet(snap)

        wait_for(healthy, 90, "the stack healthy", interval_s=0.5)

        def books_from_every_venue() -> dict | NotYet:
            snap = json.loads(cse("dev", "status", "--run-dir", str(run_dir), "--json").stdout)
            rates = {p["name"]: (p["msgs_per_s"], p["feed"]) for p in snap["processes"]
                     if p["kind"] == "venue"}
            return snap if len(rates) == 3 and all(r > 0 and feed.startswith("stream ")
                                                   for r, feed in rates.values()) else NotYet(rates)

        # ingest follows the three paper venues' websocket streams (the default): books per
        # second per venue, and every pair streamed, show up
        snap = wait_for(books_from_every_venue, 30, "books per second from every venue", interval_s=0.5)
        procs = {p["name"]: p for p in snap["processes"]}
        assert {"kafka", "redis", "victoria-metrics", "sim-a", "sim-b", "sim-c",
                "cryptospreadedge-main",
                "portfolio-rebalancer", "arbitrage-worker-1", "arbitrage-worker-2",
                "arbitrage-worker-3", "portfolio-monitor"} == set(procs)
        assert all(p["healthy"] and p["pid"] for p in procs.values()), \
            {n: p for n, p in procs.items() if not (p["healthy"] and p["pid"])}
        # the human view is the same snapshot
        table = cse("dev", "status", "--run-dir", str(run_dir))
        assert table.returncode == 0 and "stack: HEALTHY" in table.stdout
        assert procs["sim-a"]["feed"] in table.stdout and "FEED" in table.stdout
        # the API and a worker's metrics answer on the ports the status reports
        api = procs["cryptospreadedge-main"]["ports"]["api"]
        with urllib.request.urlopen(f"http://127.0.0.1:{api}/health", timeout=5) as resp:
            assert json.loads(resp.read())["status"] == "ok"
        metrics_port = procs["portfolio-monitor"]["ports"]["metrics"]
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
            assert b"cse_worker_up" in r.read()
        prometheus = start_prometheus(tmp_path, procs)
        try:
            check_the_stack_rebalances(snap, procs)
            check_every_monitored_metric_is_exported(procs)
            check_prometheus_scrapes_and_evaluates(prometheus, procs)
        finally:
            prometheus.stop()
        pids = [p["pid"] for p in procs.values()]

        sup.send_signal(signal.SIGTERM)
        assert sup.wait(60) == 0

        def children_gone() -> bool | NotYet:
            left = [pid for pid in pids if alive(pid)]
            return not left or NotYet(left)

        wait_for(children_gone, 5, "no children left behind")
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


def scrape(port: int) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples
            if s.name.startswith("portfolio_rebalance_")}


def check_the_stack_rebalances(snap: dict, procs: dict) -> None:
    """The paper venues' portfolio is brought within the band; the next cycle places nothing."""
    import asyncio

    from shared.messages import PORTFOLIO_REBALANCE, Codec
    from tests.conftest import read_topic

    codec = Codec.for_topic(PORTFOLIO_REBALANCE)

    def a_rebalance_then_another_cycle() -> tuple[list, int] | NotYet:
        records = asyncio.run(read_topic(snap["endpoints"]["kafka"], PORTFOLIO_REBALANCE, idle_s=0.5))
        plans = [codec.decode(r.value) for r in records]
        traded = [i for i, p in enumerate(plans) if p.orders]
        return (plans, traded[0]) if traded and len(plans) > traded[0] + 1 else NotYet(plans)

    plans, trade = wait_for(a_rebalance_then_another_cycle, 60, "a rebalance followed by another cycle",
                            interval_s=1)
    first, after = plans[trade], plans[trade + 1]
    assert first.status == "executed" and not first.dry_run, first
    assert after.orders == [] and after.skipped == 0, after
    band = 0.01
    for asset, target in after.target_weights.items():
        assert abs(after.current_weights.get(asset, 0.0) - target) <= band, (asset, after)
    assert after.predicted_vol == pytest.approx(0.01), "the volatility target is met"
    assert after.fencing_token >= first.fencing_token
    # the seed's metrics, summed over the two processes that may lead
    ports = [procs[n]["ports"]["metrics"] for n in ("cryptospreadedge-main", "portfolio-rebalancer")]
    scraped = [scrape(port) for port in ports]
    total = {k: sum(m.get(k, 0.0) for m in scraped) for k in scraped[0]}
    placed = sum(len(p.orders) for p in plans if p.status == "executed")
    assert total["portfolio_rebalance_orders_placed_total"] == placed
    assert total["portfolio_rebalance_transaction_costs_total"] > 0
    assert total["portfolio_rebalance_errors_total"] == 0
    assert total["portfolio_rebalance_backoff_active"] == 0
    leader = max(scraped, key=lambda m: m.get("portfolio_rebalance_orders_placed_total", 0.0))
    assert leader["portfolio_rebalance_target_volatility"] == 0.01
    assert leader["portfolio_rebalance_actual_volatility"] > 0


WORKER_JOBS = {
    "cryptospreadedge-main": "cryptospreadedge-main", "portfolio-rebalancer": "portfolio-rebalancer",
    "arbitrage-worker-1": "arbitrage-worker", "arbitrage-worker-2": "arbitrage-worker",
    "arbitrage-worker-3": "arbitrage-worker", "portfolio-monitor": "portfolio-monitor",
}
# how long Prometheus watches the stack before the check: the ``for:`` of the alerts it
# checks (ServiceDown, WorkerStalled, RedisUnreachable, KafkaUnreachable: 1m), so targets
# and rules are seen over that time, not only once
PROMETHEUS_RUN_S = 60.0


class Prometheus:
    def __init__(self, running, port: int, started: float):  # type: ignore[no-untyped-def]
        self.running, self.port, self.started = running, port, started

    def get(self, path: str) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as resp:
            return json.loads(resp.read())

    def stop(self) -> None:
        self.running.stop()


def start_prometheus(tmp_path: Path, procs: dict) -> Prometheus:
    """A real Prometheus (Debian's) scraping the stack's workers, with the production rule files."""
    from tooling.devstack import infra
    from tooling.devstack.infra import ProcessSpec, http_ready

    jobs: dict[str, list[str]] = {}
    for name, job in WORKER_JOBS.items():
        jobs.setdefault(job, []).append(f"127.0.0.1:{procs[name]['ports']['metrics']}")
    rules = ROOT / "infrastructure" / "monitoring" / "rules"
    config = {
        "global": {"scrape_interval": "2s", "evaluation_interval": "2s"},
        "rule_files": [str(rules / "*.yml")],
        "scrape_configs": [{"job_name": job, "static_configs": [{"targets": targets}]}
                           for job, targets in jobs.items()],
    }
    path = tmp_path / "prometheus.yml"
    path.write_text(json.dumps(config))  # JSON is YAML
    port = infra.free_port()
    spec = ProcessSpec(
        name="prometheus",
        argv=[infra.system_binary("prometheus", "prometheus"), f"--config.file={path}",
              f"--storage.tsdb.path={tmp_path / 'prometheus-data'}", f"--web.listen-address=127.0.0.1:{port}",
              "--log.level=warn"],
        kind="infra", ports={"http": port},
        ready=lambda: http_ready(f"http://127.0.0.1:{port}/-/ready"))
    return Prometheus(infra.start(spec, tmp_path / "logs", timeout_s=30), port, time.monotonic())


def exported_names(port: int) -> set[str]:
    """Family names (``# TYPE``) and sample names one worker exports."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            names.add(line.split()[2])
        elif line and not line.startswith("#"):
            names.add(line.split("{")[0].split()[0])
    return names


def check_every_monitored_metric_is_exported(procs: dict) -> None:
    """Every metric an alert, recording rule, dashboard or Grafana alert queries is exported by a worker."""
    import re

    from tests.monitoring.metric_names import family, is_external, references

    exported: set[str] = set()
    for name in WORKER_JOBS:
        exported |= exported_names(procs[name]["ports"]["metrics"])
    refs = references()
    missing = {n: sorted(src)[:3] for n, src in refs.metrics.items()
               if not is_external(n) and n not in exported and family(n) not in exported}
    assert not missing, f"queried but exported by no worker: {missing}"
    assert len([n for n in refs.metrics if not is_external(n)]) >= 20, "the extractor found too little"
    # Flux panels read measurements the code writes to the store
    written = set()
    for path in [*ROOT.joinpath("workers").rglob("*.py"), *ROOT.joinpath("shared").rglob("*.py")]:
        written |= set(re.findall(r'\.write\(\s*"([a-z_]+)"', path.read_text()))
    assert set(refs.measurements) <= written, set(refs.measurements) - written


def check_prometheus_scrapes_and_evaluates(prometheus: Prometheus, procs: dict) -> None:
    """For a minute: every worker target up, every rule evaluated without error."""
    # what is tested is the stack staying healthy that long: no condition to wait for
    time.sleep(max(0.0, PROMETHEUS_RUN_S - (time.monotonic() - prometheus.started)))
    targets = prometheus.get("/api/v1/targets")["data"]["activeTargets"]
    assert len(targets) == len(WORKER_JOBS)
    down = [(t["labels"]["job"], t["scrapeUrl"], t["lastError"]) for t in targets if t["health"] != "up"]
    assert not down, down
    groups = prometheus.get("/api/v1/rules")["data"]["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert len(rules) >= 20
    bad = [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok" or r.get("lastError")]
    assert not bad, bad
    # the rules see the stack: nothing is down, the rebalancer has a leader
    firing = {a["labels"]["alertname"] for a in prometheus.get("/api/v1/alerts")["data"]["alerts"]
              if a["state"] == "firing"}
    assert not firing & {"ServiceDown", "WorkerStalled", "RedisUnreachable", "KafkaUnreachable"}, firing


def test_dev_status_without_a_stack_says_how_to_start_one(tmp_path: Path) -> None:
    result = cse("dev", "status", "--run-dir", str(tmp_path))
    assert result.returncode == 1
    assert "cse dev up" in result.stderr
