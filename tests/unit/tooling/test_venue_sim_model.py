"""venue-sim's price model, candles and synthetic books, in process."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tooling.venue_sim.book import BUY, SELL, DepthProfile
from tooling.venue_sim.market import (
    EPOCH_MS,
    FINE_MS,
    FINE_PER_HOUR,
    HOUR_MS,
    MINUTE_MS,
    OUComponent,
    TrueModel,
    VenueEffects,
    VenueModel,
)
from tooling.venue_sim.source import INTERVALS, ModelSource, select_opens
from tooling.venue_sim.symbols import FACTOR_VOL, asset_params, make_spec

NOW = EPOCH_MS + 700 * 24 * HOUR_MS + 12_345_600  # some moment two years after the epoch
HOUR = (NOW - EPOCH_MS) // HOUR_MS
BTC, ETH, ETHBTC = make_spec("BTC", "USDT"), make_spec("ETH", "USDT"), make_spec("ETH", "BTC")


def test_paths_depend_on_seed_and_time_only_not_on_the_order_of_queries() -> None:
    a, b, c = OUComponent(1, "x", 0.5, 1e9), OUComponent(1, "x", 0.5, 1e9), OUComponent(2, "x", 0.5, 1e9)
    i = (NOW - EPOCH_MS) // FINE_MS
    late = a.fine_at(i)
    early = a.fine_at(i - 5 * FINE_PER_HOUR)
    # b asks in the other order, far in the future first
    assert b.fine_at(i - 5 * FINE_PER_HOUR) == early and b.fine_at(i) == late
    assert c.fine_at(i) != late
    assert OUComponent(1, "y", 0.5, 1e9).fine_at(i) != late, "keyed by the component's name"


def test_finer_grids_pass_through_the_coarser_points() -> None:
    comp = OUComponent(5, "grid", 0.8, 30 * 86_400_000)
    hours = comp.hour_points(HOUR - 3, HOUR + 1)
    minutes = comp.minute_points((HOUR - 3) * 60, (HOUR + 1) * 60)
    fine = comp.fine_points((HOUR - 1) * FINE_PER_HOUR, HOUR * FINE_PER_HOUR)
    assert np.array_equal(minutes[::60], hours)
    assert np.array_equal(fine[::300], minutes[2 * 60:3 * 60 + 1])
    assert np.isclose(np.diff(fine).std() * math.sqrt(365.25 * 86_400_000 / FINE_MS), 0.8, rtol=0.05)


def test_vols_are_crypto_like_and_assets_move_together() -> None:
    model = TrueModel(11)
    h0, h1 = HOUR - 8000, HOUR
    returns = {a: np.diff(model.log_usd(a, "hour", h0, h1)) for a in ("BTC", "ETH", "SOL", "DOGE", "XRP")}
    for asset, r in returns.items():
        p = asset_params(asset)
        target = math.hypot(p.beta * FACTOR_VOL, p.idio_vol)
        assert 0.4 <= target <= 1.2
        assert r.std() * math.sqrt(24 * 365.25) == pytest.approx(target, rel=0.1), asset
    assert np.corrcoef(returns["BTC"], returns["ETH"])[0, 1] > 0.5
    # mean reversion over weeks keeps two years of prices in a sensible band
    levels = model.log_usd("BTC", "hour", 0, HOUR) - math.log(asset_params("BTC").price)
    assert np.abs(levels).max() < 1.5
    assert np.all(model.log_usd("USDT", "hour", h0, h1) == 0.0)


def test_venues_with_one_seed_share_the_truth_with_their_own_noise_offset_and_lag() -> None:
    truth = TrueModel(3)
    plain = VenueModel(truth, VenueEffects("plain"), [BTC, ETH, ETHBTC])
    noisy = VenueModel(truth, VenueEffects("noisy", noise_bps=5, offset_bps=10), [BTC, ETH])
    other = VenueModel(truth, VenueEffects("other", noise_bps=5), [BTC])
    late = VenueModel(truth, VenueEffects("late", lag_ms=1000), [BTC])
    t = NOW
    assert plain.mid_at(BTC, t) == plain.true_mid_at(BTC, t) == noisy.true_mid_at(BTC, t)
    assert late.mid_at(BTC, t) == pytest.approx(plain.mid_at(BTC, t - 1000), rel=1e-12)
    cross = plain.mid_at(ETHBTC, t)
    assert cross == pytest.approx(plain.mid_at(ETH, t) / plain.mid_at(BTC, t), rel=1e-12)
    i0 = (t - EPOCH_MS) // FINE_MS
    gap = noisy.log_mid(BTC, "fine", i0 - 50_000, i0) - plain.log_mid(BTC, "fine", i0 - 50_000, i0)
    gap_bps = gap * 1e4
    assert gap_bps.mean() == pytest.approx(10, abs=2.5)
    assert gap_bps.std() == pytest.approx(5, rel=0.3)
    other_gap = other.log_mid(BTC, "fine", i0 - 50_000, i0) - plain.log_mid(BTC, "fine", i0 - 50_000, i0)
    assert abs(np.corrcoef(gap, other_gap)[0, 1]) < 0.2, "each venue its own noise"


def test_candles_and_24h_stats_follow_the_same_path_as_the_live_mid() -> None:
    venue = VenueModel(TrueModel(9), VenueEffects("v", noise_bps=2), [BTC])
    source = ModelSource(venue, [BTC], 50, np.random.default_rng(0))
    for interval in ("1s", "1m", "5m", "1h", "4h", "1d", "1w"):
        rows = source.klines(BTC, interval, None, None, 1000, NOW)
        arr = np.array([[float(x) for x in r[:6]] for r in rows])
        assert len(rows) == 1000 or interval in ("1d", "1w")
        assert np.all(np.diff(arr[:, 0]) == INTERVALS[interval])
        assert np.all(arr[:, 2] >= np.maximum(arr[:, 1], arr[:, 4]))
        assert np.all(arr[:, 3] <= np.minimum(arr[:, 1], arr[:, 4]))
        assert arr[-1, 0] <= NOW < arr[-1, 0] + INTERVALS[interval]
        assert arr[-1, 4] == pytest.approx(venue.mid_at(BTC, NOW), abs=0.006), interval
        assert np.all(arr[1:, 1] == arr[:-1, 4]) or interval == "1s", "open = previous close"
    one = source.klines(BTC, "1m", None, None, 3, NOW)
    again = source.klines(BTC, "1m", None, None, 3, NOW)
    assert one == again
    stats = source.stats_24h(BTC, NOW)
    assert stats.low <= stats.last <= stats.high and stats.volume > 0
    assert stats.open == pytest.approx(venue.mid_at(BTC, NOW - 86_400_000), rel=0.002)


def test_candle_windows_follow_binance() -> None:
    m = MINUTE_MS
    now = EPOCH_MS + 1000 * m + 30_000
    last = EPOCH_MS + 1000 * m
    assert select_opens(m, None, None, 3, now, EPOCH_MS) == [last - 2 * m, last - m, last]
    assert select_opens(m, last - 10 * m + 1, None, 2, now, EPOCH_MS) == [last - 9 * m, last - 8 * m]
    assert select_opens(m, None, last - 5 * m, 2, now, EPOCH_MS) == [last - 6 * m, last - 5 * m]
    assert select_opens(m, last + m, None, 5, now, EPOCH_MS) == []
    assert select_opens(m, None, None, 5, EPOCH_MS + 2 * m, EPOCH_MS) == [
        EPOCH_MS, EPOCH_MS + m, EPOCH_MS + 2 * m]


def test_synthetic_book_is_monotone_on_tick_and_lot_and_deepens_away_from_the_mid() -> None:
    for spec in (BTC, ETHBTC, make_spec("DOGE", "USDT")):
        book = DepthProfile(spec, 1000).build(spec.ref_price, np.random.default_rng(1), 7, NOW)
        assert len(book.bid_px) == len(book.ask_px) == 1000
        assert np.all(np.diff(book.bid_px) < 0) and np.all(np.diff(book.ask_px) > 0)
        assert book.best_bid < book.best_ask  # type: ignore[operator]
        spread_bps = (book.best_ask - book.best_bid) * spec.tick_f / spec.ref_price * 1e4  # type: ignore[operator]
        assert spread_bps < 4, spec.symbol
        assert np.all(book.bid_qty >= 1) and np.all(book.ask_qty >= 1)
        notional = book.ask_px * book.ask_qty
        assert notional[-100:].mean() > 20 * notional[:10].mean()


def test_walk_and_consume_take_levels_best_first() -> None:
    book = DepthProfile(BTC, 20).build(65_000.0, np.random.default_rng(2), 1, NOW)
    top = int(book.ask_qty[0])
    taken = book.walk(BUY, None, lots=top + 1)
    assert taken == [(int(book.ask_px[0]), top), (int(book.ask_px[1]), 1)]
    second = int(book.ask_px[1])
    book.consume(BUY, taken)
    assert int(book.ask_px[0]) == second and book.update_id == 2
    assert book.walk(SELL, int(book.bid_px[0]) + 1, lots=5) == [], "a limit above the best bid takes nothing"
    assert book.available(SELL, int(book.bid_px[2])) == int(book.bid_qty[:3].sum())
