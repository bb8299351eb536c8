"""Replay as a real market: liquidity taken stays taken, book ids and times that mean
something, a clock several venues start together, and orders that travel a while."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import NotYet, eventually
from tests.integration.conftest import SimVenue, ccxt_client, http, start_venue, ticks_pass

T0 = 1_716_998_400_000


def recording(path: Path, second_at_ms: int = 1500) -> Path:
    """BTC/USDT: asks 0.08 @ 30000, 0.5 @ 30020 at T0; a second, identical record later."""
    lines = [{"type": "symbol", "symbol": "BTC/USDT", "tickSize": "0.01", "stepSize": "0.0001",
              "minNotional": "5"}]
    for ts in (T0, T0 + second_at_ms):
        lines.append({"type": "book", "ts": ts, "symbol": "BTC/USDT", "bids": [["29990", "1.0"]],
                      "asks": [["30000", "0.08"], ["30020", "0.5"]]})
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return path


def post(venue: SimVenue, path: str, body: bytes = b"") -> tuple[int, object]:
    status, _headers, doc = http(venue.url + path, method="POST", body=body,
                                 headers={"Content-Type": "application/json"})
    return status, doc


def current_record(venue: SimVenue) -> int | None:
    """The index of the BTC/USDT record current by the replay's clock (None before the first)."""
    return venue.get("/venue-sim/v1/replay")[2]["records"]["BTC/USDT"]


async def record_installed(venue: SimVenue, index: int) -> None:
    """Wait until record ``index`` is current and a tick since has installed its book."""
    await eventually(lambda: (now := current_record(venue)) == index or NotYet(now), 5,
                     f"record {index} current")
    await ticks_pass(venue, 1)


@pytest.fixture
def held(venue_sim_logs: Path, tmp_path: Path) -> Iterator[SimVenue]:
    venue = start_venue(venue_sim_logs, f"replay-held-{time.monotonic_ns()}", args=[
        "--replay", str(recording(tmp_path / "rec.jsonl")), "--replay-hold",
        "--balances", "USDT=100000,BTC=1"])
    yield venue
    venue.stop()


async def test_taken_liquidity_stays_taken_until_the_next_record(held: SimVenue) -> None:
    assert post(held, "/venue-sim/v1/replay/start")[0] == 200
    await record_installed(held, 0)
    async with ccxt_client(held) as ex:
        book = await ex.fetch_order_book("BTC/USDT")
        assert book["asks"][:2] == [[30000.0, 0.08], [30020.0, 0.5]]
        first = await ex.create_order("BTC/USDT", "market", "buy", 0.05)
        assert (first["filled"], first["average"]) == (0.05, 30000.0)
        await ticks_pass(held, 2)  # ticks pass: the taken 0.05 does not come back
        after = await ex.fetch_order_book("BTC/USDT")
        assert current_record(held) == 0, "too late: the second record is current already"
        assert after["asks"][:2] == [[30000.0, 0.03], [30020.0, 0.5]]
        second = await ex.create_order("BTC/USDT", "market", "buy", 0.05)
        assert second["filled"] == pytest.approx(0.05)
        assert second["average"] == pytest.approx((0.03 * 30000 + 0.02 * 30020) / 0.05)
        await record_installed(held, 1)  # the second record: recorded quantities again
        again = await ex.fetch_order_book("BTC/USDT")
        assert again["asks"][:2] == [[30000.0, 0.08], [30020.0, 0.5]]


async def test_the_book_id_and_time_change_only_with_the_book(held: SimVenue) -> None:
    before_start = held.get("/api/v3/depth?symbol=BTCUSDT&limit=5")[2]
    assert before_start["bids"] == [] and before_start["asks"] == []
    at = int(time.time() * 1000) + 400
    status, doc = post(held, "/venue-sim/v1/replay/start", json.dumps({"at_ms": at}).encode())
    assert status == 200 and doc == {"started_at_ms": at}
    await ticks_pass(held, 1)  # not yet: the start is in the future
    assert held.get("/api/v3/depth?symbol=BTCUSDT&limit=5")[2]["asks"] == []
    await record_installed(held, 0)
    one = held.get("/api/v3/depth?symbol=BTCUSDT&limit=5")[2]
    await ticks_pass(held, 2)
    two = held.get("/api/v3/depth?symbol=BTCUSDT&limit=5")[2]
    assert one == two, "an unchanged book keeps its id"
    assert "T" not in one, "Binance spot's depth has no time (ccxt.pro depends on it)"
    assert book_time(held) == at, "the book's time is when its record became current"
    async with ccxt_client(held) as ex:
        await ex.create_order("BTC/USDT", "market", "buy", 0.01)
    taken = int(time.time() * 1000)
    three = held.get("/api/v3/depth?symbol=BTCUSDT&limit=5")[2]
    assert three["lastUpdateId"] > one["lastUpdateId"]
    assert at < book_time(held) <= taken, "a fill changes the book, and its time"
    state = held.get("/venue-sim/v1/replay")[2]
    assert state["started_at_ms"] == at and state["records"] == {"BTC/USDT": 0}


