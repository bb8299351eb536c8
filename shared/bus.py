"""Kafka edge: typed producer and consumer loops over aiokafka.

* :class:`Bus` owns the producer and an admin client. It creates the topics it knows
  (with the configured partition count) before the first send and again whenever they
  disappear (a broker that lost its storage), and retries sends with backoff while the
  broker is away.
* :class:`ConsumerLoop` runs one consumer-group member around a handler. Offsets are
  committed only after the handler returned for every record of a batch and what it
  published was acknowledged by the broker (at-least-once); each loop settles only its
  own handlers' publishes (its :class:`Outbox`), however many loops share the bus.
  A record that does not decode or validate, or whose handler raises a non-transient
  error, goes to ``<topic>.dlq`` with the reason, and the loop moves on. A
  :class:`~shared.errors.TransientError` from the handler is retried with backoff and
  never committed past. Offsets handled under one group generation are never committed
  under the next (after a rebalance, or a broker that restarted and forgot the group, the
  partitions' new owners read those records again). When fetching or committing stalls
  (broker gone, group forgotten by a restarted broker) the consumer is rebuilt from scratch.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import time
import traceback
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec
from aiokafka import (
    AIOKafkaConsumer,
    AIOKafkaProducer,
    ConsumerRebalanceListener,
    ConsumerRecord,
    TopicPartition,
)
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from aiokafka.partitioner import DefaultPartitioner

from shared import metrics
from shared.backoff import Backoff
from shared.errors import BrokerUnavailable, TransientError
from shared.logs import get_logger
from shared.messages import TOPICS, Codec, DeadLetter, all_topic_names, key_of, now_ms
from shared.settings import KafkaSettings

log = get_logger("bus")
_PARTITIONER = DefaultPartitioner()
# A handler rarely waits for anything, so a batch of thousands of records would hold the event
# loop: the consumer loop lets it turn this often, so the fetcher reads and requests the next
# batch, and the producer sends what handlers published, while the batch is handled.
YIELD_EVERY_S = 0.001

Handler = Callable[[Any, ConsumerRecord], Awaitable[None]]
Pending = tuple[asyncio.Future[Any], str, bytes, bytes | None]  # (ack future, topic, payload, key)


class Outbox:
    """Publishes not yet acknowledged, owned by whoever must wait for them.

    Each :class:`ConsumerLoop` installs its own outbox (a context variable, so it follows
    the loop's task and whatever its handlers await) around its handlers: what a handler
    publishes is settled by that loop before it commits, and never by another loop
    sharing the same :class:`Bus`. Publishes outside any loop go to the bus's own outbox
    (:meth:`Bus.flush`).
    """

    __slots__ = ("items",)

    def __init__(self) -> None:
        self.items: list[Pending] = []

    def take(self) -> list[Pending]:
        """Hand over what was published since the last call."""
        items, self.items = self.items, []
        return items


class _OpenBatch:
    """Records for one partition, built here and handed whole to the producer."""

    __slots__ = ("builder", "future", "partition", "topic")

    def __init__(self, builder: Any, future: asyncio.Future[Any], topic: str, partition: int):
        self.builder = builder
        self.future = future  # resolves when the broker acknowledged the batch
        self.topic = topic
        self.partition = partition

    def settled(self, sent: asyncio.Future[Any]) -> None:
        """Pass the producer's outcome for the batch on to everyone who published in it."""
        if self.future.done():
            return
        if sent.cancelled():
            self.future.set_exception(KafkaError("the batch send was cancelled"))
        elif (error := sent.exception()) is not None:
            self.future.set_exception(error)
        else:
            self.future.set_result(sent.result())


_OUTBOX: contextvars.ContextVar[Outbox | None] = contextvars.ContextVar("cse_bus_outbox", default=None)


class Bus:
    """Producer side of the bus, plus topic management."""

    def __init__(self, settings: KafkaSettings, *, topics: Iterable[str] | None = None,
                 send_timeout_s: float = 60.0):
        self.settings = settings
        self.topics = list(topics) if topics is not None else all_topic_names()
        self.send_timeout_s = send_timeout_s
        self._producer: AIOKafkaProducer | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._topics_ok = False
        self._ensure_lock = asyncio.Lock()
        self._outbox = Outbox()  # publishes made outside any consumer loop
        self._open: dict[tuple[str, int], _OpenBatch] = {}  # batches being filled (see publish)
        self._sealed: collections.deque[_OpenBatch] = collections.deque()  # for the producer
        self._seal_handle: asyncio.Handle | None = None
        self._submitting: asyncio.Task[None] | None = None
        self._partitions: dict[tuple[str, bytes], int] = {}

    async def __aenter__(self) -> Bus:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self, timeout_s: float = 60.0) -> None:
        """Connect, retrying with backoff until ``timeout_s`` (the broker may start later)."""
        deadline = time.monotonic() + timeout_s
        backoff = Backoff()
        while True:
            try:
                self._admin = AIOKafkaAdminClient(
                    bootstrap_servers=self.settings.bootstrap_servers,
                    client_id=f"{self.settings.client_id}-admin",
                )
                await self._admin.start()
                self._producer = AIOKafkaProducer(
                    bootstrap_servers=self.settings.bootstrap_servers,
                    client_id=self.settings.client_id,
                    acks="all",
                    linger_ms=self.settings.linger_ms,
                    max_batch_size=64 * 1024,
                    request_timeout_ms=10_000,
                )
                await self._producer.start()
                await self.ensure_topics(force=True)
                return
            except (KafkaError, OSError) as exc:
                await self._close_clients()
                if time.monotonic() > deadline:
                    raise BrokerUnavailable(
                        f"Kafka at {self.settings.bootstrap_servers} unreachable: {exc!r}"
                    ) from exc
                delay = backoff.next()
                log.warning("kafka_connect_retry", error=repr(exc), retry_in_s=round(delay, 2))
                await asyncio.sleep(delay)

    async def close(self) -> None:
        """Hand what was published to the producer (whose stop sends it), then disconnect."""
        self._seal_open()
        if self._submitting is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._submitting), 15)
        await self._close_clients()
        for batch in [*self._open.values(), *self._sealed]:
            if not batch.future.done():  # whoever waits for it learns it was not sent
                batch.future.set_exception(BrokerUnavailable("the bus closed before the batch was sent"))
        self._open.clear()
        self._sealed.clear()

    async def _close_clients(self) -> None:
        if self._producer is not None:
            with contextlib.suppress(Exception):
                await self._producer.stop()
            self._producer = None
        if self._admin is not None:
            with contextlib.suppress(Exception):
                await self._admin.close()
            self._admin = None

    async def ensure_topics(self, force: bool = False) -> list[str]:
        """Create any missing topic; returns the names created."""
        async with self._ensure_lock:
            if self._topics_ok and not force:
                return []
            assert self._admin is not None, "Bus not started"
            existing = set(await self._admin.list_topics())
            missing = [t for t in self.topics if t not in existing]
            if missing:
                await create_topics(self._admin, missing, self.settings.partitions)
                log.info("topics_created", topics=missing, partitions=self.settings.partitions)
            self._topics_ok = True
            return missing

    async def topics_missing(self) -> list[str]:
        """Topics of ours the broker does not list (it lost its storage if any)."""
        if self._admin is None:
            raise BrokerUnavailable("the bus is not started (or was closed)")
        existing = set(await self._admin.list_topics())
        return [t for t in self.topics if t not in existing]

    async def send(self, topic: str, message: Any, key: bytes | None = None) -> None:
        """Encode and send ``message``; waits for the broker's ack, retrying while it is away."""
        payload = Codec.encode(message)
        await self.send_raw(topic, payload, key if key is not None else key_of(message))

    async def send_raw(self, topic: str, payload: bytes, key: bytes | None) -> None:
        deadline = time.monotonic() + self.send_timeout_s
        backoff = Backoff()
        while True:
            try:
                if not self._topics_ok:
                    await self.ensure_topics()
                assert self._producer is not None, "Bus not started"
                await self._producer.send_and_wait(topic, payload, key=key)
                metrics.BUS_PRODUCED.labels(topic).inc()
                return
            except KafkaError as exc:
                metrics.BUS_ERRORS.labels("produce").inc()
                self._topics_ok = False  # the broker may have restarted empty
                if time.monotonic() > deadline:
                    raise BrokerUnavailable(f"send to {topic} failed: {exc!r}") from exc
                delay = backoff.next()
                log.warning("kafka_send_retry", topic=topic, error=repr(exc), retry_in_s=round(delay, 2))
                await asyncio.sleep(delay)
                if self._producer is not None:
                    with contextlib.suppress(Exception):
                        await self._producer.client.force_metadata_update()

    async def publish(self, topic: str, message: Any, key: bytes | None = None
                      ) -> asyncio.Future[Any] | None:
        """Queue ``message`` without waiting for the broker's ack.

        The producer batches it with others. Inside a consumer loop's handler the publish
        joins that loop's :class:`Outbox`, which the loop settles (re-sending what failed)
        before it commits the offsets of the records handled, so a handler that publishes
        keeps at-least-once delivery without paying a round trip per message. Elsewhere,
        :meth:`flush` waits for it.
        """
        payload = Codec.encode(message)
        key = key if key is not None else key_of(message)
        assert self._producer is not None, "Bus not started"
        partition = self._partition_of(topic, key)
        future = self._append(topic, partition, key, payload) if partition is not None else None
        if future is None:  # partitions not known yet, or a record larger than a batch
            try:
                future = await self._producer.send(topic, payload, key=key, partition=partition)
            except KafkaError:
                await self.send_raw(topic, payload, key)
                return None
        (_OUTBOX.get() or self._outbox).items.append((future, topic, payload, key))
        return future  # resolves when the broker acknowledged it

    # Publishes to a partition are appended to a record batch of our own, handed whole to the
    # producer at the next turn of the event loop (or once full): a fraction of the producer's
    # per-message ``send``, and one ack future per batch. Batches go to the producer in the
    # order they were opened (one submitting task), so each partition's records stay in order.

    def _append(self, topic: str, partition: int, key: bytes | None, payload: bytes
                ) -> asyncio.Future[Any] | None:
        """Add the record to the partition's open batch; that batch's future (None: the record
        does not fit even an empty batch)."""
        for _attempt in range(2):
            batch = self._open.get((topic, partition))
            if batch is None:
                batch = self._open_batch(topic, partition)
            if batch.builder.append(timestamp=None, key=key, value=payload) is not None:
                return batch.future
            if batch.builder.record_count() == 0:
                return None
            self._seal([self._open.pop((topic, partition))])  # full: off it goes
        return None

    def _open_batch(self, topic: str, partition: int) -> _OpenBatch:
        assert self._producer is not None, "Bus not started"
        loop = asyncio.get_running_loop()
        batch = self._open[(topic, partition)] = _OpenBatch(self._producer.create_batch(),
                                                            loop.create_future(), topic, partition)
        if self._seal_handle is None:
            self._seal_handle = loop.call_soon(self._seal_open)
        return batch

    def _seal_open(self) -> None:
        self._seal_handle = None
        if self._open:
            self._seal(list(self._open.values()))
            self._open.clear()

    def _seal(self, batches: list[_OpenBatch]) -> None:
        for batch in batches:
            # closed, the producer sends it as soon as it can instead of lingering on it
            batch.builder.close()
        self._sealed.extend(batches)
        self._submit()

    def _submit(self) -> None:
        if self._submitting is None or self._submitting.done():
            self._submitting = asyncio.get_running_loop().create_task(self._submit_sealed())

    async def _submit_sealed(self) -> None:
        while self._sealed:
            batch = self._sealed.popleft()
            try:
                assert self._producer is not None, "Bus not started"
                sent = await self._producer.send_batch(batch.builder, batch.topic, partition=batch.partition)
            except Exception as exc:  # each publisher's settle re-sends its record
                if not batch.future.done():
                    batch.future.set_exception(exc)
                continue
            sent.add_done_callback(batch.settled)

    def _partition_of(self, topic: str, key: bytes | None) -> int | None:
        """The default partitioner's choice, cached per key (murmur2 in Python is slow)."""
        if key is None or self._producer is None:
            return None
        cached = self._partitions.get((topic, key))
        if cached is None:
            parts = self._producer.client.cluster.partitions_for_topic(topic)
            if not parts:
                return None  # unknown yet: let the producer wait for metadata
            ordered = sorted(parts)
            cached = self._partitions[(topic, key)] = _PARTITIONER(key, ordered, ordered)
        return cached

    async def flush(self) -> None:
        """Wait until everything published outside consumer loops is acknowledged."""
        await self.settle(self._outbox.take())

    async def settle(self, pending: list[Pending]) -> None:
        """Wait for these publishes to be acknowledged, re-sending any that failed."""
        if not pending:
            return
        results = await asyncio.gather(*(p[0] for p in pending), return_exceptions=True)
        for (_future, topic, payload, key), result in zip(pending, results, strict=True):
            if isinstance(result, BaseException):
                await self.send_raw(topic, payload, key)  # retries until the broker is back
            else:
                metrics.BUS_PRODUCED.labels(topic).inc()

    async def send_many(self, topic: str, messages: Iterable[Any]) -> int:
        """Send a batch, pipelined: one ack wait for the lot. Falls back to ``send`` on error."""
        assert self._producer is not None, "Bus not started"
        items = [(Codec.encode(m), key_of(m)) for m in messages]
        try:
            if not self._topics_ok:
                await self.ensure_topics()
            futures = [await self._producer.send(topic, p, key=k) for p, k in items]
            await asyncio.gather(*futures)
            metrics.BUS_PRODUCED.labels(topic).inc(len(items))
        except KafkaError:
            self._topics_ok = False
            for p, k in items:  # at-least-once: a resend may duplicate, never lose
                await self.send_raw(topic, p, k)
        return len(items)


