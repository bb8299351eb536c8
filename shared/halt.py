"""The trading halt (kill switch), shared by every worker through Redis.

The state is persisted in the key ``<prefix>halt`` (so a worker started later still sees
it) and every change is published on the channel ``<prefix>halt:changes`` (so running
workers see it at once). :class:`HaltWatch` keeps a local flag in step with both: it
subscribes, and re-reads the key every few seconds in case a message was missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from redis.exceptions import RedisError

from shared.errors import TransientError
from shared.logs import get_logger
from shared.messages import now_ms
from shared.metrics import HALTED
from shared.rediskeys import DEFAULT_PREFIX, RedisKeys

log = get_logger("halt")


class Halt:
    def __init__(self, redis: Any, prefix: str = DEFAULT_PREFIX):
        self.redis = redis
        keys = RedisKeys(prefix)
        self.key, self.channel = keys.halt(), keys.halt_changes()

    async def state(self) -> dict[str, Any]:
        raw = await self.redis.get(self.key)  # RedisUnavailable (transient) when Redis is away
        if raw is None:
            return {"halted": False}
        try:
            doc = json.loads(raw)
        except ValueError:  # set by hand: any value halts
            doc = {"reason": raw.decode(errors="replace")}
        return {"halted": True, **(doc if isinstance(doc, dict) else {"reason": str(doc)})}

    async def set(self, halted: bool, *, reason: str = "", by: str = "") -> dict[str, Any]:
        """Halt or resume trading everywhere; returns the new state."""
        state = {"halted": halted, "reason": reason, "by": by, "since_ms": now_ms()}
        if halted:
            await self.redis.set(self.key, json.dumps({k: v for k, v in state.items() if k != "halted"}))
        else:
            await self.redis.delete(self.key)
        await self.redis.publish(self.channel, json.dumps(state))
        log.warning("trading_halted" if halted else "trading_resumed", reason=reason, by=by)
        return state


class HaltWatch:
    """A local ``halted`` flag that follows :class:`Halt` within milliseconds."""

    def __init__(self, halt: Halt, *, recheck_s: float = 5.0):
        self.halt = halt
        self.recheck_s = recheck_s
        self.halted = False
        self.changed = asyncio.Event()

    def _apply(self, halted: bool, reason: str = "") -> None:
        HALTED.set(1 if halted else 0)
        if halted != self.halted:
            self.halted = halted
            self.changed.set()
            log.warning("halt_seen" if halted else "resume_seen", reason=reason)

    async def refresh(self) -> bool:
        state = await self.halt.state()
        self._apply(state["halted"], state.get("reason", ""))
        return self.halted

    async def run(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            pubsub = self.halt.redis.pubsub()
            try:
                await pubsub.subscribe(self.halt.channel)
                await self.refresh()
                next_check = asyncio.get_running_loop().time() + self.recheck_s
                while not stopping.is_set():
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
                    if message and message.get("type") == "message":
                        with contextlib.suppress(ValueError, TypeError):
                            doc = json.loads(message["data"])
                            self._apply(bool(doc.get("halted")), doc.get("reason", ""))
                    if asyncio.get_running_loop().time() >= next_check:
                        await self.refresh()
                        next_check = asyncio.get_running_loop().time() + self.recheck_s
            except (RedisError, TransientError, OSError) as exc:
                log.warning("halt_watch_reconnect", error=str(exc)[:200])
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), 1.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
