"""Messages round-trip, and anything else is rejected with a reason."""

from __future__ import annotations

import msgspec
import pytest

from shared.messages import (
    TOPICS,
    Codec,
    Execution,
    OrderBook,
    all_topic_names,
    dead_letter_topic,
    key_of,
)


def test_every_topic_has_a_dead_letter_topic_and_a_key_field() -> None:
    names = all_topic_names()
    assert len(names) == 2 * len(TOPICS)
    for spec in TOPICS.values():
        assert dead_letter_topic(spec.name) in names
        assert spec.key in spec.message.__struct_fields__


def test_round_trip_and_key() -> None:
    ob = OrderBook(venue="a", symbol="ETH/USDT", bids=[(1.0, 2.0)], asks=[(1.5, 3.0)],
                   ts_venue_ms=1, ts_recv_ms=2, seq=7)
    codec = Codec.for_topic("md.orderbooks")
    assert codec.decode(Codec.encode(ob)) == ob
    assert key_of(ob) == b"ETH/USDT"
    ex = Execution(id="e1", source="arbitrage", parent_id="o1", venue="v1", symbol="BTC/USDT",
                   side="buy", client_order_id="c1", status="filled", amount=1.0, ts_ms=5)
    assert key_of(ex) == b"v1"


@pytest.mark.parametrize(("payload", "reason"), [
    (b"{oops", "malformed"),
    (b'{"type":"execution","v":1}', "Invalid value 'execution' - at `$.type`"),  # wrong type for this topic
    (b'{"type":"orderbook","v":9,"venue":"a","symbol":"s","bids":[],"asks":[],'
     b'"ts_venue_ms":1,"ts_recv_ms":1}', "unsupported schema version v=9"),
    (b'{"type":"orderbook","v":1,"venue":"a","symbol":"s","bids":[["x",1]],"asks":[],'
     b'"ts_venue_ms":1,"ts_recv_ms":1}', "Expected `float`"),
])
def test_bad_payloads_are_rejected_with_a_reason(payload: bytes, reason: str) -> None:
    with pytest.raises((msgspec.DecodeError, msgspec.ValidationError)) as err:
        Codec.for_topic("md.orderbooks").decode(payload)
    assert reason.lower() in str(err.value).lower()


def test_unknown_topic_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match=r"md\.orderbooks"):
        Codec.for_topic("nope")
