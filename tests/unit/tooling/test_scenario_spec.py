"""Scenario files: what parses, its defaults, and one clear line for every way a file is wrong."""

from __future__ import annotations

import re
import textwrap
import tomllib
from decimal import Decimal
from pathlib import Path

import pytest

from tests import ROOT
from tooling.scenario import spec
from tooling.scenario.spec import ScenarioError, load, parse

VENUES = """
[venues.x]
balances = { USDT = 10000, BTC = 0 }
[[venues.x.books]]
at = 0.0
symbol = "BTC/USDT"
bids = [[29990, 1.0]]
asks = [[30000, 0.08], [30020, 0.5]]
[venues.y]
balances = { USDT = 0, BTC = 1 }
[[venues.y.books]]
at = 0.0
symbol = "BTC/USDT"
bids = [[30100, 1.0]]
asks = [[30110, 0.5]]
"""


def scenario(text: str, venues: str = VENUES) -> spec.Scenario:
    return parse(tomllib.loads(textwrap.dedent(text) + venues), "s.toml")


def error(text: str, venues: str = VENUES) -> str:
    with pytest.raises(ScenarioError) as info:
        scenario(text, venues)
    message = str(info.value)
    assert "\n" not in message and message.startswith("s.toml: "), message
    return message


def test_the_documented_example_parses() -> None:
    """The example in the module docstring is a valid file (plus a second venue)."""
    doc = spec.__doc__ or ""
    example = textwrap.dedent(doc.split("::\n", 1)[1].split("\nRules beyond", 1)[0])
    extra = '[venues.y]\nbalances = { BTC = 1 }\n[[venues.y.books]]\nat = 0\nsymbol = "BTC/USDT"\n' \
            'bids = [[30100, 1]]\nasks = [[30110, 1]]\n'
    sc = parse(tomllib.loads(example.replace("[expect]", extra + "[expect]", 1)), "doc.toml")
    assert sc.name == "multi-level walk" and sc.replicas == 3 and sc.duration_s == 4.0
    assert sc.settings == {"CSE_ARB_TAKER_FEE": "0.001", "CSE_ARB_SLIPPAGE_BPS": "0"}
    x = sc.venues["x"]
    assert x.fee == Decimal("0.001") and x.balances == {"USDT": Decimal(10000), "BTC": Decimal(0)}
    assert x.symbols[0].step == Decimal("0.0001") and x.symbols[0].min_notional == Decimal(5)
    assert x.books[0].asks == [(Decimal(30000), Decimal("0.08")), (Decimal(30020), Decimal("0.5"))]
    e = sc.expect
    assert (e.executions, e.one_leg, e.refused_legs) == (1, 0, 0)
    assert e.pnl_total == Decimal("2.5926") and e.quantity_tolerance == Decimal("0.0001")
    assert e.execution is not None and e.execution[0].buy == "x"
    assert e.execution[0].quantity == Decimal("0.08")
    assert e.balances == {"x": {"BTC": Decimal("0.07992")}}


def test_defaults() -> None:
    sc = scenario("", VENUES.replace("at = 0.0\nsymbol = \"BTC/USDT\"\nbids = [[30100", "at = 1.5\n"
                                     "symbol = \"BTC/USDT\"\nbids = [[30100"))
    assert sc.name == "scenario"  # load() names it after the file
    assert sc.replicas == 3 and sc.quote == "USDT" and sc.duration_s == 3.5  # last book + 2 s
    assert sc.venues["x"].fee == Decimal("0.001") and sc.venues["x"].order_latency_ms == 0
    assert sc.expect.pnl_tolerance == Decimal("0.01") and sc.expect.executions is None
    assert sc.symbols == ["BTC/USDT"]
    assert sc.quantity_tolerance("BTC/USDT") == Decimal("1e-8")  # no step given


