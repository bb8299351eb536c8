"""Every message on the bus, typed and versioned, beside the topic list.

Messages are ``msgspec.Struct``s encoded as JSON (readable with any Kafka tool). Each
carries a ``type`` tag and a schema version ``v``; a consumer accepts the versions listed
in :data:`SUPPORTED_VERSIONS` and sends anything else to the topic's dead-letter topic.
Serialisation happens only at the Kafka edge (:mod:`shared.bus`).

Timestamps are integer milliseconds since the epoch, UTC, suffixed ``_ms``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import msgspec

SCHEMA_VERSION = 1
SUPPORTED_VERSIONS = frozenset({1})


def split_symbol(symbol: str) -> tuple[str, str]:
    """("BTC", "USDT") for the ccxt symbol "BTC/USDT" (and for the contract form
    "BTC/USDT:USDT"); ("BTC", "") when there is no quote."""
    base, _, quote = symbol.partition("/")
    return base, quote.partition(":")[0]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Message(msgspec.Struct, kw_only=True, tag_field="type", forbid_unknown_fields=False):
    """Base of every bus message."""

    v: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.v not in SUPPORTED_VERSIONS:
            raise ValueError(f"unsupported schema version v={self.v}")


Level = tuple[float, float]  # (price, quantity)


class OrderBook(Message, tag="orderbook", kw_only=True):
    """Top levels of one venue's book for one symbol (md.orderbooks, key = symbol).

    ``bid``/``ask`` repeat the best prices (None for an empty side; filled from the levels
    when not given), so a consumer that mostly needs the top of the book can read a
    :class:`BookHead` and leave the levels undecoded.
    """

    venue: str
    symbol: str  # unified ccxt symbol, e.g. "BTC/USDT"
    bids: list[Level]  # best first
    asks: list[Level]  # best first
    ts_venue_ms: int  # the venue's own timestamp of the book
    ts_recv_ms: int  # when ingest received it
    seq: int = 0
    bid: float | None = None
    ask: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.bid is None and self.bids:
            self.bid = self.bids[0][0]
        if self.ask is None and self.asks:
            self.ask = self.asks[0][0]


_LEVELS = msgspec.json.Decoder(list[Level])


class BookHead(Message, tag="orderbook", kw_only=True):
    """An :class:`OrderBook` read with its levels left as raw JSON (decoded by :meth:`levels`).

    Decoding the header and the best prices costs a fraction of decoding 2 × 20 levels; a
    consumer that rarely needs the levels (the arbitrage detector walks about one book in
    twenty) reads this instead. The levels are validated when first decoded.
    """

    venue: str
    symbol: str
    bids: msgspec.Raw
    asks: msgspec.Raw
    ts_venue_ms: int
    ts_recv_ms: int
    seq: int = 0
    bid: float | None = None
    ask: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.bid is None or self.ask is None:  # from a producer that did not send them
            bids, asks = levels(self.bids), levels(self.asks)
            self.bid = bids[0][0] if bids else None
            self.ask = asks[0][0] if asks else None


def levels(side: list[Level] | msgspec.Raw) -> list[Level]:
    """A book side's levels, decoding them if they are still raw (:class:`BookHead`)."""
    return side if isinstance(side, list) else _LEVELS.decode(side)


class OpportunityLeg(msgspec.Struct, kw_only=True):
    """One order of a multi-leg (triangular) opportunity, as detected."""

    symbol: str
    side: Literal["buy", "sell"]
    amount: float  # base
    vwap: float
    worst: float  # the last level walked
    book_ms: int  # when ingest received the book it was walked on


class Opportunity(Message, tag="opportunity", kw_only=True):
    """A spread worth trading after fees and slippage (arb.opportunities, key = symbol).

    ``buy_book_ms``/``sell_book_ms``: when ingest received each book (0: unknown), so the
    executor can tell how old the liquidity it is about to take was; ``ts_venue_ms``: the
    venue's own time of the newest book (what venue event -> opportunity latency is
    measured from). A triangular
    opportunity lists its three orders in ``legs``; its ``quantity`` is the amount of the
    start currency put in.
    """

    id: str  # deterministic: same books, same id
    kind: Literal["cross", "triangular"]
    symbol: str
    buy_venue: str
    sell_venue: str
    quantity: float
    buy_vwap: float
    sell_vwap: float
    buy_worst: float
    sell_worst: float
    gross_profit: float
    net_profit: float
    edge_bps: float
    ts_book_ms: int
    ts_detect_ms: int
    path: list[str] = []  # triangular: the markets in order
    buy_book_ms: int = 0
    sell_book_ms: int = 0
    legs: list[OpportunityLeg] = []
    ts_venue_ms: int = 0  # the venue's event time of the newest of its books (0: unknown)


