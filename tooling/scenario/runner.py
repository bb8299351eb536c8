"""Running a scenario: the real processes on free ports, the books played, the outcome collected.

Order of events (each step prints a progress line):

1. the run directory (``--keep DIR``, else a temporary one) gets one replay file per venue
   (``replay/<venue>.jsonl``: the venue's books at ``ts = T0 + at``, an empty book first
   for a symbol whose first book comes later, so nothing is served before its time);
2. the Tansu broker, redis-server, victoria-metrics and one venue-sim per venue
   (``--replay FILE --replay-hold``: its replay clock stopped, no books served) start
   together; the topics are created; each venue's ledger is read (the starting balances);
3. ``cse main`` (ingest only: ``CSE_REBALANCE_ENABLED=0``) and the arbitrage replicas
   start with the scenario's settings over fast defaults; the runner waits until every
   worker's ``/ready`` answers 200, ingest owns every venue×symbol pair, and the consumer
   groups have settled (``cse_bus_partitions_assigned`` summed over the replicas equals the
   partition count for ``arbitrage-worker`` and ``arbitrage-executor``, and for
   ``arbitrage-triangular`` when it is on, each replica holding one at least while
   replicas <= partitions), stable for 1 s;
4. every venue's replay starts at one wall time (``POST /venue-sim/v1/replay/start`` with
   ``at_ms`` = now + 300 ms) and the books play for ``duration_s``; then ingest stops, so
   nothing new enters;
5. settling: until every opportunity in the Redis execution ledger is ``done``, the
   detection and execution groups have committed everything published to them, and
   ``orders.executions`` got nothing new for 1 s (at most 30 s; a timeout is a failed
   check, not a crash);
6. ``orders.executions``, ``arb.opportunities`` and ``md.orderbooks`` are read from the
   start (no group), the venues' ledgers and the Redis ledger and drift list read, every
   process stopped (workers first, then the rest; none is left behind), the journals read,
   and :func:`tooling.scenario.measure.evaluate` judges.

Venues run with ``--weight-limit 1000000``: a scenario is about prices and fills, not
about the request-weight limit that fast polling would reach.

Children get this process's environment without its ``CSE_*`` variables (a scenario runs
the same whatever the shell exports), plus the runner's and the file's settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import aiohttp
import msgspec
from aiokafka.errors import KafkaError
from prometheus_client.parser import text_string_to_metric_families
from redis.exceptions import RedisError

from shared.messages import (
    ARB_OPPORTUNITIES,
    MD_ORDERBOOKS,
    ORDERS_EXECUTIONS,
    Execution,
    Opportunity,
    OrderBook,
    now_ms,
)
from shared.rediskeys import DEFAULT_PREFIX, RedisKeys
from shared.settings import DEV_SIM_API_KEY, DEV_SIM_API_SECRET
from tooling.devstack import infra
from tooling.devstack.infra import LOCALHOST, ProcessSpec
from tooling.scenario.measure import Collected, Report, evaluate
from tooling.scenario.spec import Scenario, ScenarioError, Venue, load
from workers.arbitrage.settings import ArbitrageSettings

T0_MS = 1_700_000_000_000  # the recordings' clock: a book at `at` is stamped T0 + at
START_LEAD_MS = 300  # the replays start this long after the start request
READY_TIMEOUT_S = 90.0
STABLE_S = 1.0
SETTLE_TIMEOUT_S = 30.0
QUIET_S = 1.0
WORKER_GRACE_S = 10.0
DEFAULT_PARTITIONS = 6
# fast defaults for a short run; the file's [settings] override them
FAST_SETTINGS = {
    "CSE_KAFKA_SESSION_TIMEOUT_MS": "3000",
    "CSE_KAFKA_HEARTBEAT_INTERVAL_MS": "500",
    "CSE_INGEST_INTERVAL_S": "0.1",
    "CSE_ARB_BALANCE_INTERVAL_S": "1",
    "CSE_EXCHANGE_TIMEOUT_MS": "5000",
    "CSE_LOG_FORMAT": "json",
}
DETECTION_GROUP, EXECUTION_GROUP, TRIANGULAR_GROUP = (
    ArbitrageSettings.model_fields[f].default
    for f in ("group_id", "executor_group_id", "triangular_group_id"))
GROUPS = (DETECTION_GROUP, EXECUTION_GROUP)


class RunError(RuntimeError):
    """The scenario could not be run to the end (exit 2, not a failed check)."""


class StartError(RunError):
    """The scenario could not be started (a process, a port, a missing venue-sim feature)."""


# --- replay files (pure) ------------------------------------------------------------------------

def replay_records(venue: Venue) -> list[dict[str, Any]]:
    """The venue's JSON-lines replay (format in :mod:`tooling.venue_sim.replay`)."""
    out: list[dict[str, Any]] = []
    for f in venue.symbols:
        rec: dict[str, Any] = {"type": "symbol", "symbol": f.symbol}
        for key, value in (("tickSize", f.tick), ("stepSize", f.step), ("minNotional", f.min_notional)):
            if value is not None:
                rec[key] = format(value, "f")
        out.append(rec)
    firsts: dict[str, float] = {}
    for book in venue.books:
        firsts.setdefault(book.symbol, book.at)
    for symbol, at in firsts.items():
        if at > 0:  # venue-sim serves a symbol's first record from the start: make it empty
            out.append({"type": "book", "ts": T0_MS, "symbol": symbol, "bids": [], "asks": []})
    for book in venue.books:
        out.append({"type": "book", "ts": T0_MS + round(book.at * 1000), "symbol": book.symbol,
                    "bids": [[format(p, "f"), format(q, "f")] for p, q in book.bids],
                    "asks": [[format(p, "f"), format(q, "f")] for p, q in book.asks]})
    return out


