"""Arbitrage workers end to end: 3 replicas, real broker, Redis, store and venue-sims.

Two paper venues share a price model but sit 80 bps below and above it, so buying on one
and selling on the other is a real spread. The test injects one pair of books into
``md.orderbooks``; the replicas must find the spread and execute it exactly once, and
after a replica is SIGKILLed mid-execution, another must settle it without placing any
leg twice. The venues' fill journals and ``orders.executions`` must agree.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import urllib.request
import uuid
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from shared.bus import Bus
from shared.coordination import connect
from shared.messages import (
    ARB_OPPORTUNITIES,
    MD_ORDERBOOKS,
    ORDERS_EXECUTIONS,
    Execution,
    OrderBook,
    now_ms,
)
from shared.settings import RedisSettings
from tests import ROOT
from tests.conftest import NotYet, committed_offsets, eventually, fast_kafka, read_topic, wait_for
from tests.integration.conftest import SimVenue, ccxt_client, start_venue
from tooling.devstack import infra
from workers.arbitrage.settings import ArbitrageSettings

pytestmark = pytest.mark.slow
SYMBOL = "BTC/USDT"


@pytest.fixture(scope="module")
def venues(venue_sim_logs: Path) -> Iterator[dict[str, SimVenue]]:
    cheap = start_venue(venue_sim_logs, "arb-x", seed=5,
                        args=["--price-offset-bps", "-80", "--noise-bps", "1"])
    dear = start_venue(venue_sim_logs, "arb-y", seed=5,
                       args=["--price-offset-bps", "80", "--noise-bps", "1", "--latency-ms", "1500"])
    yield {"arb-x": cheap, "arb-y": dear}
    cheap.stop()
    dear.stop()


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    running = infra.start(infra.tansu_spec(infra.free_port()), tmp_path_factory.mktemp("arb-kafka"))
    yield f"127.0.0.1:{running.port}"
    running.stop()


@pytest.fixture(scope="module")
def replicas(venues, broker, redis_server, victoria, tmp_path_factory) -> Iterator[dict[str, Any]]:
    logs = tmp_path_factory.mktemp("arb-logs")
    prefix = f"arb-{uuid.uuid4().hex[:6]}:"
    env = {
        "CSE_KAFKA_BOOTSTRAP_SERVERS": broker, "CSE_KAFKA_SESSION_TIMEOUT_MS": "3000",
        "CSE_KAFKA_HEARTBEAT_INTERVAL_MS": "500",
        "CSE_REDIS_URL": f"redis://127.0.0.1:{redis_server.port}/0", "CSE_REDIS_KEY_PREFIX": prefix,
        "CSE_INFLUX_URL": f"http://127.0.0.1:{victoria.port}", "CSE_LOG_FORMAT": "json",
        "CSE_METRICS_HOST": "127.0.0.1",
        "CSE_VENUES": ",".join(f"{n}={v.url}" for n, v in venues.items()), "CSE_SYMBOLS": SYMBOL,
        "CSE_ARB_LEASE_S": "4", "CSE_ARB_BALANCE_INTERVAL_S": "1", "CSE_ARB_STALE_MS": "60000",
        "CSE_ARB_MAX_NOTIONAL": "300", "CSE_EXCHANGE_TIMEOUT_MS": "5000",
        # the slow venue's price moves while the leg travels: give up 20 of the 160 bps
        "CSE_ARB_SLIPPAGE_BPS": "20",
        "CSE_ARB_TRIANGULAR": "1",  # one elected replica also scans for triangles
    }
    procs = []
    for i in range(3):
        port = infra.free_port()
        spec = infra.ProcessSpec(name=f"arb-{i}", argv=[sys.executable, "-m", "workers.arbitrage"],
                                 kind="worker", env={**env, "CSE_METRICS_PORT": str(port)}, cwd=str(ROOT))
        procs.append((infra.spawn(spec, logs / f"arb-{i}.log"), port))
    try:
        ports = [port for _proc, port in procs]
        wait_for(lambda: all(infra.http_ready(f"http://127.0.0.1:{p}/ready") for p in ports), 60,
                 "the replicas ready (balances read)", interval_s=0.2)
        wait_for(lambda: groups_settled(ports), 60, "every group shared by the three replicas",
                 interval_s=0.2)
        yield {"procs": procs, "prefix": prefix, "broker": broker, "logs": logs}
    finally:
        for proc, _port in procs:
            infra.terminate(proc, 10)


def groups_settled(ports: list[int]) -> bool:
    """Every replica holds partitions in both shared consumer groups, detection's and the
    executors' (``cse_bus_partitions_assigned``; the triangular scan is one elected member)."""
    from prometheus_client.parser import text_string_to_metric_families

    held: list[dict[str, float]] = []
    for port in ports:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as reply:
            text = reply.read().decode()
        held.append({sample.labels["group"]: sample.value
                     for family in text_string_to_metric_families(text)
                     if family.name == "cse_bus_partitions_assigned" for sample in family.samples})
    return all(h.get(g, 0) >= 1 for h in held for g in shared_groups())


