"""Session fixtures: the real Tansu broker, redis-server and victoria-metrics on free ports."""

from __future__ import annotations

import asyncio
import inspect
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import pytest

from shared.settings import KafkaSettings, RedisSettings, StoreSettings
from tooling.devstack import infra


@pytest.fixture(autouse=True, scope="session")
def ccxt_reaches_loopback_only() -> Iterator[None]:
    """Fail any test whose ccxt client would talk to a host other than this machine."""
    from urllib.parse import urlsplit

    from ccxt.async_support.base.exchange import Exchange

    original = Exchange.fetch

    async def guarded(self, url, method="GET", headers=None, body=None):  # type: ignore[no-untyped-def]
        host = urlsplit(url).hostname
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise AssertionError(f"ccxt tried to reach {host} ({method} {url[:80]})")
        return await original(self, url, method, headers, body)

    original_client = Exchange.client

    def guarded_client(self, url):  # type: ignore[no-untyped-def]  # ccxt.pro's websockets
        host = urlsplit(url).hostname
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise AssertionError(f"ccxt.pro tried to reach {host} ({url[:80]})")
        return original_client(self, url)

    Exchange.fetch = guarded  # type: ignore[method-assign]
    Exchange.client = guarded_client  # type: ignore[method-assign]
    yield
    Exchange.fetch = original  # type: ignore[method-assign]
    Exchange.client = original_client  # type: ignore[method-assign]


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("run")


@pytest.fixture(scope="session")
def kafka(run_dir: Path) -> Iterator[infra.Running]:
    running = infra.start(infra.tansu_spec(infra.free_port()), run_dir / "logs")
    yield running
    running.stop()


@pytest.fixture(scope="session")
def redis_server(run_dir: Path) -> Iterator[infra.Running]:
    running = infra.start(infra.redis_spec(infra.free_port(), run_dir / "redis"), run_dir / "logs")
    yield running
    running.stop()


@pytest.fixture(scope="session")
def victoria(run_dir: Path) -> Iterator[infra.Running]:
    spec = infra.victoria_metrics_spec(infra.free_port(), run_dir / "vm")
    running = infra.start(spec, run_dir / "logs")
    yield running
    running.stop()


def fast_kafka(bootstrap: str) -> KafkaSettings:
    """Short session timeouts so group rebalances take seconds, not tens of seconds."""
    return KafkaSettings(
        bootstrap_servers=bootstrap,
        session_timeout_ms=3000,
        heartbeat_interval_ms=500,
        stall_timeout_s=8.0,
    )


@pytest.fixture
def kafka_settings(kafka: infra.Running) -> KafkaSettings:
    return fast_kafka(f"127.0.0.1:{kafka.port}")


@pytest.fixture
def redis_settings(redis_server: infra.Running) -> RedisSettings:
    return RedisSettings(url=f"redis://127.0.0.1:{redis_server.port}/0",
                         key_prefix=f"test-{uuid.uuid4().hex[:8]}:")


@pytest.fixture
def store_settings(victoria: infra.Running) -> StoreSettings:
    return StoreSettings(url=f"http://127.0.0.1:{victoria.port}", batch_size=500,
                         flush_interval_s=0.2)


@pytest.fixture
def topic() -> str:
    """A fresh topic name, so tests on the shared broker never see each other's messages."""
    return f"test.{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def redis_client(redis_settings: RedisSettings) -> AsyncIterator[object]:
    from shared.coordination import connect

    client = connect(redis_settings)
    yield client
    await client.aclose()


async def read_topic(bootstrap: str, topic: str, *, count: int | None = None, idle_s: float = 1.5,
                     timeout_s: float = 30.0) -> list[Any]:
    """Every record of ``topic`` from the start (no group), ordered by partition and offset.

    Stops after ``count`` records, or once nothing new arrived for ``idle_s`` seconds.
    """
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="earliest", enable_auto_commit=False,
                                fetch_max_wait_ms=10)
    await consumer.start()
    records: list[Any] = []
    try:
        deadline = time.monotonic() + timeout_s
        idle_since = time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - idle_since < idle_s:
            if count is not None and len(records) >= count:
                break
            batch = await consumer.getmany(timeout_ms=200)
            for part in batch.values():
                idle_since = time.monotonic()
                records.extend(part)
    finally:
        await consumer.stop()
    records.sort(key=lambda r: (r.partition, r.offset))
    return records


async def committed_offsets(bootstrap: str, group: str, partitions: Iterable[tuple[str, int]]
                            ) -> dict[tuple[str, int], int]:
    """The offset ``group`` committed on each (topic, partition), 0 where it committed none,
    read by a consumer that never joins the group."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    observer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await observer.start()
    try:
        return {(topic, partition): await observer.committed(TopicPartition(topic, partition)) or 0
                for topic, partition in partitions}
    finally:
        await observer.stop()


T = TypeVar("T")


class NotYet:
    """A probe's "not yet" that still says what it saw: falsy, so :func:`wait_for` and
    :func:`eventually` keep waiting, and shown in their failure (``return ok or NotYet(seen)``)."""

    def __init__(self, seen: object) -> None:
        self.seen = seen

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return f"not yet: {self.seen!r}"


def wait_for(probe: Callable[[], T], timeout_s: float, what: str, interval_s: float = 0.1) -> T:
    """Poll ``probe`` until it returns something truthy, and return that; fail naming
    ``what`` and the last value seen once ``timeout_s`` has passed. The tests' one way to
    wait for something to happen (never a fixed sleep)."""
    deadline = time.monotonic() + timeout_s
    while True:
        seen = probe()
        if seen:
            return seen
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}; last: {seen!r}")
        time.sleep(interval_s)


async def eventually(probe: Callable[[], T | Awaitable[T]], timeout_s: float, what: str,
                     interval_s: float = 0.05) -> T:
    """:func:`wait_for` inside an event loop; ``probe`` may be a coroutine function."""
    deadline = time.monotonic() + timeout_s
    while True:
        seen = probe()
        if inspect.isawaitable(seen):
            seen = await seen
        if seen:
            return seen  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}; last: {seen!r}")
        await asyncio.sleep(interval_s)


class WebhookReceiver:
    """An HTTP receiver of webhook calls (Alertmanager's): every POSTed JSON body, in arrival
    order, with its path. ``with WebhookReceiver(host) as r:`` serves on a free port of ``host``."""

    def __init__(self, host: str) -> None:
        self.payloads: list[dict[str, Any]] = []
        received = self.payloads

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append({"path": self.path, **json.loads(body)})
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.url = f"http://{host}:{self.server.server_port}/hook"

    def __enter__(self) -> WebhookReceiver:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def alerts(self, receiver: str) -> list[dict[str, Any]]:
        """The alerts notified to the Alertmanager receiver named ``receiver``."""
        return [a for p in list(self.payloads) if p["receiver"] == receiver for a in p["alerts"]]
