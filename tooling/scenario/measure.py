"""What a scenario run did, measured from the venues' own records, and the checks.

Pure functions over the data the runner collected (:class:`Collected`): the
``orders.executions`` and ``arb.opportunities`` records, each venue's fill journal and
its ledger (``GET /venue-sim/v1/ledger``) before and after the play, and the Redis
execution ledger. Nothing here starts a process, so it is unit-tested with hand-made data.

* An **execution** is an opportunity (the ``parent_id`` of its ``Execution`` reports)
  whose orders filled anything. Its orders are the latest report per venue and client
  order id; its **PnL** is the balance change of its fills, taken from the venue journals
  exactly (buy: base +qty, quote −qty·price; sell: base −qty, quote +qty·price;
  commission −commission in its asset), valued at the scenario's marks (the quote is
  worth 1). Its **quantity** is the base its buy leg filled (triangular: its first leg).
  It is **one-leg** when its legs did not match: a hedge (any order whose source is not
  ``arbitrage``), a cross execution whose buy and sell legs filled differently, drift left
  for it in ``<prefix>arb:drift`` other than sub-lot dust (``reason: dust``, which a complete
  execution may leave: amounts are whole lots), or its Redis outcome ``one_leg``.
* **pnl_total** is, over every venue, the change of the account's balances (free +
  locked, every asset) from before the play to the end, valued at marks.
* Checks made on every run: the run settled; no process exited early; ingest published
  books of every venue and symbol (else "nothing happened" would prove nothing); every
  client order id was placed at most
  once per venue; every order's journal fills add up to what ``orders.executions``
  reported (and no fill is unreported); the executions' PnL adds up to ``pnl_total``;
  every changed asset has a mark; every venue's ledger is conserved with consistent locks.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from shared.messages import Execution, Opportunity, split_symbol
from tooling.scenario.spec import ExpectedExecution, Scenario

ACCOUNT = "acct-0"  # venue-sim's label of the first (development) account: the scenario's
ZERO = Decimal(0)
QTY_EPS = 1e-9  # relative: legs "match" / journal agrees with the report


@dataclass
class Collected:
    """Everything a run gathered, before any judgement."""

    executions: list[Execution] = field(default_factory=list)  # orders.executions, in topic order
    opportunities: dict[str, Opportunity] = field(default_factory=dict)
    journals: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # venue -> fills
    ledgers_before: dict[str, dict[str, Any]] = field(default_factory=dict)  # venue -> ledger JSON
    ledgers_after: dict[str, dict[str, Any]] = field(default_factory=dict)
    states: dict[str, dict[str, str]] = field(default_factory=dict)  # Redis arb:opp:<id> hashes
    drift: list[dict[str, Any]] = field(default_factory=list)  # Redis arb:drift entries
    settled: bool = True
    settle_note: str = ""
    crashed: list[str] = field(default_factory=list)  # processes that exited before the end
    books: dict[tuple[str, str], int] = field(default_factory=dict)  # (venue, symbol) -> on md.orderbooks
    ingest: dict[str, dict[str, float]] = field(default_factory=dict)  # venue -> main's ingest counters
    elapsed_s: float = 0.0


@dataclass
class Order:
    """The latest report of one order and the journal fills of it."""

    venue: str
    client_order_id: str
    symbol: str
    side: str
    source: str
    status: str
    amount: float
    filled: float
    average: float | None
    fills: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"venue": self.venue, "client_order_id": self.client_order_id, "symbol": self.symbol,
                "side": self.side, "source": self.source, "status": self.status,
                "amount": self.amount, "filled": self.filled, "average": self.average,
                "journal_qty": float(sum((Decimal(f["qty"]) for f in self.fills), ZERO))}


@dataclass
class MeasuredExecution:
    id: str
    kind: str
    symbol: str
    buy: str
    sell: str
    quantity: Decimal
    pnl: Decimal
    one_leg: bool
    orders: list[Order]
    first_fill_ms: int
    unmarked: list[str] = field(default_factory=list)  # changed assets without a mark

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "symbol": self.symbol, "buy": self.buy,
                "sell": self.sell, "quantity": float(self.quantity), "pnl": float(self.pnl),
                "one_leg": self.one_leg, "orders": [o.as_json() for o in self.orders]}


@dataclass
class Check:
    name: str
    expected: Any
    measured: Any
    passed: bool
    tolerance: float | None = None
    detail: str = ""

    def line(self) -> str:
        exp = f"{_fmt(self.expected)} ± {_fmt(self.tolerance)}" if self.tolerance is not None else _fmt(
            self.expected)
        verdict = "PASS" if self.passed else "FAIL"
        text = f"{verdict} {self.name}: expected {exp}, measured {_fmt(self.measured)}"
        return f"{text} ({self.detail})" if self.detail else text

    def as_json(self) -> dict[str, Any]:
        out = {"name": self.name, "expected": _jsonable(self.expected),
               "measured": _jsonable(self.measured), "passed": self.passed}
        if self.tolerance is not None:
            out["tolerance"] = self.tolerance
        if self.detail:
            out["detail"] = self.detail
        return out


@dataclass
class Report:
    scenario: str
    checks: list[Check]
    executions: list[MeasuredExecution]
    pnl_total: Decimal
    elapsed_s: float

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def one_leg(self) -> int:
        return sum(e.one_leg for e in self.executions)

    def summary(self) -> dict[str, Any]:
        return {"scenario": self.scenario, "passed": self.passed,
                "checks": [c.as_json() for c in self.checks],
                "executions": [e.as_json() for e in self.executions],
                "one_leg": self.one_leg, "executions_count": len(self.executions),
                "pnl_total": float(self.pnl_total), "elapsed_s": round(self.elapsed_s, 3)}


# --- balances and valuation --------------------------------------------------------------------

def fill_changes(fills: list[dict[str, Any]]) -> dict[str, Decimal]:
    """Exact balance changes of journal fills, per asset."""
    out: dict[str, Decimal] = defaultdict(Decimal)
    for f in fills:
        base, quote = split_symbol(str(f["symbol"]))
        qty, price = Decimal(str(f["qty"])), Decimal(str(f["price"]))
        quote_qty = Decimal(str(f["quoteQty"])) if f.get("quoteQty") is not None else qty * price
        sign = 1 if str(f["side"]).upper() == "BUY" else -1
        out[base] += sign * qty
        out[quote] -= sign * quote_qty
        commission = Decimal(str(f.get("commission") or 0))
        if commission:
            out[str(f["commissionAsset"])] -= commission
    return dict(out)


def account_totals(ledger: dict[str, Any], account: str = ACCOUNT) -> dict[str, Decimal]:
    """free + locked per asset of ``account`` in a venue-sim ledger."""
    assets = (ledger.get("accounts") or {}).get(account) or {}
    return {a: Decimal(str(v.get("free", "0"))) + Decimal(str(v.get("locked", "0")))
            for a, v in assets.items()}


def value(changes: dict[str, Decimal], marks: dict[str, Decimal], quote: str
          ) -> tuple[Decimal, list[str]]:
    """``changes`` valued in the quote, and the changed assets that have no mark."""
    total = ZERO
    unmarked = []
    for asset, amount in sorted(changes.items()):
        if not amount:
            continue
        if asset == quote:
            total += amount
        elif asset in marks:
            total += amount * marks[asset]
        else:
            unmarked.append(asset)
    return total, unmarked


def balance_changes(scenario: Scenario, collected: Collected) -> dict[str, dict[str, Decimal]]:
    """Per venue, final minus initial balances (free + locked) of the account."""
    out = {}
    for name, venue in scenario.venues.items():
        after = collected.ledgers_after.get(name)
        if after is None:
            continue
        before_ledger = collected.ledgers_before.get(name)
        before = account_totals(before_ledger) if before_ledger is not None else dict(venue.balances)
        final = account_totals(after)
        out[name] = {a: final.get(a, ZERO) - before.get(a, ZERO) for a in set(before) | set(final)}
    return out


# --- executions ----------------------------------------------------------------------------------

def latest_orders(executions: list[Execution]) -> dict[tuple[str, str], Execution]:
    """The latest report per (venue, client order id), in order of first report."""
    out: dict[tuple[str, str], Execution] = {}
    for ex in executions:
        out[(ex.venue, ex.client_order_id)] = ex
    return out


def journal_index(journals: dict[str, list[dict[str, Any]]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    out: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for venue, fills in journals.items():
        for f in fills:
            out[(venue, str(f.get("clientOrderId")))].append(f)
    return dict(out)


def measure_executions(scenario: Scenario, collected: Collected) -> list[MeasuredExecution]:
    """The opportunities that filled anything, in order of first fill."""
    fills = journal_index(collected.journals)
    by_parent: dict[str, list[Order]] = defaultdict(list)
    first_seen: dict[str, int] = {}
    for n, ((venue, cid), ex) in enumerate(latest_orders(collected.executions).items()):
        first_seen.setdefault(ex.parent_id, n)
        by_parent[ex.parent_id].append(Order(
            venue=venue, client_order_id=cid, symbol=ex.symbol, side=ex.side, source=ex.source,
            status=ex.status, amount=ex.amount, filled=ex.filled, average=ex.average,
            fills=fills.get((venue, cid), [])))
    drifted = {str(d.get("opportunity")) for d in collected.drift if d.get("reason") != "dust"}
    out = []
    for parent, orders in by_parent.items():
        if not any(o.filled > 0 for o in orders):
            continue
        opp = collected.opportunities.get(parent)
        legs = [o for o in orders if o.source == "arbitrage"]
        if opp is not None:
            kind, symbol, buy, sell = opp.kind, opp.symbol, opp.buy_venue, opp.sell_venue
        else:  # the opportunity record was not read back: infer from the orders
            kind = "cross" if len({o.symbol for o in orders}) == 1 else "triangular"
            symbol = (legs or orders)[0].symbol
            buy = next((o.venue for o in legs if o.side == "buy"), "")
            sell = next((o.venue for o in legs if o.side == "sell"), "")
        if kind == "cross":
            bought = sum(o.filled for o in legs if o.side == "buy")
            sold = sum(o.filled for o in legs if o.side == "sell")
            quantity = Decimal(repr(bought))
            mismatch = abs(bought - sold) > QTY_EPS * max(1.0, bought, sold)
        else:
            first_symbol = None
            if opp is not None:  # the detected legs in order (else the markets of the path)
                first_symbol = opp.legs[0].symbol if opp.legs else opp.path[0] if opp.path else None
            first = next((o for o in legs if o.symbol == first_symbol), legs[0] if legs else None)
            quantity = Decimal(repr(first.filled)) if first is not None else ZERO
            mismatch = False
        one_leg = (mismatch or any(o.source != "arbitrage" for o in orders) or parent in drifted
                   or collected.states.get(parent, {}).get("outcome") == "one_leg")
        all_fills = [f for o in orders for f in o.fills]
        pnl, unmarked = value(fill_changes(all_fills), scenario.marks, scenario.quote)
        first_ms = min((int(f.get("ts") or 0) for f in all_fills), default=2**62)
        out.append(MeasuredExecution(parent, kind, symbol, buy, sell, quantity, pnl, one_leg, orders,
                                     first_ms, unmarked))
    out.sort(key=lambda e: (e.first_fill_ms, first_seen[e.id]))
    return out


# --- checks --------------------------------------------------------------------------------------

def evaluate(scenario: Scenario, collected: Collected) -> Report:
    """Measure the run and check it against the scenario's expectations."""
    executions = measure_executions(scenario, collected)
    changes = balance_changes(scenario, collected)
    merged: dict[str, Decimal] = defaultdict(Decimal)
    for venue_changes in changes.values():
        for asset, amount in venue_changes.items():
            merged[asset] += amount
    pnl_total, unmarked = value(dict(merged), scenario.marks, scenario.quote)
    exp = scenario.expect
    ptol = exp.pnl_tolerance
    checks: list[Check] = []

    # what the file expects
    if exp.executions is not None:
        checks.append(Check("executions", exp.executions, len(executions),
                            len(executions) == exp.executions,
                            detail=_list_executions(executions) if len(executions) != exp.executions else ""))
    if exp.one_leg is not None:
        n = sum(e.one_leg for e in executions)
        checks.append(Check("one_leg", exp.one_leg, n, n == exp.one_leg))
    if exp.refused_legs is not None:
        refused = [ex for ex in latest_orders(collected.executions).values() if ex.status == "rejected"]
        checks.append(Check("refused_legs", exp.refused_legs, len(refused), len(refused) == exp.refused_legs,
                            detail="; ".join(f"{ex.venue} {ex.client_order_id}: {ex.error}"
                                             for ex in refused[:3]) if len(refused) != exp.refused_legs
                            else ""))
    if exp.pnl_total is not None:
        checks.append(_near("pnl_total", exp.pnl_total, pnl_total, ptol))
    for i, want in enumerate(exp.execution or []):
        checks.extend(_expected_execution(scenario, f"execution[{i}]", want,
                                          executions[i] if i < len(executions) else None))
    checks.extend(_expected_balances(scenario, collected))

    # what every run must satisfy
    checks.append(Check("settled", "every opportunity done, executions quiet 1 s",
                        collected.settle_note or ("yes" if collected.settled else "no"), collected.settled))
    checks.append(Check("no process exited before the end", [], collected.crashed, not collected.crashed))
    unseen = [f"{v} {s}" for v, venue in scenario.venues.items() for s in venue.symbol_names
              if not collected.books.get((v, s))]
    checks.append(Check("every venue's books reached the workers", [], unseen, not unseen,
                        detail=_unseen_detail(collected, unseen)))
    checks.append(_placed_once(collected))
    checks.append(_journals_agree(collected))
    sum_pnl = sum((e.pnl for e in executions), ZERO)
    checks.append(_near("executions' pnl adds up to pnl_total", pnl_total, sum_pnl, ptol))
    missing = sorted(set(unmarked) | {a for e in executions for a in e.unmarked})
    checks.append(Check("every changed asset has a mark", [], missing, not missing,
                        detail=f"add them to [marks]: {', '.join(missing)}" if missing else ""))
    checks.extend(_ledger_conserved(vname, collected.ledgers_after.get(vname)) for vname in scenario.venues)
    return Report(scenario.name, checks, executions, pnl_total, collected.elapsed_s)


