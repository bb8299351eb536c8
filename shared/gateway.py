"""The exchange gateway: the one place that builds ccxt clients and calls them.

Workers reach exchanges only through ``ccxt.async_support``. A venue is configured by
name in ``CSE_VENUES`` (``name=target`` pairs, comma-separated):

* ``binance=binance`` — a real exchange by ccxt id; credentials from the encrypted key
  file (:mod:`shared.keys`) under the venue's name;
* ``sim-a=http://127.0.0.1:9101`` — a venue-sim paper exchange by URL: an unmodified
  ``ccxt.binance`` whose URLs point at it; credentials from the key file if present,
  else ``CSE_SIM_API_KEY`` / ``CSE_SIM_API_SECRET`` (the development pair by default).

Every call goes through :meth:`Gateway.call`, which times and counts it, maps ccxt's
exceptions onto the project's vocabulary and retries what is transient::

    ccxt NetworkError / OperationFailed (timeouts, 5xx, 429 DDoSProtection,
      RateLimitExceeded — siblings in ccxt 4.5 —, InvalidNonce) -> ExchangeUnavailable, retried
    ccxt AuthenticationError (PermissionDenied, AccountSuspended) -> ExchangeAuthError (fatal)
    other ccxt ExchangeError (InsufficientFunds, InvalidOrder, BadSymbol, ...) -> ExchangeRejected

A rate-limit answer puts the whole venue into a cool-down that every later call waits
out, so one burst does not turn into a ban. Orders are never blindly re-sent: see
:meth:`Gateway.create_order`.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import urlsplit

import ccxt
import ccxt.async_support as ccxt_async
from pydantic import SecretStr

from shared import metrics
from shared.backoff import Backoff
from shared.errors import (
    DuplicateOrder,
    ExchangeAuthError,
    ExchangeRejected,
    ExchangeUnavailable,
    OrderNotFound,
)
from shared.logs import get_logger, register_secret
from shared.settings import VenueSettings

log = get_logger("gateway")

def point_binance_at(exchange: Any, base_url: str) -> None:
    """Rewrite every URL of a ccxt Binance client to ``base_url``, keeping the paths.

    Covers ``urls['api']``, ``urls['test']`` and ``urls['demo']`` (``/api/v3``, ``/sapi/v1``,
    ...). A ccxt.pro client also has websocket URLs under ``urls['api']['ws']``: the market
    streams become ``ws://<host>/stream`` (ccxt appends ``/<n>``; ``/stream`` is how it tells
    a spot connection) and the websocket API ``ws://<host>/ws-api/v3``.
    """
    base = base_url.rstrip("/")
    parts = urlsplit(base)
    ws_base = ("wss" if parts.scheme == "https" else "ws") + "://" + parts.netloc
    for section in ("api", "test", "demo"):
        urls = exchange.urls.get(section)
        if not isinstance(urls, dict):
            continue
        for key, old in list(urls.items()):
            if isinstance(old, str):
                urls[key] = base + urlsplit(old).path
            elif key == "ws" and isinstance(old, dict):
                for name, value in list(old.items()):
                    if isinstance(value, str):
                        old[name] = ws_base + "/stream"
                    elif isinstance(value, dict):  # 'ws-api': {spot, linear, inverse}
                        old[name] = {k: ws_base + "/ws-api/v3" for k in value}


def _pro() -> Any:
    """ccxt.pro, imported when a streaming client is first made (workers that never stream
    do not pay for its import)."""
    import ccxt.pro

    return ccxt.pro


def sim_client(base_url: str, api_key: str | None = None, secret: str | None = None,
               *, timeout_ms: int = 10_000, rate_limit: bool = False, streaming: bool = False) -> Any:
    """A ``ccxt.async_support.binance`` (``ccxt.pro.binance`` if ``streaming``) talking to a
    venue-sim at ``base_url``.

    Only spot markets are loaded, and the calls ccxt would make to margin, futures and
    currency endpoints are switched off, so ``load_markets`` is one ``exchangeInfo`` call.
    """
    config: dict[str, Any] = {
        "enableRateLimit": rate_limit,
        "timeout": timeout_ms,
        "options": {
            "fetchMarkets": {"types": ["spot"]},
            "fetchCurrencies": False,
            "fetchMargins": False,
            "adjustForTimeDifference": False,
            "defaultType": "spot",
            "fetchOpenOrders": {"warnWithoutSymbol": False},
        },
    }
    if api_key is not None:
        config["apiKey"] = api_key
    if secret is not None:
        config["secret"] = secret
    exchange = _pro().binance(config) if streaming else ccxt_async.binance(config)
    point_binance_at(exchange, base_url)
    return _typed_duplicates(exchange)


def real_client(ccxt_id: str, credentials: dict[str, SecretStr], *, timeout_ms: int,
                streaming: bool = False) -> Any:
    """A ccxt client for a real exchange, with ccxt's own rate limiter on (``streaming``: its
    ccxt.pro client, None if ccxt.pro has none)."""
    cls = getattr(_pro() if streaming else ccxt_async, ccxt_id, None)
    if cls is None:
        return None
    config: dict[str, Any] = {"enableRateLimit": True, "timeout": timeout_ms}
    config.update({k: v.get_secret_value() for k, v in credentials.items()})
    return _typed_duplicates(cls(config))


# Binance refuses a client order id it has seen with -2010 "Duplicate order sent.", which
# ccxt's tables map to the generic InvalidOrder; its exact-message table gets the entry, so
# ccxt raises DuplicateOrderId and the gateway DuplicateOrder (no message parsing of ours).
BINANCE_DUPLICATE_MESSAGE = "Duplicate order sent."


def _typed_duplicates(exchange: Any) -> Any:
    exact = exchange.exceptions.setdefault("exact", {})
    exact.setdefault(BINANCE_DUPLICATE_MESSAGE, ccxt.DuplicateOrderId)
    return exchange


def _retry_after(client: Any) -> float | None:
    """Seconds from the last response's ``Retry-After`` header, if it has one."""
    headers = getattr(client, "last_response_headers", None) or {}
    for name, value in headers.items():
        if name.lower() == "retry-after":
            try:
                return min(max(float(value), 0.0), 300.0)
            except (TypeError, ValueError):
                return None
    return None


