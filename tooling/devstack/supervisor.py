"""``cse dev up``: the whole stack on one machine, supervised.

Start order: Kafka (Tansu), Redis, victoria-metrics — each waited on until ready —,
then the topics, then every worker. Each child writes its own log file under
``<run-dir>/logs/``; data lives under ``<run-dir>/data/``. A child that exits is
restarted with exponential backoff (and counted). The terminal shows a live status
view (up/down, restarts, messages per second, lag) instead of the children's logs;
the same snapshot is written to ``<run-dir>/status.json`` every second, which is what
``cse dev status`` prints.

SIGINT/SIGTERM stop workers first (SIGTERM, drain, SIGKILL after the grace period),
then the infrastructure, and leave no child behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from shared import names
from shared.backoff import Backoff
from shared.settings import DEV_SIM_API_KEY, DEV_SIM_API_SECRET
from tooling.devstack import infra
from tooling.devstack.infra import LOCALHOST, ProcessSpec

STATUS_FILE = "status.json"
PROBE_RETRIES = 3  # failed health probes in a row (one a second) before a healthy child is unhealthy


@dataclass
class StackConfig:
    run_dir: Path
    api_port: int | None = 8000  # None: a free port
    main_metrics_port: int | None = 9001
    monitor_metrics_port: int | None = 9002
    explicit_ports: set[str] = field(default_factory=set)  # which ports the user asked for
    arbitrage_replicas: int = 3
    main_replicas: int = 1
    venues: int = 3  # venue-sim paper exchanges
    venue_seed: int = 7
    env: dict[str, str] = field(default_factory=dict)  # extra CSE_* for every worker
    worker_grace_s: float = 25.0
    ready_timeout_s: float = 60.0


@dataclass
class ChildState:
    spec: ProcessSpec
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    state: str = "pending"  # pending, starting, up, healthy, unhealthy, down, stopped
    healthy: bool = False
    last_exit: int | None = None
    failed_probes: int = 0  # in a row
    next_start: float = 0.0
    backoff: Backoff = field(default_factory=lambda: Backoff(initial=1.0, maximum=30.0))
    venue_books: dict[str, float] = field(default_factory=dict)  # main: books published per venue
    venue_feed: dict[str, list[float]] = field(default_factory=dict)  # main: [streamed, polled, is streamed]
    feed: str = "-"  # a venue: how the mains ingest it ("stream 8/8", "poll 8", "fallback 3/8")
    consumed_total: float | None = None
    produced_total: float | None = None
    rate: float = 0.0
    lag: float = 0.0
    _sample: tuple[float, float] | None = None


def _choose_port(name: str, wanted: int | None, explicit: set[str], notes: list[str]) -> int:
    if wanted in (None, 0):
        return infra.free_port()
    assert wanted is not None
    if infra.port_is_free(wanted):
        return wanted
    if name in explicit:
        raise infra.FatalError(f"port {wanted} for {name} is in use; choose another with --{name}")
    port = infra.free_port()
    notes.append(f"{name}: default port {wanted} is in use, using {port}")
    return port


def _venue_specs(config: StackConfig, data: Path) -> list[ProcessSpec]:
    """The paper venues sim-a, sim-b, ...: one seed, so the same underlying prices; each
    venue its own noise, offset and lag, so cross-venue spreads open and close."""
    specs = []
    for i in range(config.venues):
        name = f"sim-{chr(ord('a') + i)}" if i < 26 else f"sim-{i}"
        venue = infra.venue_sim_spec(
            name, infra.free_port(), config.venue_seed, DEV_SIM_API_KEY, DEV_SIM_API_SECRET,
            data / name / "fills.jsonl",
            ["--noise-bps", str(2 + 3 * i), "--price-offset-bps", str((-1) ** i * 4 * i),
             "--lag-ms", str(150 * i)],
        )
        venue.kind = "venue"  # shown with its books per second
        specs.append(venue)
    return specs


def _worker_spec(name: str, module: str, port: int, env: dict[str, str]) -> ProcessSpec:
    """A worker process: ``python -m <module>``, its metrics (and API, for main) ports."""
    base = f"http://{LOCALHOST}:{port}"
    ports = {"metrics": port}
    if "CSE_API_PORT" in env:
        ports["api"] = int(env["CSE_API_PORT"])
    return ProcessSpec(name=name, argv=[sys.executable, "-m", module], kind="worker", ports=ports,
                       env={**env, "CSE_METRICS_PORT": str(port)}, health_url=f"{base}/health",
                       metrics_url=f"{base}/metrics")


def plan(config: StackConfig) -> tuple[list[ProcessSpec], dict[str, Any], list[str]]:
    """The processes of the stack, in start order, and the endpoints they use."""
    notes: list[str] = []
    data = config.run_dir / "data"
    kafka_port, redis_port, vm_port = infra.free_port(), infra.free_port(), infra.free_port()
    api_port = _choose_port("api-port", config.api_port, config.explicit_ports, notes)
    main_metrics = _choose_port("main-metrics-port", config.main_metrics_port,
                                config.explicit_ports, notes)
    monitor_metrics = _choose_port("monitor-metrics-port", config.monitor_metrics_port,
                                   config.explicit_ports, notes)
    venues = _venue_specs(config, data)
    specs = [
        infra.tansu_spec(kafka_port),
        infra.redis_spec(redis_port, data / "redis"),
        infra.victoria_metrics_spec(vm_port, data / "victoria-metrics"),
        *venues,
    ]
    endpoints = {
        "kafka": f"{LOCALHOST}:{kafka_port}",
        "redis": f"redis://{LOCALHOST}:{redis_port}/0",
        "influx": f"http://{LOCALHOST}:{vm_port}",
        "api": f"http://{LOCALHOST}:{api_port}",
        "venues": ",".join(f"{v.name}=http://{LOCALHOST}:{v.ports['http']}" for v in venues),
    }
    common = {
        "CSE_KAFKA_BOOTSTRAP_SERVERS": endpoints["kafka"],
        "CSE_KAFKA_SESSION_TIMEOUT_MS": "6000",
        "CSE_KAFKA_HEARTBEAT_INTERVAL_MS": "1000",
        "CSE_REDIS_URL": endpoints["redis"],
        "CSE_INFLUX_URL": endpoints["influx"],
        "CSE_LOG_FORMAT": "json",
        "CSE_METRICS_HOST": LOCALHOST,
        "CSE_VENUES": endpoints["venues"],
        "PYTHONUNBUFFERED": "1",
        **config.env,
    }
    mains = [(f"{names.MAIN}-{i + 1}" if config.main_replicas > 1 else names.MAIN, "workers.main",
              main_metrics if i == 0 else infra.free_port(),
              {"CSE_API_HOST": LOCALHOST, "CSE_API_PORT": str(api_port if i == 0 else infra.free_port())})
             for i in range(config.main_replicas)]
    arbitrage = [(f"{names.ARBITRAGE}-{i + 1}", "workers.arbitrage", infra.free_port(), {})
                 for i in range(config.arbitrage_replicas)]
    workers: list[tuple[str, str, int, dict[str, str]]] = [
        *mains, (names.REBALANCER, "workers.rebalancer", infra.free_port(), {}),
        *arbitrage, (names.MONITOR, "workers.monitor", monitor_metrics, {})]
    specs += [_worker_spec(name, module, port, {**common, **env}) for name, module, port, env in workers]
    return specs, endpoints, notes


class Supervisor:
    def __init__(self, config: StackConfig, out: TextIO | None = None):
        self.config = config
        self.out = out or sys.stdout
        self.tty = self.out.isatty()
        self.children: list[ChildState] = []
        self.endpoints: dict[str, Any] = {}
        self.notes: list[str] = []
        self.stopping = asyncio.Event()
        self.started = time.monotonic()
        self.healthy_since: float | None = None
        self._last_render = ""
        self._last_print = 0.0
        self._recent: list[str] = []

    # -- lifecycle --------------------------------------------------------------------------
    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stopping.set)
        self.config.run_dir.mkdir(parents=True, exist_ok=True)
        specs, self.endpoints, self.notes = plan(self.config)
        logs = self.config.run_dir / "logs"
        self.children = [ChildState(s, logs / f"{s.name}.log") for s in specs]
        self._say(f"run directory: {self.config.run_dir}")
        for note in self.notes:
            self._say(note)
        code = 0
        try:
            await self._start_infra()
            await self._create_topics()
            for child in self.children:
                if child.spec.kind == "worker":
                    self._spawn(child)
            await self._supervise()
        except (infra.FatalError, RuntimeError, TimeoutError) as exc:
            self._say(f"error: {exc}")
            code = 2
        finally:
            await self._shutdown()
        return code

    async def _start_infra(self) -> None:
        for child in self.children:
            if child.spec.kind == "worker" or self.stopping.is_set():
                continue
            self._spawn(child)
            await self._wait_ready(child)
            self._say(f"{child.spec.name} ready on port {next(iter(child.spec.ports.values()))}")

    async def _wait_ready(self, child: ChildState) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert child.proc is not None
            if child.proc.poll() is not None:
                raise RuntimeError(f"{child.spec.name} exited with code {child.proc.returncode} "
                                   f"while starting; see {child.log_path}")
            if child.spec.ready is None or child.spec.ready():
                child.state = "healthy"
                child.healthy = True
                return
            await asyncio.sleep(0.05)
        raise TimeoutError(f"{child.spec.name} not ready within 30s; see {child.log_path}")

    async def _create_topics(self) -> None:
        from shared.bus import Bus
        from shared.settings import KafkaSettings

        async with Bus(KafkaSettings(bootstrap_servers=self.endpoints["kafka"])) as bus:
            await bus.ensure_topics(force=True)
        self._say(f"topics ready: {len(bus.topics)} topics, {bus.settings.partitions} partitions")

    def _spawn(self, child: ChildState) -> None:
        child.proc = infra.spawn(child.spec, child.log_path)
        child.started_at = time.monotonic()
        child.state = "starting"
        child.healthy = False
        child._sample = None

    async def _supervise(self) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1.0)) as http:
            while not self.stopping.is_set():
                now = time.monotonic()
                for child in self.children:
                    await self._check(child, now, http)
                self._venue_rates(now)
                self._maybe_healthy(now)
                self._render()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), 1.0)

    async def _check(self, child: ChildState, now: float, http: aiohttp.ClientSession) -> None:
        proc = child.proc
        if proc is not None and proc.poll() is not None:
            child.last_exit = proc.returncode
            child.proc = None
            child.state = "down"
            child.healthy = False
            child.failed_probes = 0
            child.next_start = now + child.backoff.next()
            self._say(f"{child.spec.name} exited with code {child.last_exit}; restarting")
            return
        if proc is None:
            if now >= child.next_start:
                child.restarts += 1
                self._spawn(child)
                return
        if now - child.started_at > 60:
            child.backoff.reset()  # ran a minute: the next crash starts from a short delay
        if child.spec.kind != "worker":
            ok = await asyncio.to_thread(child.spec.ready) if child.spec.ready else True
        else:
            ok = await self._probe_worker(child, http)
        # One slow probe on a busy machine is not an outage: a healthy child turns unhealthy
        # after PROBE_RETRIES failed probes in a row (as Docker's healthcheck retries).
        child.failed_probes = 0 if ok else child.failed_probes + 1
        if ok or not child.healthy or child.failed_probes >= PROBE_RETRIES:
            child.healthy = ok
            child.state = "healthy" if ok else ("starting" if now - child.started_at < 30 else "unhealthy")

    async def _probe_worker(self, child: ChildState, http: aiohttp.ClientSession) -> bool:
        try:
            async with http.get(child.spec.health_url or "") as resp:
                ok = resp.status == 200
            async with http.get(child.spec.metrics_url or "") as resp:
                text = await resp.text()
        except (aiohttp.ClientError, TimeoutError, OSError):
            return False
        consumed = produced = lag = 0.0
        venue_books: dict[str, float] = {}
        venue_feed: dict[str, list[float]] = {}
        feed_index = {"cse_md_pairs_streaming": 0, "cse_md_pairs_polled": 1, "cse_md_stream_up": 2}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "cse_md_books_published_total":
                    venue = sample.labels.get("venue", "")
                    venue_books[venue] = venue_books.get(venue, 0.0) + sample.value
                elif sample.name in feed_index:
                    row = venue_feed.setdefault(sample.labels.get("venue", ""), [0.0, 0.0, 0.0])
                    # the third: 1 once the venue is streamed at all (its stream_up exported)
                    row[feed_index[sample.name]] += 1.0 if feed_index[sample.name] == 2 else sample.value
                elif sample.name == "cse_bus_messages_consumed_total":
                    consumed += sample.value
                elif sample.name == "cse_bus_messages_produced_total":
                    produced += sample.value
                elif sample.name == "cse_bus_consumer_lag_messages":
                    lag += sample.value
        now = time.monotonic()
        if child._sample is not None:
            t0, c0 = child._sample
            child.rate = max(0.0, (consumed - c0) / max(now - t0, 1e-6))
        child._sample = (now, consumed)
        child.consumed_total, child.produced_total, child.lag = consumed, produced, lag
        child.venue_books = venue_books
        child.venue_feed = venue_feed
        return ok

    def _venue_rates(self, now: float) -> None:
        """Books per second per venue: what every main replica published for it."""
        for child in self.children:
            if child.spec.kind != "venue":
                continue
            total = sum(c.venue_books.get(child.spec.name, 0.0) for c in self.children)
            rows = [c.venue_feed[child.spec.name] for c in self.children if child.spec.name in c.venue_feed]
            child.feed = feed_state(int(sum(r[0] for r in rows)), int(sum(r[1] for r in rows)),
                                    any(r[2] for r in rows))
            if child._sample is not None:
                t0, c0 = child._sample
                child.rate = max(0.0, (total - c0) / max(now - t0, 1e-6))
            child._sample = (now, total)
            child.consumed_total = total

    def _maybe_healthy(self, now: float) -> None:
        all_ok = all(c.healthy for c in self.children)
        if all_ok and self.healthy_since is None:
            self.healthy_since = now
            ports = {c.spec.name: c.spec.ports.get("metrics") for c in self.children}
            self._say(f"stack healthy in {now - self.started:.1f}s: status page and API "
                      f"{self.endpoints['api']}/ , rebalance metrics :{ports.get('portfolio-rebalancer')}"
                      f" (main :{ports.get('cryptospreadedge-main')}), monitor metrics "
                      f":{ports.get('portfolio-monitor')}; Ctrl-C to stop")
        elif not all_ok:
            self.healthy_since = None

    async def _shutdown(self) -> None:
        self._say("stopping workers")
        workers = [c for c in self.children if c.spec.kind == "worker" and c.proc]
        await asyncio.gather(*(self._stop_child(c, self.config.worker_grace_s) for c in workers))
        self._say("stopping infrastructure")
        for child in reversed([c for c in self.children if c.spec.kind != "worker" and c.proc]):
            await self._stop_child(child, 10.0)
        self._write_status(final=True)
        self._say("stopped")

    async def _stop_child(self, child: ChildState, grace_s: float) -> None:
        proc = child.proc
        if proc is None:
            return
        await asyncio.to_thread(infra.terminate, proc, grace_s)
        child.proc = None
        child.state = "stopped"
        child.healthy = False

    # -- status ------------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        now = time.monotonic()
        rows = []
        for c in self.children:
            rows.append({
                "name": c.spec.name,
                "kind": c.spec.kind,
                "state": c.state,
                "healthy": c.healthy,
                "pid": c.proc.pid if c.proc else None,
                "ports": c.spec.ports,
                "restarts": c.restarts,
                "uptime_s": round(now - c.started_at, 1) if c.proc else 0.0,
                "msgs_per_s": round(c.rate, 1),
                "feed": c.feed,
                "consumed_total": c.consumed_total,
                "lag": c.lag,
                "last_exit": c.last_exit,
                "log": str(c.log_path),
            })
        return {
            "supervisor_pid": os.getpid(),
            "run_dir": str(self.config.run_dir),
            "updated_at": time.time(),
            "healthy": all(c.healthy for c in self.children),
            "endpoints": self.endpoints,
            "processes": rows,
        }

    def _write_status(self, final: bool = False) -> dict[str, Any]:
        snap = self.snapshot()
        if final:
            snap["stopped"] = True
        _atomic_write(self.config.run_dir / STATUS_FILE, json.dumps(snap, indent=2))
        return snap

    def _render(self) -> None:
        snap = self._write_status()
        table = render_table(snap)
        now = time.monotonic()
        if self.tty:
            self.out.write("\x1b[H\x1b[2J" + table + "\n\n" + "\n".join(self._recent) + "\n")
            self.out.flush()
            return
        # Not a terminal (CI, a pipe): print the table when a process changes state, or
        # every 60 s, never every second.
        key = repr([(r["name"], r["state"], r["pid"], r["restarts"]) for r in snap["processes"]])
        if key != self._last_render or now - self._last_print > 60:
            self._last_render, self._last_print = key, now
            print(table, file=self.out, flush=True)

    def _say(self, line: str) -> None:
        stamped = f"[{time.strftime('%H:%M:%S')}] {line}"
        self._recent = [*self._recent[-5:], stamped]
        if not self.tty:
            print(stamped, file=self.out, flush=True)


def render_table(snap: dict[str, Any]) -> str:
    header = f"{'PROCESS':<24} {'KIND':<6} {'STATE':<10} {'PID':>7} {'PORTS':<22} " \
             f"{'RESTARTS':>8} {'UPTIME':>8} {'MSG/S':>8} {'LAG':>7}  FEED"
    lines = [header]
    for r in snap["processes"]:
        ports = ",".join(f"{k}:{v}" for k, v in r["ports"].items())
        lag = "-" if r["kind"] != "worker" else f"{r['lag']:.0f}"
        rate = "-" if r["kind"] == "infra" else f"{r['msgs_per_s']:.1f}"
        lines.append(
            f"{r['name']:<24} {r['kind']:<6} {r['state']:<10} {r['pid'] or '-':>7} {ports:<22} "
            f"{r['restarts']:>8} {_dur(r['uptime_s']):>8} {rate:>8} {lag:>7}"
            + (f"  {r.get('feed', '-')}" if r["kind"] == "venue" else "")
        )
    verdict = "HEALTHY" if snap["healthy"] else "NOT HEALTHY"
    lines.append("MSG/S: messages handled per second (workers), order books published per second "
                 "(venues); FEED: a venue's pairs followed over websocket streams / polled over REST")
    lines.append(f"stack: {verdict}   run dir: {snap['run_dir']}")
    return "\n".join(lines)


def feed_state(streamed: int, polled: int, stream_mode: bool) -> str:
    """How a venue's pairs are ingested: all streamed, polled by configuration, or some
    polled because their stream is down or silent (the fallback)."""
    total = streamed + polled
    if total == 0:
        return "-"
    if not stream_mode:
        return f"poll {polled}"
    if polled == 0:
        return f"stream {streamed}/{total}"
    return f"fallback {polled}/{total} polled"


def _dur(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def read_status(run_dir: Path, max_age_s: float = 5.0) -> tuple[dict[str, Any] | None, str]:
    """The last snapshot of a running stack, or None with the reason."""
    path = run_dir / STATUS_FILE
    try:
        snap = json.loads(path.read_text())
    except FileNotFoundError:
        return None, f"no embedded stack has run in {run_dir} (start it with `cse dev up`)"
    except json.JSONDecodeError:
        return None, f"{path} is unreadable"
    if snap.get("stopped"):
        return snap, "the embedded stack is stopped"
    pid = snap.get("supervisor_pid")
    try:
        os.kill(int(pid), 0)
    except (OSError, TypeError, ValueError):
        return snap, f"the supervisor (pid {pid}) is gone"
    if time.time() - float(snap.get("updated_at", 0)) > max_age_s:
        return snap, "the status is stale: the supervisor is not updating it"
    return snap, "ok"
