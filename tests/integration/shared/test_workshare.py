"""Sharing venue/symbol pairs between replicas: no overlap, no gap, no duplicate publish."""

from __future__ import annotations

import asyncio

from shared.coordination import WorkShare

ITEMS = [f"sim-{v}|SYM{i}/USDT" for v in "abc" for i in range(10)]


async def refresh_all(shares: list[WorkShare], rounds: int = 2) -> None:
    for _ in range(rounds):  # first round: everyone registers; second: everyone sees everyone
        for share in shares:
            await share.refresh(ITEMS)


async def test_items_are_split_without_overlap_or_gap(redis_client, redis_settings) -> None:
    shares = [WorkShare(redis_client, "t", member=f"m{i}", prefix=redis_settings.key_prefix)
              for i in range(3)]
    await refresh_all(shares)
    owned = [s.owned for s in shares]
    assert set().union(*owned) == set(ITEMS)
    assert sum(len(o) for o in owned) == len(ITEMS), "an item is owned twice"
    assert all(len(o) >= 4 for o in owned), [len(o) for o in owned]

    # one member leaves: its items move to the others, the others keep theirs
    before = [set(o) for o in owned]
    await shares[2].leave()
    await refresh_all(shares[:2])
    assert shares[0].owned | shares[1].owned == set(ITEMS)
    assert not shares[0].owned & shares[1].owned
    assert before[0] <= shares[0].owned and before[1] <= shares[1].owned, "stable assignment"


async def test_gate_admits_only_the_lease_holder_and_each_id_once(redis_client, redis_settings) -> None:
    a = WorkShare(redis_client, "g", member="a", prefix=redis_settings.key_prefix)
    b = WorkShare(redis_client, "g", member="b", prefix=redis_settings.key_prefix)
    await refresh_all([a, b])
    item = next(iter(a.owned))
    assert await a.gate(item, "book-1") == 1
    assert await a.gate(item, "book-1") == 0, "the same book again is a duplicate"
    assert await b.gate(item, "book-2") == -1, "not b's item"
    assert await a.gate(item, "book-2") == 1


async def test_concurrent_refresh_never_double_owns(redis_client, redis_settings) -> None:
    shares = [WorkShare(redis_client, "c", member=f"m{i}", prefix=redis_settings.key_prefix,
                        ttl_s=5) for i in range(4)]
    for _ in range(5):
        await asyncio.gather(*(s.refresh(ITEMS) for s in shares))
        leases = {}
        for item in ITEMS:
            holder = await redis_client.get(shares[0].keys.share_lease(shares[0].name, item))
            leases[item] = holder
        for share in shares:
            for item in share.owned:
                assert leases[item] == share.member.encode(), (item, share.member, leases[item])
    assert set().union(*(s.owned for s in shares)) == set(ITEMS)