def worker_settings(scenario: Scenario, endpoints: dict[str, str]) -> dict[str, str]:
    """``CSE_*`` every worker gets: fast defaults, then the file's settings, then the runner's."""
    fees = ",".join(f"{name}={format(v.fee, 'f')}" for name, v in scenario.venues.items())
    env = {**FAST_SETTINGS, "CSE_ARB_TAKER_FEES": fees, **scenario.settings}
    env.update({
        "CSE_KAFKA_BOOTSTRAP_SERVERS": endpoints["kafka"],
        "CSE_REDIS_URL": endpoints["redis"],
        "CSE_INFLUX_URL": endpoints["influx"],
        "CSE_METRICS_HOST": LOCALHOST,
        "CSE_VENUES": endpoints["venues"],
        "CSE_SYMBOLS": ",".join(scenario.symbols),
        "PYTHONUNBUFFERED": "1",
    })
    return env


def venue_sim_supports(*options: str) -> dict[str, bool]:
    """Which of ``options`` this checkout's venue-sim accepts."""
    from tooling.venue_sim.config import parser

    text = parser().format_help()
    return {o: o in text for o in options}


# --- processes ------------------------------------------------------------------------------------

@dataclass
class Child:
    spec: ProcessSpec
    proc: subprocess.Popen[bytes]
    log: Path
    stopped: bool = False

    def last_log_line(self) -> str:
        try:
            lines = [x for x in self.log.read_text(errors="replace").splitlines() if x.strip()]
        except OSError:
            return ""
        return lines[-1][:400] if lines else ""


@dataclass
class Processes:
    logs: Path
    children: list[Child] = field(default_factory=list)

    def spawn(self, spec: ProcessSpec) -> Child:
        log = self.logs / f"{spec.name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("CSE_")}
        env.update(spec.env)
        with open(log, "ab") as out:
            proc = subprocess.Popen(spec.argv, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=env, cwd=spec.cwd,
                                    start_new_session=True,
                                    preexec_fn=infra._die_with_parent)  # as infra.spawn
        child = Child(spec, proc, log)
        self.children.append(child)
        return child

    def exited(self) -> list[Child]:
        return [c for c in self.children if not c.stopped and c.proc.poll() is not None]

    async def stop_async(self, children: list[Child], grace_s: float) -> None:
        jobs = []
        for child in children:
            if not child.stopped:
                child.stopped = True
                jobs.append(asyncio.to_thread(infra.terminate, child.proc, grace_s))
        await asyncio.gather(*jobs)

    async def stop_all(self) -> None:
        workers = [c for c in self.children if c.spec.kind == "worker"]
        await self.stop_async(workers, WORKER_GRACE_S)
        await self.stop_async(self.children, 5.0)


