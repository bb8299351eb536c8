"""Execution of arbitrage opportunities, at most once, on liquidity and balances not yet used.

For an opportunity from ``arb.opportunities`` (see :mod:`workers.arbitrage.ledger` for
``new``/``recover``/``busy``/``done``):

1. the trading halt (:mod:`shared.halt`) stops any *new* execution at once (recovery of
   started ones goes on; detection goes on);
2. the (venue, symbol) pairs it trades are locked, so executions on the same market take
   turns (another one's orders would change the books under it);
3. **re-validation**: if a book it was detected on is older than ``refresh_ms``, or was
   received before orders were last answered on that pair, both (all three) books are
   fetched again and the trade re-sized on them with the detector's own walk — or dropped
   (``superseded``) when it no longer pays; sizes are capped by the balance view minus
   every live reservation;
4. what the orders will spend is reserved in the shared balance view
   (:mod:`workers.arbitrage.balances`), which can grant less (the trade shrinks) or nothing
   (``no_balance``); amounts are whole lots, limit prices are on the tick on the safe side
   (:mod:`shared.precision`);
5. **cross-venue**: both legs go out concurrently as IOC limit orders at the worst walked
   price widened by the slippage buffer, or by up to half the expected edge after fees
   when that is more (see :meth:`Executor._cross_plan`); what they filled decides ``both_legs``,
   ``one_leg`` or ``none``; a residual is hedged on the venue that holds it, no worse than
   ``hedge_max_loss_bps`` from the leg's price, in whole lots — what the hedge cannot close
   and the sub-lot dust are recorded as drift for the rebalancer, each with its reason.
   **Triangular**: three IOC legs on one venue in sequence, each sized on what the previous
   one actually delivered (net of its fee, in whole lots); when a leg falls short, what
   the cycle holds of the intermediate currencies is sold back to the start currency
   within the same loss limit (``all_legs``, ``one_leg``, ``none``);
6. every order's fill is applied to the balance view the moment the venue answers, then
   reported to ``orders.executions``; realised PnL goes to metrics and the store; the
   reservation is released only after the fills are in the view; the opportunity is
   marked done.

A takeover (``recover``) never sends a leg the first owner did not send: it looks every
order up by its deterministic client id, applies and settles what they did, and hedges or
unwinds the rest.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from aiokafka import ConsumerRecord

from shared import names
from shared.audit import audit
from shared.bus import Bus
from shared.errors import CseError, ExchangeRejected, ExchangeUnavailable, TransientError
from shared.gateway import Gateway
from shared.halt import Halt
from shared.logs import get_logger
from shared.messages import ORDERS_EXECUTIONS, Opportunity, OpportunityLeg, now_ms, split_symbol
from shared.orders import Source, execution_report, planned_report, quote_fee
from shared.precision import amount_floor, limit_price, min_amount
from shared.timeseries import TimeSeriesWriter
from workers.arbitrage.balances import OWN_ORDER_PREFIX, BalanceBook, order_deltas
from workers.arbitrage.detect import DetectorConfig, walk
from workers.arbitrage.ledger import ExecutionLedger
from workers.arbitrage.metrics import DRIFT, EXECUTIONS, HEDGES, LEG_LATENCY, REALISED_PNL, REVALIDATIONS
from workers.arbitrage.triangular import Leg, walk_cycle

log = get_logger("arbitrage.execute")

EPS = 1e-12
FILLED = ("both_legs", "all_legs", "one_leg")  # outcomes where something was traded


@dataclass(frozen=True)
class ExecutionPolicy:
    """How the executor trades; ``detector`` is the detector's own configuration (fees,
    slippage buffer, caps, thresholds), used again when an opportunity is re-sized."""

    detector: DetectorConfig = field(default_factory=DetectorConfig)
    dry_run: bool = False
    hedge_max_loss_bps: float = 50.0
    refresh_ms: int = 100
    depth: int = 20
    hold_s: float = 30.0  # reservations and in-flight marks lapse after this


@dataclass
class LegResult:
    venue: str
    symbol: str
    side: str
    client_order_id: str
    amount: float
    price: float | None = None
    order: dict[str, Any] | None = None
    error: str | None = None
    refused: bool = False  # the venue said no (reported "rejected"; other errors are "failed")
    deltas: dict[str, float] = field(default_factory=dict)

    @property
    def filled(self) -> float:
        return float((self.order or {}).get("filled") or 0.0)

    @property
    def average(self) -> float | None:
        value = (self.order or {}).get("average")
        return float(value) if value else None


@dataclass
class Settlement:
    outcome: str
    legs: list[LegResult] = field(default_factory=list)
    pnl: float = 0.0
    residual: float = 0.0


def leg_ids(opportunity_id: str) -> tuple[str, str, str]:
    """Client order ids of the buy leg, the sell leg and the hedge (Binance allows 36 chars)."""
    stem = f"{OWN_ORDER_PREFIX}{opportunity_id[:24]}"
    return f"{stem}b", f"{stem}s", f"{stem}h"


def cycle_ids(opportunity_id: str) -> tuple[list[str], dict[int, str]]:
    """Client order ids of a triangle's three legs, and of the unwinds through legs 1 and 3."""
    stem = f"{OWN_ORDER_PREFIX}{opportunity_id[:24]}"
    return [f"{stem}t1", f"{stem}t2", f"{stem}t3"], {0: f"{stem}u1", 2: f"{stem}u3"}


