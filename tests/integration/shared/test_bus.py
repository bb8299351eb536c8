"""The bus against the real Tansu broker: groups, redelivery, dead letters, broker restarts."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from shared.bus import Bus, ConsumerLoop
from shared.messages import DeadLetter, OrderBook, dead_letter_topic
from shared.settings import KafkaSettings
from tests import ROOT
from tests.conftest import NotYet, committed_offsets, eventually, fast_kafka, read_topic
from tooling.devstack import infra

pytestmark = pytest.mark.slow


def book(seq: int, symbol: str | None = None) -> OrderBook:
    return OrderBook(venue="sim", symbol=symbol or f"SYM{seq}/USDT", bids=[(100.0, 1.0)],
                     asks=[(101.0, 1.0)], ts_venue_ms=1, ts_recv_ms=1, seq=seq)


def loop_for(bus: Bus, settings: KafkaSettings, topic: str, group: str,
             handler: Callable[[Any, Any], Awaitable[None]]) -> ConsumerLoop:
    return ConsumerLoop(bus, settings, [topic], group, handler, message_types={topic: OrderBook})


async def test_group_of_three_splits_partitions_and_consumes_each_message_once(
        kafka_settings: KafkaSettings, topic: str) -> None:
    seen: dict[int, list[int]] = defaultdict(list)  # seq -> members that handled it

    def handler_for(member: int) -> Callable[[Any, Any], Awaitable[None]]:
        async def handle(msg: OrderBook, _record: Any) -> None:
            seen[msg.seq].append(member)
        return handle

    async with Bus(kafka_settings, topics=[topic, dead_letter_topic(topic)]) as bus:
        loops = [loop_for(bus, kafka_settings, topic, "g-split", handler_for(m)) for m in range(3)]
        tasks = [asyncio.create_task(lp.run()) for lp in loops]
        try:
            await eventually(lambda: all(len(lp.assignment) == 2 for lp in loops), 40,
                             "a 2/2/2 partition split")
            assignments = [lp.assignment for lp in loops]
            assert set().union(*assignments) == {a for s in assignments for a in s}
            assert len(set().union(*assignments)) == 6
            await bus.send_many(topic, [book(i) for i in range(120)])
            await eventually(lambda: len(seen) == 120, 30, "all 120 messages")
            partitions = [(topic, p) for p in range(kafka_settings.partitions)]

            async def all_committed() -> bool | NotYet:
                # once the group committed all 120, nothing is left to hand to a member again:
                # anything handled twice has been handled by then
                committed = await committed_offsets(kafka_settings.bootstrap_servers, "g-split",
                                                    partitions)
                return sum(committed.values()) == 120 or NotYet(committed)

            await eventually(all_committed, 30, "the group's commits covering all 120", interval_s=0.2)
        finally:
            for lp in loops:
                lp.stop()
            await asyncio.gather(*tasks)
    assert all(len(members) == 1 for members in seen.values()), {
        s: m for s, m in seen.items() if len(m) != 1}
    handled_by = {members[0] for members in seen.values()}
    assert handled_by == {0, 1, 2}, "every member should have handled messages of its partitions"


KILLABLE = r"""
import asyncio, json, sys
from shared.bus import Bus, ConsumerLoop
from shared.messages import OrderBook, dead_letter_topic
from tests.conftest import fast_kafka, read_topic

bootstrap, topic, out = sys.argv[1:4]

async def main():
    settings = fast_kafka(bootstrap)
    async with Bus(settings, topics=[topic, dead_letter_topic(topic)]) as bus:
        async def handle(msg, record):
            with open(out, "a") as f:
                f.write(json.dumps(msg.seq) + "\n")
            await asyncio.Event().wait()   # never returns: the offset is never committed
        loop = ConsumerLoop(bus, settings, [topic], "g-kill", handle,
                            message_types={topic: OrderBook})
        task = asyncio.create_task(loop.run())
        await loop.assigned.wait()
        with open(out + ".assigned", "w") as f:
            f.write(json.dumps(sorted(tp.partition for tp in loop.assignment)))
        await task