def _expected_execution(scenario: Scenario, pre: str, want: ExpectedExecution,
                        got: MeasuredExecution | None) -> list[Check]:
    """One ``[[expect.execution]]`` against the execution measured at its position: each field it gives."""
    if got is None:
        return [Check(pre, "an execution", "none", False)]
    checks = []
    for key in ("kind", "symbol", "buy", "sell"):
        expected = getattr(want, key)
        if expected is not None:
            measured = getattr(got, key)
            checks.append(Check(f"{pre}.{key}", expected, measured, measured == expected))
    if want.quantity is not None:
        checks.append(_near(f"{pre}.quantity", want.quantity, got.quantity,
                            scenario.quantity_tolerance(got.symbol)))
    if want.pnl is not None:
        checks.append(_near(f"{pre}.pnl", want.pnl, got.pnl, scenario.expect.pnl_tolerance))
    return checks


def _expected_balances(scenario: Scenario, collected: Collected) -> list[Check]:
    """``[expect.balances]``: each listed asset's final account total on its venue, within tolerance.

    The quote is held to the PnL tolerance, any other asset to its quantity tolerance.
    """
    ptol = scenario.expect.pnl_tolerance
    checks = []
    for vname, assets in scenario.expect.balances.items():
        after = collected.ledgers_after.get(vname)
        final = account_totals(after) if after is not None else {}
        for asset, want_amount in assets.items():
            tol = ptol if asset == scenario.quote else _asset_tolerance(scenario, asset)
            if after is None:
                checks.append(Check(f"balances.{vname}.{asset}", float(want_amount), "no ledger", False))
            else:
                checks.append(_near(f"balances.{vname}.{asset}", want_amount, final.get(asset, ZERO), tol))
    return checks