class Execution(Message, tag="execution", kw_only=True):
    """One order's outcome (orders.executions, key = venue)."""

    id: str
    source: Literal["arbitrage", "rebalancer", "hedge"]
    parent_id: str  # opportunity or rebalance plan id
    venue: str
    symbol: str
    side: Literal["buy", "sell"]
    client_order_id: str
    status: Literal["planned", "open", "filled", "partial", "canceled", "rejected", "failed"]
    amount: float
    filled: float = 0.0
    average: float | None = None
    fee: float = 0.0  # in the symbol's quote currency, whatever the venue charged in (shared/orders.py)
    fee_currency: str | None = None  # that quote currency; None on reports of no order
    order_id: str | None = None
    error: str | None = None
    dry_run: bool = False
    ts_ms: int


class Position(msgspec.Struct, kw_only=True):
    venue: str
    asset: str
    quantity: float
    price: float
    value: float


class PortfolioSnapshot(Message, tag="portfolio_snapshot", kw_only=True):
    """Valuation of the whole portfolio (portfolio.snapshots, key = account), published by
    the portfolio monitor only; a rebalance plan carries its own valuation (total_value)."""

    account: str
    quote: str
    total_value: float
    positions: list[Position]
    ts_ms: int


class PlannedOrder(msgspec.Struct, kw_only=True):
    venue: str
    symbol: str
    side: Literal["buy", "sell"]
    amount: float
    notional: float
    est_cost: float
    client_order_id: str
    price: float | None = None  # limit price (IOC); None: a market order


class RebalancePlan(Message, tag="rebalance_plan", kw_only=True):
    """A rebalance cycle's plan and, once run, its result (portfolio.rebalance)."""

    id: str
    account: str
    method: Literal["rp", "mv"]
    dry_run: bool
    status: Literal["planned", "executed", "partial", "failed", "skipped"]
    target_weights: dict[str, float]
    current_weights: dict[str, float]
    orders: list[PlannedOrder]
    skipped: int = 0
    predicted_vol: float | None = None
    fencing_token: int | None = None
    total_value: float | None = None  # the portfolio valued for the plan, in the quote
    error: str | None = None
    ts_ms: int


class DeadLetter(msgspec.Struct, kw_only=True):
    """What a consumer could not handle, with why (``<topic>.dlq``, original key)."""

    topic: str
    partition: int
    offset: int
    key: str | None
    reason: str
    payload: str  # original bytes, UTF-8 with escapes for anything else
    group: str
    ts_ms: int
    v: int = SCHEMA_VERSION


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    message: type[Any]
    key: str  # the field whose value keys the record (partitioning)
    description: str

    @property
    def dlq(self) -> str:
        return dead_letter_topic(self.name)


MD_ORDERBOOKS = "md.orderbooks"
ARB_OPPORTUNITIES = "arb.opportunities"
ORDERS_EXECUTIONS = "orders.executions"
PORTFOLIO_SNAPSHOTS = "portfolio.snapshots"
PORTFOLIO_REBALANCE = "portfolio.rebalance"

TOPICS: dict[str, TopicSpec] = {
    t.name: t
    for t in (
        TopicSpec(MD_ORDERBOOKS, OrderBook, "symbol", "order books from ingest"),
        TopicSpec(ARB_OPPORTUNITIES, Opportunity, "symbol", "spreads found by arbitrage workers"),
        TopicSpec(ORDERS_EXECUTIONS, Execution, "venue", "every order and fill"),
        TopicSpec(PORTFOLIO_SNAPSHOTS, PortfolioSnapshot, "account", "portfolio valuations"),
        TopicSpec(PORTFOLIO_REBALANCE, RebalancePlan, "account", "rebalance plans and results"),
    )
}


def dead_letter_topic(topic: str) -> str:
    return f"{topic}.dlq"


def all_topic_names() -> list[str]:
    """Every topic the stack uses, dead-letter topics included."""
    return [n for t in TOPICS.values() for n in (t.name, t.dlq)]


class Codec:
    """Encode any message; decode and validate the message type of one topic."""

    _encoder: ClassVar[msgspec.json.Encoder] = msgspec.json.Encoder()

    def __init__(self, message_type: type[Any]):
        self.message_type = message_type
        self._decoder = msgspec.json.Decoder(message_type)

    @classmethod
    def for_topic(cls, topic: str) -> Codec:
        try:
            return cls(TOPICS[topic].message)
        except KeyError:
            raise KeyError(f"unknown topic {topic!r}; known: {', '.join(TOPICS)}") from None

    @classmethod
    def encode(cls, message: Any) -> bytes:
        return cls._encoder.encode(message)

    def decode(self, payload: bytes) -> Any:
        """Decode ``payload``; raises ``msgspec.DecodeError``/``ValidationError`` with the reason."""
        return self._decoder.decode(payload)


_KEY_FIELD: dict[type[Any], str] = {spec.message: spec.key for spec in TOPICS.values()}


def key_of(message: Any) -> bytes | None:
    """The partitioning key of a message, from its topic's key field."""
    field = _KEY_FIELD.get(type(message))
    if field is None:
        return None
    value = getattr(message, field, None)
    return None if value is None else str(value).encode()
