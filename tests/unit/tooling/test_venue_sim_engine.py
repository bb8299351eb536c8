"""venue-sim's matching engine in process: order types, locks, fees and exact conservation."""

from __future__ import annotations

import random
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from tooling.venue_sim import errors
from tooling.venue_sim.book import BUY, SELL, book_from_levels
from tooling.venue_sim.engine import (
    CANCELED,
    EXPIRED,
    FILLED,
    LIMIT,
    LIMIT_MAKER,
    MARKET,
    NEW,
    PARTIALLY_FILLED,
    Account,
    Engine,
    Journal,
)
from tooling.venue_sim.market import EPOCH_MS, TrueModel, VenueEffects, VenueModel
from tooling.venue_sim.source import ModelSource
from tooling.venue_sim.symbols import SymbolSpec, make_spec

D = Decimal
NOW = EPOCH_MS + 500 * 86_400_000
BALANCES = {"USDT": D(200_000), "BTC": D(2), "ETH": D(30), "SOL": D(500)}
MAKER, TAKER = D("0.0008"), D("0.001")


class Sim:
    """An engine fed by the model, with a manual clock."""

    def __init__(self, tmp: Path | None = None, levels: int = 30, accounts: int = 1,
                 reject_rate: float = 0.0) -> None:
        self.specs = [make_spec("BTC", "USDT"), make_spec("ETH", "USDT"), make_spec("SOL", "USDT"),
                      make_spec("ETH", "BTC")]
        model = VenueModel(TrueModel(5), VenueEffects("unit", noise_bps=4), self.specs)
        self.source = ModelSource(model, self.specs, levels, np.random.default_rng(5))
        journal = Journal(tmp / "fills.jsonl") if tmp is not None else None
        self.engine = Engine(self.specs, venue="unit", journal=journal, reject_rate=reject_rate, seed=5)
        self.accounts = [self.engine.add_account(f"acct-{i}", f"k{i}", f"s{i}", BALANCES, MAKER, TAKER)
                         for i in range(accounts)]
        self.now = NOW
        self.tick()

    @property
    def acct(self) -> Account:
        return self.accounts[0]

    def spec(self, symbol: str) -> SymbolSpec:
        return next(s for s in self.specs if s.symbol == symbol)

    def tick(self, ms: int = 200) -> None:
        self.now += ms
        self.engine.advance(self.source, self.now)

    def place(self, symbol: str, side: str, otype: str, qty: str | None = None, price: str | None = None,
              tif: str | None = None, quote: str | None = None, client_id: str | None = None,
              acct: Account | None = None):  # type: ignore[no-untyped-def]
        return self.engine.place(acct or self.acct, self.spec(symbol), side, otype,
                                 tif if tif or otype != LIMIT else "GTC",
                                 D(qty) if qty else None, D(quote) if quote else None,
                                 D(price) if price else None, client_id, self.now)

    def best(self, symbol: str) -> tuple[Decimal, Decimal]:
        spec = self.spec(symbol)
        book = self.engine.books[spec.id]
        return D(int(book.best_bid)) * spec.tick, D(int(book.best_ask)) * spec.tick  # type: ignore[arg-type]

    def assert_ledger(self) -> None:
        ledger = self.engine.ledger()
        assert ledger["conserved"], ledger["assets"]
        assert ledger["locks_consistent"]
        for acct in self.accounts:
            assert all(v >= 0 for v in acct.free.values()), acct.free
            assert all(v >= 0 for v in acct.locked.values()), acct.locked