def shared_groups() -> tuple[str, str]:
    """The consumer groups the replicas share: detection's and the executors'."""
    fields = ArbitrageSettings.model_fields
    return fields["group_id"].default, fields["executor_group_id"].default


async def everything_handled(broker: str) -> bool | NotYet:
    """Detection committed past the last book and the executors past the last opportunity:
    every record was handled to the end (a handler's publishes are acknowledged before its
    offset is committed), and nothing is left to be handed to a replica again."""
    behind = {}
    for topic, group in zip((MD_ORDERBOOKS, ARB_OPPORTUNITIES), shared_groups(), strict=True):
        ends = {(topic, r.partition): r.offset + 1 for r in await read_topic(broker, topic, idle_s=0.5)}
        committed = await committed_offsets(broker, group, ends)
        behind.update({f"{group} {t}[{p}]": (committed[t, p], end)
                       for (t, p), end in ends.items() if committed[t, p] < end})
    return not behind or NotYet(behind)


async def inject(broker: str, venues: dict[str, SimVenue], seq: int) -> None:
    """One book from each venue, built from the venue's real book so the legs can fill."""
    books = {}
    for name, venue in venues.items():
        async with ccxt_client(venue) as ex:
            books[name] = await ex.fetch_order_book(SYMBOL, 20)
    now = now_ms()
    async with Bus(fast_kafka(broker)) as bus:
        for name in ("arb-x", "arb-y"):
            raw = books[name]
            await bus.send(MD_ORDERBOOKS, OrderBook(
                venue=name, symbol=SYMBOL, bids=[(float(p), float(q)) for p, q, *_ in raw["bids"]],
                asks=[(float(p), float(q)) for p, q, *_ in raw["asks"]], ts_venue_ms=now,
                ts_recv_ms=now, seq=seq))


def journal_orders(venues: dict[str, SimVenue]) -> dict[str, dict[str, Any]]:
    """clientOrderId -> {venue, order ids, filled qty} from the venues' fill journals."""
    out: dict[str, dict[str, Any]] = defaultdict(lambda: {"venues": set(), "orders": set(), "qty": 0.0})
    for name, venue in venues.items():
        if not venue.journal.exists():
            continue
        for line in venue.journal.read_text().splitlines():
            fill = json.loads(line)
            if not str(fill["clientOrderId"]).startswith("cse"):
                continue
            entry = out[fill["clientOrderId"]]
            entry["venues"].add(name)
            entry["orders"].add(fill["orderId"])
            entry["qty"] += float(fill["qty"])
    return out


async def executions(broker: str) -> dict[str, Execution]:
    """The latest execution report per client order id (one id, one partition: in order)."""
    latest: dict[str, Execution] = {}
    for record in await read_topic(broker, ORDERS_EXECUTIONS):
        ex = msgspec.json.decode(record.value, type=Execution)
        latest[ex.client_order_id] = ex
    return latest


async def ledger_states(redis_port: int, prefix: str) -> dict[str, dict[str, str]]:
    client = connect(RedisSettings(url=f"redis://127.0.0.1:{redis_port}/0"))
    try:
        out = {}
        async for key in client.scan_iter(f"{prefix}arb:opp:*"):
            raw = await client.hgetall(key)
            out[key.decode().rsplit(":", 1)[1]] = {k.decode(): v.decode() for k, v in raw.items()}
        return out
    finally:
        await client.aclose()


async def wait_done(redis_port: int, prefix: str, n: int, timeout: float = 60) -> dict[str, dict[str, str]]:
    async def settled() -> dict[str, dict[str, str]] | None:
        states = await ledger_states(redis_port, prefix)
        if len(states) >= n and all(s.get("state") == "done" for s in states.values()):
            return states
        return None

    return await eventually(settled, timeout, f"{n} opportunities settled", interval_s=0.2)


def assert_journals_and_executions_agree(venues, latest: dict[str, Execution]) -> None:
    fills = journal_orders(venues)
    for cid, entry in fills.items():
        assert len(entry["orders"]) == 1, f"{cid} was placed {len(entry['orders'])} times"
        assert cid in latest, f"{cid} filled on {entry['venues']} but never reported"
        assert latest[cid].filled == pytest.approx(entry["qty"], rel=1e-9), cid
    for cid, ex in latest.items():
        if ex.filled > 0:
            assert cid in fills, f"{cid} reported filled but no venue filled it"