# --- the run ----------------------------------------------------------------------------------------

@dataclass
class Stack:
    processes: Processes
    endpoints: dict[str, str]
    venues: dict[str, str]  # name -> base URL
    venue_children: dict[str, Child]
    journals: dict[str, Path]
    main: Child | None = None
    replicas: list[tuple[Child, int]] = field(default_factory=list)  # (child, metrics port)
    main_port: int = 0
    partitions: int = DEFAULT_PARTITIONS
    prefix: str = DEFAULT_PREFIX
    triangular: bool = False


class Runner:
    def __init__(self, scenario: Scenario, run_dir: Path, *, replicas: int | None = None,
                 say: Callable[[str], None] = print, kept: bool = True):
        self.scenario = scenario
        self.run_dir = run_dir
        self.kept = kept
        self.replicas = replicas if replicas is not None else scenario.replicas
        self.say = say
        self.processes = Processes(run_dir / "logs")

    async def run(self) -> Report:
        started = time.monotonic()
        collected = Collected()
        try:
            stack = await self.start()
            play_started = await self.play(stack)
            collected.settled, collected.settle_note = await self.settle(stack, play_started)
            await self.collect(stack, collected)
        finally:
            await self.processes.stop_all()
        for name, path in stack.journals.items():
            collected.journals[name] = _read_journal(path)
        collected.elapsed_s = time.monotonic() - started
        return evaluate(self.scenario, collected)

    # -- 1-3: start ------------------------------------------------------------------------------
    async def start(self) -> Stack:
        sc = self.scenario
        need = venue_sim_supports("--replay-hold", "--order-latency-ms")
        if not need["--replay-hold"]:
            raise StartError("this venue-sim has no --replay-hold (needed to start every venue's "
                             "replay at one time); update the checkout")
        slow = [n for n, v in sc.venues.items() if v.order_latency_ms]
        if slow and not need["--order-latency-ms"]:
            raise StartError(f"venues.{slow[0]}.order_latency_ms: this venue-sim has no "
                             "--order-latency-ms")
        try:
            partitions = int(sc.settings.get("CSE_KAFKA_PARTITIONS", DEFAULT_PARTITIONS))
        except ValueError:
            raise StartError("CSE_KAFKA_PARTITIONS must be an integer") from None
        replay_dir, journal_dir, data = (self.run_dir / d for d in ("replay", "journals", "data"))
        replay_dir.mkdir(parents=True, exist_ok=True)
        infra_specs = [
            infra.tansu_spec(infra.free_port()),
            infra.redis_spec(infra.free_port(), data / "redis"),
            infra.victoria_metrics_spec(infra.free_port(), data / "victoria-metrics"),
        ]
        venue_specs, urls, journals = {}, {}, {}
        for name, venue in sc.venues.items():
            replay = replay_dir / f"{name}.jsonl"
            replay.write_text("".join(json.dumps(r) + "\n" for r in replay_records(venue)))
            journals[name] = journal_dir / f"{name}.jsonl"
            port = infra.free_port()
            args = ["--replay", str(replay), "--replay-hold", "--quote", sc.quote,
                    "--balances", ",".join(f"{a}={format(v, 'f')}" for a, v in venue.balances.items()),
                    "--maker-fee", format(venue.fee, "f"), "--taker-fee", format(venue.fee, "f"),
                    "--weight-limit", "1000000", "--log-format", "json"]
            if venue.order_latency_ms:
                args += ["--order-latency-ms", f"{venue.order_latency_ms:g}"]
            venue_specs[name] = infra.venue_sim_spec(name, port, 7, DEV_SIM_API_KEY, DEV_SIM_API_SECRET,
                                                     journals[name], args)
            venue_specs[name].name = f"venue-{name}"  # its log file; --name stays the venue's name
            urls[name] = f"http://{LOCALHOST}:{port}"
        self.say(f"starting broker, redis, victoria-metrics and {len(sc.venues)} venues...")
        infra_children = [self.processes.spawn(s) for s in infra_specs]
        venue_children = {n: self.processes.spawn(s) for n, s in venue_specs.items()}
        for child in [*infra_children, *venue_children.values()]:
            await self._wait_ready(child)
        kafka, redis, vm = (c.spec.ports for c in infra_children)
        endpoints = {"kafka": f"{LOCALHOST}:{kafka['kafka']}", "redis": f"redis://{LOCALHOST}:{redis['redis']}/0",
                     "influx": f"http://{LOCALHOST}:{vm['http']}",
                     "venues": ",".join(f"{n}={u}" for n, u in urls.items())}
        stack = Stack(self.processes, endpoints, urls, venue_children, journals, partitions=partitions,
                      prefix=sc.settings.get("CSE_REDIS_KEY_PREFIX", DEFAULT_PREFIX),
                      triangular=sc.settings.get("CSE_ARB_TRIANGULAR", "").lower() in ("1", "true", "yes",
                                                                                          "on"))
        await self._create_topics(stack)
        self.initial_ledgers = await self._ledgers(stack)
        self.say(f"starting {len(sc.venues)} venues, ingest, {self.replicas} arbitrage replicas...")
        env = worker_settings(sc, endpoints)
        env["CSE_KEYS_FILE"] = str(self.run_dir / "no-api-keys")  # paper venues only, whatever the cwd
        stack.main_port = infra.free_port()
        stack.main = self.processes.spawn(ProcessSpec(
            name="main", argv=[sys.executable, "-m", "workers.main"], kind="worker",
            env={**env, "CSE_REBALANCE_ENABLED": "0", "CSE_API_HOST": LOCALHOST,
                 "CSE_API_PORT": str(infra.free_port()), "CSE_METRICS_PORT": str(stack.main_port)}))
        for i in range(self.replicas):
            port = infra.free_port()
            child = self.processes.spawn(ProcessSpec(
                name=f"arbitrage-{i + 1}", argv=[sys.executable, "-m", "workers.arbitrage"],
                kind="worker", env={**env, "CSE_METRICS_PORT": str(port)}))
            stack.replicas.append((child, port))
        await self._wait_workers(stack)
        return stack

    async def _wait_ready(self, child: Child, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if child.proc.poll() is not None:
                raise StartError(f"{child.spec.name} exited with code {child.proc.returncode} while "
                                 f"starting: {child.last_log_line() or 'no output'}")
            if child.spec.ready is None or await asyncio.to_thread(child.spec.ready):
                return
            await asyncio.sleep(0.05)
        raise StartError(f"{child.spec.name} not ready within {timeout_s:.0f} s: "
                         f"{child.last_log_line() or 'no output'}")

    async def _create_topics(self, stack: Stack) -> None:
        from shared.bus import Bus
        from shared.settings import KafkaSettings

        async with Bus(KafkaSettings(bootstrap_servers=stack.endpoints["kafka"],
                                     partitions=stack.partitions)) as bus:
            await bus.ensure_topics(force=True)

    async def _wait_workers(self, stack: Stack) -> None:
        """/ready everywhere, ingest owning every pair, both groups settled: stable for 1 s."""
        pairs = len(self.scenario.venues) * len(self.scenario.symbols)
        groups = (*GROUPS, TRIANGULAR_GROUP) if stack.triangular else GROUPS
        deadline = time.monotonic() + READY_TIMEOUT_S
        good_since: float | None = None
        why = "not started"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2.0)) as http:
            while True:
                for child in self.processes.exited():
                    raise StartError(f"{child.spec.name} exited with code {child.proc.returncode} "
                                     f"while starting: {child.last_log_line() or 'no output'}")
                why = await self._not_ready(http, stack, pairs, groups)
                now = time.monotonic()
                if why:
                    good_since = None
                elif good_since is None:
                    good_since = now
                elif now - good_since >= STABLE_S:
                    return
                if now > deadline:
                    where = (f"logs in {self.processes.logs}" if self.kept else
                             "run with --keep DIR to keep the logs")
                    raise StartError(f"workers not ready within {READY_TIMEOUT_S:.0f} s: {why}; {where}")
                await asyncio.sleep(0.2)

    async def _not_ready(self, http: aiohttp.ClientSession, stack: Stack, pairs: int,
                         groups: tuple[str, ...]) -> str:
        """Why the workers are not ready yet ('' when they are)."""
        assert stack.main is not None
        ports = [("main", stack.main_port), *((c.spec.name, p) for c, p in stack.replicas)]
        for name, port in ports:
            if await _get_status(http, f"http://{LOCALHOST}:{port}/ready") != 200:
                return f"{name} /ready is not 200"
        owned = (await _metrics(http, stack.main_port)).get(("cse_md_pairs_owned", ()), 0.0)
        if owned < pairs:
            return f"ingest owns {owned:g} of {pairs} venue/symbol pairs"
        per_group: dict[str, list[float]] = {g: [] for g in groups}
        for _child, port in stack.replicas:
            samples = await _metrics(http, port)
            for g in groups:
                per_group[g].append(samples.get(("cse_bus_partitions_assigned", (("group", g),)), 0.0))
        for g, counts in per_group.items():
            if g == TRIANGULAR_GROUP:  # one elected replica holds them all
                ok = sum(counts) == stack.partitions
            else:
                ok = sum(counts) == stack.partitions and (
                    len(counts) > stack.partitions or all(c >= 1 for c in counts))
            if not ok:
                return f"group {g} not settled: partitions per replica {[int(c) for c in counts]}"
        return ""

    # -- 4: play ---------------------------------------------------------------------------------
    async def play(self, stack: Stack) -> float:
        at_ms = now_ms() + START_LEAD_MS
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5.0)) as http:
            for name, url in stack.venues.items():
                try:
                    async with http.post(f"{url}/venue-sim/v1/replay/start", json={"at_ms": at_ms}) as r:
                        body = await r.text()
                        if r.status != 200:
                            raise StartError(f"venue {name}: replay start answered {r.status}: {body[:200]}")
                    (self.run_dir / "replay" / f"{name}.start.json").write_text(body)
                except (aiohttp.ClientError, TimeoutError) as exc:
                    raise StartError(f"venue {name}: replay start failed: {exc}") from None
        self.say(f"playing {self.scenario.duration_s:.1f} s...")
        end = at_ms / 1000 + self.scenario.duration_s
        await asyncio.sleep(max(0.0, end - time.time()))
        self.crashed = [c.spec.name for c in self.processes.exited()]
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5.0)) as http:
            self.ingest_counts = _ingest_counts(await _metrics(http, stack.main_port))
        assert stack.main is not None
        await self.processes.stop_async([stack.main], WORKER_GRACE_S)  # no new books from here on
        return at_ms / 1000

    # -- 5: settle -------------------------------------------------------------------------------
    async def settle(self, stack: Stack, play_started: float) -> tuple[bool, str]:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        self.say("settling...")
        started = time.monotonic()
        redis = _redis(stack.endpoints["redis"])
        groups = {DETECTION_GROUP: MD_ORDERBOOKS, EXECUTION_GROUP: ARB_OPPORTUNITIES}
        if stack.triangular:
            groups[TRIANGULAR_GROUP] = MD_ORDERBOOKS
        lookers = {}
        try:
            for group in groups:
                c = AIOKafkaConsumer(bootstrap_servers=stack.endpoints["kafka"], group_id=group,
                                     enable_auto_commit=False)
                await c.start()
                lookers[group] = c
            last_end: int | None = None
            quiet_since = time.monotonic()
            why = ""
            while True:
                why = ""
                for group, topic in groups.items():
                    c = lookers[group]
                    tps = [TopicPartition(topic, p) for p in range(stack.partitions)]
                    if not c.assignment():
                        c.assign(tps)
                    # short of the true end by a last batch's later records (see read_topic),
                    # but a group that has not handled that batch has not committed its base
                    ends = await c.end_offsets(tps)
                    behind = 0
                    for tp in tps:
                        behind += max(0, ends[tp] - (await c.committed(tp) or 0))
                    if behind:
                        why = why or f"{group} has {behind} {topic} records to handle"
                states = await _ledger_states(redis, stack.prefix)
                open_ = [k for k, s in states.items() if s.get("state") != "done"]
                if open_:
                    why = why or f"{len(open_)} opportunities not done"
                looker = lookers[EXECUTION_GROUP]
                etps = [TopicPartition(ORDERS_EXECUTIONS, p) for p in range(stack.partitions)]
                end = sum((await looker.end_offsets(etps)).values())
                if end != last_end:
                    last_end, quiet_since = end, time.monotonic()
                quiet = time.monotonic() - quiet_since >= QUIET_S
                if not why and quiet:
                    return True, f"settled {time.monotonic() - started:.1f} s after the play"
                if time.monotonic() - started > SETTLE_TIMEOUT_S:
                    return False, (f"timeout after {SETTLE_TIMEOUT_S:.0f} s: "
                                   f"{why or 'executions still arriving'}")
                await asyncio.sleep(0.2)
        finally:
            for c in lookers.values():
                with contextlib.suppress(Exception):
                    await c.stop()
            await redis.aclose()

    # -- 6: collect ------------------------------------------------------------------------------
    async def collect(self, stack: Stack, collected: Collected) -> None:
        try:
            await self._collect(stack, collected)
        except (OSError, TimeoutError, KafkaError, RedisError) as exc:
            raise RunError(f"collecting the outcome failed: {exc!r}"[:400]) from exc

    async def _collect(self, stack: Stack, collected: Collected) -> None:
        collected.ledgers_before = self.initial_ledgers
        collected.ledgers_after = await self._ledgers(stack)
        records = await read_topic(stack.endpoints["kafka"], ORDERS_EXECUTIONS, stack.partitions)
        collected.executions = [msgspec.json.decode(r, type=Execution) for r in records]
        for raw in await read_topic(stack.endpoints["kafka"], MD_ORDERBOOKS, stack.partitions):
            book = msgspec.json.decode(raw, type=OrderBook)
            if book.bids and book.asks:
                key = (book.venue, book.symbol)
                collected.books[key] = collected.books.get(key, 0) + 1
        for raw in await read_topic(stack.endpoints["kafka"], ARB_OPPORTUNITIES, stack.partitions):
            opp = msgspec.json.decode(raw, type=Opportunity)
            collected.opportunities.setdefault(opp.id, opp)
        redis = _redis(stack.endpoints["redis"])
        try:
            collected.states = await _ledger_states(redis, stack.prefix)
            drift = await redis.lrange(RedisKeys(stack.prefix).arb_drift(), 0, -1)
            collected.drift = [json.loads(x) for x in drift]
        finally:
            await redis.aclose()
        collected.ingest = dict(getattr(self, "ingest_counts", {}))
        collected.crashed = list(getattr(self, "crashed", []))
        collected.crashed += [c.spec.name for c in self.processes.exited() if c.spec.name not in
                              collected.crashed]

    async def _ledgers(self, stack: Stack) -> dict[str, dict[str, Any]]:
        out = {}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5.0)) as http:
            for name, url in stack.venues.items():
                with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
                    async with http.get(f"{url}/venue-sim/v1/ledger") as r:
                        if r.status == 200:
                            out[name] = await r.json()
        return out