def test_a_thousand_random_orders_conserve_every_asset_exactly(tmp_path: Path) -> None:
    sim = Sim(tmp_path, accounts=3)
    rng = random.Random(1234)
    refused: defaultdict[int, int] = defaultdict(int)
    statuses: defaultdict[str, int] = defaultdict(int)
    for i in range(1000):
        acct = rng.choice(sim.accounts)
        spec = rng.choice(sim.specs)
        bid, ask = sim.best(spec.symbol)
        mid = (bid + ask) / 2
        side = rng.choice([BUY, SELL])
        usd = D(repr(10 ** rng.uniform(0.5, 5.2)))  # 3 USD (refused) .. 160k USD (some refused)
        usd_per_quote = D(1) if spec.quote == "USDT" else sim.best("BTC/USDT")[0]
        qty = (usd / usd_per_quote / mid).quantize(spec.step, rounding="ROUND_DOWN")
        price = (mid * D(repr(1 + rng.uniform(-0.003, 0.003)))).quantize(spec.tick)
        kind = rng.choice(["market", "market-quote", "gtc", "gtc", "ioc", "fok", "maker", "cancel",
                           "tick"])
        try:
            if kind == "market":
                order = sim.place(spec.symbol, side, MARKET, qty=str(qty), acct=acct)
            elif kind == "market-quote":
                order = sim.place(spec.symbol, side, MARKET, quote=str((usd / usd_per_quote).quantize(
                    D("0.00000001"))), acct=acct)
            elif kind in ("gtc", "ioc", "fok"):
                order = sim.place(spec.symbol, side, LIMIT, qty=str(qty), price=str(price),
                                  tif=kind.upper(), acct=acct, client_id=f"c-{i}")
            elif kind == "maker":
                order = sim.place(spec.symbol, side, LIMIT_MAKER, qty=str(qty), price=str(price), acct=acct)
            elif kind == "cancel":
                if acct.open_orders:
                    sim.engine.cancel(rng.choice(list(acct.open_orders.values())), sim.now)
                continue
            else:
                sim.tick(rng.choice([200, 400, 1000]))  # resting orders fill when crossed
                continue
            assert order is not None
            statuses[order.status] += 1
        except errors.ApiError as exc:
            refused[exc.code] += 1
        if i % 50 == 0:
            sim.assert_ledger()
    sim.assert_ledger()
    # every kind of outcome happened, including refusals
    assert {FILLED, EXPIRED} <= set(statuses) and (statuses[NEW] + statuses[PARTIALLY_FILLED]) > 0
    assert refused[-2010] > 0 and refused[-1013] > 0, refused
    assert sim.engine.fills > 300
    # an account's balance is its start plus what its own trades moved, exactly
    for acct in sim.accounts:
        for order in list(acct.open_orders.values()):
            sim.engine.cancel(order, sim.now)
        expected = defaultdict(Decimal, BALANCES)
        for trade in acct.trades:
            spec = next(s for s in sim.specs if s.id == trade.symbol)
            sign = 1 if trade.is_buyer else -1
            expected[spec.base] += sign * trade.qty
            expected[spec.quote] -= sign * trade.quote_qty
            expected[trade.commission_asset] -= trade.commission
            assert trade.quote_qty == trade.price * trade.qty
            assert trade.commission == (trade.qty if trade.is_buyer else trade.quote_qty) * (
                MAKER if trade.is_maker else TAKER)
        assert {a: acct.free[a] + acct.locked[a] for a in expected} == dict(expected)
        assert all(v == 0 for v in acct.locked.values())
    fees = sim.engine.ledger()["assets"]
    assert D(fees["BTC"]["fees"]) > 0 and D(fees["USDT"]["fees"]) > 0
    assert sim.engine.journal is not None
    sim.engine.journal.close()
    lines = (tmp_path / "fills.jsonl").read_text().splitlines()
    assert len(lines) == sim.engine.fills


def test_market_orders_walk_the_book_and_expire_what_it_cannot_fill() -> None:
    sim = Sim(levels=20)
    spec = sim.spec("ETH/USDT")
    book = sim.engine.books[spec.id]
    depth = D(int(book.ask_qty.sum())) * spec.step
    sim.acct.free["USDT"] = D(10_000_000)
    sim.engine.initial["USDT"] += D(10_000_000) - BALANCES["USDT"]
    order = sim.place("ETH/USDT", BUY, MARKET, qty=str(depth + 5))
    assert order.status == EXPIRED and order.executed == depth and order.remaining == 5
    assert len(order.fills) == 20 and [f.price for f in order.fills] == sorted(f.price for f in order.fills)
    assert order.cum_quote == sum(f.price * f.qty for f in order.fills)
    assert len(sim.engine.books[spec.id].ask_px) == 0, "taken liquidity is gone until the next tick"
    sim.tick()
    assert len(sim.engine.books[spec.id].ask_px) == 20
    sim.assert_ledger()


def test_market_by_quote_amount_spends_at_most_that_amount() -> None:
    sim = Sim()
    order = sim.place("BTC/USDT", BUY, MARKET, quote="1234.5")
    assert order.status == FILLED and D("1234.5") - order.cum_quote >= 0
    assert D("1234.5") - order.cum_quote < max(f.price for f in order.fills) * sim.spec("BTC/USDT").step
    assert order.orig_qty == order.executed and order.orig_quote_qty == D("1234.5")
    sell = sim.place("ETH/USDT", SELL, MARKET, quote="500")
    assert sell.status == FILLED and sell.cum_quote <= 500
    assert sell.fills[0].commission_asset == "USDT"
    sim.assert_ledger()


def test_limit_time_in_force_and_limit_maker() -> None:
    sim = Sim()
    bid, ask = sim.best("SOL/USDT")
    spec = sim.spec("SOL/USDT")
    top = D(int(sim.engine.books[spec.id].ask_qty[0])) * spec.step
    ioc = sim.place("SOL/USDT", BUY, LIMIT, qty=str(top * 3), price=str(ask), tif="IOC")
    assert ioc.status == EXPIRED and ioc.executed == top and sim.acct.locked["USDT"] == 0
    sim.tick()
    bid, ask = sim.best("SOL/USDT")
    top = D(int(sim.engine.books[spec.id].ask_qty[0])) * spec.step
    fok = sim.place("SOL/USDT", BUY, LIMIT, qty=str(top * 3), price=str(ask), tif="FOK")
    assert fok.status == EXPIRED and fok.executed == 0 and fok.fills == []
    fok = sim.place("SOL/USDT", BUY, LIMIT, qty=str(top), price=str(ask), tif="FOK")
    assert fok.status == FILLED
    with pytest.raises(errors.ApiError) as exc:
        sim.place("SOL/USDT", SELL, LIMIT_MAKER, qty="1", price=str(bid))
    assert (exc.value.code, exc.value.msg) == (-2010, errors.WOULD_TAKE)
    maker = sim.place("SOL/USDT", SELL, LIMIT_MAKER, qty="1", price=str(ask + spec.tick * 50))
    assert maker.status == NEW and maker.time_in_force == "GTC" and sim.acct.locked["SOL"] == 1
    sim.engine.cancel(maker, sim.now)
    assert maker.status == CANCELED and sim.acct.locked["SOL"] == 0
    sim.assert_ledger()