def book_time(venue: SimVenue) -> int:
    return int(venue.state()["symbols"]["BTC/USDT"]["time"])


def test_the_start_endpoint_refuses_what_it_cannot_do(held: SimVenue, venue_sim: SimVenue) -> None:
    assert post(held, "/venue-sim/v1/replay/start", b"{not json")[0] == 400
    assert post(held, "/venue-sim/v1/replay/start", b'{"at_ms": "soon"}')[0] == 400
    assert post(held, "/venue-sim/v1/replay/start")[0] == 200
    status, doc = post(held, "/venue-sim/v1/replay/start")
    assert status == 409 and "started" in doc["msg"]  # type: ignore[index]
    status, doc = post(venue_sim, "/venue-sim/v1/replay/start")  # model mode
    assert status == 409 and "replay" in doc["msg"]  # type: ignore[index]


async def test_venues_started_together_switch_records_together(venue_sim_logs: Path, tmp_path: Path) -> None:
    path = recording(tmp_path / "rec.jsonl", second_at_ms=1000)
    venues = [start_venue(venue_sim_logs, f"together-{i}-{time.monotonic_ns()}",
                          args=["--replay", str(path), "--replay-hold"]) for i in range(2)]
    try:
        at = int(time.time() * 1000) + 300
        for venue in venues:
            assert post(venue, "/venue-sim/v1/replay/start", json.dumps({"at_ms": at}).encode())[0] == 200
        seen: list[dict[int, int]] = [{}, {}]  # record index -> first wall time seen

        def both_records_seen_on_both() -> bool | NotYet:
            for k, venue in enumerate(venues):
                index = current_record(venue)
                if index is not None:
                    seen[k].setdefault(index, int(time.time() * 1000))
            return (set(seen[0]) >= {0, 1} and set(seen[1]) >= {0, 1}) or NotYet(seen)

        await eventually(both_records_seen_on_both, 3, "both records on both venues", interval_s=0.02)
        assert set(seen[0]) == set(seen[1]) == {0, 1}
        for index in (0, 1):
            assert abs(seen[0][index] - seen[1][index]) <= 250, seen  # within a tick and the polling
            assert seen[0][index] >= at + 1000 * index
    finally:
        for venue in venues:
            venue.stop()


async def test_order_latency_delays_orders_only(venue_sim_logs: Path, tmp_path: Path) -> None:
    venue = start_venue(venue_sim_logs, f"slow-orders-{time.monotonic_ns()}", args=[
        "--replay", str(recording(tmp_path / "rec.jsonl")), "--order-latency-ms", "700"])
    try:
        await eventually(lambda: venue.get("/api/v3/depth?symbol=BTCUSDT&limit=5")[2]["asks"], 5,
                         "the first record's book")
        async with ccxt_client(venue) as ex:
            await ex.load_markets()
            started = time.monotonic()
            await ex.fetch_order_book("BTC/USDT")
            await ex.fetch_balance()
            fast = time.monotonic() - started
            started = time.monotonic()
            order = await ex.create_order("BTC/USDT", "market", "buy", 0.01)
            slow = time.monotonic() - started
        assert fast < 0.5 and 0.7 <= slow < 2.0, (fast, slow)
        assert order["filled"] == 0.01
    finally:
        venue.stop()


def test_bad_replay_options_are_one_line_and_exit_2(tmp_path: Path) -> None:
    rec = str(recording(tmp_path / "rec.jsonl"))
    for args in (["--replay-hold"], ["--replay-start-ms", "12"], ["--order-latency-ms", "-1"],
                 ["--replay", rec, "--replay-start-ms", "soon"],
                 ["--replay", rec, "--replay-hold", "--replay-start-ms", "12"]):
        proc = subprocess.run([sys.executable, "-m", "tooling.venue_sim", *args], capture_output=True,
                              text=True, timeout=30)
        assert proc.returncode == 2, (args, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("venue-sim: error: "), (args, proc.stderr)