# --- helpers --------------------------------------------------------------------------------------

async def _get_status(http: aiohttp.ClientSession, url: str) -> int:
    try:
        async with http.get(url) as r:
            await r.read()
            return r.status
    except (aiohttp.ClientError, TimeoutError, OSError):
        return 0


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def _metrics(http: aiohttp.ClientSession, port: int) -> Samples:
    """Samples of a worker's /metrics by (name, sorted labels); empty when it does not answer."""
    try:
        async with http.get(f"http://{LOCALHOST}:{port}/metrics") as r:
            text = await r.text()
    except (aiohttp.ClientError, TimeoutError, OSError):
        return {}
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


INGEST_COUNTERS = {"published": "cse_md_books_published_total",
                   "unchanged": "cse_md_books_unchanged_total",
                   "fetch_errors": "cse_md_fetch_errors_total"}


def _ingest_counts(samples: Samples) -> dict[str, dict[str, float]]:
    """Ingest's counters per venue at the end of the play ({} when main did not answer)."""
    out: dict[str, dict[str, float]] = {}
    for (name, labels), value in samples.items():
        for what, metric in INGEST_COUNTERS.items():
            if name == metric:
                out.setdefault(dict(labels).get("venue", ""), {})[what] = value
    return out


def _redis(url: str) -> Any:
    from shared.coordination import connect
    from shared.settings import RedisSettings

    return connect(RedisSettings(url=url))