def test_a_limit_through_the_book_takes_then_rests_and_refunds_price_improvement() -> None:
    sim = Sim()
    spec = sim.spec("ETH/USDT")
    _bid, ask = sim.best("ETH/USDT")
    top = D(int(sim.engine.books[spec.id].ask_qty[0])) * spec.step
    second = D(int(sim.engine.books[spec.id].ask_px[1])) * spec.tick
    limit = second - spec.tick  # crosses the best ask only
    free_before = sim.acct.free["USDT"]
    order = sim.place("ETH/USDT", BUY, LIMIT, qty=str(top + 1), price=str(limit))
    assert order.status == PARTIALLY_FILLED and order.executed == top
    assert order.fills[0].price == ask and not order.fills[0].is_maker
    assert sim.acct.locked["USDT"] == limit * 1 == order.locked
    assert free_before - sim.acct.free["USDT"] == ask * top + limit * 1
    sim.assert_ledger()


def test_resting_orders_fill_as_makers_when_a_later_book_crosses_them() -> None:
    sim = Sim()
    spec = sim.spec("BTC/USDT")
    bid, ask = sim.best("BTC/USDT")
    buy = sim.place("BTC/USDT", BUY, LIMIT, qty="0.5", price=str(bid))
    sell = sim.place("BTC/USDT", SELL, LIMIT, qty="0.2", price=str(ask + 100))
    assert buy.status == sell.status == NEW
    # a book whose asks came down through the buy: 0.3 BTC at or below its price
    p = float(bid)
    crossed = book_from_levels(spec, [(p - 10, 1.0)], [(p - 1, 0.1), (p, 0.2), (p + 1, 5.0)], 99, sim.now)
    sim.engine.set_book(crossed, sim.now)
    assert buy.status == PARTIALLY_FILLED and buy.executed == D("0.3")
    assert all(f.is_maker and f.price == bid for f in buy.fills), "makers fill at their own price"
    assert buy.fills[0].commission == buy.fills[0].qty * MAKER
    assert sim.acct.locked["USDT"] == bid * D("0.2")
    assert sell.status == NEW
    up = book_from_levels(spec, [(float(ask) + 200, 1.0)], [(float(ask) + 300, 1.0)], 100, sim.now)
    sim.engine.set_book(up, sim.now)
    assert sell.status == FILLED and sell.fills[0].price == ask + 100
    sim.assert_ledger()


def test_refusals_leave_no_trace() -> None:
    sim = Sim()
    bid, _ask = sim.best("BTC/USDT")
    before = dict(sim.acct.free)
    cases = [
        (dict(qty="100", price=str(bid)), -2010, errors.INSUFFICIENT_BALANCE),  # 6M USDT
        (dict(qty="0.000001", price=str(bid)), -1013, "Filter failure: LOT_SIZE"),
        (dict(qty="20000", price=str(bid)), -1013, "Filter failure: LOT_SIZE"),
        (dict(qty="0.001", price=str(bid + D("0.001"))), -1013, "Filter failure: PRICE_FILTER"),
        (dict(qty="0.00001", price=str(bid)), -1013, "Filter failure: NOTIONAL"),
    ]
    for kwargs, code, msg in cases:
        with pytest.raises(errors.ApiError) as exc:
            sim.place("BTC/USDT", BUY, LIMIT, client_id="same-id", **kwargs)
        assert (exc.value.code, exc.value.msg) == (code, msg)
    assert dict(sim.acct.free) == before and not sim.acct.orders
    first = sim.place("BTC/USDT", BUY, MARKET, qty="0.01", client_id="same-id")
    assert first.status == FILLED
    with pytest.raises(errors.ApiError) as exc:
        sim.place("BTC/USDT", SELL, MARKET, qty="0.01", client_id="same-id")
    assert (exc.value.code, exc.value.msg) == (-2010, errors.DUPLICATE_ORDER)
    assert len(sim.acct.trades) == len(first.fills)


def test_reject_rate_refuses_orders_with_minus_1000() -> None:
    sim = Sim(reject_rate=0.5)
    codes = []
    for _ in range(40):
        try:
            sim.place("BTC/USDT", BUY, MARKET, qty="0.001")
            codes.append(0)
        except errors.ApiError as exc:
            codes.append(exc.code)
    assert set(codes) == {0, -1000}
    sim.assert_ledger()
