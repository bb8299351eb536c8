"""Matching engine, accounts, fees and the venue's ledger.

The venue's synthetic liquidity is the counterparty of every fill (accounts never trade
with each other, and their resting orders are not shown in the book). So that no asset is
ever created or destroyed, that counterparty is a real ledger entry, the *house*: each
fill moves the base asset between the account and the house, the quote asset the other
way, and the commission from what the account receives to the venue's fee ledger
(base asset on buys, quote asset on sells). For every asset, at all times::

    sum over accounts (free + locked) + house + fees == sum of the initial balances

which ``/venue-sim/v1/ledger`` reports and the tests check exactly. All amounts are
``Decimal`` (prices are whole ticks, quantities whole lots), so this holds to the last
digit; commissions are not rounded.

Balances are locked for resting orders (quote ``price * qty`` for a buy, base ``qty`` for
a sell) and released on cancel, expiry or fill; a taker fill below a buy's limit price
refunds the difference at once.

Order handling, as on Binance spot:

* ``MARKET`` walks the book (by ``quantity``, or by ``quoteOrderQty`` to spend/receive
  a quote amount); what the book cannot fill expires (status ``EXPIRED``).
* ``LIMIT`` ``GTC`` takes what crosses, then rests; ``IOC`` takes what crosses and
  expires the rest; ``FOK`` fills completely or expires without a fill.
* ``LIMIT_MAKER`` is refused with -2010 if it would cross, else it rests.
* A resting order fills, as maker at its own price, when the book on a later tick
  crosses it, up to the size the book shows there.
"""

from __future__ import annotations

import json
import random
import string
from collections import defaultdict, deque
from dataclasses import dataclass, field
from decimal import Context, Decimal, localcontext
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol

import numpy as np

from tooling.venue_sim import errors
from tooling.venue_sim.book import BUY, SELL, Book
from tooling.venue_sim.symbols import SymbolSpec, fmt

if TYPE_CHECKING:
    from tooling.venue_sim.source import MarketSource

NEW = "NEW"
PARTIALLY_FILLED = "PARTIALLY_FILLED"
FILLED = "FILLED"
CANCELED = "CANCELED"
EXPIRED = "EXPIRED"
OPEN_STATUSES = frozenset({NEW, PARTIALLY_FILLED})

LIMIT = "LIMIT"
LIMIT_MAKER = "LIMIT_MAKER"
MARKET = "MARKET"
ORDER_TYPES = (LIMIT, LIMIT_MAKER, MARKET)
TIME_IN_FORCE = ("GTC", "IOC", "FOK")

ZERO = Decimal(0)
TAPE_LENGTH = 5000
# Far more digits than any price * quantity * fee needs: arithmetic stays exact.
_EXACT = Context(prec=80)
_ID_CHARS = string.ascii_letters + string.digits


@dataclass(eq=False)
class Trade:
    """One fill of one order, as ``/api/v3/myTrades`` reports it."""

    symbol: str
    id: int
    order_id: int
    price: Decimal
    qty: Decimal
    quote_qty: Decimal
    commission: Decimal
    commission_asset: str
    time: int
    is_buyer: bool
    is_maker: bool

    def fill_json(self) -> dict[str, Any]:
        return {"price": fmt(self.price), "qty": fmt(self.qty), "commission": fmt(self.commission),
                "commissionAsset": self.commission_asset, "tradeId": self.id}

    @property
    def buyer_is_maker(self) -> bool:
        # the account's counterparty is the venue: the buyer made the price when the
        # account bought as maker or sold as taker
        return self.is_buyer == self.is_maker

    def public_json(self) -> dict[str, Any]:
        return {"id": self.id, "price": fmt(self.price), "qty": fmt(self.qty),
                "quoteQty": fmt(self.quote_qty), "time": self.time,
                "isBuyerMaker": self.buyer_is_maker, "isBestMatch": True}

    def agg_json(self) -> dict[str, Any]:
        return {"a": self.id, "p": fmt(self.price), "q": fmt(self.qty), "f": self.id, "l": self.id,
                "T": self.time, "m": self.buyer_is_maker, "M": True}

    def to_json(self) -> dict[str, Any]:
        return {"symbol": self.symbol, "id": self.id, "orderId": self.order_id, "orderListId": -1,
                "price": fmt(self.price), "qty": fmt(self.qty), "quoteQty": fmt(self.quote_qty),
                "commission": fmt(self.commission), "commissionAsset": self.commission_asset,
                "time": self.time, "isBuyer": self.is_buyer, "isMaker": self.is_maker,
                "isBestMatch": True}