def test_settings_become_strings_and_tolerance_follows_the_coarsest_step() -> None:
    sc = scenario("""
        [settings]
        CSE_ARB_TRIANGULAR = true
        CSE_ARB_MAX_NOTIONAL = 500
        CSE_ARB_STALE_MS = "60000"
        CSE_ARB_TAKER_FEE = 0.00075
        """, VENUES + '[[venues.x.symbols]]\nsymbol = "BTC/USDT"\nstep = 0.01\n'
                      '[[venues.y.symbols]]\nsymbol = "BTC/USDT"\nstep = 0.1\n')
    assert sc.settings == {"CSE_ARB_TRIANGULAR": "true", "CSE_ARB_MAX_NOTIONAL": "500",
                           "CSE_ARB_STALE_MS": "60000", "CSE_ARB_TAKER_FEE": "0.00075"}
    assert sc.quantity_tolerance("BTC/USDT") == Decimal("0.1")


def test_expected_executions_count_defaults_to_the_list() -> None:
    sc = scenario('[[expect.execution]]\nbuy = "x"\n[[expect.execution]]\nkind = "cross"\n')
    assert sc.expect.executions == 2


def test_a_file_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "walk.toml"
    path.write_text(VENUES)
    assert load(path).name == "walk"
    assert load(ROOT / "tests/scenarios/fees_eat_the_spread.toml").expect.executions == 0


@pytest.mark.parametrize("text,where,what", [
    # the file
    ("nmae = 'x'", "nmae", "unknown key"),
    ("name = 3", "name", "must be a non-empty string"),
    ("replicas = 0", "replicas", "from 1 to 32"),
    ("replicas = 2.5", "replicas", "must be an integer"),
    ("replicas = true", "replicas", "must be an integer, got a boolean"),
    ("duration_s = 0", "duration_s", "must be > 0"),
    ("duration_s = 'long'", "duration_s", "must be a number"),
    ("quote = 'usdt'", "quote", "2-12 capital letters"),
    ("settings = 3", "settings", "must be a table"),
    # settings
    ("[settings]\nARB_FEE = 1", "settings.ARB_FEE", "CSE_* environment variables"),
    ("[settings]\nCSE_VENUES = 'a=b'", "settings.CSE_VENUES", "set by the scenario runner"),
    ("[settings]\nCSE_REDIS_URL = 'redis://x'", "settings.CSE_REDIS_URL", "set by the scenario runner"),
    ("[settings]\nCSE_ARB_X = [1]", "settings.CSE_ARB_X", "a string, a number or a boolean"),
    # marks
    ("[marks]\nbtc = 1", "marks.btc", "2-12 capital letters"),
    ("[marks]\nBTC = 0", "marks.BTC", "must be > 0"),
    ("[marks]\nUSDT = 2", "marks.USDT", "its mark is 1"),
    ("[marks]\nBTC = 'x'", "marks.BTC", "must be a number"),
    # expect
    ("[expect]\nexecution = 1", "expect.execution", "array of tables"),
    ("[expect]\nexecutions = -1", "expect.executions", "from 0"),
    ("[expect]\nonelegs = 0", "expect.onelegs", "unknown key"),
    ("[expect]\npnl_tolerance = -1", "expect.pnl_tolerance", "must be >= 0"),
    ("[[expect.execution]]\nbuy = 'z'", "expect.execution[0].buy", "unknown venue 'z' (venues: x, y)"),
    ("[[expect.execution]]\nsell = 'q'", "expect.execution[0].sell", "unknown venue 'q'"),
    ("[[expect.execution]]\nkind = 'spatial'", "expect.execution[0].kind", "cross or triangular"),
    ("[[expect.execution]]\nsymbol = 'ETH/USDT'", "expect.execution[0].symbol", "has no books"),
    ("[[expect.execution]]\nsymbol = 'ETHUSDT'", "expect.execution[0].symbol", "not a symbol"),
    ("[[expect.execution]]\nquantity = -1", "expect.execution[0].quantity", "must be >= 0"),
    ("[[expect.execution]]\nvenue = 'x'", "expect.execution[0].venue", "unknown key"),
    ("[expect.balances.z]\nBTC = 1", "expect.balances.z", "unknown venue 'z'"),
    ("[expect.balances.x]\nBTC = -1", "expect.balances.x.BTC", "must be >= 0"),
    ("[expect.balances.x]\nbtc = 1", "expect.balances.x.btc", "2-12 capital letters"),
])
def test_bad_top_level_settings_marks_and_expectations(text: str, where: str, what: str) -> None:
    message = error(text)
    assert message.startswith(f"s.toml: {where}: "), message
    assert what in message, message


