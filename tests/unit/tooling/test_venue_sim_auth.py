"""venue-sim request parsing, HMAC signatures, timestamps, weights, command line and replay files."""

from __future__ import annotations

import hashlib
import hmac
import json
import urllib.parse
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from tooling.venue_sim.__main__ import main
from tooling.venue_sim.auth import Params, WeightLimiter, check_signed, parse_pairs, strip_signature
from tooling.venue_sim.config import DEV_API_KEY, DEV_API_SECRET, parse_args
from tooling.venue_sim.errors import ApiError
from tooling.venue_sim.replay import ReplayError, ReplaySource

SECRET = b"s3cret"
NOW = 1_800_000_000_000


def signed(params: dict[str, str], secret: bytes = SECRET) -> str:
    """What ccxt sends: urlencode(params) + '&signature=' + hex HMAC of that text."""
    query = urllib.parse.urlencode(params)
    return query + "&signature=" + hmac.new(secret, query.encode(), hashlib.sha256).hexdigest()


def check(raw_query: str, raw_body: str = "", now: int = NOW) -> None:
    params = Params([*parse_pairs(raw_query), *parse_pairs(raw_body)])
    check_signed(params, SECRET, raw_query, raw_body, now)


def test_signature_is_over_the_raw_still_encoded_text() -> None:
    query = signed({"timestamp": str(NOW), "symbol": "BTCUSDT", "newClientOrderId": "a:b/c d",
                    "recvWindow": "10000"})
    assert "a%3Ab%2Fc+d" in query
    check(query)  # GET: everything in the query string
    check("", query)  # POST: everything in the body
    body_part = signed({"timestamp": str(NOW), "quantity": "1"})
    # Binance: totalParams = query string + body, concatenated as they are
    q = "symbol=BTCUSDT"
    payload = q + body_part.split("&signature=")[0]
    sig = hmac.new(SECRET, payload.encode(), hashlib.sha256).hexdigest()
    check(q, body_part.split("&signature=")[0] + "&signature=" + sig)


@pytest.mark.parametrize(("mutate", "code"), [
    (lambda q: q.replace("BTCUSDT", "ETHUSDT"), -1022),  # tampered after signing
    (lambda q: q[:-1] + ("0" if q[-1] != "0" else "1"), -1022),
    (lambda q: q.split("&signature=")[0], -1102),  # no signature
    (lambda q: q.replace("signature=", "signature=zz"), -1022),
])
def test_tampered_or_unsigned_requests_are_refused(mutate, code) -> None:  # type: ignore[no-untyped-def]
    query = signed({"timestamp": str(NOW), "symbol": "BTCUSDT"})
    with pytest.raises(ApiError) as exc:
        check(mutate(query))
    assert exc.value.code == code


def test_timestamp_window() -> None:
    check(signed({"timestamp": str(NOW - 4_999)}))  # default recvWindow 5000
    for ts, recv, code in ((NOW - 5_001, None, -1021), (NOW + 1_000, None, -1021),
                           (NOW - 50_000, "60000", None), (NOW, "60001", -1131)):
        params = {"timestamp": str(ts)} | ({"recvWindow": recv} if recv else {})
        if code is None:
            check(signed(params))
            continue
        with pytest.raises(ApiError) as exc:
            check(signed(params))
        assert exc.value.code == code
    with pytest.raises(ApiError) as exc:
        check(signed({"symbol": "X"}))
    assert exc.value.code == -1102 and "timestamp" in exc.value.msg


def test_parameters_duplicates_bad_numbers_and_escapes() -> None:
    with pytest.raises(ApiError) as exc:
        Params(parse_pairs("a=1&a=2"))
    assert exc.value.code == -1101
    with pytest.raises(ApiError) as exc:
        parse_pairs("a=%ff")
    assert exc.value.code == -1100
    p = Params(parse_pairs("n=12&d=1.50&bad=1e5&neg=-1&empty="))
    assert p.integer("n") == 12 and p.decimal("d") == Decimal("1.50")
    for name in ("bad", "neg"):
        with pytest.raises(ApiError) as exc:
            p.decimal(name)
        assert exc.value.code == -1100
    assert p.text("empty") is None
    with pytest.raises(ApiError) as exc:
        p.text("empty", required=True)
    assert exc.value.code == -1102
    assert strip_signature("a=1&signature=ff&b=2") == "a=1&b=2"


def test_weight_limiter_counts_per_key_per_wall_clock_minute() -> None:
    limiter = WeightLimiter(10)
    t = 60_000 * 1000 + 50_000  # 10 s before the minute ends
    assert limiter.charge("a", 6, t)[0] and limiter.charge("b", 10, t)[0]
    ok, used, retry = limiter.charge("a", 5, t)
    assert (ok, used, retry) == (False, 6, 10)
    assert limiter.charge("a", 4, t)[:2] == (True, 10)
    assert limiter.charge("a", 5, t + 10_000)[:2] == (True, 5), "a new minute, a new budget"
    assert limiter.first_refusal("a") and not limiter.first_refusal("a")
    short = WeightLimiter(10, window_s=2)
    assert short.charge("a", 10, 4_500)[0] and short.charge("a", 1, 5_900) == (False, 10, 1)
    assert short.charge("a", 10, 6_000)[0], "a shorter window for tests"


