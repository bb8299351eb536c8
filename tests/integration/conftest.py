"""venue-sim fixtures: real venue-sim processes on free ports, real ccxt clients pointed at them.

One session venue (fixture ``venue_sim``) serves most tests; each test module trades with
its own API key (``--account``) so balances and open orders of one module never leak into
another. Venues
with special settings (tiny weight limit, chaos, a second seed, replay) are started by the
modules that need them with :func:`start_venue`.
"""

from __future__ import annotations

import contextlib
import json
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from shared.gateway import Gateway, sim_client
from shared.settings import VenueSettings
from tests.conftest import eventually
from tooling.devstack import infra
from tooling.venue_sim import DEV_API_KEY, DEV_API_SECRET

SEED = 42
BALANCES = {"USDT": 1_000_000, "BTC": 10, "ETH": 100, "SOL": 3000, "BNB": 500, "XRP": 500_000,
            "DOGE": 2_000_000, "ADA": 1_000_000}
# Extra accounts on the session venue_sim, one per test module that trades.
ACCOUNTS = {name: (f"key-{name}", f"secret-{name}") for name in
            ("trading", "errors", "conserve", "perf")}


@dataclass
class SimVenue:
    """A running venue-sim process and how to reach it."""

    running: infra.Running
    journal: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.running.port}"

    def get(self, path: str) -> tuple[int, dict[str, str], Any]:
        """A raw GET (no ccxt): status, headers, decoded JSON body."""
        return http(self.url + path)

    def ledger(self) -> dict[str, Any]:
        status, _h, body = self.get("/venue-sim/v1/ledger")
        assert status == 200
        return body  # type: ignore[no-any-return]

    def state(self) -> dict[str, Any]:
        status, _h, body = self.get("/venue-sim/v1/state")
        assert status == 200
        return body  # type: ignore[no-any-return]

    def stop(self) -> None:
        self.running.stop()


async def ticks_pass(venue: SimVenue, n: int) -> None:
    """Wait until the venue's market clock ticked ``n`` more times: new books (in replay, a
    record that became current is installed), resting orders the books cross filled."""
    start = venue.state()["ticks"]
    await eventually(lambda: venue.state()["ticks"] >= start + n, 5 + n, f"{n} ticks of the venue")


def http(url: str, method: str = "GET", body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
    """One raw HTTP request; the body must be JSON whatever the status."""
    assert url.startswith("http://127.0.0.1:")
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        return exc.code, dict(exc.headers), json.loads(raw)


@contextlib.contextmanager
def running_venues(log_dir: Path, balances: dict[str, str | None], *, seed: int = SEED
                   ) -> Iterator[dict[str, SimVenue]]:
    """Venue-sims by name (each with ``--balances`` when given), stopped afterwards."""
    running: dict[str, SimVenue] = {}
    try:
        for name, given in balances.items():
            running[name] = start_venue(log_dir, name, seed=seed,
                                        args=["--balances", given] if given else None)
        yield running
    finally:
        for venue in running.values():
            venue.stop()


def sim_gateway(venues: dict[str, SimVenue], symbols: list[str]) -> Gateway:
    """A gateway over these venue-sims (the dev key pair), for ``symbols``."""
    return Gateway(VenueSettings(venues=",".join(f"{n}={v.url}" for n, v in venues.items()),
                                 symbols=",".join(symbols)))


def start_venue(log_dir: Path, name: str, *, seed: int = SEED, args: list[str] | None = None
                ) -> SimVenue:
    journal = log_dir / f"{name}.fills.jsonl"
    spec = infra.venue_sim_spec(name, infra.free_port(), seed, DEV_API_KEY, DEV_API_SECRET,
                                journal, args)
    return SimVenue(infra.start(spec, log_dir, timeout_s=30), journal)


@contextlib.asynccontextmanager
async def ccxt_client(venue: SimVenue, account: str | None = None, *, key: str | None = None,
                      secret: str | None = None, timeout_ms: int = 10_000) -> AsyncIterator[Any]:
    """A ccxt binance client on ``venue`` (the account's keys, else the dev pair), closed after."""
    if account is not None:
        key, secret = ACCOUNTS[account]
    exchange = sim_client(venue.url, key or DEV_API_KEY, secret or DEV_API_SECRET,
                          timeout_ms=timeout_ms)
    try:
        for section in ("api", "test", "demo"):
            for value in (exchange.urls.get(section) or {}).values():
                if isinstance(value, str):  # the ws dict is never used by REST calls
                    assert value.startswith("http://127.0.0.1:"), value
        yield exchange
    finally:
        await exchange.close()


@pytest.fixture(scope="session")
def venue_sim_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("venue-sim")


@pytest.fixture(scope="session")
def venue_sim(venue_sim_logs: Path) -> Iterator[SimVenue]:
    """The shared venue: seed 42, 1000 levels, no practical weight limit, a few accounts."""
    args = ["--weight-limit", "100000000", "--noise-bps", "3", "--levels", "1000",
            "--balances", ",".join(f"{a}={v}" for a, v in BALANCES.items())]
    for key, secret in ACCOUNTS.values():
        args += ["--account", f"{key}:{secret}"]
    running = start_venue(venue_sim_logs, "sim-shared", args=args)
    yield running
    running.stop()
