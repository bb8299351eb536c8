"""`cse bench scenario`: the whole embedded stack trading its paper venues for N minutes.

The stack is what `cse dev up` runs (three venue-sims on one price model, each with its own
noise, offset and lag; ingest; three arbitrage replicas; the rebalancer and the monitor).
After the run, before anything is stopped, the outcome of every opportunity the arbitrage
workers handled is read from their execution ledger in Redis, every order report from
``orders.executions``, and each venue's conservation ledger. Printed: executions by
outcome, the one-leg ratio (one-leg ÷ executions that traded), orders the venues refused,
hedges, realised PnL per outcome, and a JSON line last.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec

from shared.coordination import connect
from shared.messages import ORDERS_EXECUTIONS, Execution
from shared.rediskeys import DEFAULT_PREFIX, RedisKeys
from shared.settings import RedisSettings, split_pairs
from tooling.devstack.supervisor import StackConfig, Supervisor

TRADED = ("both_legs", "all_legs", "one_leg")


async def _outcomes(redis_url: str, prefix: str = DEFAULT_PREFIX) -> Counter[str]:
    client = connect(RedisSettings(url=redis_url))
    try:
        counts: Counter[str] = Counter()
        async for key in client.scan_iter(RedisKeys(prefix).arb_opportunity("*"), count=1000):
            outcome = await client.hget(key, "outcome")
            counts[outcome.decode() if outcome else "unsettled"] += 1
        return counts
    finally:
        await client.aclose()


async def _executions(bootstrap: str) -> list[Execution]:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(ORDERS_EXECUTIONS, bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    out: list[Execution] = []
    try:
        idle = time.monotonic()
        while time.monotonic() - idle < 2.0:
            batch = await consumer.getmany(timeout_ms=300, max_records=10_000)
            for records in batch.values():
                idle = time.monotonic()
                out += [msgspec.json.decode(r.value, type=Execution) for r in records]
    finally:
        await consumer.stop()
    return out


def _ledgers(venues: str) -> dict[str, bool]:
    out = {}
    for name, url in split_pairs(venues, "name=URL"):
        with urllib.request.urlopen(f"{url}/venue-sim/v1/ledger", timeout=10) as resp:
            out[name] = bool(json.loads(resp.read())["conserved"])
    return out


@contextlib.asynccontextmanager
async def healthy_stack(run_dir: Path) -> AsyncIterator[Supervisor]:
    """The embedded stack (what `cse dev up` runs) in ``run_dir``, once every process is
    healthy (at most 120 s); stopped on exit. Its supervisor's log is ``supervisor.log``."""
    with Path(run_dir, "supervisor.log").open("w") as log:  # noqa: ASYNC230 - once, before it starts
        config = StackConfig(run_dir=run_dir, api_port=None, main_metrics_port=None,
                             monitor_metrics_port=None)
        sup = Supervisor(config, out=log)
        task = asyncio.create_task(sup.run())
        try:
            deadline = time.monotonic() + 120
            while sup.healthy_since is None:
                if task.done() or time.monotonic() > deadline:
                    raise RuntimeError(f"the stack did not become healthy; see {run_dir}/logs")
                await asyncio.sleep(0.5)
            yield sup
        finally:
            sup.stopping.set()
            await task


async def _run(minutes: float, say: Any, keep: Path | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="cse-bench-stack-") as scratch:
        async with healthy_stack(keep if keep is not None else Path(scratch)) as sup:
            say(f"stack healthy; trading for {minutes:g} min")
            started = time.monotonic()
            end = started + minutes * 60
            while time.monotonic() < end:
                await asyncio.sleep(min(30.0, end - time.monotonic()))
                outcomes = await _outcomes(sup.endpoints["redis"])
                traded = sum(outcomes[o] for o in TRADED)
                say(f"{(time.monotonic() - started) / 60:4.1f} min: {traded} executions, "
                    f"{outcomes['one_leg']} one-leg")
            outcomes = await _outcomes(sup.endpoints["redis"])
            reports = await _executions(sup.endpoints["kafka"])
            conserved = _ledgers(sup.endpoints["venues"])
            restarts = {c.spec.name: c.restarts for c in sup.children if c.restarts}
    arb = [r for r in reports if r.source in ("arbitrage", "hedge") and not r.dry_run]
    latest = {r.client_order_id: r for r in arb}  # the last report of each order
    traded = sum(outcomes[o] for o in TRADED)
    return {
        "bench": "scenario", "minutes": minutes,
        "executions": traded, "outcomes": dict(sorted(outcomes.items())),
        "one_leg": outcomes["one_leg"],
        "one_leg_ratio": outcomes["one_leg"] / traded if traded else 0.0,
        "orders": len(latest),
        "refused_orders": sum(1 for r in latest.values() if r.status == "rejected"),
        "hedges": sum(1 for r in latest.values() if r.source == "hedge"),
        "venues_conserved": all(conserved.values()),
        "restarts": restarts,
    }


def bench_stack(minutes: float = 10.0, say: Any = print, keep: Path | None = None) -> dict[str, Any]:
    """Run the stack for ``minutes``; ``keep``: a directory for its logs and data (kept)."""
    return asyncio.run(_run(minutes, say, keep))
