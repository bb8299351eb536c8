"""`cse bench arbitrage`, parts 2 and 3: the detector behind the real broker.

2. On topics filled with the same 200,000 generated books (5 venues x 20 symbols, 20 levels;
   a few seconds of reading each, so one stall of the shared machine does not decide it), the
   rate of a bare aiokafka consumer (fetch + typed decode + commit) against the worker's
   consumer loop (fetch, decode, detect, publish opportunities, commit), each in a fresh
   process, alternating twice in the same run, the better of two each.
   Latency: books produced at a steady 5,000/s stamped with their send time, read by a bare
   consumer (fetch, decode) and, in another run, by the worker, alternating twice, each in
   a fresh process on a fresh broker (see :func:`_latency`): stamp -> bare receipt, and
   stamp -> the worker's receipt, decision and acknowledged opportunity.
3. One and two worker processes in one consumer group over 6 partitions: throughput ratio.

Each throughput phase reads a topic of its own (the in-memory store slows down as a topic
fills, so phases must not share one).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from shared.bus import Bus, ConsumerLoop
from shared.messages import ARB_OPPORTUNITIES, BookHead, Codec, OrderBook, now_ms
from shared.settings import KafkaSettings
from tooling.bench.arbitrage import _cross_stream
from tooling.devstack import infra
from workers.arbitrage.detect import CrossVenueDetector, DetectorConfig
from workers.arbitrage.worker import book_handler

NEVER_STALE = 10**12


def _settings(bootstrap: str) -> KafkaSettings:
    return KafkaSettings(bootstrap_servers=bootstrap, session_timeout_ms=6000,
                         heartbeat_interval_ms=1000, max_poll_records=10_000)


def _detector() -> CrossVenueDetector:
    return CrossVenueDetector(DetectorConfig(default_fee=0.001, slippage_bps=2.0,
                                             max_notional=10_000.0, stale_ms=NEVER_STALE))


async def _fill(bootstrap: str, topic: str, payloads: list[tuple[bytes, bytes]]) -> None:
    await _create(bootstrap, [topic, f"{topic}.dlq"])
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=256 * 1024)
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key) for key, value in payloads]
        await asyncio.gather(*futures)
        await producer.flush()
    finally:
        await producer.stop()


class _AckTimedBus(Bus):
    """A bus that records, for every opportunity published, the stamp of the book that opened
    it, when the loop received that book's batch (``fetched_ns``, set by the caller), when the
    worker published it and when the broker acknowledged it (ns).

    ``ts_book_ms`` is the newer of the two books' stamps: with books stamped at send time and
    a symbol's books in one partition, that is the stamp of the book that opened it.
    """

    def __init__(self, settings: KafkaSettings, published: list[tuple[int, int, int, int]],
                 fetched_ns: list[int], **kw: Any):
        super().__init__(settings, **kw)
        self.published = published
        self.fetched_ns = fetched_ns

    async def publish(self, topic: str, message: Any, key: bytes | None = None
                      ) -> asyncio.Future[Any] | None:
        received, decided = self.fetched_ns[0], time.time_ns()
        future = await super().publish(topic, message, key)
        if future is not None:  # published = acknowledged by the broker
            future.add_done_callback(
                lambda _f, t=message.ts_book_ms, r=received, d=decided:
                self.published.append((t, r, d, time.time_ns())))
        return future


def _worker_loop(bus: Bus, bootstrap: str, topic: str, group: str) -> ConsumerLoop:
    """The worker's own ``md.orderbooks`` handler in a consumer loop over ``topic``."""
    return ConsumerLoop(bus, _settings(bootstrap), [topic], group, book_handler(_detector(), bus),
                        message_types={topic: BookHead})