# ccxt's exception classes and the project error each becomes, most specific first.
_ERRORS: tuple[tuple[type[BaseException], type[Exception]], ...] = (
    (ccxt.AuthenticationError, ExchangeAuthError),
    (ccxt.DuplicateOrderId, DuplicateOrder),
    (ccxt.OrderNotFound, OrderNotFound),
    (ccxt.ExchangeError, ExchangeRejected),
)


def classify(exc: BaseException) -> type[Exception]:
    """Which project error a ccxt exception becomes (NetworkError, OperationFailed and
    anything unexpected: ExchangeUnavailable, retried)."""
    return next((ours for theirs, ours in _ERRORS if isinstance(exc, theirs)), ExchangeUnavailable)


class Gateway:
    """Clients for every configured venue, and the one way to call them."""

    def __init__(self, settings: VenueSettings, keys: dict[str, dict[str, SecretStr]] | None = None):
        self.settings = settings
        self.specs = {s.name: s for s in settings.venue_specs}
        self.keys = keys or {}
        self._clients: dict[str, Any] = {}
        self._stream_clients: dict[str, Any] = {}
        self._cooldown_until: dict[str, float] = {}
        for value in (settings.sim_api_key, settings.sim_api_secret):
            register_secret(value)

    async def __aenter__(self) -> Gateway:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def venues(self) -> list[str]:
        return list(self.specs)

    def client(self, venue: str) -> Any:
        if venue not in self.specs:
            raise KeyError(f"unknown venue {venue!r}; configured: {', '.join(self.specs) or 'none'}")
        if venue not in self._clients:
            self._clients[venue] = self._new_client(venue, streaming=False)
        return self._clients[venue]

    def stream_client(self, venue: str) -> Any | None:
        """The venue's ccxt.pro client for its websocket streams (its own connections, apart
        from the REST client's), or None when ccxt.pro cannot stream from it."""
        if venue not in self._stream_clients:
            client = self._new_client(venue, streaming=True)
            if client is not None and not client.has.get("watchOrderBook"):
                client = None
            self._stream_clients[venue] = client
        return self._stream_clients[venue]

    def _new_client(self, venue: str, *, streaming: bool) -> Any:
        spec = self.specs[venue]
        creds = self.keys.get(venue)
        timeout = self.settings.exchange_timeout_ms
        if spec.kind == "sim":
            key = creds["apiKey"] if creds else self.settings.sim_api_key
            secret = creds["secret"] if creds else self.settings.sim_api_secret
            return sim_client(spec.target, key.get_secret_value(), secret.get_secret_value(),
                              timeout_ms=timeout, streaming=streaming)
        return real_client(spec.target, creds or {}, timeout_ms=timeout, streaming=streaming)

    async def markets(self, venue: str) -> Any:
        """The venue's client with its markets loaded (one ``load_markets`` call the first time)."""
        client = self.client(venue)
        if not client.markets:
            await self.call(venue, "load_markets")
        return client

    async def close(self) -> None:
        clients, self._clients = [*self._clients.values(), *self._stream_clients.values()], {}
        self._stream_clients = {}
        for client in clients:
            if client is None:
                continue
            try:
                await client.close()
            except Exception as exc:  # closing must not hide the error that got us here
                log.warning("exchange_close_failed", error=repr(exc))

    async def _wait_cooldown(self, venue: str) -> None:
        remaining = self._cooldown_until.get(venue, 0.0) - time.monotonic()
        if remaining > 0:
            metrics.EXCHANGE_BACKOFF.labels(venue).set(remaining)
            await asyncio.sleep(remaining)
            metrics.EXCHANGE_BACKOFF.labels(venue).set(0)

    async def call(self, venue: str, method: str, *args: Any, retries: int | None = None,
                   **kwargs: Any) -> Any:
        """Call ``client.<method>(*args, **kwargs)``, retrying transient errors."""
        attempts = self.settings.exchange_retries if retries is None else retries
        backoff = Backoff(initial=0.25, maximum=10.0)
        client = self.client(venue)
        fn = getattr(client, method)
        for attempt in range(attempts + 1):
            await self._wait_cooldown(venue)
            metrics.EXCHANGE_REQUESTS.labels(venue, method).inc()
            started = time.perf_counter()
            try:
                result = await fn(*args, **kwargs)
            except ccxt.BaseError as exc:
                metrics.EXCHANGE_ERRORS.labels(venue, type(exc).__name__).inc()
                kind = classify(exc)
                answered = not isinstance(exc, ccxt.RequestTimeout | ccxt.ExchangeNotAvailable)
                metrics.EXCHANGE_UP.labels(venue).set(1 if answered else 0)
                message = f"{venue} {method}: {type(exc).__name__}: {str(exc)[:300]}"
                if issubclass(kind, ExchangeRejected):
                    raise kind(message, type(exc).__name__) from exc
                if kind is ExchangeAuthError:
                    raise ExchangeAuthError(message) from exc
                if isinstance(exc, ccxt.DDoSProtection | ccxt.RateLimitExceeded):
                    # everyone calling this venue waits, not only this call: as long as the
                    # venue's Retry-After says, else a backoff of at least a second
                    pause = _retry_after(client) or max(1.0, backoff.next() * 4)
                    self._cooldown_until[venue] = max(self._cooldown_until.get(venue, 0.0),
                                                      time.monotonic() + pause)
                    log.warning("exchange_rate_limited", venue=venue, method=method,
                                cooldown_s=round(pause, 2))
                if attempt >= attempts:
                    raise ExchangeUnavailable(message) from exc
                metrics.EXCHANGE_RETRIES.labels(venue).inc()
                await asyncio.sleep(backoff.next())  # then the cool-down, if any
            else:
                metrics.EXCHANGE_UP.labels(venue).set(1)
                return result
            finally:
                metrics.EXCHANGE_LATENCY.labels(venue, method).observe(time.perf_counter() - started)
        raise AssertionError("unreachable")

    async def create_order(self, venue: str, symbol: str, order_type: str, side: str,
                           amount: float, price: float | None = None, *, client_order_id: str,
                           params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Place an order at most once.

        The client order id is deterministic (the caller derives it from the opportunity or
        plan), so after a timeout or any transient error the gateway first asks the venue
        whether an order with that id exists, and only re-sends if it does not. The venue
        itself refuses a reused id; that refusal returns the order already placed.

        Raises ``ExchangeRejected`` when the venue refuses the order, and
        ``ExchangeUnavailable`` when the venue cannot be reached to place it or to tell
        whether it was placed: the outcome is then unknown and must be reconciled later.
        """
        order_params = {**(params or {}), "clientOrderId": client_order_id}
        backoff = Backoff(initial=0.25, maximum=5.0)
        for attempt in range(self.settings.exchange_retries + 1):
            try:
                return await self.call(venue, "create_order", symbol, order_type, side, amount,
                                       price, order_params, retries=0)
            except DuplicateOrder:
                # an earlier attempt (ours, or a redelivered message's) got through; that
                # order is the answer
                existing = await self.find_order(venue, symbol, client_order_id)
                if existing is None:
                    raise
                log.info("order_already_placed", venue=venue, client_order_id=client_order_id)
                return existing
            except ExchangeUnavailable as exc:
                existing = await self.find_order(venue, symbol, client_order_id)
                if existing is not None:
                    log.info("order_found_after_error", venue=venue, client_order_id=client_order_id)
                    return existing
                if attempt >= self.settings.exchange_retries:
                    raise
                log.warning("order_resend", venue=venue, client_order_id=client_order_id,
                            error=str(exc)[:200])
                await asyncio.sleep(backoff.next())
        raise AssertionError("unreachable")

    async def find_order(self, venue: str, symbol: str, client_order_id: str) -> dict[str, Any] | None:
        """The order with this client id, or None if the venue has never seen it."""
        try:
            return await self.call(venue, "fetch_order", None, symbol,
                                   {"origClientOrderId": client_order_id})
        except OrderNotFound:
            return None


def open_gateway(settings: VenueSettings) -> Gateway:
    """A gateway with keys from the encrypted file when it exists or a real venue needs it."""
    from shared import keys

    needs_keys = any(s.kind == "ccxt" for s in settings.venue_specs)
    loaded: dict[str, dict[str, SecretStr]] = {}
    if settings.keys_file.exists() or needs_keys:
        loaded = keys.load_keys(settings.keys_file)
    return Gateway(settings, loaded)