async def test_an_injected_spread_is_detected_and_executed_once(venues, replicas, redis_server) -> None:
    await inject(replicas["broker"], venues, seq=1001)
    await wait_done(redis_server.port, replicas["prefix"], 1)
    # a duplicate (a second opportunity, a leg placed again) would come from a book or an
    # opportunity handled again: once both groups committed everything, it would be here
    await eventually(lambda: everything_handled(replicas["broker"]), 30,
                     "both groups committed every book and opportunity", interval_s=0.2)
    states = await ledger_states(redis_server.port, replicas["prefix"])
    assert len(states) == 1, states
    (opp_id, state), = states.items()
    assert state["outcome"] == "both_legs", state
    latest = await executions(replicas["broker"])
    legs = [ex for ex in latest.values() if ex.parent_id == opp_id]
    assert sorted((ex.venue, ex.side) for ex in legs) == [("arb-x", "buy"), ("arb-y", "sell")]
    assert all(ex.status == "filled" and ex.filled > 0 for ex in legs), [
        (ex.venue, ex.side, ex.status, ex.amount, ex.filled) for ex in legs]
    assert legs[0].filled == pytest.approx(legs[1].filled)
    buy = next(ex for ex in legs if ex.side == "buy")
    sell = next(ex for ex in legs if ex.side == "sell")
    assert sell.average > buy.average * 1.005, "the spread was real: sold well above the buy"
    assert_journals_and_executions_agree(venues, latest)


async def test_the_kill_switch_stops_new_executions_at_once(venues, replicas, redis_server) -> None:
    prefix = replicas["prefix"]
    client = connect(RedisSettings(url=f"redis://127.0.0.1:{redis_server.port}/0"))
    try:
        await client.set(f"{prefix}halt", "test")
        before = set(await ledger_states(redis_server.port, prefix))
        fills_before = journal_orders(venues)
        await inject(replicas["broker"], venues, seq=1501)
        states = await wait_done(redis_server.port, prefix, len(before) + 1)
        new = [s for k, s in states.items() if k not in before]
        assert new and all(s["outcome"] == "halted" for s in new), new
        assert journal_orders(venues).keys() == fills_before.keys(), "an order went out while halted"
    finally:
        await client.delete(f"{prefix}halt")
        await client.aclose()


async def test_a_replica_killed_mid_execution_never_places_a_leg_twice(
        venues, replicas, redis_server) -> None:
    before = set(await ledger_states(redis_server.port, replicas["prefix"]))
    await inject(replicas["broker"], venues, seq=2002)

    async def legs_sent() -> tuple[int, str] | None:
        for opp_id, state in (await ledger_states(redis_server.port, replicas["prefix"])).items():
            if opp_id not in before and state.get("state") == "legs_sent":
                return int(state["owner"].split(":")[1]), opp_id
        return None

    victim_pid, victim_opp = await eventually(legs_sent, 30, "the opportunity's legs sent",
                                              interval_s=0.01)
    os.kill(victim_pid, signal.SIGKILL)  # the slow venue's leg is in flight
    states = await wait_done(redis_server.port, replicas["prefix"], len(before) + 1, timeout=90)
    state = states[victim_opp]
    assert state["outcome"] in ("both_legs", "one_leg", "none"), state
    assert int(state["owner"].split(":")[1]) != victim_pid, "settled by a survivor"
    latest = await executions(replicas["broker"])
    assert_journals_and_executions_agree(venues, latest)
    # whatever one leg filled beyond the other was hedged or recorded as drift
    legs = [ex for ex in latest.values() if ex.parent_id == victim_opp]
    bought = sum(ex.filled for ex in legs if ex.side == "buy" and ex.source == "arbitrage")
    sold = sum(ex.filled for ex in legs if ex.side == "sell" and ex.source == "arbitrage")
    hedged = sum(ex.filled for ex in legs if ex.source == "hedge")
    drift = await drift_for(redis_server.port, replicas["prefix"], victim_opp)
    # a lone buy is hedged with what it delivered: net of its fee, which the venue takes in base
    buy_fee = base_commission(venues, next(ex.client_order_id for ex in legs
                                           if ex.side == "buy" and ex.source == "arbitrage"))
    owed = bought - sold - buy_fee if bought > sold else sold - bought
    assert owed == pytest.approx(hedged + abs(drift), abs=1e-9)


def base_commission(venues: dict[str, SimVenue], client_order_id: str) -> float:
    """The commission in base a venue's journal records for this order's fills."""
    total = 0.0
    base = SYMBOL.split("/")[0]
    for venue in venues.values():
        if venue.journal.exists():
            for line in venue.journal.read_text().splitlines():
                fill = json.loads(line)
                if fill["clientOrderId"] == client_order_id and fill["commissionAsset"] == base:
                    total += float(fill["commission"])
    return total


async def drift_for(redis_port: int, prefix: str, opp_id: str) -> float:
    client = connect(RedisSettings(url=f"redis://127.0.0.1:{redis_port}/0"))
    try:
        entries = [json.loads(x) for x in await client.lrange(f"{prefix}arb:drift", 0, -1)]
    finally:
        await client.aclose()
    return sum(e["quantity"] for e in entries if e["opportunity"] == opp_id)


def test_replicas_report_health(replicas) -> None:
    alive = [proc for proc, _ in replicas["procs"] if proc.poll() is None]
    assert len(alive) >= 2
    texts = []
    for proc, port in replicas["procs"]:
        if proc.poll() is None:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                text = r.read().decode()
            assert "cse_arb_executions_total" in text and "cse_arb_decision_latency_seconds" in text
            texts.append(text)
    # the names alone are listed from import on; a survivor settled the killed replica's opportunity
    assert any('cse_arb_executions_total{outcome="' in text for text in texts)
