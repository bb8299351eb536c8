"""Several venues: shared underlying prices, thin books, conservation, replay, the process itself."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import ccxt
import numpy as np
import pytest

from tests.conftest import NotYet, eventually, wait_for
from tests.integration.conftest import BALANCES, SimVenue, ccxt_client, http, start_venue, ticks_pass
from tooling.devstack import infra


@pytest.fixture(scope="module")
def twin(venue_sim_logs: Path) -> Iterator[SimVenue]:
    """Same seed as the shared venue, its own noise, offset and lag, a thin 20-level book."""
    running = start_venue(venue_sim_logs, "sim-twin", args=[
        "--noise-bps", "8", "--price-offset-bps", "5", "--lag-ms", "400", "--levels", "20",
        "--balances", "USDT=100000000,BTC=1000"])
    yield running
    running.stop()


@pytest.fixture(scope="module")
def stranger(venue_sim_logs: Path) -> Iterator[SimVenue]:
    """Another seed: another market."""
    running = start_venue(venue_sim_logs, "sim-stranger", seed=4242, args=["--noise-bps", "3"])
    yield running
    running.stop()


def log_returns(candles: list[list[float]]) -> np.ndarray:
    return np.diff(np.log(np.array(candles)[:, 4]))


async def test_same_seed_venues_share_prices_but_not_noise(venue_sim: SimVenue, twin: SimVenue,
                                                           stranger: SimVenue) -> None:
    async with ccxt_client(venue_sim) as a, ccxt_client(twin) as b, ccxt_client(stranger) as c:
        await asyncio.gather(a.load_markets(), b.load_markets(), c.load_markets())
        candles = await asyncio.gather(*(ex.fetch_ohlcv("BTC/USDT", "1m", limit=600) for ex in (a, b, c)))
        mids = []
        for _ in range(10):  # ten samples of the two books, a tick apart
            tickers = await asyncio.gather(a.fetch_ticker("ETH/USDT"), b.fetch_ticker("ETH/USDT"))
            mids.append([(t["bid"] + t["ask"]) / 2 for t in tickers])
            await ticks_pass(twin, 1)
    ra, rb, rc = (log_returns(x) for x in candles)
    same = np.corrcoef(ra, rb)[0, 1]
    other = np.corrcoef(ra, rc)[0, 1]
    assert 0.3 < same < 0.995, f"same seed: correlated, not identical ({same:.3f})"
    assert abs(other) < 0.3, f"another seed: unrelated ({other:.3f})"
    gaps_bps = [(mb / ma - 1) * 1e4 for ma, mb in mids]
    assert all(0 < abs(g) < 60 for g in gaps_bps), gaps_bps  # offset 5 bps + noise 3 and 8 bps
    assert len({round(g, 3) for g in gaps_bps}) > 1, "the spread between venues moves"
    # the underlying ("true") price is the same on both, at the same moment
    sa, sb = venue_sim.state(), twin.state()
    for symbol in ("BTC/USDT", "ETH/USDT", "ETH/BTC"):
        assert sa["symbols"][symbol]["trueMid"] == pytest.approx(sb["symbols"][symbol]["trueMid"],
                                                                 rel=5e-4)
    far = stranger.state()["symbols"]
    # another seed, other prices (one symbol may match by chance, not all of them)
    assert max(abs(far[s]["trueMid"] / sa["symbols"][s]["trueMid"] - 1) for s in far) > 0.01


async def test_market_order_larger_than_the_book_expires_partly_filled(twin: SimVenue) -> None:
    async with ccxt_client(twin) as ex:
        await ex.load_markets()
        book = await ex.fetch_order_book("BTC/USDT", 20)
        depth = sum(size for _p, size in book["asks"])
        order = await ex.create_order("BTC/USDT", "market", "buy", 200, None, {"clientOrderId": "whale-1"})
        await ticks_pass(twin, 1)
        refilled = await ex.fetch_order_book("BTC/USDT", 20)
    assert depth < 200
    assert order["status"] == "expired" and 0 < order["filled"] < 200
    assert order["filled"] == pytest.approx(depth, rel=0.3)  # the book of the next tick may differ
    assert order["remaining"] == pytest.approx(200 - order["filled"])
    prices = [t["price"] for t in order["trades"]]
    assert prices == sorted(prices) and len(prices) > 10, "walked the book level by level"
    assert len(refilled["asks"]) == 20, "the book refills on the next tick"


async def test_random_orders_conserve_every_asset_over_http(venue_sim: SimVenue) -> None:
    """200 random orders (some refused) on the shared venue; nothing created or destroyed."""
    rng = random.Random(7)
    symbols = ["BTC/USDT", "ETH/USDT", "SOL/USDT", "ETH/BTC", "DOGE/USDT"]
    async with ccxt_client(venue_sim, "conserve") as ex:
        markets = await ex.load_markets()
        tickers = await ex.fetch_tickers(symbols)

        async def one(i: int) -> str:
            symbol = rng.choice(symbols)
            mid = (tickers[symbol]["bid"] + tickers[symbol]["ask"]) / 2
            side = rng.choice(["buy", "sell"])
            kind = rng.choice(["market", "limit", "limit", "ioc", "maker"])
            notional_usd = 10 ** rng.uniform(0.3, 5.3)  # 2 USD (refused) .. 200k USD (some refused)
            usd = mid if symbol.endswith("USDT") else mid * tickers["BTC/USDT"]["last"]
            amount = float(ex.amount_to_precision(symbol, notional_usd / usd))
            price = float(ex.price_to_precision(symbol, mid * (1 + rng.uniform(-0.002, 0.002))))
            params = {"clientOrderId": f"cons-{i}"}
            try:
                if kind == "market":
                    await ex.create_order(symbol, "market", side, amount, None, params)
                elif kind == "ioc":
                    await ex.create_order(symbol, "limit", side, amount, price,
                                          {**params, "timeInForce": "IOC"})
                elif kind == "maker":
                    await ex.create_order(symbol, "limit", side, amount, price,
                                          {**params, "postOnly": True})
                else:
                    await ex.create_order(symbol, "limit", side, amount, price, params)
                return "ok"
            except (ccxt.InsufficientFunds, ccxt.InvalidOrder, ccxt.BadRequest) as exc:
                return type(exc).__name__

        outcomes: list[str] = []
        for start in range(0, 200, 20):
            outcomes += await asyncio.gather(*(one(i) for i in range(start, start + 20)))
        await ticks_pass(venue_sim, 3)  # the market moves on: some resting orders fill
        for symbol in symbols:
            try:
                await ex.cancel_all_orders(symbol)
            except ccxt.OrderNotFound:
                pass  # nothing open there
        balance = await ex.fetch_balance()
        trades = {s: await ex.fetch_my_trades(s, limit=1000) for s in symbols}

    assert outcomes.count("ok") > 50 and len(set(outcomes)) > 1, outcomes
    ledger = venue_sim.ledger()
    assert ledger["conserved"] and ledger["locks_consistent"], ledger["assets"]
    for asset, row in ledger["assets"].items():
        total = Decimal(row["accounts"]) + Decimal(row["house"]) + Decimal(row["fees"])
        assert total == Decimal(row["initial"]), asset
    # the client's own view: start + what its trades moved == its balance (fees included)
    expected: defaultdict[str, float] = defaultdict(float)
    for asset, amount in BALANCES.items():
        expected[asset] += amount
    n_trades = 0
    for symbol, rows in trades.items():
        base, quote = markets[symbol]["base"], markets[symbol]["quote"]
        for t in rows:
            n_trades += 1
            sign = 1 if t["side"] == "buy" else -1
            expected[base] += sign * t["amount"]
            expected[quote] -= sign * t["cost"]
            expected[t["fee"]["currency"]] -= t["fee"]["cost"]
    assert n_trades > 20
    for asset, amount in expected.items():
        assert balance["total"][asset] == pytest.approx(amount, rel=1e-9, abs=1e-9), asset
        assert balance["used"][asset] == 0
    # every fill of the account is in the journal
    journal = [json.loads(line) for line in venue_sim.journal.read_text().splitlines()]
    assert sum(1 for r in journal if r["account"] == "acct-3") == n_trades


REPLAY_T0 = 1_716_998_400_000  # on the hour


def write_replay(path: Path) -> None:
    lines = [{"type": "symbol", "symbol": "BTC/USDT", "tickSize": "0.1", "stepSize": "0.001"}]
    for i in range(10):  # a book every 200 ms, drifting up 1 USDT at a time
        p = 60_000.0 + i
        lines.append({"type": "book", "ts": REPLAY_T0 + 200 * i, "symbol": "BTC/USDT",
                      "bids": [[f"{p - 0.5 - k:.1f}", "0.5"] for k in range(5)],
                      "asks": [[f"{p + 0.5 + k:.1f}", f"{0.5 + k:.1f}"] for k in range(5)]})
    for m in range(120):
        o = 59_000.0 + 10 * m
        lines.append({"type": "candle", "symbol": "BTC/USDT", "interval": "1m",
                      "openTime": REPLAY_T0 - 7_200_000 + 60_000 * m, "open": o, "high": o + 15,
                      "low": o - 5, "close": o + 10, "volume": 2.5})
    path.write_text("# recorded by hand for the test\n" + "\n".join(json.dumps(x) for x in lines) + "\n")


@pytest.fixture(scope="module")
def replayed(venue_sim_logs: Path) -> Iterator[SimVenue]:
    path = venue_sim_logs / "replay.jsonl"
    write_replay(path)
    running = start_venue(venue_sim_logs, "sim-replay", args=["--replay", str(path)])
    yield running
    running.stop()


async def test_replay_serves_recorded_books_and_candles(replayed: SimVenue) -> None:
    async with ccxt_client(replayed) as ex:
        markets = await ex.load_markets()
        first = await ex.fetch_order_book("BTC/USDT")
        minutes = await ex.fetch_ohlcv("BTC/USDT", "1m", limit=1000)
        hours = await ex.fetch_ohlcv("BTC/USDT", "1h", limit=10)
        # past the end of the recording (2 s) and a tick later: the last book stays
        await eventually(lambda: (t := replayed.get("/venue-sim/v1/replay")[2]["record_time_ms"])
                         >= REPLAY_T0 + 2000 or NotYet(t), 10, "the replay past the recording's end")
        await ticks_pass(replayed, 1)
        last = await ex.fetch_order_book("BTC/USDT")
        order = await ex.create_order("BTC/USDT", "market", "buy", 1.2, None)
    assert list(markets) == ["BTC/USDT"] and markets["BTC/USDT"]["precision"]["price"] == 0.1
    assert len(first["asks"]) == 5 and first["asks"][0][1] == 0.5
    assert 60_000.5 <= first["asks"][0][0] < last["asks"][0][0], "the recording moved on"
    assert first["asks"][0][0] - first["bids"][0][0] == pytest.approx(1.0)
    assert last["asks"][0] == [60_009.5, 0.5] and last["bids"][0] == [60_008.5, 0.5]
    assert len(minutes) == 120 and minutes[0] == [REPLAY_T0 - 7_200_000, 59_000, 59_015, 58_995, 59_010, 2.5]
    assert [h[0] for h in hours] == [REPLAY_T0 - 7_200_000, REPLAY_T0 - 3_600_000]
    assert hours[0][5] == pytest.approx(150) and hours[1][1] == 59_600 and hours[1][4] == 60_200
    # the order walked the recorded levels: 0.5 @ 60009.5 then 0.7 @ 60010.5
    assert order["filled"] == pytest.approx(1.2)
    assert order["average"] == pytest.approx((0.5 * 60_009.5 + 0.7 * 60_010.5) / 1.2)


def test_bad_arguments_are_one_line_and_exit_2(tmp_path: Path) -> None:
    cases = [["--port", "abc"], ["--port", "70000"], ["--balances", "USDT=-1"],
             ["--symbols", "BTCUSDT/"], ["--reject-rate", "2"], ["--replay", str(tmp_path / "none")],
             ["--levels", "5"], ["--frobnicate"]]
    for args in cases:
        proc = subprocess.run([sys.executable, "-m", "tooling.venue_sim", *args], capture_output=True,
                              text=True, timeout=30)
        assert proc.returncode == 2, (args, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("venue-sim: error: "), (args, proc.stderr)


def test_cse_venue_sim_hands_its_arguments_on() -> None:
    from workers.cli import main as cse

    assert cse(["venue-sim", "--", "--port", "not-a-port"]) == 2


def test_process_runs_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    port = infra.free_port()
    journal = tmp_path / "j" / "fills.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "tooling.venue_sim", "--name", "sim-cli",
                             "--port", str(port), "--journal", str(journal), "--log-format", "json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        def listening() -> bool:
            assert proc.poll() is None, proc.stderr
            return infra.http_ready(f"http://127.0.0.1:{port}/api/v3/ping")

        wait_for(listening, 30, "venue-sim answering /api/v3/ping", interval_s=0.05)
        status, _h, body = http(f"http://127.0.0.1:{port}/api/v3/time")
        assert status == 200 and abs(body["serverTime"] - time.time() * 1000) < 5000
        busy = subprocess.run([sys.executable, "-m", "tooling.venue_sim", "--port", str(port),
                               "--journal", str(tmp_path / "busy.jsonl")],
                              capture_output=True, text=True, timeout=30)
        assert busy.returncode == 2 and "cannot listen" in busy.stderr
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    events = [json.loads(line)["event"] for line in out.splitlines() if line.startswith("{")]
    assert events[0] == "venue_sim_listening" and events[-1] == "venue_sim_stopped"
    assert journal.parent.is_dir()