def test_command_line_defaults_and_one_line_errors(capsys: pytest.CaptureFixture[str],
                                                   tmp_path: Path) -> None:
    cfg = parse_args(["--name", "sim1", "--port", "0"])
    assert (cfg.api_key, cfg.api_secret, cfg.host, cfg.port) == (DEV_API_KEY, DEV_API_SECRET, "127.0.0.1", 0)
    assert cfg.symbol_names[:2] == ["BTC/USDT", "ETH/USDT"] and "ETH/BTC" in cfg.symbol_names
    assert cfg.starting_balances(["USDT", "BTC"]) == {"USDT": 100_000, "BTC": 1}
    assert cfg.journal == Path(".run/venue-sim/sim1/fills.jsonl")
    cfg = parse_args(["--symbols", "btc,SOL/USDC", "--quote", "usdt", "--balances", "USDT=5,BTC=0.5",
                      "--account", "k2:s2", "--maker-fee", "0", "--price-offset-bps", "-4"])
    assert cfg.symbols == [("BTC", "USDT"), ("SOL", "USDC")] and cfg.accounts == [("k2", "s2")]
    assert cfg.starting_balances(["SOL"]) == {"USDT": 5, "BTC": Decimal("0.5")}
    assert cfg.maker_fee == 0 and cfg.price_offset_bps == -4
    for argv in (["--port", "x"], ["--seed", "-1"], ["--maker-fee", "0.5"], ["--balances", "USDT"],
                 ["--symbols", "BTC/BTC"], ["--account", "nocolon"], ["--api-key", "k", "--account", "k:s"],
                 ["--api-secret", "-----BEGIN PRIVATE KEY-----"], ["--latency-ms", "nan"],
                 ["--replay", str(tmp_path / "missing.jsonl")], ["--weight-limit", "0"]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("venue-sim: error: "), (argv, err)
    assert main(["--help"]) == 0
    assert "venue-sim-dev-key" in capsys.readouterr().out


def test_replay_files_json_lines_and_csv(tmp_path: Path) -> None:
    jsonl = tmp_path / "r.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in [
        {"type": "book", "ts": 1000, "symbol": "ETH/USDT", "bids": [["3000", "1"], ["2999.5", "2"]],
         "asks": [["3000.5", "1"], ["3001", 2]]},
        {"type": "book", "ts": 1500, "symbol": "ETH/USDT", "bids": [["3010", "1"]], "asks": [["3011", "1"]]},
        {"type": "candle", "symbol": "ETH/USDT", "interval": "1m", "openTime": 0, "open": 1, "high": 2,
         "low": 0.5, "close": 1.5, "volume": 3},
    ]) + "\n")
    src = ReplaySource(jsonl, 50, np.random.default_rng(0), start_ms=10_000)
    spec = src.specs[0]
    assert spec.symbol == "ETH/USDT"
    first = src.book(spec, 10_000, 1)
    assert first is not None and first.best_bid == 300_000 and first.best_ask == 300_050
    later = src.book(spec, 10_600, 2)
    assert later is not None and later.best_bid == 301_000
    assert src.klines(spec, "1m", None, None, 10, 0)[0][:5] == [0, "1.00", "2.00", "0.50", "1.50"]
    assert src.klines(spec, "5m", None, None, 10, 0)[0][0] == 0
    csv_file = tmp_path / "r.csv"
    csv_file.write_text("ts,symbol,bid,ask,bid_qty,ask_qty\n5,BTC/USDT,60000.0,60000.5,0.25,\n")
    src = ReplaySource(csv_file, 30, np.random.default_rng(0), start_ms=0)
    book = src.book(src.specs[0], 0, 1)
    assert book is not None and len(book.bid_px) == 30
    assert book.best_bid == 6_000_000 and book.best_ask == 6_000_050 and int(book.bid_qty[0]) == 25_000
    for text, where in (('{"type": "book", "symbol": "X/USDT", "ts": 1, "bids": 5, "asks": []}', ":1"),
                        ("not json", ":1"), ('\n{"type": "trade", "symbol": "BTC/USDT"}', ":2")):
        bad = tmp_path / "bad.jsonl"
        bad.write_text(text)
        with pytest.raises(ReplayError, match=where):
            ReplaySource(bad, 20, np.random.default_rng(0), start_ms=0)
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("time,pair\n1,BTC/USDT\n")
    with pytest.raises(ReplayError, match="header"):
        ReplaySource(bad_csv, 20, np.random.default_rng(0), start_ms=0)
