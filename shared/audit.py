"""The audit trail: who did what, when, and how it ended.

Every mutating API call and every order placed goes through :func:`audit`. The record is
a log line with ``audit: true`` and ``log_type: "audit"`` (the log shipper files those in
the audit indices, kept 365 days); :class:`AuditTrail` also appends it to a capped Redis
stream so the API can show the recent trail.
"""

from __future__ import annotations

import json
from typing import Any

from redis.exceptions import RedisError

from shared.logs import get_logger
from shared.messages import now_ms
from shared.rediskeys import DEFAULT_PREFIX, RedisKeys

log = get_logger("audit")
STREAM_MAXLEN = 100_000


def audit(action: str, *, actor: str, outcome: str, **details: Any) -> dict[str, Any]:
    """Log one audit record and return it."""
    record = {"action": action, "actor": actor, "outcome": outcome, "ts_ms": now_ms(), **details}
    log.info("audit", audit=True, log_type="audit", **record)
    return record


class AuditTrail:
    """Audit records in the log and in the Redis stream ``<prefix>audit``."""

    def __init__(self, redis: Any, prefix: str = DEFAULT_PREFIX):
        self.redis = redis
        self.key = RedisKeys(prefix).audit()

    async def record(self, action: str, *, actor: str, outcome: str, **details: Any) -> dict[str, Any]:
        entry = audit(action, actor=actor, outcome=outcome, **details)
        try:
            await self.redis.xadd(self.key, {"record": json.dumps(entry, default=str)},
                                  maxlen=STREAM_MAXLEN, approximate=True)
        except RedisError as exc:  # the log line above is the record of last resort
            log.warning("audit_stream_unavailable", error=str(exc)[:200])
        return entry

    async def recent(self, limit: int) -> list[dict[str, Any]]:
        rows = await self.redis.xrevrange(self.key, count=limit)
        return [json.loads(fields[b"record"]) for _id, fields in rows]
