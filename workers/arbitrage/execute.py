"""Two-leg execution of cross-venue opportunities, at most once, with hedging.

For an opportunity from ``arb.opportunities`` (see :mod:`workers.arbitrage.ledger` for
``new``/``recover``/``busy``/``done``):

1. the trading halt (:mod:`shared.halt`) stops any *new* execution at once (recovery of
   started ones goes on; detection goes on);
2. the balances both legs use are reserved in Redis (quote on the buy venue, base on the
   sell venue), so concurrent replicas never over-commit a venue;
3. both legs go out concurrently as IOC limit orders at the opportunity's worst
   acceptable prices, with client order ids derived from the opportunity id; the gateway
   looks a leg up by that id before it would ever send it again;
4. what the legs filled decides the outcome: ``both_legs`` (equal fills), ``one_leg`` (a
   residual), ``none``. A residual is hedged on the venue that holds it, with an IOC order
   no worse than the loss limit; what the hedge cannot close is recorded as inventory
   drift for the rebalancer;
5. every order is published to ``orders.executions``; realised PnL goes to metrics and the
   time-series store; the reservation is released and the opportunity marked done.

A takeover (``recover``) never sends a leg: it looks both legs up, settles what they
filled and hedges the residual.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiokafka import ConsumerRecord
from prometheus_client import Counter, Gauge, Histogram

from shared.audit import audit
from shared.bus import Bus
from shared.errors import CseError, ExchangeRejected, ExchangeUnavailable, TransientError
from shared.gateway import Gateway
from shared.halt import Halt
from shared.logs import get_logger
from shared.messages import ORDERS_EXECUTIONS, Execution, Opportunity, now_ms
from shared.timeseries import TimeSeriesWriter
from workers.arbitrage.detect import split_symbol
from workers.arbitrage.ledger import ExecutionLedger

log = get_logger("arbitrage.execute")

EXECUTIONS = Counter("cse_arb_executions_total", "Opportunities handled by outcome", ["outcome"])
LEG_LATENCY = Histogram("cse_arb_leg_latency_seconds", "Order round trip of a leg", ["venue"],
                        buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
REALISED_PNL = Gauge("cse_arb_realised_pnl", "Realised PnL since start (quote currency)",
                     ["symbol", "buy_venue", "sell_venue"])
HEDGES = Counter("cse_arb_hedges_total", "Residual hedges by result", ["result"])

EPS = 1e-12


@dataclass
class LegResult:
    venue: str
    side: str
    client_order_id: str
    amount: float
    order: dict[str, Any] | None = None
    error: str | None = None

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
    stem = f"cse{opportunity_id[:24]}"
    return f"{stem}b", f"{stem}s", f"{stem}h"


def quote_fee(order: dict[str, Any] | None, symbol: str) -> float:
    """The order's fees in quote currency (a fee in base is valued at the order's price)."""
    if not order:
        return 0.0
    base, quote = split_symbol(symbol)
    fees = order.get("fees") or ([order["fee"]] if order.get("fee") else [])
    price = float(order.get("average") or order.get("price") or 0.0)
    total = 0.0
    for fee in fees:
        cost = float(fee.get("cost") or 0.0)
        currency = fee.get("currency")
        total += cost if currency == quote else cost * price if currency == base else 0.0
    return total


class Executor:
    """Handler of ``arb.opportunities``: executes each opportunity at most once."""

    def __init__(self, gateway: Gateway, bus: Bus, ledger: ExecutionLedger, halt: Halt,
                 tsdb: TimeSeriesWriter | None, *, dry_run: bool, hedge_max_loss_bps: float,
                 balances: Any, slippage_bps: float = 0.0):
        self.gateway = gateway
        self.bus = bus
        self.ledger = ledger
        self.halt = halt
        self.tsdb = tsdb
        self.dry_run = dry_run
        self.hedge_max_loss_bps = hedge_max_loss_bps
        self.balances = balances  # callable (venue, asset) -> free amount, or None
        # the detector priced this buffer in: the limits may give it up to still fill
        self.slip = slippage_bps / 1e4

    async def handle(self, opp: Opportunity, _record: ConsumerRecord | None = None) -> None:
        if opp.kind != "cross":
            return  # triangular opportunities are published for analysis; not executed yet
        if opp.buy_venue not in self.gateway.specs or opp.sell_venue not in self.gateway.specs:
            EXECUTIONS.labels("unknown_venue").inc()
            return
        state = await self.ledger.begin(opp.id)
        if state == "done":
            EXECUTIONS.labels("duplicate").inc()
            return
        if state == "busy":
            raise TransientError(f"opportunity {opp.id} is being executed by another replica")
        if state == "recover":
            settlement = await self._recover(opp)
        else:
            if (await self.halt.state())["halted"]:
                await self.ledger.finish(opp.id, "halted")
                EXECUTIONS.labels("halted").inc()
                return
            if self.dry_run:
                await self._publish_plan(opp)
                await self.ledger.finish(opp.id, "dry_run")
                EXECUTIONS.labels("dry_run").inc()
                return
            quantity = await self.size(opp)
            if quantity <= 0:
                await self.ledger.finish(opp.id, "too_small")
                EXECUTIONS.labels("too_small").inc()
                return
            if not await self._reserve(opp, quantity):
                await self.ledger.finish(opp.id, "no_balance")
                EXECUTIONS.labels("no_balance").inc()
                return
            settlement = await self._execute(opp, quantity)
        await self.ledger.finish(opp.id, settlement.outcome)
        EXECUTIONS.labels(settlement.outcome).inc()
        log.info("arbitrage_settled", opportunity=opp.id, symbol=opp.symbol,
                 outcome=settlement.outcome, pnl=round(settlement.pnl, 6),
                 residual=settlement.residual)

    def limits(self, opp: Opportunity) -> tuple[float, float]:
        """IOC limit prices: the worst levels walked, widened by the slippage buffer."""
        return opp.buy_worst * (1 + self.slip), opp.sell_worst * (1 - self.slip)

    async def size(self, opp: Opportunity) -> float:
        """The quantity both venues accept: truncated to the coarser of their lot steps."""
        sizes = []
        for venue in (opp.buy_venue, opp.sell_venue):
            await self.gateway.call(venue, "load_markets")  # cached by ccxt after the first call
            try:
                sizes.append(float(self.gateway.client(venue).amount_to_precision(opp.symbol,
                                                                                  opp.quantity)))
            except Exception:  # ccxt raises InvalidOrder when it truncates to below the minimum
                return 0.0
        return min(sizes)

    async def _reserve(self, opp: Opportunity, quantity: float) -> bool:
        base, quote = split_symbol(opp.symbol)
        need_quote = quantity * self.limits(opp)[0] * 1.01  # covers the taker fee in quote
        checks = [(opp.buy_venue, quote, need_quote), (opp.sell_venue, base, quantity)]
        for venue, asset, amount in checks:
            available = self.balances(venue, asset) if self.balances else float("inf")
            if available == float("inf"):
                available = 1e300
            if not await self.ledger.reserve(opp.id, venue, asset, amount, available):
                await self.ledger.release(opp.id)
                return False
        return True

    async def _place(self, venue: str, symbol: str, side: str, amount: float, price: float,
                     client_order_id: str) -> LegResult:
        leg = LegResult(venue, side, client_order_id, amount)
        started = time.perf_counter()
        try:
            leg.order = await self.gateway.create_order(
                venue, symbol, "limit", side, amount, price, client_order_id=client_order_id,
                params={"timeInForce": "IOC"})
        except ExchangeRejected as exc:
            leg.error = str(exc)[:300]
        except ExchangeUnavailable as exc:
            # outcome unknown: one last look, else treat as unfilled and let the ledger's
            # recovery (on redelivery) settle it
            leg.error = str(exc)[:300]
            try:
                leg.order = await self.gateway.find_order(venue, symbol, client_order_id)
            except CseError:
                pass
        finally:
            LEG_LATENCY.labels(venue).observe(time.perf_counter() - started)
        order = leg.order or {}
        audit("order", actor="arbitrage-worker", outcome=str(order.get("status") or "failed"), venue=venue,
              symbol=symbol, side=side, amount=amount, price=price, filled=order.get("filled"),
              client_order_id=client_order_id, error=leg.error)
        return leg

    async def _execute(self, opp: Opportunity, quantity: float) -> Settlement:
        buy_id, sell_id, _ = leg_ids(opp.id)
        await self.ledger.record(opp.id, state="legs_sent", quantity=repr(quantity))
        buy_limit, sell_limit = self.limits(opp)
        buy, sell = await asyncio.gather(
            self._place(opp.buy_venue, opp.symbol, "buy", quantity, buy_limit, buy_id),
            self._place(opp.sell_venue, opp.symbol, "sell", quantity, sell_limit, sell_id),
        )
        return await self._settle(opp, buy, sell)

    async def _recover(self, opp: Opportunity) -> Settlement:
        buy_id, sell_id, _ = leg_ids(opp.id)
        recorded = (await self.ledger.state(opp.id)).get("quantity")
        quantity = float(recorded) if recorded else opp.quantity
        legs = []
        for venue, side, cid in ((opp.buy_venue, "buy", buy_id), (opp.sell_venue, "sell", sell_id)):
            leg = LegResult(venue, side, cid, quantity)
            leg.order = await self.gateway.find_order(venue, opp.symbol, cid)
            if leg.order is None:
                leg.error = "never placed (recovered after the first owner stopped)"
            legs.append(leg)
        log.warning("arbitrage_recovered", opportunity=opp.id,
                    filled=[leg.filled for leg in legs])
        return await self._settle(opp, legs[0], legs[1])

    async def _settle(self, opp: Opportunity, buy: LegResult, sell: LegResult) -> Settlement:
        for leg in (buy, sell):
            await self._publish(opp, leg, "arbitrage")
        residual = buy.filled - sell.filled  # > 0: extra base bought; < 0: base sold short
        if buy.filled <= EPS and sell.filled <= EPS:
            outcome = "none"
        elif abs(residual) <= EPS * max(1.0, buy.amount):
            outcome = "both_legs"
        else:
            outcome = "one_leg"
        settlement = Settlement(outcome, [buy, sell], residual=residual)
        if outcome == "one_leg":
            hedge = await self._hedge(opp, buy, sell, residual)
            if hedge is not None:
                settlement.legs.append(hedge)
                settlement.residual = residual - hedge.filled if residual > 0 else residual + hedge.filled
        settlement.pnl = self._pnl(opp, settlement.legs)
        self._record_pnl(opp, settlement.pnl)
        return settlement

    async def _hedge(self, opp: Opportunity, buy: LegResult, sell: LegResult, residual: float
                     ) -> LegResult | None:
        _, _, hedge_id = leg_ids(opp.id)
        loss = self.hedge_max_loss_bps / 1e4
        if residual > 0:  # sell the extra base where it was bought, no lower than the limit
            ref = buy.average or opp.buy_vwap
            venue, side, price = buy.venue, "sell", ref * (1 - loss)
        else:  # buy back the base sold, no higher than the limit
            ref = sell.average or opp.sell_vwap
            venue, side, price = sell.venue, "buy", ref * (1 + loss)
        leg = await self._place(venue, opp.symbol, side, abs(residual), price, hedge_id)
        await self._publish(opp, leg, "hedge")
        left = abs(residual) - leg.filled
        HEDGES.labels("closed" if left <= EPS * max(1.0, abs(residual)) else "drift").inc()
        if left > EPS * max(1.0, abs(residual)):
            base, _ = split_symbol(opp.symbol)
            await self.ledger.add_drift(json.dumps({
                "opportunity": opp.id, "venue": venue, "asset": base,
                "quantity": left if residual > 0 else -left, "ts_ms": now_ms()}))
            log.warning("hedge_left_drift", opportunity=opp.id, venue=venue, quantity=left)
        return leg

    def _pnl(self, opp: Opportunity, legs: list[LegResult]) -> float:
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

    def _record_pnl(self, opp: Opportunity, pnl: float) -> None:
        REALISED_PNL.labels(opp.symbol, opp.buy_venue, opp.sell_venue).inc(pnl)
        if self.tsdb is not None:
            self.tsdb.write("arb_realised_pnl", {"symbol": opp.symbol, "buy_venue": opp.buy_venue,
                                                 "sell_venue": opp.sell_venue}, {"pnl": pnl})

    async def _publish(self, opp: Opportunity, leg: LegResult, source: str) -> None:
        order = leg.order or {}
        status = order.get("status")
        if leg.order is None:
            mapped = "rejected" if leg.error and "never placed" not in leg.error else "failed"
        elif leg.filled >= leg.amount * (1 - 1e-9) and leg.filled > 0:
            mapped = "filled"
        elif leg.filled > 0:
            mapped = "partial"
        else:
            mapped = {"canceled": "canceled", "expired": "canceled", "rejected": "rejected"}.get(
                str(status), "open" if status == "open" else "canceled")
        fee = quote_fee(leg.order, opp.symbol)
        await self.bus.send(ORDERS_EXECUTIONS, Execution(
            id=leg.client_order_id, source=source, parent_id=opp.id, venue=leg.venue,
            symbol=opp.symbol, side=leg.side, client_order_id=leg.client_order_id,  # type: ignore[arg-type]
            status=mapped, amount=leg.amount, filled=leg.filled, average=leg.average, fee=fee,
            fee_currency=split_symbol(opp.symbol)[1], order_id=str(order["id"]) if order.get("id") else None,
            error=leg.error, ts_ms=now_ms()))

    async def _publish_plan(self, opp: Opportunity) -> None:
        """Dry run: what would be sent, as ``planned`` reports; no exchange is touched."""
        buy_id, sell_id, _ = leg_ids(opp.id)
        buy_limit, sell_limit = self.limits(opp)
        for venue, side, cid, price in ((opp.buy_venue, "buy", buy_id, buy_limit),
                                        (opp.sell_venue, "sell", sell_id, sell_limit)):
            await self.bus.send(ORDERS_EXECUTIONS, Execution(
                id=cid, source="arbitrage", parent_id=opp.id, venue=venue, symbol=opp.symbol,
                side=side, client_order_id=cid, status="planned", amount=opp.quantity,  # type: ignore[arg-type]
                average=price, dry_run=True, ts_ms=now_ms()))