@dataclass(eq=False)
class Account:
    """An API key pair and its balances, orders and trades."""

    label: str
    api_key: str
    secret: bytes
    maker_fee: Decimal
    taker_fee: Decimal
    free: defaultdict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    locked: defaultdict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    orders: dict[int, Order] = field(default_factory=dict)
    by_client_id: dict[str, Order] = field(default_factory=dict)
    open_orders: dict[int, Order] = field(default_factory=dict)
    trades: list[Trade] = field(default_factory=list)
    update_time: int = 0

    def balances_json(self) -> list[dict[str, str]]:
        assets = sorted(set(self.free) | set(self.locked))
        return [{"asset": a, "free": fmt(self.free[a]), "locked": fmt(self.locked[a])} for a in assets]


@dataclass(eq=False)
class Order:
    """An order and everything the API reports about it."""

    order_id: int
    client_id: str
    spec: SymbolSpec
    account: Account
    side: str
    type: str
    time_in_force: str
    price: Decimal  # 0 for market orders
    orig_qty: Decimal  # for a market order by quoteOrderQty: the executed quantity
    orig_quote_qty: Decimal
    time: int
    update_time: int
    status: str = NEW
    executed: Decimal = ZERO
    cum_quote: Decimal = ZERO
    locked: Decimal = ZERO  # still held for this order (quote for buys, base for sells)
    fills: list[Trade] = field(default_factory=list)

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    @property
    def remaining(self) -> Decimal:
        return self.orig_qty - self.executed

    @property
    def locked_asset(self) -> str:
        return self.spec.quote if self.side == BUY else self.spec.base

    def _common(self) -> dict[str, Any]:
        return {
            "symbol": self.spec.id, "orderId": self.order_id, "orderListId": -1,
            "clientOrderId": self.client_id, "price": fmt(self.price), "origQty": fmt(self.orig_qty),
            "executedQty": fmt(self.executed), "origQuoteOrderQty": fmt(self.orig_quote_qty),
            "cummulativeQuoteQty": fmt(self.cum_quote), "status": self.status,
            "timeInForce": self.time_in_force, "type": self.type, "side": self.side,
            "selfTradePreventionMode": "EXPIRE_MAKER",
        }

    def ack_json(self) -> dict[str, Any]:
        return {"symbol": self.spec.id, "orderId": self.order_id, "orderListId": -1,
                "clientOrderId": self.client_id, "transactTime": self.time}

    def result_json(self, full: bool) -> dict[str, Any]:
        out = {**self.ack_json(), **self._common(), "workingTime": self.time}
        if full:
            out["fills"] = [t.fill_json() for t in self.fills]
        return out

    def query_json(self) -> dict[str, Any]:
        return {**self._common(), "stopPrice": "0.00000000", "icebergQty": "0.00000000",
                "time": self.time, "updateTime": self.update_time, "isWorking": self.type != MARKET,
                "workingTime": self.time}

    def cancel_json(self, cancel_client_id: str, now_ms: int) -> dict[str, Any]:
        # As Binance: clientOrderId is the cancel request's id, the order's is origClientOrderId.
        return {**self._common(), "origClientOrderId": self.client_id,
                "clientOrderId": cancel_client_id, "transactTime": now_ms}