async def _paced(bootstrap: str, topic: str, stream: list[OrderBook], rate: int, seconds: float) -> int:
    """Produce books at ``rate``/s, each stamped with its send time; returns how many."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    await producer.start()
    sent = 0
    try:
        start = time.perf_counter()
        total = int(rate * seconds)
        while sent < total:
            due = int((time.perf_counter() - start) * rate) + 1
            while sent < min(due, total):
                book = stream[sent % len(stream)]
                stamp = now_ms()
                fresh = msgspec.structs.replace(book, ts_venue_ms=stamp, ts_recv_ms=stamp, seq=sent)
                await producer.send(topic, Codec.encode(fresh), key=book.symbol.encode())
                sent += 1
            await asyncio.sleep(0.001)
        await producer.flush()
    finally:
        await producer.stop()
    return sent


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def _latency(stream: list[OrderBook], rate: int, seconds: float, workdir: Path,
             rounds: int = 2) -> dict[str, float]:
    """Book stamp -> bare receipt, and -> opportunity decided / acknowledged by the worker.

    Alternating, ``rounds`` times each, in fresh processes on a fresh broker each (the
    memory store answers small fetches slower as it fills, so a run must not inherit
    another's topics): this process produces the books at ``rate``/s stamped with their send
    time, one consumer process reads them with the worker's fetch settings. The bare figures
    are taken over the books that open an opportunity (known by running the detector over
    the same sequence here), so both sides describe the same books; the better round of
    each is kept, as for throughput.
    """
    sent = [msgspec.structs.replace(stream[i % len(stream)], seq=i, ts_venue_ms=i, ts_recv_ms=i)
            for i in range(int(rate * seconds))]  # as _paced stamps them: in send order
    detector = _detector()
    opening = {book.seq for book in sent if detector.update(book, 0)}
    bare: list[dict[str, float]] = []
    worker: list[dict[str, float]] = []
    for _round in range(rounds):
        samples = _latency_run("bare", stream, rate, seconds, workdir)
        opened = [lat for seq, lat in samples if seq in opening]
        bare.append({"bare_p50_ms": _pct(opened, 50), "bare_p99_ms": _pct(opened, 99),
                     "bare_all_p99_ms": _pct([lat for _, lat in samples], 99),
                     "latency_samples_bare": len(opened)})
        seen = _latency_run("worker", stream, rate, seconds, workdir)
        own = [d - r for d, r in zip(seen["decided"], seen["received"], strict=True)]
        hop = [a - d for a, d in zip(seen["acked"], seen["decided"], strict=True)]
        worker.append({"received_p50_ms": _pct(seen["received"], 50),
                       "received_p99_ms": _pct(seen["received"], 99),
                       "worker_own_p50_ms": _pct(own, 50), "worker_own_p99_ms": _pct(own, 99),
                       "ack_hop_p50_ms": _pct(hop, 50), "ack_hop_p99_ms": _pct(hop, 99),
                       "decided_p50_ms": _pct(seen["decided"], 50),
                       "decided_p99_ms": _pct(seen["decided"], 99),
                       "p50_ms": _pct(seen["acked"], 50), "p99_ms": _pct(seen["acked"], 99),
                       "latency_samples_opportunities": len(seen["acked"])})
    return {**min(bare, key=lambda r: r["bare_p99_ms"]), **min(worker, key=lambda r: r["p99_ms"]),
            "latency_rounds": rounds, "opening_books": len(opening)}


def _latency_run(mode: str, stream: list[OrderBook], rate: int, seconds: float,
                 workdir: Path) -> Any:
    broker = infra.start(infra.tansu_spec(infra.free_port()), workdir)
    bootstrap = f"127.0.0.1:{broker.port}"
    topic = "bench.lat"
    out = workdir / f"lat-{mode}-{time.time_ns()}.json"
    try:
        asyncio.run(_create(bootstrap, [topic, ARB_OPPORTUNITIES]))
        child = subprocess.Popen(
            [sys.executable, "-m", "tooling.bench.broker", "--latency", mode,
             "--consume", topic, "--bootstrap", bootstrap, "--out", str(out)],
            stdout=subprocess.DEVNULL)
        try:
            _await_ready([out], [child])
            asyncio.run(_paced(bootstrap, topic, stream, rate, seconds))
            child.wait(120)
        finally:
            if child.poll() is None:
                child.kill()
        return json.loads(out.read_text())
    finally:
        broker.stop()


async def _create(bootstrap: str, topics: list[str]) -> None:
    async with Bus(_settings(bootstrap), topics=topics):
        pass  # creates the topics with 6 partitions


def _await_ready(outs: list[Path], children: list[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + 60
    while not all(Path(f"{out}.ready").exists() for out in outs):
        if time.monotonic() > deadline or any(c.poll() is not None for c in children):
            raise RuntimeError("benchmark consumers did not join their groups")
        time.sleep(0.05)


async def _latency_child(bootstrap: str, topic: str, out: Path, bare: bool) -> None:
    """One side of the latency phase: join, say so, then record until the topic idles.

    Bare: (seq, stamp -> receipt ms) of every book. Worker: stamp -> received, decided and
    acknowledged (ms) of every opportunity."""
    run = _latency_bare if bare else _latency_worker
    out.write_text(json.dumps(await run(bootstrap, topic, Path(f"{out}.ready"))))


async def _latency_bare(bootstrap: str, topic: str, ready: Path, idle_s: float = 2.0) -> Any:
    """Fetch and decode with the worker's fetch settings, nothing else (no commit either:
    nothing delays the next receipt)."""
    settings = _settings(bootstrap)
    codec = Codec(OrderBook)
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"lat-bare-{topic}",
                                auto_offset_reset="earliest", enable_auto_commit=False,
                                fetch_max_wait_ms=settings.fetch_max_wait_ms,
                                max_poll_records=settings.max_poll_records)
    lat: list[tuple[int, float]] = []
    await consumer.start()
    try:
        while len(consumer.assignment()) != 6:
            await asyncio.sleep(0.02)
        ready.write_text("ready")
        quiet_since = None
        while quiet_since is None or time.monotonic() - quiet_since < idle_s:
            batch = await consumer.getmany(timeout_ms=100)
            now = time.time_ns()
            for records in batch.values():
                for record in records:
                    book = codec.decode(record.value)
                    lat.append((book.seq, (now - book.ts_recv_ms * 1_000_000) / 1e6))
            if batch:
                quiet_since = time.monotonic()
    finally:
        await consumer.stop()
    return lat


async def _latency_worker(bootstrap: str, topic: str, ready: Path, idle_s: float = 2.0) -> Any:
    """The worker's consumer loop and handler; the time its getmany returned is taken as the
    receipt of every book in that batch (the loop has no hook for it, so this process's
    ``AIOKafkaConsumer.getmany`` is wrapped)."""
    published: list[tuple[int, int, int, int]] = []
    fetched_ns = [0]
    getmany = AIOKafkaConsumer.getmany

    async def timed_getmany(self: AIOKafkaConsumer, *a: Any, **kw: Any) -> Any:
        batch = await getmany(self, *a, **kw)
        fetched_ns[0] = time.time_ns()
        return batch

    AIOKafkaConsumer.getmany = timed_getmany  # type: ignore[method-assign]
    async with _AckTimedBus(_settings(bootstrap), published, fetched_ns,
                            topics=[topic, ARB_OPPORTUNITIES]) as bus:
        loop = _worker_loop(bus, bootstrap, topic, f"lat-worker-{topic}")
        task = asyncio.create_task(loop.run())
        while len(loop.assignment) != 6:
            await asyncio.sleep(0.02)
        ready.write_text("ready")
        seen, quiet_since = 0, None
        while quiet_since is None or time.monotonic() - quiet_since < idle_s:
            await asyncio.sleep(0.01)
            if loop.stats.consumed != seen:
                seen, quiet_since = loop.stats.consumed, time.monotonic()
        loop.stop()
        await task

    def ms(stamps: list[tuple[int, int]]) -> list[float]:
        return [(t - book * 1_000_000) / 1e6 for book, t in stamps]

    return {"received": ms([(b, r) for b, r, _, _ in published]),
            "decided": ms([(b, d) for b, _, d, _ in published]),
            "acked": ms([(b, a) for b, _, _, a in published])}


def _run_children(bootstrap: str, topic: str, payloads: list[tuple[bytes, bytes]], procs: int,
                  workdir: Path, bare: bool = False) -> float:
    """Messages per second of ``procs`` fresh consumer processes in one group over ``topic``.

    The topic is filled first; the consumers join the group without fetching, and only when
    the 6 partitions are split between them are they all told to go. Each records its first
    and last message time. Fresh processes keep the figure free of this process's heap.
    """
    asyncio.run(_fill(bootstrap, topic, payloads))
    outs = [workdir / f"{topic}-{i}.json" for i in range(procs)]
    go = workdir / f"{topic}.go"
    children = [subprocess.Popen(
        [sys.executable, "-m", "tooling.bench.broker", "--consume", topic,
         "--bootstrap", bootstrap, "--out", str(out), "--members", str(procs), "--go", str(go),
         *(["--bare"] if bare else [])],
        stdout=subprocess.DEVNULL) for out in outs]
    _await_ready(outs, children)
    go.write_text("go")
    for child in children:
        child.wait(300)
    spans = [json.loads(out.read_text()) for out in outs]
    total = sum(s["count"] for s in spans)
    return total / (max(s["last"] for s in spans) - min(s["first"] for s in spans))


def _scaling(bootstrap: str, stream_n: int, workdir: Path) -> dict[str, float]:
    """Throughput of 1 and of 2 worker processes in one group over 6 partitions."""
    stream, _, _ = _cross_stream(5, 20, 20, stream_n, 7)
    payloads = [(b.symbol.encode(), Codec.encode(b)) for b in stream]
    one = _run_children(bootstrap, "bench.scale1", payloads, 1, workdir)
    two = _run_children(bootstrap, "bench.scale2", payloads, 2, workdir)
    return {"worker_1proc_per_s": one, "worker_2proc_per_s": two, "scale_1_to_2": two / one}


async def _consume_child(bootstrap: str, topic: str, out: Path, members: int, go: Path,
                         bare: bool, idle_s: float = 3.0) -> None:
    """One consumer process: join, say so, wait for go, consume until the topic idles.

    ``bare``: a plain aiokafka consumer that only fetches and decodes; otherwise the
    worker's consumer loop with the detector (decode, detect, publish, commit).
    """
    first = last = 0.0
    seen = 0
    if bare:
        codec = Codec(OrderBook)
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"g-{topic}",
                                    auto_offset_reset="earliest", enable_auto_commit=False,
                                    fetch_max_wait_ms=10, max_poll_records=10_000)
        await consumer.start()
        try:
            while len(consumer.assignment()) != 6 // members:
                await asyncio.sleep(0.02)
            consumer.pause(*consumer.assignment())
            Path(f"{out}.ready").write_text("ready")
            while not go.exists():
                await asyncio.sleep(0.005)
            consumer.resume(*consumer.assignment())
            first = time.time()  # the clock starts at go, not at the first batch handled
            quiet_since = None
            while quiet_since is None or time.monotonic() - quiet_since < idle_s:
                batch = await consumer.getmany(timeout_ms=100, max_records=10_000)
                for records in batch.values():
                    for record in records:
                        codec.decode(record.value)
                    seen += len(records)
                if batch:
                    last, quiet_since = time.time(), time.monotonic()
                    await consumer.commit()
                elif first:
                    quiet_since = quiet_since or time.monotonic()
        finally:
            await consumer.stop()
    else:
        gate = asyncio.Event()
        async with Bus(_settings(bootstrap), topics=[topic, f"{topic}.dlq", ARB_OPPORTUNITIES,
                                                     f"{ARB_OPPORTUNITIES}.dlq"]) as bus:
            loop = _worker_loop(bus, bootstrap, topic, f"g-{topic}")
            loop.start_gate = gate
            task = asyncio.create_task(loop.run())
            while len(loop.assignment) != 6 // members:
                await asyncio.sleep(0.02)
            Path(f"{out}.ready").write_text("ready")
            while not go.exists():
                await asyncio.sleep(0.005)
            gate.set()
            first = time.time()  # the clock starts at go, not at the first batch handled
            quiet_since = None
            while quiet_since is None or time.monotonic() - quiet_since < idle_s:
                await asyncio.sleep(0.002)
                if loop.stats.consumed != seen:
                    last, seen, quiet_since = time.time(), loop.stats.consumed, time.monotonic()
            loop.stop()
            await task
    out.write_text(json.dumps({"count": seen, "first": first, "last": last}))


def bench_broker(messages: int = 60_000, rate: int = 5000, seconds: float = 6.0,
                 scale_messages: int = 60_000) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="cse-bench-") as tmp:
        workdir = Path(tmp)
        broker = infra.start(infra.tansu_spec(infra.free_port()), workdir)
        bootstrap = f"127.0.0.1:{broker.port}"
        try:
            stream, _, _ = _cross_stream(5, 20, 20, messages, 3)
            payloads = [(b.symbol.encode(), Codec.encode(b)) for b in stream]
            latency = _latency(stream, rate, seconds, workdir)  # on brokers of its own
            # side by side, alternating, on identical fresh topics; the better of two each
            bares, workers = [], []
            for round_ in range(2):
                bares.append(_run_children(bootstrap, f"bench.bare{round_}", payloads, 1, workdir,
                                           bare=True))
                workers.append(_run_children(bootstrap, f"bench.worker{round_}", payloads, 1,
                                             workdir))
            bare, worker = max(bares), max(workers)
            rounds = {"bare_rounds_per_s": bares, "worker_rounds_per_s": workers}
            scaling = _scaling(bootstrap, scale_messages, workdir)
        finally:
            broker.stop()
    return {
        "bare_consume_per_s": bare, "worker_consume_per_s": worker,
        "worker_vs_bare": worker / bare, **rounds,
        "latency_rate_per_s": rate, **latency,
        **scaling,
    }


def _main() -> int:
    p = argparse.ArgumentParser(description="a worker process of the scaling benchmark")
    p.add_argument("--consume", required=True)
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--members", type=int, default=1)
    p.add_argument("--go", type=Path, help="the file whose appearance starts a throughput run")
    p.add_argument("--bare", action="store_true")
    p.add_argument("--latency", choices=("bare", "worker"))
    args = p.parse_args()
    if args.latency:
        asyncio.run(_latency_child(args.bootstrap, args.consume, args.out, args.latency == "bare"))
        return 0
    if args.go is None:
        p.error("--go is required without --latency")
    asyncio.run(_consume_child(args.bootstrap, args.consume, args.out, args.members, args.go,
                               args.bare))
    return 0


if __name__ == "__main__":
    sys.exit(_main())