async def create_topics(admin: AIOKafkaAdminClient, names: Iterable[str], partitions: int) -> None:
    names = list(names)
    if not names:
        return
    try:
        resp = await admin.create_topics(
            [NewTopic(n, num_partitions=partitions, replication_factor=1) for n in names]
        )
    except TopicAlreadyExistsError:
        return
    for topic_error in getattr(resp, "topic_errors", []):
        name, code = topic_error[0], topic_error[1]
        if code not in (0, TopicAlreadyExistsError.errno):
            raise BrokerUnavailable(f"could not create topic {name}: error code {code}")


@dataclass
class ConsumerStats:
    consumed: int = 0
    dead_lettered: int = 0
    rebuilds: int = 0
    last_progress: float = field(default_factory=time.monotonic)


class _Generation(ConsumerRebalanceListener):
    """Counts assignment changes: offsets gathered under one count are committed under it only.

    aiokafka commits with the group generation current at commit time, not the one the
    records were fetched under, so a commit after a rejoin could skip records the new
    assignment must read (seen with a broker that restarted empty: records fetched at the
    old positions, then committed once the group re-formed).
    """

    def __init__(self) -> None:
        self.value = 0

    def on_partitions_revoked(self, revoked: Any) -> None:
        self.value += 1

    def on_partitions_assigned(self, assigned: Any) -> None:
        self.value += 1