class Journal:
    """Append-only JSON lines, one per fill, flushed at once (survives a SIGKILL)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._file: IO[str] | None = open(path, "a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        if self._file is not None:
            self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class BookObserver(Protocol):
    """Told of each new version of a symbol's book (after it is installed or a taker took
    from it) and of each fill, as they happen."""

    def book_changed(self, book: Book) -> None: ...

    def traded(self, trade: Trade) -> None: ...


class AccountObserver(Protocol):
    """Told of each change of an account's orders as it happens, the account already
    updated: an order accepted (its locks taken, before any fill), each fill (balances
    moved, before the order's status is settled), and its end (FILLED, CANCELED or EXPIRED,
    locks released). A resting order's fills on a later tick are told the same way."""

    def order_created(self, order: Order) -> None: ...

    def order_filled(self, order: Order, trade: Trade) -> None: ...

    def order_finished(self, order: Order) -> None: ...


class Engine:
    """Accounts, orders and fills of one venue (single-threaded: call from one event loop)."""

    def __init__(self, specs: list[SymbolSpec], *, venue: str = "venue-sim",
                 journal: Journal | None = None, reject_rate: float = 0.0, seed: int = 0) -> None:
        self.venue = venue
        # told of every new version of a book and of every fill (the websocket streams)
        self.observer: BookObserver | None = None
        # told of every order accepted, filled and finished (the websocket API's user data)
        self.account_observer: AccountObserver | None = None
        self.specs = {s.id: s for s in specs}
        self.journal = journal
        self.reject_rate = reject_rate
        self.rng = random.Random(f"{seed}:{venue}:orders")
        self.accounts: dict[str, Account] = {}
        self.books: dict[str, Book] = {}
        self.house: defaultdict[str, Decimal] = defaultdict(Decimal)
        self.fees: defaultdict[str, Decimal] = defaultdict(Decimal)
        self.initial: defaultdict[str, Decimal] = defaultdict(Decimal)
        self._resting: dict[str, dict[int, Order]] = {s.id: {} for s in specs}
        # the public tape of each symbol (every account's fills), for /trades and /aggTrades
        self.tape: dict[str, deque[Trade]] = {s.id: deque(maxlen=TAPE_LENGTH) for s in specs}
        self._next_order_id = 1_000_001
        self._next_trade_id = 500_001
        self.fills = 0

    # --- accounts -----------------------------------------------------------------------------

    def add_account(self, label: str, api_key: str, secret: str, balances: dict[str, Decimal],
                    maker_fee: Decimal, taker_fee: Decimal) -> Account:
        if api_key in self.accounts:
            raise ValueError(f"API key of {label} is already used by another account")
        acct = Account(label, api_key, secret.encode(), maker_fee, taker_fee)
        for asset, amount in balances.items():
            acct.free[asset] += amount
            self.initial[asset] += amount
        self.accounts[api_key] = acct
        return acct

    def new_client_id(self) -> str:
        return "".join(self.rng.choices(_ID_CHARS, k=22))

    # --- market data --------------------------------------------------------------------------

    def book(self, symbol_id: str) -> Book:
        book = self.books.get(symbol_id)
        if book is None:  # replay: nothing recorded yet for this symbol
            empty = np.zeros(0, dtype=np.int64)
            book = Book(self.specs[symbol_id], empty, empty, empty.copy(), empty.copy(), 0, 0)
            self.books[symbol_id] = book
        return book

    def advance(self, source: MarketSource, now_ms: int, specs: list[SymbolSpec] | None = None
                ) -> None:
        """New books from ``source`` for every symbol (or those of ``specs``); resting orders
        they cross are filled."""
        for spec in self.specs.values() if specs is None else specs:
            old = self.books.get(spec.id)
            book = source.book(spec, now_ms, (old.update_id if old else 0) + 1, prev=old)
            if book is not None:  # replay: nothing recorded yet for this symbol
                self.set_book(book, now_ms)

    def set_book(self, book: Book, now_ms: int) -> None:
        """Install the symbol's new book and fill the resting orders it crosses."""
        self.books[book.spec.id] = book
        resting = self._resting[book.spec.id]
        if resting:
            self._fill_resting(book, resting, now_ms)
        if self.observer is not None:
            self.observer.book_changed(book)

    def _fill_resting(self, book: Book, resting: dict[int, Order], now_ms: int) -> None:
        with localcontext(_EXACT):
            buys = sorted((o for o in resting.values() if o.side == BUY),
                          key=lambda o: (-o.price, o.order_id))
            sells = sorted((o for o in resting.values() if o.side == SELL),
                           key=lambda o: (o.price, o.order_id))
            for side, orders in ((BUY, buys), (SELL, sells)):
                for order in orders:
                    limit_px = int(order.price / order.spec.tick)
                    best = book.best_ask if side == BUY else book.best_bid
                    if best is None or (best > limit_px if side == BUY else best < limit_px):
                        break  # sorted by price: no later order crosses either
                    lots = int(order.remaining / order.spec.step)
                    taken = book.walk(side, limit_px, lots=lots)
                    book.consume(side, taken, now_ms)
                    got = sum(q for _, q in taken)
                    if got:
                        # a maker is filled at its own price, whatever the taker's level
                        self._fill(order, order.price, got * order.spec.step, True, now_ms)
                        if order.remaining == 0:
                            self._finish(order, FILLED, now_ms)
                        else:
                            order.status = PARTIALLY_FILLED

    # --- orders -----------------------------------------------------------------------------

    def place(self, acct: Account, spec: SymbolSpec, side: str, otype: str, tif: str | None,
              qty: Decimal | None, quote_qty: Decimal | None, price: Decimal | None,
              client_id: str | None, now_ms: int, *, test: bool = False) -> Order | None:
        """Validate, lock, match; returns the order (None for a test order).

        Raises :class:`~tooling.venue_sim.errors.ApiError` for every refusal; a refused order
        leaves no trace (its client order id stays unused).
        """
        with localcontext(_EXACT):
            if client_id is not None and client_id in acct.by_client_id:
                raise errors.rejected(errors.DUPLICATE_ORDER)
            book = self.book(spec.id)
            self._check_filters(spec, otype, qty, quote_qty, price, book)
            limit_px = int(price / spec.tick) if price is not None else None
            if otype == LIMIT_MAKER:
                best = book.best_ask if side == BUY else book.best_bid
                if best is not None and (limit_px >= best if side == BUY  # type: ignore[operator]
                                         else limit_px <= best):  # type: ignore[operator]
                    raise errors.rejected(errors.WOULD_TAKE)
            if self.reject_rate and self.rng.random() < self.reject_rate:
                raise errors.unknown_error(400)  # chaos: --reject-rate

            lots = int(qty / spec.step) if qty is not None else None
            taken: list[tuple[int, int]] = []
            if otype == MARKET:
                taken = book.walk(side, None, lots=lots, quote=quote_qty)
                self._check_market_funds(acct, spec, side, qty, quote_qty, taken)
            else:
                assert price is not None and qty is not None
                need = price * qty if side == BUY else qty
                asset = spec.quote if side == BUY else spec.base
                if acct.free[asset] < need:
                    raise errors.rejected(errors.INSUFFICIENT_BALANCE)
                if otype == LIMIT:
                    if tif == "FOK" and book.available(side, limit_px) < lots:  # type: ignore[operator]
                        taken = []
                    else:
                        taken = book.walk(side, limit_px, lots=lots)
            if test:
                return None
            return self._create(acct, spec, side, otype, tif, qty, quote_qty, price, client_id,
                                now_ms, book, taken)

    def _check_filters(self, spec: SymbolSpec, otype: str, qty: Decimal | None,
                       quote_qty: Decimal | None, price: Decimal | None, book: Book) -> None:
        if price is not None and (price < spec.min_price or price > spec.max_price
                                  or (price - spec.min_price) % spec.tick != 0):
            raise errors.filter_failure("PRICE_FILTER")
        if qty is not None and (qty < spec.min_qty or qty > spec.max_qty
                                or (qty - spec.min_qty) % spec.step != 0):
            raise errors.filter_failure("LOT_SIZE")
        if price is not None and qty is not None:
            notional = price * qty
            if notional < spec.min_notional or notional > spec.max_notional:
                raise errors.filter_failure("NOTIONAL")
        elif quote_qty is not None:
            if quote_qty < spec.min_notional:
                raise errors.filter_failure("NOTIONAL")
        elif qty is not None:
            mid = book.mid
            # Binance checks market orders against a recent average price; the mid will do
            if mid is not None and qty * Decimal(repr(mid)) < spec.min_notional:
                raise errors.filter_failure("NOTIONAL")

    def _check_market_funds(self, acct: Account, spec: SymbolSpec, side: str, qty: Decimal | None,
                            quote_qty: Decimal | None, taken: list[tuple[int, int]]) -> None:
        unit = spec.tick * spec.step
        if side == BUY:
            need = quote_qty if quote_qty is not None else sum(
                (unit * p * q for p, q in taken), ZERO)
            asset = spec.quote
        else:
            need = qty if qty is not None else sum((spec.step * q for _, q in taken), ZERO)
            asset = spec.base
        if acct.free[asset] < need:
            raise errors.rejected(errors.INSUFFICIENT_BALANCE)

    def _create(self, acct: Account, spec: SymbolSpec, side: str, otype: str, tif: str | None,
                qty: Decimal | None, quote_qty: Decimal | None, price: Decimal | None,
                client_id: str | None, now_ms: int, book: Book, taken: list[tuple[int, int]]
                ) -> Order:
        order = Order(
            order_id=self._next_order_id, client_id=client_id or self.new_client_id(), spec=spec,
            account=acct, side=side, type=otype,
            time_in_force=tif or "GTC", price=price if price is not None else ZERO,
            orig_qty=qty if qty is not None else ZERO,
            orig_quote_qty=quote_qty if quote_qty is not None else ZERO,
            time=now_ms, update_time=now_ms,
        )
        self._next_order_id += 1
        acct.orders[order.order_id] = order
        acct.by_client_id[order.client_id] = order
        acct.update_time = now_ms
        if otype != MARKET:  # lock what a resting order may need
            order.locked = price * qty if side == BUY else qty  # type: ignore[operator]
            acct.free[order.locked_asset] -= order.locked
            acct.locked[order.locked_asset] += order.locked
        if self.account_observer is not None:
            self.account_observer.order_created(order)
        book.consume(side, taken, now_ms)
        if taken and self.observer is not None:
            self.observer.book_changed(book)
        for p, q in taken:
            self._fill(order, spec.tick * p, spec.step * q, False, now_ms)
        if otype == MARKET:
            if quote_qty is not None:
                order.orig_qty = order.executed
                # stopped by its budget (filled) or by the end of the book (expired)?
                done = order.executed > 0 and len(book.ask_px if side == BUY else book.bid_px) > 0
            else:
                done = order.remaining == 0
            self._finish(order, FILLED if done else EXPIRED, now_ms)
        elif order.remaining == 0:
            self._finish(order, FILLED, now_ms)
        elif otype == LIMIT and order.time_in_force in ("IOC", "FOK"):
            self._finish(order, EXPIRED, now_ms)
        else:
            order.status = PARTIALLY_FILLED if order.executed > 0 else NEW
            acct.open_orders[order.order_id] = order
            self._resting[spec.id][order.order_id] = order
        return order

    def _fill(self, order: Order, price: Decimal, qty: Decimal, is_maker: bool, now_ms: int) -> None:
        spec, acct = order.spec, order.account
        quote_amt = price * qty
        rate = acct.maker_fee if is_maker else acct.taker_fee
        if order.side == BUY:
            fee, fee_asset = qty * rate, spec.base
            if order.type == MARKET:
                acct.free[spec.quote] -= quote_amt
            else:
                release = order.price * qty  # the part of the lock this quantity held
                order.locked -= release
                acct.locked[spec.quote] -= release
                acct.free[spec.quote] += release - quote_amt  # refund a better price at once
            acct.free[spec.base] += qty - fee
            self.house[spec.base] -= qty
            self.house[spec.quote] += quote_amt
        else:
            fee, fee_asset = quote_amt * rate, spec.quote
            if order.type == MARKET:
                acct.free[spec.base] -= qty
            else:
                order.locked -= qty
                acct.locked[spec.base] -= qty
            acct.free[spec.quote] += quote_amt - fee
            self.house[spec.base] += qty
            self.house[spec.quote] -= quote_amt
        self.fees[fee_asset] += fee
        trade = Trade(spec.id, self._next_trade_id, order.order_id, price, qty, quote_amt, fee,
                      fee_asset, now_ms, order.side == BUY, is_maker)
        self._next_trade_id += 1
        self.fills += 1
        order.executed += qty
        order.cum_quote += quote_amt
        order.update_time = now_ms
        order.fills.append(trade)
        acct.trades.append(trade)
        self.tape[spec.id].append(trade)
        if self.observer is not None:
            self.observer.traded(trade)
        acct.update_time = now_ms
        if self.journal is not None:
            self.journal.write({
                "ts": now_ms, "venue": self.venue, "account": acct.label, "symbol": spec.symbol,
                "orderId": order.order_id, "clientOrderId": order.client_id, "tradeId": trade.id,
                "side": order.side, "type": order.type, "price": _plain(price), "qty": _plain(qty),
                "quoteQty": _plain(quote_amt), "commission": _plain(fee), "commissionAsset": fee_asset,
                "isMaker": is_maker,
            })
        if self.account_observer is not None:
            self.account_observer.order_filled(order, trade)

    def _finish(self, order: Order, status: str, now_ms: int) -> None:
        acct = order.account
        if order.locked:
            acct.locked[order.locked_asset] -= order.locked
            acct.free[order.locked_asset] += order.locked
            order.locked = ZERO
        order.status = status
        order.update_time = now_ms
        acct.update_time = now_ms
        acct.open_orders.pop(order.order_id, None)
        self._resting[order.spec.id].pop(order.order_id, None)
        if self.account_observer is not None:
            self.account_observer.order_finished(order)

    def find(self, acct: Account, spec: SymbolSpec, order_id: int | None, client_id: str | None
             ) -> Order | None:
        order = acct.orders.get(order_id) if order_id is not None else acct.by_client_id.get(
            client_id or "")
        if order is None or order.spec.id != spec.id:
            return None
        if order_id is not None and client_id is not None and order.client_id != client_id:
            return None
        return order

    def cancel(self, order: Order, now_ms: int) -> None:
        with localcontext(_EXACT):
            self._finish(order, CANCELED, now_ms)

    # --- the books of the venue ----------------------------------------------------------------

    def ledger(self) -> dict[str, Any]:
        """Per asset: accounts, house, fees and initial totals; ``conserved`` if they balance."""
        with localcontext(_EXACT):
            assets = set(self.initial) | set(self.house) | set(self.fees)
            for acct in self.accounts.values():
                assets |= set(acct.free) | set(acct.locked)
            out: dict[str, Any] = {}
            all_ok = True
            for asset in sorted(assets):
                held = sum((a.free[asset] + a.locked[asset] for a in self.accounts.values()), ZERO)
                total = held + self.house[asset] + self.fees[asset]
                ok = total == self.initial[asset]
                all_ok &= ok
                out[asset] = {"initial": _plain(self.initial[asset]), "accounts": _plain(held),
                              "house": _plain(self.house[asset]), "fees": _plain(self.fees[asset]),
                              "total": _plain(total), "conserved": ok}
            locks_ok = all(
                acct.locked[asset] == sum((o.locked for o in acct.open_orders.values()
                                           if o.locked_asset == asset), ZERO)
                for acct in self.accounts.values() for asset in set(acct.locked))
            return {"conserved": all_ok, "locks_consistent": locks_ok, "fills": self.fills,
                    "assets": out,
                    "accounts": {a.label: {k: {"free": _plain(a.free[k]), "locked": _plain(a.locked[k])}
                                           for k in sorted(set(a.free) | set(a.locked))}
                                 for a in self.accounts.values()}}


def _plain(value: Decimal) -> str:
    """Exact and without exponent (``str(Decimal)`` gives ``1E-7``)."""
    return format(value, "f")