def _ledger_conserved(vname: str, ledger: dict[str, Any] | None) -> Check:
    """The venue's ledger after the play conserves every asset and its locks are consistent."""
    if ledger is None:
        return Check(f"ledger conserved: {vname}", True, "no ledger", False)
    ok = bool(ledger.get("conserved")) and bool(ledger.get("locks_consistent", True))
    bad = [a for a, row in (ledger.get("assets") or {}).items() if not row.get("conserved", True)]
    return Check(f"ledger conserved: {vname}", True, ok, ok,
                 detail=f"not conserved: {', '.join(bad)}" if bad else ("" if ok else "locks inconsistent"))


def _unseen_detail(collected: Collected, unseen: list[str]) -> str:
    if not unseen:
        return ""
    counts = "; ".join(f"{v}: " + ", ".join(f"{k} {n:g}" for k, n in sorted(c.items()))
                       for v, c in sorted(collected.ingest.items()))
    return ("ingest published no book of them "
            f"(ingest counters at the end of the play: {counts or 'none read'})")


def _placed_once(collected: Collected) -> Check:
    orders: dict[tuple[str, str], set[Any]] = defaultdict(set)
    for venue, fills in collected.journals.items():
        for f in fills:
            orders[(venue, str(f.get("clientOrderId")))].add(f.get("orderId"))
    twice = sorted(f"{v} {cid} ({len(ids)} orders)" for (v, cid), ids in orders.items() if len(ids) > 1)
    return Check("every client order id placed at most once per venue", 0, len(twice), not twice,
                 detail="; ".join(twice[:5]))


