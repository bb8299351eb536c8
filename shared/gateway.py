"""The exchange gateway: the one place that builds ccxt clients.

Workers reach exchanges only through ``ccxt.async_support``. A venue is configured by
name; it is either a real exchange (a ccxt id, keys from the encrypted key file) or a
venue-sim paper exchange reached by URL (an unmodified ``ccxt.binance`` whose URLs point
at it).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import ccxt.async_support as ccxt_async


def point_binance_at(exchange: Any, base_url: str) -> None:
    """Rewrite every REST URL of a ccxt Binance client to ``base_url``, keeping the paths.

    Covers ``urls['api']``, ``urls['test']`` and ``urls['demo']`` (``/api/v3``, ``/sapi/v1``,
    ...); the websocket dict under ``ws`` is left alone.
    """
    base = base_url.rstrip("/")
    for section in ("api", "test", "demo"):
        urls = exchange.urls.get(section)
        if not isinstance(urls, dict):
            continue
        for key, old in list(urls.items()):
            if isinstance(old, str):
                urls[key] = base + urlsplit(old).path


def sim_client(base_url: str, api_key: str | None = None, secret: str | None = None,
               *, timeout_ms: int = 10_000, rate_limit: bool = False) -> Any:
    """A ``ccxt.async_support.binance`` talking to a venue-sim at ``base_url``.

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
    exchange = ccxt_async.binance(config)
    point_binance_at(exchange, base_url)
    return exchange