asyncio.run(main())
"""


async def test_consumer_killed_before_commit_has_its_messages_redelivered(
        kafka: infra.Running, kafka_settings: KafkaSettings, topic: str, tmp_path: Path) -> None:
    out = tmp_path / "victim.jsonl"
    victim = subprocess.Popen(
        [sys.executable, "-c", KILLABLE, f"127.0.0.1:{kafka.port}", topic, str(out)],
        cwd=ROOT, start_new_session=True,
    )
    handled: list[int] = []

    async def survivor_handler(msg: OrderBook, _record: Any) -> None:
        handled.append(msg.seq)

    try:
        async with Bus(kafka_settings, topics=[topic, dead_letter_topic(topic)]) as bus:
            survivor = loop_for(bus, kafka_settings, topic, "g-kill", survivor_handler)
            task = asyncio.create_task(survivor.run())
            marker = Path(str(out) + ".assigned")
            await eventually(lambda: marker.exists() and json.loads(marker.read_text())
                             and len(survivor.assignment) > 0
                             and len(survivor.assignment) + len(json.loads(marker.read_text())) == 6,
                             40, "the victim and the survivor sharing the partitions")
            await bus.send_many(topic, [book(i) for i in range(60)])
            await eventually(lambda: out.exists() and out.read_text().strip() != "", 20,
                             "the victim to receive a message")
            victim.send_signal(signal.SIGKILL)
            victim.wait(5)
            await eventually(lambda: set(handled) == set(range(60)), 40,
                             "the survivor to handle every message, the victim's included")
            survivor.stop()
            await task
    finally:
        if victim.poll() is None:
            victim.kill()
    victim_got = {int(x) for x in out.read_text().split()}
    assert victim_got, "the victim handled nothing, so nothing was tested"
    assert victim_got <= set(handled), "messages the victim held were not redelivered"


async def test_malformed_message_goes_to_dead_letter_topic_and_consumer_moves_on(
        kafka_settings: KafkaSettings, topic: str) -> None:
    handled: list[int] = []

    async def handler(msg: OrderBook, _record: Any) -> None:
        if msg.seq == 13:
            raise ValueError("unlucky book")
        handled.append(msg.seq)

    async with Bus(kafka_settings, topics=[topic, dead_letter_topic(topic)]) as bus:
        loop = loop_for(bus, kafka_settings, topic, "g-dlq", handler)
        task = asyncio.create_task(loop.run())
        key = b"BTC/USDT"
        await bus.send_raw(topic, b"{not json", key)  # does not decode
        await bus.send_raw(topic, b'{"type":"orderbook","venue":"x"}', key)  # does not validate
        await bus.send(topic, book(13, "BTC/USDT"))  # the handler rejects it
        await bus.send(topic, book(1, "BTC/USDT"))
        await eventually(lambda: handled == [1], 30, "the good message after the bad ones")
        loop.stop()
        await task
    assert loop.stats.dead_lettered == 3

    letters = await read_topic(kafka_settings.bootstrap_servers, dead_letter_topic(topic), count=3)
    decoded = [msgspec.json.decode(r.value, type=DeadLetter) for r in letters]
    reasons = [d.reason for d in decoded]
    assert reasons[0].startswith("decode:") and "malformed" in reasons[0]
    assert reasons[1].startswith("decode:") and "missing required field" in reasons[1]
    assert reasons[2].startswith("handler:") and "unlucky book" in reasons[2]
    assert decoded[0].payload == "{not json"
    assert all(d.topic == topic and d.group == "g-dlq" and d.key == "BTC/USDT" for d in decoded)


OUTAGE_S = 2.0  # how long the broker stays down while a send waits for it


async def test_producer_and_consumer_recover_when_the_broker_restarts(tmp_path: Path) -> None:
    port = infra.free_port()
    broker = infra.start(infra.tansu_spec(port), tmp_path)
    settings = fast_kafka(f"127.0.0.1:{port}")
    topic = "md.orderbooks"
    handled: set[int] = set()

    async def handler(msg: OrderBook, _record: Any) -> None:
        handled.add(msg.seq)

    try:
        async with Bus(settings, topics=[topic, dead_letter_topic(topic)]) as bus:
            loop = ConsumerLoop(bus, settings, [topic], "g-restart", handler)
            task = asyncio.create_task(loop.run())
            await bus.send_many(topic, [book(i) for i in range(20)])
            await eventually(lambda: handled >= set(range(20)), 30, "messages before the restart")

            broker.kill()
            # a send while the broker is down waits and retries instead of failing
            pending = asyncio.create_task(bus.send(topic, book(100)))
            await asyncio.sleep(OUTAGE_S)  # what is tested: the send neither fails nor returns meanwhile
            assert not pending.done()
            broker = infra.start(infra.tansu_spec(port), tmp_path)
            await asyncio.wait_for(pending, 60)
            for i in range(101, 121):
                await bus.send(topic, book(i))
            await eventually(lambda: handled >= set(range(100, 121)), 60,
                             "messages sent during and after the restart")
            loop.stop()
            await task
    finally:
        broker.stop()


A_AWAITS_S = 0.3  # how long A's handler awaits after its publish (B handles and commits meanwhile)


async def test_loops_sharing_a_bus_commit_only_after_their_own_publishes_are_acknowledged(
        kafka_settings: KafkaSettings) -> None:
    """Two consumer loops on one Bus: A's handler publishes, then awaits (as the arbitrage
    executor awaits exchanges); B keeps handling and committing meanwhile. A must not commit
    its record before its publish is acknowledged (linger makes the ack take about a second),
    and B must not wait for A's publish."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    settings = kafka_settings.model_copy(update={"linger_ms": 1000})
    in_a, in_b, out = (f"test.outbox-{n}-{time.monotonic_ns()}" for n in ("a", "b", "out"))
    topics = [t for name in (in_a, in_b, out) for t in (name, dead_letter_topic(name))]
    acked: dict[str, float] = {}
    handled_a = asyncio.Event()

    async def handle_a(msg: OrderBook, _record: Any) -> None:
        future = await bus.publish(out, msg)
        assert future is not None
        future.add_done_callback(lambda _f: acked.setdefault("at", time.monotonic()))
        handled_a.set()
        await asyncio.sleep(A_AWAITS_S)  # the work A awaits, as an executor awaits an exchange

    async def handle_b(_msg: OrderBook, _record: Any) -> None:
        return None

    # outside observers of each group's committed offsets (they never join the group)
    observers = {group: AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers, group_id=group,
                                         enable_auto_commit=False)
                 for group in ("g-outbox-a", "g-outbox-b")}
    for observer in observers.values():
        await observer.start()

    async def committed(group: str, topic: str) -> int:
        total = 0
        for partition in range(settings.partitions):
            offset = await observers[group].committed(TopicPartition(topic, partition))
            total += offset or 0
        return total

    async with Bus(settings, topics=topics) as bus:
        loop_a = loop_for(bus, settings, in_a, "g-outbox-a", handle_a)
        loop_b = loop_for(bus, settings, in_b, "g-outbox-b", handle_b)
        tasks = [asyncio.create_task(lp.run()) for lp in (loop_a, loop_b)]
        try:
            await eventually(lambda: bool(loop_a.assignment and loop_b.assignment), 30, "both loops assigned")
            feeding = asyncio.create_task(_feed(settings.bootstrap_servers, in_b))
            await bus.send(in_a, book(1, "A/USDT"))
            await asyncio.wait_for(handled_a.wait(), 20)
            b_before = await committed("g-outbox-b", in_b)
            samples: list[tuple[float, int]] = []  # (time, A's committed offset) while waiting

            async def a_committed() -> bool:
                offset = await committed("g-outbox-a", in_a)
                samples.append((time.monotonic(), offset))  # the time once the answer is in
                return offset >= 1

            await eventually(a_committed, 10, "A's first commit", interval_s=0.02)
            b_after = await committed("g-outbox-b", in_b)
            feeding.cancel()
        finally:
            for lp in (loop_a, loop_b):
                lp.stop()
            await asyncio.gather(*tasks)
            for observer in observers.values():
                await observer.stop()
    assert "at" in acked, "A's publish was never acknowledged"
    first_commit = next((t for t, offset in samples if offset >= 1), None)
    assert first_commit is not None, "A never committed its record"
    assert first_commit >= acked["at"], (
        f"A committed {acked['at'] - first_commit:.3f}s before its publish was acknowledged")
    assert b_after > b_before, "B stopped committing while A's publish was pending"


FEED_EVERY_S = 0.05


async def _feed(bootstrap: str, topic: str) -> None:
    """A record for B every 50 ms, from a producer of its own (no linger)."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    await producer.start()
    try:
        seq = 0
        while True:
            seq += 1
            await producer.send_and_wait(topic, msgspec.json.encode(book(seq, "B/USDT")), key=b"B/USDT")
            await asyncio.sleep(FEED_EVERY_S)  # the load's pace, not a wait for anything
    finally:
        await producer.stop()