def _legs_in(symbol: str, side: str) -> tuple[str, str]:
    """(asset spent, asset received) by an order."""
    base, quote = split_symbol(symbol)
    return (quote, base) if side == "buy" else (base, quote)


class Executor:
    """Handler of ``arb.opportunities``: executes each opportunity at most once."""

    def __init__(self, gateway: Gateway, bus: Bus, ledger: ExecutionLedger, balances: BalanceBook,
                 halt: Halt, tsdb: TimeSeriesWriter | None, policy: ExecutionPolicy):
        self.gateway = gateway
        self.bus = bus
        self.ledger = ledger
        self.balances = balances
        self.halt = halt
        self.tsdb = tsdb
        self.policy = policy
        self.slip = policy.detector.slippage_bps / 1e4
        self.loss = policy.hedge_max_loss_bps / 1e4

    # --- the handler ------------------------------------------------------------------------------

    async def handle(self, opp: Opportunity, _record: ConsumerRecord | None = None) -> None:
        if opp.buy_venue not in self.gateway.specs or opp.sell_venue not in self.gateway.specs:
            EXECUTIONS.labels("unknown_venue").inc()
            return
        if opp.kind == "triangular" and len(opp.legs) != 3:
            EXECUTIONS.labels("unknown_shape").inc()  # an older detector's message: no legs
            return
        state = await self.ledger.begin(opp.id)
        if state == "done":
            EXECUTIONS.labels("duplicate").inc()
            return
        if state == "busy":
            raise TransientError(f"opportunity {opp.id} is being executed by another replica")
        for venue in {opp.buy_venue, opp.sell_venue}:  # amounts and prices need the markets
            await self.gateway.markets(venue)
        if state == "recover":
            settlement = await (self._recover_cycle(opp) if opp.kind == "triangular"
                                else self._recover_cross(opp))
        elif (await self.halt.state())["halted"]:
            settlement = Settlement("halted")
        elif self.policy.dry_run:
            await self._publish_plan(opp)
            settlement = Settlement("dry_run")
        else:
            settlement = await (self._cycle(opp) if opp.kind == "triangular" else self._cross(opp))
        await self.ledger.finish(opp.id, settlement.outcome)
        EXECUTIONS.labels(settlement.outcome).inc()
        if settlement.outcome in FILLED:
            self._record_pnl(opp, settlement.pnl)
        log.info("arbitrage_settled", opportunity=opp.id, kind=opp.kind, symbol=opp.symbol,
                 outcome=settlement.outcome, pnl=round(settlement.pnl, 6), residual=settlement.residual)

    # --- cross-venue ------------------------------------------------------------------------------

    async def _cross(self, opp: Opportunity) -> Settlement:
        base, quote = split_symbol(opp.symbol)
        pairs = [(opp.buy_venue, opp.symbol), (opp.sell_venue, opp.symbol)]
        touched = await self.ledger.lock_pairs(opp.id, pairs)
        if touched is None:
            raise TransientError(f"opportunity {opp.id}: another execution trades {opp.symbol} there")
        answered: int | None = None
        try:
            plan = await self._cross_plan(opp, touched)
            if isinstance(plan, str):
                return Settlement(plan)
            quantity, buy_px, sell_px = plan
            fee_buy = self.policy.detector.fee(opp.buy_venue)
            granted = await self.balances.reserve(
                opp.id, [(opp.buy_venue, quote, buy_px * (1.0 + fee_buy)), (opp.sell_venue, base, 1.0)],
                quantity, self.policy.hold_s)
            quantity = self._lots(opp.symbol, (opp.buy_venue, opp.sell_venue), min(quantity, granted))
            if quantity <= 0.0 or quantity < self._least(opp.symbol, (opp.buy_venue, buy_px),
                                                         (opp.sell_venue, sell_px)):
                return Settlement("no_balance" if granted < plan[0] * (1 - 1e-9) else "too_small")
            buy_id, sell_id, _ = leg_ids(opp.id)
            await self.ledger.record(opp.id, state="legs_sent", quantity=repr(quantity),
                                     buy_price=repr(buy_px), sell_price=repr(sell_px))
            buy, sell = await asyncio.gather(
                self._place(opp.id, opp.buy_venue, opp.symbol, "buy", quantity, buy_px, buy_id),
                self._place(opp.id, opp.sell_venue, opp.symbol, "sell", quantity, sell_px, sell_id))
            answered = now_ms()
            return await self._settle_cross(opp, buy, sell)
        finally:
            await self.balances.release(opp.id, (opp.buy_venue, opp.sell_venue))
            await self.ledger.unlock_pairs(opp.id, pairs, answered)

    async def _cross_plan(self, opp: Opportunity, touched: list[int]) -> tuple[float, float, float] | str:
        """(quantity, buy limit, sell limit) to send, or why not: the opportunity as detected
        if its books are fresh, else re-sized on books fetched now."""
        now = now_ms()
        books_ms = [opp.buy_book_ms or opp.ts_book_ms, opp.sell_book_ms or opp.ts_book_ms]
        if all(now - t <= self.policy.refresh_ms and t > touch for t, touch in zip(books_ms, touched,
                                                                                  strict=True)):
            REVALIDATIONS.labels("kept").inc()
            quantity, buy_worst, sell_worst = opp.quantity, opp.buy_worst, opp.sell_worst
            buy_vwap, sell_vwap = opp.buy_vwap, opp.sell_vwap
        else:
            cfg = self.policy.detector
            base, quote = split_symbol(opp.symbol)
            buy_book, sell_book = await asyncio.gather(
                self.gateway.call(opp.buy_venue, "fetch_order_book", opp.symbol, self.policy.depth),
                self.gateway.call(opp.sell_venue, "fetch_order_book", opp.symbol, self.policy.depth))
            res = walk([lv[:2] for lv in buy_book["asks"]], [lv[:2] for lv in sell_book["bids"]],
                       cfg.fee(opp.buy_venue), cfg.fee(opp.sell_venue), cfg.slippage_bps,
                       max_base=await self._room(opp.sell_venue, base),
                       max_quote=await self._room(opp.buy_venue, quote), max_notional=cfg.max_notional)
            if res is None or res.net_profit < cfg.min_profit or res.edge_bps < cfg.min_edge_bps:
                REVALIDATIONS.labels("dropped").inc()
                return "superseded"
            REVALIDATIONS.labels("refetched").inc()
            quantity, buy_worst, sell_worst = res.quantity, res.buy_worst, res.sell_worst
            buy_vwap, sell_vwap = res.buy_vwap, res.sell_vwap
        # Each leg may meet a book that moved while it travelled. Its limit is the worst level
        # walked widened by the slippage buffer, or further: by up to half the expected edge
        # after fees, so that even if both legs fill at their limits the trade breaks even.
        # An IOC order fills at the book's prices, so a wider limit costs only when the book
        # did move — and then it buys a fill instead of a one-leg hedge.
        kb = 1.0 + self.policy.detector.fee(opp.buy_venue)
        ks = 1.0 - self.policy.detector.fee(opp.sell_venue)
        cushion = max(0.0, sell_vwap * ks - buy_vwap * kb) / 2.0
        buy_px = limit_price(self.gateway.client(opp.buy_venue), opp.symbol, "buy",
                             max(buy_worst * (1.0 + self.slip), buy_vwap + cushion / kb))
        sell_px = limit_price(self.gateway.client(opp.sell_venue), opp.symbol, "sell",
                              min(sell_worst * (1.0 - self.slip), sell_vwap - cushion / ks))
        return quantity, buy_px, sell_px

    async def _recover_cross(self, opp: Opportunity) -> Settlement:
        state = await self.ledger.state(opp.id)
        quantity = float(state.get("quantity") or opp.quantity)
        legs = []
        for venue, side, cid in ((opp.buy_venue, "buy", leg_ids(opp.id)[0]),
                                 (opp.sell_venue, "sell", leg_ids(opp.id)[1])):
            legs.append(await self._look_up(venue, opp.symbol, side, cid, quantity))
        log.warning("arbitrage_recovered", opportunity=opp.id, filled=[leg.filled for leg in legs])
        try:
            return await self._settle_cross(opp, legs[0], legs[1])
        finally:
            await self.balances.release(opp.id, (opp.buy_venue, opp.sell_venue))
            pairs = [(opp.buy_venue, opp.symbol), (opp.sell_venue, opp.symbol)]
            await self.ledger.unlock_pairs(opp.id, pairs, now_ms())

    async def _settle_cross(self, opp: Opportunity, buy: LegResult, sell: LegResult) -> Settlement:
        for leg in (buy, sell):
            await self._publish(opp.id, leg, "arbitrage")
        residual = buy.filled - sell.filled  # > 0: extra base bought; < 0: base sold short
        if buy.filled <= EPS and sell.filled <= EPS:
            outcome = "none"
        elif abs(residual) <= EPS * max(1.0, buy.amount):
            outcome = "both_legs"
        else:
            outcome = "one_leg"
        settlement = Settlement(outcome, [buy, sell], residual=residual)
        if outcome == "one_leg":
            base = split_symbol(opp.symbol)[0]
            if residual > 0:  # sell the extra base where it was bought, no lower than the limit
                ref = buy.average or opp.buy_vwap
                venue, side, price = buy.venue, "sell", ref * (1 - self.loss)
                # what the buy delivered net of a fee taken in base is what there is to sell
                amount = buy.deltas.get(base, buy.filled) - sell.filled
            else:  # buy back the base sold, no higher than the limit
                ref = sell.average or opp.sell_vwap
                venue, side, price = sell.venue, "buy", ref * (1 + self.loss)
                amount = -residual
            # what is left is base held (a sell) or base owed (a buy back)
            drift = (base, 1.0 if side == "sell" else -1.0)
            hedge = await self._close(opp, venue, opp.symbol, side, amount, price, leg_ids(opp.id)[2], drift)
            if hedge is not None:
                settlement.legs.append(hedge)
                settlement.residual = residual - hedge.filled if residual > 0 else residual + hedge.filled
        settlement.pnl = self._cross_pnl(opp, settlement.legs)
        return settlement

    def _cross_pnl(self, opp: Opportunity, legs: list[LegResult]) -> float:
        """Quote-currency PnL of the fills (base still held is valued at the buy price)."""
        pnl = 0.0
        base_left = 0.0
        for leg in legs:
            if not leg.order or leg.filled <= 0:
                continue
            value = leg.filled * (leg.average or 0.0)
            pnl += value if leg.side == "sell" else -value
            base_left += leg.filled if leg.side == "buy" else -leg.filled
            pnl -= quote_fee(leg.order, opp.symbol)
        return pnl + base_left * opp.buy_vwap

    # --- triangular -------------------------------------------------------------------------------

    async def _cycle(self, opp: Opportunity) -> Settlement:
        venue = opp.buy_venue
        pairs = [(venue, leg.symbol) for leg in opp.legs]
        touched = await self.ledger.lock_pairs(opp.id, pairs)
        if touched is None:
            raise TransientError(f"opportunity {opp.id}: another execution trades one of {opp.path}")
        answered: int | None = None
        try:
            planned = await self._cycle_plan(opp, touched)
            if isinstance(planned, str):
                return Settlement(planned)
            client = self.gateway.client(venue)
            first = planned[0]
            price = self._cycle_limit(client, first)
            start, _ = _legs_in(first.symbol, first.side)
            per = price * (1.0 + self.policy.detector.fee(venue)) if first.side == "buy" else 1.0
            granted = await self.balances.reserve(opp.id, [(venue, start, per)], first.amount,
                                                  self.policy.hold_s)
            amount = amount_floor(client, first.symbol, min(first.amount, granted))
            if amount <= 0.0 or amount < min_amount(client, first.symbol, price):
                return Settlement("no_balance" if granted < first.amount * (1 - 1e-9) else "too_small")
            await self.ledger.record(opp.id, state="legs_sent", quantity=repr(amount),
                                     legs=json.dumps([[leg.symbol, leg.side, leg.vwap, leg.worst]
                                                      for leg in planned]))
            ids, _unwind = cycle_ids(opp.id)
            holdings: dict[str, float] = defaultdict(float)
            legs: list[LegResult] = []
            for k, leg in enumerate(planned):
                price = self._cycle_limit(client, leg)
                if k:  # sized on what the previous leg actually delivered
                    spend, _ = _legs_in(leg.symbol, leg.side)
                    have = holdings[spend]
                    amount = amount_floor(client, leg.symbol, have / price if leg.side == "buy" else have)
                    if amount <= 0.0 or amount < min_amount(client, leg.symbol, price):
                        break
                result = await self._place(opp.id, venue, leg.symbol, leg.side, amount, price, ids[k])
                legs.append(result)
                for asset, delta in result.deltas.items():
                    holdings[asset] += delta
                _, got = _legs_in(leg.symbol, leg.side)
                if k < 2 and holdings[got] > 0:  # what the next leg spends stays ours meanwhile
                    await self.balances.reserve(opp.id, [(venue, got, 1.0)], holdings[got],
                                                self.policy.hold_s)
                if result.filled < amount * (1 - 1e-9):
                    break  # short: the rest of the cycle is not sent; what it holds is unwound
            answered = now_ms()
            return await self._settle_cycle(opp, planned, legs)
        finally:
            await self.balances.release(opp.id, (venue,))
            await self.ledger.unlock_pairs(opp.id, pairs, answered)

    def _cycle_limit(self, client: Any, leg: OpportunityLeg) -> float:
        widen = 1.0 + self.slip if leg.side == "buy" else 1.0 - self.slip
        return limit_price(client, leg.symbol, leg.side, leg.worst * widen)

    async def _cycle_plan(self, opp: Opportunity, touched: list[int]) -> list[OpportunityLeg] | str:
        """The three legs to send: as detected when their books are fresh, else re-sized on
        books fetched now (or ``superseded`` if the cycle no longer pays)."""
        now = now_ms()
        if all(now - leg.book_ms <= self.policy.refresh_ms and leg.book_ms > touch
               for leg, touch in zip(opp.legs, touched, strict=True)):
            REVALIDATIONS.labels("kept").inc()
            return list(opp.legs)
        venue = opp.buy_venue
        cfg = self.policy.detector
        books = await asyncio.gather(*(self.gateway.call(venue, "fetch_order_book", leg.symbol,
                                                         self.policy.depth) for leg in opp.legs))
        received = now_ms()
        start, _ = _legs_in(opp.legs[0].symbol, opp.legs[0].side)
        fee = cfg.fee(venue)
        cycle = [Leg([lv[:2] for lv in (book["asks"] if leg.side == "buy" else book["bids"])],
                     leg.side == "buy", fee) for leg, book in zip(opp.legs, books, strict=True)]
        res = walk_cycle(cycle, cfg.slippage_bps, min(cfg.max_notional, await self._room(venue, start)))
        if res is None or res.net_profit < cfg.min_profit or res.edge_bps < cfg.min_edge_bps:
            REVALIDATIONS.labels("dropped").inc()
            return "superseded"
        REVALIDATIONS.labels("refetched").inc()
        return [OpportunityLeg(symbol=leg.symbol, side=leg.side, amount=fill.base, vwap=fill.vwap,
                               worst=fill.worst, book_ms=received)
                for leg, fill in zip(opp.legs, res.legs, strict=True)]

    async def _recover_cycle(self, opp: Opportunity) -> Settlement:
        ids, _unwind = cycle_ids(opp.id)
        legs = []
        for leg, cid in zip(opp.legs, ids, strict=True):
            found = await self._look_up(opp.buy_venue, leg.symbol, leg.side, cid, leg.amount)
            if found.order is not None:
                legs.append(found)
        log.warning("arbitrage_recovered", opportunity=opp.id, filled=[leg.filled for leg in legs])
        try:
            return await self._settle_cycle(opp, list(opp.legs), legs)
        finally:
            await self.balances.release(opp.id, (opp.buy_venue,))
            await self.ledger.unlock_pairs(opp.id, [(opp.buy_venue, leg.symbol) for leg in opp.legs],
                                           now_ms())

    async def _settle_cycle(self, opp: Opportunity, planned: list[OpportunityLeg], legs: list[LegResult]
                            ) -> Settlement:
        """Report the legs, unwind what the cycle still holds of its intermediate currencies
        through the first and last markets, and value the result in the start currency."""
        for leg in legs:
            await self._publish(opp.id, leg, "arbitrage")
        holdings: dict[str, float] = defaultdict(float)
        for leg in legs:
            for asset, delta in leg.deltas.items():
                holdings[asset] += delta
        start, _ = _legs_in(planned[0].symbol, planned[0].side)
        # what one unit of each intermediate currency is worth in the start currency, and the
        # market (leg 1 or leg 3) that converts it back
        values: dict[str, tuple[float, int]] = {}
        for k in (0, 2):
            leg = planned[k]
            base, quote = split_symbol(leg.symbol)
            other = base if quote == start else quote
            values[other] = (leg.vwap if quote == start else 1.0 / leg.vwap, k)
        complete = len(legs) == 3 and all(leg.filled >= leg.amount * (1 - 1e-9) for leg in legs)
        traded = any(leg.filled > EPS for leg in legs)
        settlement = Settlement("all_legs" if complete else "one_leg" if traded else "none", list(legs))
        _, unwind_ids = cycle_ids(opp.id)
        for asset, (_value, k) in values.items():
            if holdings[asset] <= EPS:
                continue
            market = planned[k]
            base, _quote = split_symbol(market.symbol)
            if base == asset:  # sell the intermediate for the start currency
                side, amount, ref = "sell", holdings[asset], market.vwap
                price = ref * (1 - self.loss)
            else:  # the intermediate is the quote: buy the start currency with it
                ref = market.vwap
                price = ref * (1 + self.loss)
                side, amount = "buy", holdings[asset] / price
            # what is left is the intermediate currency itself (sold, or spent at the limit)
            unwind = await self._close(opp, opp.buy_venue, market.symbol, side, amount, price,
                                       unwind_ids[k], (asset, 1.0 if side == "sell" else price))
            if unwind is not None:  # more than dust: the cycle did not go round as planned
                settlement.outcome = "one_leg"
                settlement.legs.append(unwind)
                for a, delta in unwind.deltas.items():
                    holdings[a] += delta
        settlement.pnl = holdings[start] + sum(holdings[a] * v for a, (v, _k) in values.items())
        settlement.residual = sum(abs(holdings[a]) for a in values)
        return settlement

    # --- orders -----------------------------------------------------------------------------------

    async def _place(self, opp_id: str, venue: str, symbol: str, side: str, amount: float, price: float,
                     client_order_id: str) -> LegResult:
        """Send one IOC limit order (marked in flight first), apply its fill to the balance
        view as soon as the venue answers, and audit it."""
        leg = LegResult(venue, symbol, side, client_order_id, amount, price)
        await self.balances.begin_orders(venue, [client_order_id], self.policy.hold_s)
        started = time.perf_counter()
        settled = True
        try:
            leg.order = await self.gateway.create_order(
                venue, symbol, "limit", side, amount, price, client_order_id=client_order_id,
                params={"timeInForce": "IOC"})
        except ExchangeRejected as exc:
            leg.error, leg.refused = str(exc)[:300], True
        except ExchangeUnavailable as exc:
            # outcome unknown: one last look; if the venue cannot tell, the in-flight mark stays
            # until it lapses (the view is then re-read) and a redelivery settles by lookup
            leg.error = str(exc)[:300]
            try:
                leg.order = await self.gateway.find_order(venue, symbol, client_order_id)
            except CseError:
                settled = False
        finally:
            LEG_LATENCY.labels(venue).observe(time.perf_counter() - started)
        if settled:
            await self._apply(leg)
        order = leg.order or {}
        audit("order", actor=names.ARBITRAGE, outcome=str(order.get("status") or "failed"), venue=venue,
              symbol=symbol, side=side, amount=amount, price=price, filled=order.get("filled"),
              client_order_id=client_order_id, error=leg.error, opportunity=opp_id)
        return leg

    async def _look_up(self, venue: str, symbol: str, side: str, cid: str, amount: float) -> LegResult:
        leg = LegResult(venue, symbol, side, cid, amount)
        leg.order = await self.gateway.find_order(venue, symbol, cid)
        if leg.order is None:
            leg.error = "never placed (recovered after the first owner stopped)"
        await self._apply(leg)
        return leg

    async def _apply(self, leg: LegResult) -> None:
        """Complete the order's fees if the venue's answer lacked them (an order looked up
        rather than placed), then apply it to the balance view (once per client id)."""
        order = leg.order
        if order and float(order.get("filled") or 0.0) > 0 and not (order.get("fees") or order.get("fee")):
            trades = await self.gateway.call(leg.venue, "fetch_order_trades", order["id"], leg.symbol)
            order["fees"] = [t["fee"] for t in trades if t.get("fee")]
        await self.balances.apply(leg.venue, leg.client_order_id, order, leg.symbol)
        leg.deltas = order_deltas(order, leg.symbol) if order else {}

    async def _close(self, opp: Opportunity, venue: str, symbol: str, side: str, amount: float,
                     price: float, client_order_id: str, drift: tuple[str, float]) -> LegResult | None:
        """Close a residual with one IOC order of ``amount`` (base) in whole lots within the
        loss limit; record as drift for the rebalancer what it leaves and the sub-lot dust,
        each with its reason, as ``drift = (asset, quantity of it per unit of amount left)``.
        Returns the order, or None when the residual is below one lot (all dust)."""
        client = self.gateway.client(venue)
        price = limit_price(client, symbol, side, price)
        lots = amount_floor(client, symbol, amount)
        if lots > 0.0 and lots < min_amount(client, symbol, price):
            lots = 0.0
        dust = amount - lots
        leg = None
        short = 0.0
        if lots > 0.0:
            leg = await self._place(opp.id, venue, symbol, side, lots, price, client_order_id)
            await self._publish(opp.id, leg, "hedge")
            short = lots - leg.filled
        HEDGES.labels("closed" if short <= EPS * max(1.0, lots) else "drift").inc()
        asset, per = drift
        for reason, left in (("hedge_short", short), ("dust", dust)):
            if left > EPS * max(1.0, amount):
                DRIFT.labels(reason).inc()
                await self.ledger.add_drift(json.dumps({
                    "opportunity": opp.id, "venue": venue, "asset": asset, "quantity": left * per,
                    "reason": reason, "ts_ms": now_ms()}))
                log.warning("residual_left", opportunity=opp.id, venue=venue, symbol=symbol, side=side,
                            quantity=left, reason=reason)
        return leg

    # --- sizes ------------------------------------------------------------------------------------

    def _lots(self, symbol: str, venues: tuple[str, ...], amount: float) -> float:
        """``amount`` in whole lots of every venue."""
        return min(amount_floor(self.gateway.client(v), symbol, amount) for v in venues)

    def _least(self, symbol: str, *venue_prices: tuple[str, float]) -> float:
        return max(min_amount(self.gateway.client(v), symbol, p) for v, p in venue_prices)

    async def _room(self, venue: str, asset: str) -> float:
        """Free minus what live reservations hold, from the shared view."""
        return max(0.0, await self.balances.free(venue, asset) - await self.balances.reserved(venue, asset))

    # --- reports ----------------------------------------------------------------------------------

    def _record_pnl(self, opp: Opportunity, pnl: float) -> None:
        REALISED_PNL.labels(opp.symbol, opp.buy_venue, opp.sell_venue).inc(pnl)
        if self.tsdb is not None and math.isfinite(pnl):
            self.tsdb.write("arb_realised_pnl", {"symbol": opp.symbol, "buy_venue": opp.buy_venue,
                                                 "sell_venue": opp.sell_venue, "kind": opp.kind},
                            {"pnl": pnl})

    async def _publish(self, opp_id: str, leg: LegResult, source: Source) -> None:
        await self.bus.send(ORDERS_EXECUTIONS, execution_report(
            leg.order, source=source, parent_id=opp_id, venue=leg.venue, symbol=leg.symbol,
            side=leg.side, client_order_id=leg.client_order_id, amount=leg.amount,  # type: ignore[arg-type]
            refused=leg.refused, error=leg.error))

    async def _publish_plan(self, opp: Opportunity) -> None:
        """Dry run: what would be sent, as ``planned`` reports; no exchange is touched."""
        if opp.kind == "triangular":
            ids, _ = cycle_ids(opp.id)
            planned = [(opp.buy_venue, leg.symbol, leg.side, cid, leg.amount,
                        leg.worst * (1 + self.slip if leg.side == "buy" else 1 - self.slip))
                       for leg, cid in zip(opp.legs, ids, strict=True)]
        else:
            buy_id, sell_id, _ = leg_ids(opp.id)
            planned = [(opp.buy_venue, opp.symbol, "buy", buy_id, opp.quantity,
                        opp.buy_worst * (1 + self.slip)),
                       (opp.sell_venue, opp.symbol, "sell", sell_id, opp.quantity,
                        opp.sell_worst * (1 - self.slip))]
        for venue, symbol, side, cid, amount, price in planned:
            await self.bus.send(ORDERS_EXECUTIONS, planned_report(
                source="arbitrage", parent_id=opp.id, venue=venue, symbol=symbol, side=side,  # type: ignore[arg-type]
                client_order_id=cid, amount=amount, price=price))