class ConsumerLoop:
    """One member of a consumer group, running ``handler(message, record)`` per record."""

    def __init__(
        self,
        bus: Bus,
        settings: KafkaSettings,
        topics: list[str],
        group_id: str,
        handler: Handler,
        *,
        auto_offset_reset: str = "earliest",
        max_transient_retries: int | None = None,
        message_types: dict[str, type[Any]] | None = None,
        start_gate: asyncio.Event | None = None,
    ):
        """``message_types`` maps topics outside :data:`TOPICS` to their message type;
        with ``start_gate``, the member joins its group but fetches nothing until it is set."""
        types = {t: TOPICS[t].message for t in topics if t in TOPICS} | (message_types or {})
        unknown = [t for t in topics if t not in types]
        if unknown:
            raise ValueError(f"unknown topics {unknown}; known: {', '.join(TOPICS)}")
        self.bus = bus
        self.settings = settings
        self.topics = topics
        self.group_id = group_id
        self.handler = handler
        self.auto_offset_reset = auto_offset_reset
        self.max_transient_retries = max_transient_retries
        self.codecs = {t: Codec(types[t]) for t in topics}
        # labelled children resolved once: .labels() costs more than the increment
        self._consumed_counter = {t: metrics.BUS_CONSUMED.labels(t, group_id) for t in topics}
        self._uncounted = dict.fromkeys(topics, 0)
        self.stats = ConsumerStats()
        self._consumer: AIOKafkaConsumer | None = None
        self._stopping = asyncio.Event()
        self.assigned = asyncio.Event()
        self.start_gate = start_gate
        self.outbox = Outbox()  # what this loop's handlers published, settled before each commit
        self._assigned_count = -1  # partitions last reported to the gauge
        self._generation = _Generation()

    def stop(self) -> None:
        """Ask the loop to finish the record in hand, commit and leave the group."""
        self._stopping.set()

    @property
    def assignment(self) -> set[TopicPartition]:
        return set(self._consumer.assignment()) if self._consumer else set()

    def _build(self) -> AIOKafkaConsumer:
        s = self.settings
        consumer = AIOKafkaConsumer(
            bootstrap_servers=s.bootstrap_servers,
            client_id=f"{s.client_id}-{self.group_id}",
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset=self.auto_offset_reset,
            fetch_max_wait_ms=s.fetch_max_wait_ms,
            session_timeout_ms=s.session_timeout_ms,
            heartbeat_interval_ms=s.heartbeat_interval_ms,
            max_poll_records=s.max_poll_records,
            request_timeout_ms=max(s.session_timeout_ms + 5000, 15_000),
            metadata_max_age_ms=5000,
        )
        consumer.subscribe(self.topics, listener=self._generation)
        return consumer

    async def run(self) -> None:
        """Consume until :meth:`stop`; rebuilds the consumer when the broker misbehaves."""
        backoff = Backoff(maximum=5.0)
        token = _OUTBOX.set(self.outbox)  # handlers' publishes land in this loop's outbox
        try:
            await self._run(backoff)
        finally:
            _OUTBOX.reset(token)

    async def _run(self, backoff: Backoff) -> None:
        while not self._stopping.is_set():
            self._consumer = self._build()
            try:
                await asyncio.wait_for(self._consumer.start(), self.settings.stall_timeout_s)
                self.stats.last_progress = time.monotonic()
                backoff.reset()
                await self._consume(self._consumer)
            except (KafkaError, OSError, TimeoutError, _Stalled) as exc:
                metrics.BUS_ERRORS.labels("consume").inc()
                self.stats.rebuilds += 1
                metrics.BUS_CONSUMER_REBUILDS.labels(self.group_id).inc()
                delay = backoff.next()
                log.warning("consumer_rebuild", group=self.group_id, error=repr(exc),
                            retry_in_s=round(delay, 2))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)
            finally:
                self.assigned.clear()
                self._assigned_count = 0
                metrics.BUS_PARTITIONS.labels(self.group_id).set(0)
                consumer, self._consumer = self._consumer, None
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(consumer.stop(), 10)

    async def _consume(self, consumer: AIOKafkaConsumer) -> None:
        # The acks of what handlers published and the offset commit run in the background
        # while the next batches are handled; batches finished meanwhile are merged into the
        # next commit. A round trip per batch would otherwise cap throughput. Offsets are
        # committed in order, and only once what their handlers published was acknowledged.
        committing: asyncio.Task[None] | None = None
        offsets: dict[TopicPartition, int] = {}
        offsets_generation = self._generation.value  # the assignment ``offsets`` were handled under
        published: list[Pending] = []
        last_check = last_health = time.monotonic()
        if self.start_gate is not None:  # joined (start() did that); fetch nothing yet
            await self._hold_at_start_gate(consumer, self.start_gate)
        try:
            while not self._stopping.is_set():
                batch = await consumer.getmany(timeout_ms=200,
                                               max_records=self.settings.max_poll_records)
                now = time.monotonic()
                self._note_assignment(consumer)
                if self._generation.value != offsets_generation:
                    if offsets:  # handled under the previous assignment: its owners read them again
                        log.info("offsets_dropped_after_rebalance", group=self.group_id,
                                 partitions=len(offsets))
                    offsets, offsets_generation = {}, self._generation.value
                for tp, records in batch.items():
                    if not await self._handle(tp, records, offsets):
                        break  # asked to stop while retrying a transient failure
                self._count_consumed()
                published.extend(self.outbox.take())
                if offsets and (committing is None or committing.done()):
                    if committing is not None:
                        committing.result()  # raises if the previous commit failed
                    committing = asyncio.create_task(
                        self._flush_and_commit(consumer, published, offsets, offsets_generation))
                    offsets, published = {}, []
                if now - last_check > 1.0:
                    last_check = now
                    await self._update_lag(consumer)
                    if now - last_health > 5.0:  # a metadata round trip: not every second
                        last_health = now
                        await self._check_health(consumer)
        finally:
            # before leaving the group: everything handled is acknowledged and committed
            if committing is not None:
                await committing
            published.extend(self.outbox.take())
            if offsets:
                await self._flush_and_commit(consumer, published, offsets, offsets_generation)

    async def _hold_at_start_gate(self, consumer: AIOKafkaConsumer, gate: asyncio.Event) -> None:
        """Stay in the group with every partition paused (no prefetch) until ``gate`` opens or we stop."""
        while not gate.is_set() and not self._stopping.is_set():
            if consumer.assignment():
                consumer.pause(*consumer.assignment())
                self.assigned.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(gate.wait(), 0.05)
        consumer.resume(*consumer.assignment())

    def _note_assignment(self, consumer: AIOKafkaConsumer) -> None:
        """Flag the first assignment (``assigned``) and keep the partitions gauge current."""
        assignment = consumer.assignment()
        if assignment:
            self.assigned.set()
        if len(assignment) != self._assigned_count:
            self._assigned_count = len(assignment)
            metrics.BUS_PARTITIONS.labels(self.group_id).set(self._assigned_count)

    def _count_consumed(self) -> None:
        """Add the records handled since the last batch to the per-topic consumed counters."""
        for topic, n in self._uncounted.items():
            if n:
                self._consumed_counter[topic].inc(n)
                self._uncounted[topic] = 0

    async def _handle(self, tp: TopicPartition, records: list[ConsumerRecord],
                      offsets: dict[TopicPartition, int]) -> bool:
        """Decode and handle ``records`` in order, noting each finished offset in ``offsets``.

        The common path is inline (decode, handle); a failure goes the slow way
        (:meth:`_recover`). False if asked to stop mid-way (the rest stays uncommitted).
        """
        decode = self.codecs[tp.topic].decode
        handler = self.handler
        clock = time.perf_counter
        yield_at = clock() + YIELD_EVERY_S
        handled = 0
        finished = True
        for record in records:
            message = None
            try:
                message = decode(record.value or b"")
                await handler(message, record)
            except Exception as exc:
                if not await self._recover(record, message, exc):
                    finished = False
                    break
            else:
                handled += 1
            offsets[tp] = record.offset + 1
            if clock() >= yield_at:  # let the fetcher and the producer work meanwhile
                await asyncio.sleep(0)
                yield_at = clock() + YIELD_EVERY_S
        self.stats.consumed += handled
        self._uncounted[tp.topic] += handled
        return finished

    async def _flush_and_commit(self, consumer: AIOKafkaConsumer,
                                pending: list[Pending],
                                offsets: dict[TopicPartition, int], generation: int) -> None:
        await self.bus.settle(pending)
        if self._generation.value != generation:
            log.info("offsets_dropped_after_rebalance", group=self.group_id, partitions=len(offsets))
            return
        try:
            await asyncio.wait_for(consumer.commit(offsets), self.settings.stall_timeout_s)
        except TimeoutError:
            raise _Stalled("offset commit did not complete") from None
        self.stats.last_progress = time.monotonic()

    async def _check_health(self, consumer: AIOKafkaConsumer) -> None:
        """Detect a broker that restarted empty, or a group we are no longer part of.

        aiokafka alone would retry a commit against a forgotten group for minutes and read
        nothing from topics re-created empty; a fresh consumer starts clean.
        """
        try:
            missing = await asyncio.wait_for(self.bus.topics_missing(), 5)
        except (KafkaError, OSError, TimeoutError, BrokerUnavailable):
            missing = None
        if missing:
            overlap = [t for t in self.topics if t in missing]
            if overlap:
                with contextlib.suppress(Exception):
                    await self.bus.ensure_topics(force=True)
                raise _Stalled(f"topics vanished from the broker: {overlap}")
        if not consumer.assignment() and time.monotonic() - self.stats.last_progress > max(
            self.settings.stall_timeout_s, self.settings.session_timeout_ms / 1000 * 3
        ):
            raise _Stalled("no partition assigned for too long")
        if consumer.assignment():
            self.stats.last_progress = time.monotonic()

    async def _update_lag(self, consumer: AIOKafkaConsumer) -> None:
        for tp in consumer.assignment():
            high = consumer.highwater(tp)
            if high is None:
                continue
            position = await consumer.position(tp)
            metrics.BUS_CONSUMER_LAG.labels(self.group_id, tp.topic, str(tp.partition)).set(
                max(0, high - position)
            )

    async def _recover(self, record: ConsumerRecord, message: Any, error: Exception) -> bool:
        """A record whose decode or handler raised: dead-letter what does not decode or what
        the handler rejects; retry transient errors with backoff. True once it is done,
        False if asked to stop while retrying (the record stays uncommitted)."""
        topic = record.topic
        if message is None:
            if isinstance(error, msgspec.DecodeError | msgspec.ValidationError):
                await self._dead_letter(record, f"decode: {error}")
                return True
            raise error
        attempts = 0
        backoff = Backoff(maximum=5.0)
        while True:
            if not isinstance(error, TransientError):  # a bug or a message the handler rejects
                where = traceback.extract_tb(error.__traceback__)[-1]
                await self._dead_letter(
                    record, f"handler: {error!r} at {where.filename}:{where.lineno}")
                return True
            attempts += 1
            if self.max_transient_retries is not None and attempts > self.max_transient_retries:
                await self._dead_letter(record, f"handler gave up after {attempts} tries: {error!r}")
                return True
            delay = backoff.next()
            log.warning("handler_retry", topic=topic, offset=record.offset, error=repr(error),
                        retry_in_s=round(delay, 2))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            if self._stopping.is_set():
                return False
            try:
                await self.handler(message, record)
            except Exception as exc:
                error = exc
                continue
            self.stats.consumed += 1
            self._uncounted[topic] += 1
            return True

    async def _dead_letter(self, record: ConsumerRecord, reason: str) -> None:
        value = record.value or b""
        letter = DeadLetter(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key.decode("utf-8", "backslashreplace") if record.key else None,
            reason=reason[:2000],
            payload=value.decode("utf-8", "backslashreplace")[:100_000],
            group=self.group_id,
            ts_ms=now_ms(),
        )
        await self.bus.send_raw(f"{record.topic}.dlq", Codec.encode(letter), record.key)
        self.stats.dead_lettered += 1
        metrics.BUS_DEAD_LETTERED.labels(record.topic, self.group_id).inc()
        log.warning("dead_lettered", topic=record.topic, partition=record.partition,
                    offset=record.offset, reason=reason[:300])


class _Stalled(Exception):
    """Internal: the consumer must be rebuilt."""
