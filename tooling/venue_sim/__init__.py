"""venue-sim: a paper exchange that speaks the Binance spot REST dialect.

An unmodified ``ccxt.async_support.binance`` whose URLs point at it (see
:func:`shared.gateway.sim_client`) can load markets, read books, tickers and candles,
and trade: limit (GTC/IOC/FOK), LIMIT_MAKER and market orders (also by quote amount),
with real HMAC-SHA256 authentication, Binance's error codes and request-weight limits.

Prices come from a seeded, correlated random-walk model (:mod:`.market`) or from a
recording (:mod:`.replay`); fills are honest (:mod:`.engine`): market orders walk the
book, resting orders fill when the market crosses them, fees are charged, balances are
locked and conserved. State lives in memory; fills are also appended to a JSON-lines
journal.

Modules: :mod:`.config` (command line), :mod:`.symbols` (assets, filters, decimals),
:mod:`.market` (price model), :mod:`.source` (books and candles from the model),
:mod:`.replay`, :mod:`.book`, :mod:`.engine`, :mod:`.auth` (parameters, signatures,
weights), :mod:`.errors`, :mod:`.server` (HTTP endpoints).

Development key pair: ``venue-sim-dev-key`` / ``venue-sim-dev-secret``.
"""

from tooling.venue_sim.config import DEV_API_KEY, DEV_API_SECRET

__all__ = ["DEV_API_KEY", "DEV_API_SECRET"]