def _journals_agree(collected: Collected) -> Check:
    fills = journal_index(collected.journals)
    reports = latest_orders(collected.executions)
    bad = []
    for key, ex in reports.items():
        qty = float(sum((Decimal(str(f["qty"])) for f in fills.get(key, [])), ZERO))
        if abs(qty - ex.filled) > QTY_EPS * max(1.0, qty, ex.filled):
            bad.append(f"{key[0]} {key[1]}: journal {qty:g}, reported {ex.filled:g}")
    for key, group in fills.items():
        if key not in reports:
            qty = float(sum((Decimal(str(f["qty"])) for f in group), ZERO))
            bad.append(f"{key[0]} {key[1]}: journal {qty:g}, never reported")
    return Check("journal fills == orders.executions filled", 0, len(bad), not bad,
                 detail="; ".join(bad[:5]))


def _asset_tolerance(scenario: Scenario, asset: str) -> Decimal:
    """quantity_tolerance, else the coarsest lot step given for a symbol with ``asset`` as base."""
    symbols = [s for s in scenario.symbols if split_symbol(s)[0] == asset]
    return max((scenario.quantity_tolerance(s) for s in symbols), default=scenario.quantity_tolerance(None))


def _near(name: str, expected: Decimal, measured: Decimal, tolerance: Decimal) -> Check:
    return Check(name, float(expected), float(measured), abs(measured - expected) <= tolerance,
                 tolerance=float(tolerance))


def _list_executions(executions: list[MeasuredExecution]) -> str:
    return "; ".join(f"{e.kind} {e.symbol} {e.buy}->{e.sell} qty {float(e.quantity):g} pnl {float(e.pnl):.4f}"
                     for e in executions[:5])


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.10g}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(map(str, value)) + "]"
    return str(value)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    return value
