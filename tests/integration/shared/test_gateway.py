"""The exchange gateway against real venue-sim processes through real ccxt."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from shared import metrics
from shared.errors import ExchangeAuthError, ExchangeRejected, ExchangeUnavailable
from shared.gateway import Gateway
from shared.settings import VenueSettings, parse_venues
from tests.integration.conftest import SimVenue, ccxt_client, start_venue
from tests.metric_values import value

pytestmark = pytest.mark.slow


def gateway_for(venue: SimVenue, name: str, **overrides: object) -> Gateway:
    return Gateway(VenueSettings(venues=f"{name}={venue.url}", symbols="BTC/USDT", **overrides))


@pytest.fixture(scope="module")
def limited(venue_sim_logs: Path) -> Iterator[SimVenue]:
    venue = start_venue(venue_sim_logs, "gw-limited",
                        args=["--weight-limit", "40", "--weight-window-s", "2"])
    yield venue
    venue.stop()


@pytest.fixture(scope="module")
def slow(venue_sim_logs: Path) -> Iterator[SimVenue]:
    venue = start_venue(venue_sim_logs, "gw-slow", args=["--latency-ms", "500"])
    yield venue
    venue.stop()


def test_venue_configuration_is_validated() -> None:
    specs = parse_venues("a=http://127.0.0.1:1, binance=binance")
    assert [(s.name, s.kind) for s in specs] == [("a", "sim"), ("binance", "ccxt")]
    for bad, why in [("a", "name=URL"), ("a=nosuchexchange", "neither"),
                     ("a=http://x,a=http://y", "twice")]:
        with pytest.raises(ValueError, match=why):
            parse_venues(bad)


async def test_refusals_are_mapped_and_not_retried(venue_sim: SimVenue) -> None:
    async with gateway_for(venue_sim, "gw-map") as gw:
        await gw.call("gw-map", "load_markets")
        before = value(metrics.EXCHANGE_REQUESTS, venue="gw-map", method="fetch_ticker")
        with pytest.raises(ExchangeRejected) as err:
            await gw.call("gw-map", "fetch_ticker", "NOPE/USDT")
        assert err.value.kind == "BadSymbol"
        assert value(metrics.EXCHANGE_REQUESTS, venue="gw-map", method="fetch_ticker") == before + 1
        with pytest.raises(ExchangeRejected) as err:
            await gw.call("gw-map", "create_order", "BTC/USDT", "market", "buy", 10_000)
        assert err.value.kind == "InsufficientFunds"
        assert value(metrics.EXCHANGE_ERRORS, venue="gw-map", error="InsufficientFunds") >= 1


async def test_wrong_credentials_are_fatal_and_never_logged(venue_sim: SimVenue) -> None:
    settings = VenueSettings(venues=f"gw-auth={venue_sim.url}",
                             sim_api_secret=SecretStr("not-the-secret-xyz"))
    async with Gateway(settings) as gw:
        with pytest.raises(ExchangeAuthError) as err:
            await gw.call("gw-auth", "fetch_balance")
    assert "not-the-secret-xyz" not in str(err.value)


async def test_a_burst_over_the_weight_limit_cools_down_instead_of_hammering(limited: SimVenue
                                                                             ) -> None:
    async with gateway_for(limited, "gw-limited", exchange_retries=6) as gw:
        started = time.monotonic()
        for _ in range(40):
            ticker = await gw.call("gw-limited", "fetch_ticker", "BTC/USDT")
            assert ticker["bid"] > 0
        elapsed = time.monotonic() - started
    limited_hits = value(metrics.EXCHANGE_ERRORS, venue="gw-limited", error="DDoSProtection")
    assert limited_hits >= 1, "the burst never reached the limit: nothing was tested"
    assert limited_hits <= 6, f"{limited_hits} rate-limit answers: the gateway kept hammering"
    assert elapsed >= 1.0, "the gateway did not wait out the cool-down"


async def test_timeouts_never_place_an_order_twice(slow: SimVenue) -> None:
    # replies take 0.25-0.75 s and the client gives up after 0.5 s: about half the orders
    # are placed but their answer is lost; the gateway must find them instead of re-sending
    settings = VenueSettings(venues=f"gw-slow={slow.url}", symbols="BTC/USDT",
                             exchange_timeout_ms=500, exchange_retries=12)
    async with Gateway(settings) as gw:
        await gw.call("gw-slow", "load_markets")
        ids = [f"gw-slow-{i}" for i in range(10)]  # P(no timeout at all) = 0.5**10
        for cid in ids:
            order = await gw.create_order("gw-slow", "BTC/USDT", "limit", "buy", 0.02, 1000.0,
                                          client_order_id=cid)
            assert order["clientOrderId"] == cid
        timeouts = value(metrics.EXCHANGE_ERRORS, venue="gw-slow", error="RequestTimeout")
        assert timeouts >= 1, "no call timed out: the at-most-once path was not exercised"
    async with ccxt_client(slow, timeout_ms=10_000) as ex:
        orders = await ex.fetch_open_orders("BTC/USDT")
    placed = [o["clientOrderId"] for o in orders if o["clientOrderId"] in ids]
    assert sorted(placed) == sorted(ids), "an order is missing or was placed twice"


async def test_a_redelivered_order_returns_the_one_already_placed(venue_sim: SimVenue) -> None:
    async with gateway_for(venue_sim, "gw-dup") as gw:
        await gw.call("gw-dup", "load_markets")
        first = await gw.create_order("gw-dup", "BTC/USDT", "limit", "buy", 0.02, 1000.0,
                                      client_order_id="gw-dup-1")
        again = await gw.create_order("gw-dup", "BTC/USDT", "limit", "buy", 0.02, 1000.0,
                                      client_order_id="gw-dup-1")
        assert again["id"] == first["id"]
        open_orders = await gw.call("gw-dup", "fetch_open_orders", "BTC/USDT")
        assert [o["clientOrderId"] for o in open_orders].count("gw-dup-1") == 1
        await gw.call("gw-dup", "cancel_order", first["id"], "BTC/USDT")


async def test_an_unreachable_venue_is_unavailable_after_retries() -> None:
    from tooling.devstack import infra

    settings = VenueSettings(venues=f"gw-down=http://127.0.0.1:{infra.free_port()}",
                             exchange_retries=2, exchange_timeout_ms=500)
    async with Gateway(settings) as gw:
        with pytest.raises(ExchangeUnavailable):
            await gw.call("gw-down", "fetch_time")
    assert value(metrics.EXCHANGE_RETRIES, venue="gw-down") == 2
    assert value(metrics.EXCHANGE_UP, "gw-down") == 0