async def _ledger_states(redis: Any, prefix: str) -> dict[str, dict[str, str]]:
    out = {}
    async for key in redis.scan_iter(RedisKeys(prefix).arb_opportunity("*")):
        raw = await redis.hgetall(key)
        name = key.decode() if isinstance(key, bytes) else str(key)
        out[name.rsplit(":", 1)[1]] = {
            (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
            for k, v in raw.items()}
    return out


async def read_topic(bootstrap: str, topic: str, partitions: int, timeout_s: float = 20.0) -> list[bytes]:
    """Every record value of ``topic`` from the start to its current end, by partition and offset.

    The end offsets only say when to stop, never which records count: the embedded broker
    answers a partition's end as its last record batch's base offset + 1, so the records
    after the first in that batch lie beyond it (a batch of two books gave an end of 1).
    Fetches return whole batches, so reading until the position passes the answered end
    reads the true end."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest", fetch_max_wait_ms=10)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        records: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic}: not at its end within {timeout_s:.0f} s")
            batch = await consumer.getmany(timeout_ms=200)
            for part in batch.values():
                records.extend(part)
    finally:
        await consumer.stop()
    records.sort(key=lambda r: (r.partition, r.offset))
    return [r.value for r in records]


def _read_journal(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# --- entry points ---------------------------------------------------------------------------------

def run_file(path: Path | str, *, replicas: int | None = None, keep: Path | None = None,
             out: TextIO | None = None, err: TextIO | None = None) -> tuple[int, dict[str, Any] | None]:
    """Run a scenario file: progress, one PASS/FAIL line per check and the JSON summary to
    ``out``; returns (exit code, summary). Exit 0 all passed, 1 a check failed, 2 a bad file
    or a failure to start (one line on ``err``)."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        scenario = load(path)
    except ScenarioError as exc:
        print(exc, file=err)
        return 2, None
    if replicas is not None and not 1 <= replicas <= 32:
        print(f"{path}: --replicas must be from 1 to 32, got {replicas}", file=err)
        return 2, None
    if keep is not None:
        keep = Path(keep)
        if keep.exists() and (not keep.is_dir() or any(keep.iterdir())):
            print(f"{path}: --keep {keep}: not an empty directory (two runs would mix)", file=err)
            return 2, None
        keep.mkdir(parents=True, exist_ok=True)
        run_dir = keep.resolve()
    else:
        run_dir = Path(tempfile.mkdtemp(prefix="cse-scenario-"))

    def say(line: str) -> None:
        print(line, file=out, flush=True)

    try:
        runner = Runner(scenario, run_dir, replicas=replicas, say=say, kept=keep is not None)
        report = asyncio.run(runner.run())
    except (StartError, infra.MissingBinary) as exc:
        print(f"{path}: cannot start: {exc}", file=err)
        return 2, None
    except RunError as exc:
        print(f"{path}: {exc}", file=err)
        return 2, None
    finally:
        if keep is None:
            shutil.rmtree(run_dir, ignore_errors=True)
    for check in report.checks:
        say(check.line())
    summary = report.summary()
    if keep is not None:
        summary["run_dir"] = str(run_dir)
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    say(json.dumps(summary))
    return (0 if report.passed else 1), summary