def venue(body: str) -> str:
    """Venue x with ``body`` replacing its books; venue y as usual."""
    y = VENUES[VENUES.index("[venues.y]"):]
    return "[venues.x]\n" + body + "\n" + y


BOOK = '[[venues.x.books]]\nat = 0\nsymbol = "BTC/USDT"\nbids = [[29990, 1]]\nasks = [[30000, 1]]\n'


@pytest.mark.parametrize("body,where,what", [
    # the venue
    ("balances = { USDT = 1 }", "venues.x.books", "no books"),
    (BOOK, "venues.x.balances", "missing"),
    ("balances = { USDT = -1 }\n" + BOOK, "venues.x.balances.USDT", "must be >= 0"),
    ("balances = { usdt = 1 }\n" + BOOK, "venues.x.balances.usdt", "capital letters"),
    ("balances = 5\n" + BOOK, "venues.x.balances", "must be a table"),
    ("balances = {}\nfee = 0.2\n" + BOOK, "venues.x.fee", "must be <= 0.0999"),
    ("balances = {}\nfee = -0.001\n" + BOOK, "venues.x.fee", "must be >= 0"),
    ("balances = {}\norder_latency_ms = -5\n" + BOOK, "venues.x.order_latency_ms", "must be >= 0"),
    ("balances = {}\nlatency = 5\n" + BOOK, "venues.x.latency", "unknown key"),
    ("balances = {}\nbooks = 3", "venues.x.books", "array of tables"),
    # symbols
    ("balances = {}\n[[venues.x.symbols]]\ntick = 0.01\n" + BOOK, "venues.x.symbols[0].symbol", "missing"),
    ("balances = {}\n[[venues.x.symbols]]\nsymbol = 'BTC-USDT'\n" + BOOK, "venues.x.symbols[0].symbol",
     "not a symbol BASE/QUOTE"),
    ("balances = {}\n[[venues.x.symbols]]\nsymbol = 'ETH/USDT'\n" + BOOK, "venues.x.symbols[0].symbol",
     "ETH/USDT has no books on venue x"),
    ("balances = {}\n[[venues.x.symbols]]\nsymbol = 'BTC/USDT'\n[[venues.x.symbols]]\nsymbol = 'BTC/USDT'\n"
     + BOOK, "venues.x.symbols[1].symbol", "listed twice"),
    ("balances = {}\n[[venues.x.symbols]]\nsymbol = 'BTC/USDT'\ntick = 0\n" + BOOK,
     "venues.x.symbols[0].tick", "must be > 0"),
    ("balances = {}\n[[venues.x.symbols]]\nsymbol = 'BTC/USDT'\nlot = 1\n" + BOOK,
     "venues.x.symbols[0].lot", "unknown key"),
    # books
    ("balances = {}\n" + BOOK.replace("at = 0\n", ""), "venues.x.books[0].at", "missing"),
    ("balances = {}\n" + BOOK.replace("at = 0", "at = -1"), "venues.x.books[0].at", "must be >= 0"),
    ("balances = {}\n" + BOOK.replace('symbol = "BTC/USDT"\n', ""), "venues.x.books[0].symbol", "missing"),
    ("balances = {}\n" + BOOK.replace("asks = [[30000, 1]]", "asks = [[30000, 1, 2]]"),
     "venues.x.books[0].asks", "a level must be [price, quantity]"),
    ("balances = {}\n" + BOOK.replace("asks = [[30000, 1]]", "asks = [30000, 1]"),
     "venues.x.books[0].asks", "a level must be [price, quantity]"),
    ("balances = {}\n" + BOOK.replace("asks = [[30000, 1]]", "asks = 30000"),
     "venues.x.books[0].asks", "must be a list of [price, quantity]"),
    ("balances = {}\n" + BOOK.replace("asks = [[30000, 1]]\n", ""), "venues.x.books[0].asks", "missing"),
    ("balances = {}\n" + BOOK.replace("asks = [[30000, 1]]", "asks = [[30000, 'lots']]"),
     "venues.x.books[0].asks", "must be a number"),
    ("balances = {}\n" + BOOK.replace("asks = [[30000, 1]]", "asks = [[30000, 0]]"),
     "venues.x.books[0].asks", "must be > 0"),
    ("balances = {}\n" + BOOK.replace("asks = [[30000, 1]]", "asks = [[30010, 1], [30000, 1]]"),
     "venues.x.books[0].asks", "best first (lowest price first)"),
    ("balances = {}\n" + BOOK.replace("bids = [[29990, 1]]", "bids = [[29980, 1], [29990, 1]]"),
     "venues.x.books[0].bids", "best first (highest price first)"),
    ("balances = {}\n" + BOOK.replace("bids = [[29990, 1]]", "bids = [[29990, 1], [29990, 2]]"),
     "venues.x.books[0].bids", "one level per price"),
    ("balances = {}\n" + BOOK.replace("bids = [[29990, 1]]", "bids = [[30000, 1]]"),
     "venues.x.books[0]", "crossed book: best bid 30000 >= best ask 30000"),
    ("balances = {}\n" + BOOK.replace("at = 0", "at = 2") + BOOK.replace("at = 0", "at = 1"),
     "venues.x.books[1].at", "sorted by `at`: 1 comes after 2"),
    ("balances = {}\n" + BOOK + BOOK, "venues.x.books[1].at", "a second book of BTC/USDT at 0 s"),
    ("balances = {}\n" + BOOK.replace("asks = [[30000, 1]]", "asks = []"), "venues.x.books",
     "BTC/USDT has no book with both bids and asks"),
    ("balances = {}\n" + BOOK.replace("symbol = \"BTC/USDT\"", "symbol = \"BTC\""),
     "venues.x.books[0].symbol", "not a symbol"),
    ("balances = {}\n" + BOOK + "depth = 5\n", "venues.x.books[0].depth", "unknown key"),
    # the tick and lot grid venue-sim would round to
    ("balances = {}\n[[venues.x.symbols]]\nsymbol = 'BTC/USDT'\ntick = 0.5\n"
     + BOOK.replace("29990", "29990.2"),
     "venues.x.books[0].bids", "price 29990.2 is not a multiple of the tick 0.5 of BTC/USDT"),
    ("balances = {}\n[[venues.x.symbols]]\nsymbol = 'BTC/USDT'\nstep = 0.001\n"
     + BOOK.replace("asks = [[30000, 1]]", "asks = [[30000, 0.0015]]"),
     "venues.x.books[0].asks", "quantity 0.0015 is not a multiple of the lot step 0.001"),
    # no step given: the one venue-sim derives from the first price (1e-5 for BTC at 30000)
    ("balances = {}\n" + BOOK.replace("asks = [[30000, 1]]", "asks = [[30000, 0.000001]]"),
     "venues.x.books[0].asks", "quantity 0.000001 is not a multiple of the lot step 0.00001"),
])
def test_bad_venues(body: str, where: str, what: str) -> None:
    message = error("", venue(body))
    assert message.startswith(f"s.toml: {where}: "), message
    assert what in message, message


@pytest.mark.parametrize("venues,what", [
    ("", "venues: no venues"),
    ("[venues]\n", "venues: no venues"),
    ("venues = 1\n", "venues: must be a table"),
    (VENUES.replace("[venues.y]", "[venues.'y z']").replace("venues.y.books", "venues.'y z'.books"),
     "venues.y z: a venue name is 1-32 letters"),
])
def test_bad_venue_tables(venues: str, what: str) -> None:
    assert error("", venues).startswith(f"s.toml: {what}")


def test_duration_must_cover_the_books() -> None:
    message = error("duration_s = 1.0", VENUES.replace("at = 0.0\nsymbol = \"BTC/USDT\"\nbids = [[30100",
                                                       "at = 2.5\nsymbol = \"BTC/USDT\"\nbids = [[30100"))
    assert message == "s.toml: duration_s: 1 s ends before the last book (at 2.5 s)"


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match=re.escape(f"{tmp_path / 'nope.toml'}: cannot read: ")):
        load(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = \n")
    with pytest.raises(ScenarioError, match=re.escape(f"{bad}: not valid TOML: ")):
        load(bad)
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b"\xff\xfe")
    with pytest.raises(ScenarioError, match="not UTF-8"):
        load(binary)
