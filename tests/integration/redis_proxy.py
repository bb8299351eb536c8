"""A TCP proxy in front of the real redis-server that can fail Redis at an exact command.

It forwards RESP traffic untouched and counts the commands clients send. With a budget of
``n`` commands, the ``n``-th command is the last delivered; when the next one arrives the
proxy drops every connection and refuses new ones until :meth:`RedisProxy.heal` — Redis has
gone away at that step, as far as the client can tell. With ``lose_reply``, the next command
is still delivered (Redis executes it) but its reply never arrives: the client cannot know
whether it happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from dataclasses import dataclass, field


def complete_commands(buf: bytes) -> list[int]:
    """End offsets of the complete RESP commands (arrays of bulk strings) at the start of ``buf``."""
    ends = []
    pos = 0
    while pos < len(buf):
        if buf[pos:pos + 1] != b"*":
            raise ValueError(f"not a RESP array at {pos}: {buf[pos:pos + 20]!r}")
        end = buf.find(b"\r\n", pos)
        if end < 0:
            break
        p = end + 2
        for _ in range(int(buf[pos + 1:end])):
            end = buf.find(b"\r\n", p)
            if end < 0:
                return ends
            p = end + 2 + int(buf[p + 1:end]) + 2
            if p > len(buf):
                return ends
        ends.append(p)
        pos = p
    return ends


@dataclass
class _Muted:
    """A client whose replies are dropped, and how the proxy learns Redis executed its last
    command: a ``PING`` with a token of its own sent right behind it, answered in order (a
    ``PING`` with a message is answered in the subscribed state too)."""

    token: bytes = field(default_factory=lambda: uuid.uuid4().hex.encode())
    executed: asyncio.Event = field(default_factory=asyncio.Event)
    tail: bytes = b""

    def ping(self) -> bytes:
        return b"*2\r\n$4\r\nPING\r\n$%d\r\n%s\r\n" % (len(self.token), self.token)

    def replied(self, chunk: bytes) -> None:
        seen = self.tail + chunk
        if self.token in seen:
            self.executed.set()
        self.tail = seen[-len(self.token):]


class RedisProxy:
    def __init__(self, redis_port: int):
        self.redis_port = redis_port
        self.budget: int | None = None  # None: unlimited
        self.lose_reply = False
        self.sent = 0  # commands delivered to Redis
        self.cut = False
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()
        self._mute: dict[asyncio.StreamWriter, _Muted] = {}  # client writers whose replies are dropped

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> RedisProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def close(self) -> None:
        self._drop()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def fail_after(self, commands: int, *, lose_reply: bool = False) -> None:
        """Deliver ``commands`` more commands, then fail Redis (see the module docstring)."""
        self.budget = self.sent + commands
        self.lose_reply = lose_reply

    def heal(self) -> None:
        self.budget = None
        self.cut = False

    def _drop(self) -> None:
        self.cut = True
        for writer in list(self._conns):
            writer.close()
        self._conns.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.cut:
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.redis_port)
        self._conns |= {writer, up_writer}
        pumps = [asyncio.create_task(self._requests(reader, up_writer, writer)),
                 asyncio.create_task(self._replies(up_reader, writer))]
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for task in pumps:
            task.cancel()
        for w in (writer, up_writer):
            self._conns.discard(w)
            w.close()
            with contextlib.suppress(Exception):
                await w.wait_closed()

    async def _requests(self, reader: asyncio.StreamReader, up: asyncio.StreamWriter,
                        client: asyncio.StreamWriter) -> None:
        buf = b""
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                return
            buf += chunk
            start = 0
            for end in complete_commands(buf):
                if self.budget is not None and self.sent >= self.budget:
                    if self.cut:
                        return
                    if self.lose_reply:  # deliver this one, but its reply is lost
                        muted = self._mute[client] = _Muted()
                        up.write(buf[start:end] + muted.ping())
                        await up.drain()
                        self.sent += 1
                        # Redis executed it once the ping behind it came back (bounded: inside
                        # a MULTI both are only queued, and the ping's answer holds no token)
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(muted.executed.wait(), 5)
                        if self.budget is None or self.cut:
                            return  # healed (or failed by another connection) meanwhile
                    self._drop()
                    return
                up.write(buf[start:end])
                self.sent += 1
                start = end
            await up.drain()
            buf = buf[start:]

    async def _replies(self, up_reader: asyncio.StreamReader, client: asyncio.StreamWriter) -> None:
        while True:
            chunk = await up_reader.read(65536)
            if not chunk:
                return
            muted = self._mute.get(client)
            if muted is not None:
                muted.replied(chunk)
                continue
            client.write(chunk)
            await client.drain()
