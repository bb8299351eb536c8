"""The scenario runner's pure parts: replay files venue-sim reads back, worker settings, exit codes."""

from __future__ import annotations

import io
import json
import tomllib
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from tooling.scenario import runner
from tooling.scenario.spec import parse
from tooling.venue_sim.replay import ReplaySource

TEXT = """
[settings]
CSE_ARB_SLIPPAGE_BPS = 0
CSE_INGEST_INTERVAL_S = 0.25
[venues.x]
fee = 0.00075
balances = { USDT = 100 }
[[venues.x.symbols]]
symbol = "BTC/USDT"
tick = 0.01
step = 0.0001
min_notional = 5
[[venues.x.books]]
at = 0
symbol = "BTC/USDT"
bids = [[29990, 1]]
asks = [[30000, 0.08], [30020.5, 0.5]]
[[venues.x.books]]
at = 1.5
symbol = "ETH/USDT"
bids = [[1999, 2]]
asks = [[2001, 2]]
[[venues.x.books]]
at = 2.25
symbol = "BTC/USDT"
bids = [[29995, 1]]
asks = [[30005, 1]]
[venues.y]
balances = { BTC = 1 }
[[venues.y.books]]
at = 0
symbol = "BTC/USDT"
bids = [[30100, 1]]
asks = [[30110, 1]]
"""


def test_replay_files_play_the_books_at_their_times(tmp_path: Path) -> None:
    sc = parse(tomllib.loads(TEXT), "r.toml")
    records = runner.replay_records(sc.venues["x"])
    assert records[0] == {"type": "symbol", "symbol": "BTC/USDT", "tickSize": "0.01", "stepSize": "0.0001",
                          "minNotional": "5"}
    # ETH/USDT starts at 1.5 s: an empty book holds its place from the start
    assert {"type": "book", "ts": runner.T0_MS, "symbol": "ETH/USDT", "bids": [], "asks": []} in records
    path = tmp_path / "x.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    start = 5_000_000

    def source() -> ReplaySource:  # venue-sim's own reader, fresh: it serves a record once
        return ReplaySource(path, 20, np.random.default_rng(0), start)

    btc, eth = (next(s for s in source().specs if s.symbol == name) for name in ("BTC/USDT", "ETH/USDT"))
    assert (btc.tick, btc.step, btc.min_notional) == (Decimal("0.01"), Decimal("0.0001"), 5)

    def top(spec, at_s: float) -> tuple[float | None, float | None]:  # type: ignore[no-untyped-def]
        book = source().book(spec, start + int(at_s * 1000), 1)
        if book is None:  # nothing recorded yet for the symbol
            return (None, None)
        return (book.best_bid * spec.tick_f if book.best_bid is not None else None,
                book.best_ask * spec.tick_f if book.best_ask is not None else None)

    assert top(btc, 0) == pytest.approx((29990, 30000))
    assert top(eth, 0) == (None, None) and top(eth, 1.49) == (None, None)
    assert top(eth, 1.5) == pytest.approx((1999, 2001))
    assert top(btc, 2.24) == pytest.approx((29990, 30000))
    assert top(btc, 2.25) == pytest.approx((29995, 30005))
    second_ask = source().book(btc, start, 1)
    assert second_ask is not None and second_ask.ask_px[1] * btc.tick_f == pytest.approx(30020.5)


def test_worker_settings_layer_defaults_file_and_runner() -> None:
    sc = parse(tomllib.loads(TEXT), "r.toml")
    env = runner.worker_settings(sc, {"kafka": "k:1", "redis": "redis://r", "influx": "http://i",
                                      "venues": "x=http://a,y=http://b"})
    assert env["CSE_INGEST_INTERVAL_S"] == "0.25"  # the file over the fast default
    assert env["CSE_KAFKA_SESSION_TIMEOUT_MS"] == "3000" and env["CSE_ARB_BALANCE_INTERVAL_S"] == "1"
    assert env["CSE_ARB_TAKER_FEES"] == "x=0.00075,y=0.001"
    assert env["CSE_SYMBOLS"] == "BTC/USDT,ETH/USDT" and env["CSE_VENUES"] == "x=http://a,y=http://b"
    assert env["CSE_ARB_SLIPPAGE_BPS"] == "0" and env["CSE_KAFKA_BOOTSTRAP_SERVERS"] == "k:1"
    own = parse(tomllib.loads(TEXT.replace("[settings]", "[settings]\nCSE_ARB_TAKER_FEES = 'x=0'")), "r")
    assert runner.worker_settings(own, {"kafka": "", "redis": "", "influx": "", "venues": ""}
                                  )["CSE_ARB_TAKER_FEES"] == "x=0"


def test_a_bad_file_exits_2_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "scenario.toml"
    path.write_text(TEXT.replace("asks = [[30000, 0.08], [30020.5, 0.5]]",
                                 "asks = [[30000], [30020.5, 0.5]]"))
    out, err = io.StringIO(), io.StringIO()
    assert runner.run_file(path, out=out, err=err) == (2, None)
    assert err.getvalue() == f"{path}: venues.x.books[0].asks: a level must be [price, quantity]\n"
    assert out.getvalue() == ""


def test_refusals_before_any_process_starts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "scenario.toml"
    path.write_text(TEXT)
    err = io.StringIO()
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "old.log").write_text("x")
    assert runner.run_file(path, keep=keep, out=io.StringIO(), err=err)[0] == 2
    assert "not an empty directory" in err.getvalue()
    err = io.StringIO()
    assert runner.run_file(path, replicas=0, out=io.StringIO(), err=err)[0] == 2
    assert "--replicas must be from 1 to 32" in err.getvalue()
    monkeypatch.setattr(runner, "venue_sim_supports", lambda *o: dict.fromkeys(o, False))
    err = io.StringIO()
    assert runner.run_file(path, out=io.StringIO(), err=err)[0] == 2
    assert err.getvalue().startswith(f"{path}: cannot start: this venue-sim has no --replay-hold")
