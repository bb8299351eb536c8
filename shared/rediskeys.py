"""Every Redis key of the project, built in one place under one prefix.

The prefix is ``CSE_REDIS_KEY_PREFIX`` (default ``cse:``), so several stacks can share one
Redis. Keys never change between releases without a migration note: they hold locks,
fencing tokens, idempotency claims, the halt flag and the arbitrage ledger.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PREFIX = "cse:"


@dataclass(frozen=True)
class RedisKeys:
    """Key names under ``prefix``; methods take the parts that vary."""

    prefix: str = DEFAULT_PREFIX

    # coordination (shared/coordination.py, shared/halt.py, shared/audit.py)
    def lock(self, name: str) -> str:
        return f"{self.prefix}lock:{name}"

    def fence(self, name: str) -> str:
        return f"{self.prefix}fence:{name}"

    def fence_seen(self, name: str) -> str:
        return f"{self.prefix}fence-seen:{name}"

    def claim(self, key: str) -> str:
        return f"{self.prefix}claim:{key}"

    def share_members(self, name: str) -> str:
        return f"{self.prefix}share:{name}:members"

    def share_lease(self, name: str, item: str) -> str:
        return f"{self.prefix}share:{name}:lease:{item}"

    def share_last(self, name: str, item: str) -> str:
        return f"{self.prefix}share:{name}:last:{item}"

    def halt(self) -> str:
        return f"{self.prefix}halt"

    def halt_changes(self) -> str:
        return f"{self.prefix}halt:changes"

    def audit(self) -> str:
        return f"{self.prefix}audit"

    # main service (workers/main/api.py) and rebalancer (workers/rebalancer/loop.py)
    def recent(self, topic: str) -> str:
        return f"{self.prefix}recent:{topic}"

    def rebalance_trigger(self) -> str:
        return f"{self.prefix}rebalance:trigger"

    # monitor (workers/monitor/worker.py)
    def monitor(self, account: str, what: str) -> str:
        """``what``: baseline, peak or latest."""
        return f"{self.prefix}monitor:{account}:{what}"

    def monitor_fee_seen(self, venue: str, execution_id: str) -> str:
        return f"{self.prefix}monitor:fee:{venue}:{execution_id}"

    # arbitrage (workers/arbitrage/ledger.py, workers/arbitrage/balances.py)
    def arb_opportunity(self, opportunity_id: str) -> str:
        return f"{self.prefix}arb:opp:{opportunity_id}"

    def arb_drift(self) -> str:
        return f"{self.prefix}arb:drift"

    def arb_pair(self, venue: str, symbol: str) -> str:
        return f"{self.prefix}arb:pair:{venue}|{symbol}"

    def arb_touch(self, venue: str, symbol: str) -> str:
        return f"{self.prefix}arb:touch:{venue}|{symbol}"

    def arb_balances(self, venue: str) -> tuple[str, str, str, str]:
        """The venue's balance view: free amounts, in-flight orders, applied fills, holds."""
        p = f"{self.prefix}arb:"
        return f"{p}bal:{venue}", f"{p}inflight:{venue}", f"{p}applied:{venue}", f"{p}res:{venue}"

    def arb_balance_read(self, venue: str) -> str:
        return f"{self.prefix}arb:balread:{venue}"
