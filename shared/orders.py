"""A ccxt order's outcome as the project reports it: one conversion, one fee convention.

Every ``orders.executions`` report of a placed (or refused) order is built by
:func:`execution_report`, whoever placed it (arbitrage legs, hedges, rebalance orders):

* ``status``: ``filled`` when the whole amount filled, ``partial`` when some did, else the
  venue's word (``canceled``/``expired`` → ``canceled``, ``rejected``, ``open``); with no
  order, ``rejected`` when the venue refused it and ``failed`` otherwise (never reached,
  outcome unknown, or never placed).
* ``fee`` is in the symbol's **quote** currency and ``fee_currency`` is that quote: fees
  charged in the base are valued at the order's average price (else its limit), fees in
  any other currency are left out (ccxt reports them per currency; the venue's ledger has
  them). Consumers add fees across orders without converting.
"""

from __future__ import annotations

from typing import Any, Literal

from shared.messages import Execution, now_ms, split_symbol

Source = Literal["arbitrage", "rebalancer", "hedge"]
Side = Literal["buy", "sell"]
#: What :func:`order_status` reports (``Execution.status`` less ``planned``, a dry run's).
ReportStatus = Literal["filled", "partial", "canceled", "rejected", "open", "failed"]
FILLED_TOLERANCE = 1e-9  # relative: a fill this close to the amount is whole


def quote_fee(order: dict[str, Any] | None, symbol: str) -> float:
    """The order's fees in the symbol's quote currency (a fee in base valued at the order's price)."""
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


def order_status(order: dict[str, Any] | None, amount: float, *, refused: bool) -> ReportStatus:
    """The report status of an order of ``amount`` (see the module docstring)."""
    if order is None:
        return "rejected" if refused else "failed"
    filled = float(order.get("filled") or 0.0)
    if filled > 0 and filled >= amount * (1 - FILLED_TOLERANCE):
        return "filled"
    if filled > 0:
        return "partial"
    status = str(order.get("status"))
    venue_word: dict[str, ReportStatus] = {
        "canceled": "canceled", "expired": "canceled", "rejected": "rejected", "open": "open"}
    return venue_word.get(status, "canceled")


def execution_report(order: dict[str, Any] | None, *, source: Source, parent_id: str, venue: str,
                     symbol: str, side: Side, client_order_id: str, amount: float,
                     refused: bool = False, error: str | None = None) -> Execution:
    """The ``orders.executions`` report of one order (None: it was not placed or not found)."""
    got = order or {}
    average = got.get("average")
    return Execution(
        id=client_order_id, source=source, parent_id=parent_id, venue=venue, symbol=symbol,
        side=side, client_order_id=client_order_id,
        status=order_status(order, amount, refused=refused),
        amount=amount, filled=float(got.get("filled") or 0.0),
        average=float(average) if average else None,
        fee=quote_fee(order, symbol), fee_currency=split_symbol(symbol)[1],
        order_id=str(got["id"]) if got.get("id") else None, error=error, ts_ms=now_ms())


def planned_report(*, source: Source, parent_id: str, venue: str, symbol: str, side: Side,
                   client_order_id: str, amount: float, price: float | None) -> Execution:
    """A dry run's report of an order it would place (``planned``; no exchange touched)."""
    return Execution(id=client_order_id, source=source, parent_id=parent_id, venue=venue,
                     symbol=symbol, side=side, client_order_id=client_order_id, status="planned",
                     amount=amount, average=price, dry_run=True, ts_ms=now_ms())
