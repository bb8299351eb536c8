"""The project's small error vocabulary, translated at each boundary.

::

    CseError
     ├── TransientError        retry with backoff (broker away, store timeout, 429)
     │    ├── BrokerUnavailable
     │    └── ExchangeUnavailable   timeouts, 5xx, rate limits (ccxt NetworkError)
     ├── ExchangeRejected      the venue said no: funds, order, symbol (ccxt ExchangeError)
     │    ├── DuplicateOrder   that client order id was placed already
     │    └── OrderNotFound    the venue knows no such order
     ├── AllocationError       no allocation from these inputs (bad covariance, infeasible bounds)
     ├── PlanError             no order plan from this data (an asset without a price)
     └── FatalError            stop the process, alert (bad config, auth refused)
          ├── settings.SettingsError
          ├── ExchangeAuthError   keys refused (ccxt AuthenticationError)
          ├── keys.KeyFileError
          └── StaleLeader      a fencing token was refused: this process is no leader

Adapters wrap library errors with ``raise ... from exc`` so callers catch ours.
"""

from __future__ import annotations


class CseError(Exception):
    """Base of every error this project raises on purpose."""


class TransientError(CseError):
    """A failure that may succeed when retried later."""


class BrokerUnavailable(TransientError):
    """Kafka could not be reached or refused the request."""


class FatalError(CseError):
    """A failure that retrying cannot fix; the process should stop (exit code 2)."""


class StaleLeader(FatalError):
    """A write was attempted with a fencing token older than the current leader's."""


class ExchangeUnavailable(TransientError):
    """The venue did not answer, answered with a server error, or rate-limited us."""


class ExchangeRejected(CseError):
    """The venue refused the request (insufficient funds, invalid order, unknown symbol...).

    Retrying the same request cannot help; the caller decides (skip, hedge, alert).
    ``kind`` is the ccxt exception class name.
    """

    def __init__(self, message: str, kind: str):
        super().__init__(message)
        self.kind = kind


class DuplicateOrder(ExchangeRejected):
    """The venue already holds an order with this client order id (ccxt DuplicateOrderId)."""


class OrderNotFound(ExchangeRejected):
    """The venue has no order with that id or client order id (ccxt OrderNotFound)."""


class AllocationError(CseError):
    """The allocation inputs are invalid or admit no solution; the message names the check."""


class PlanError(CseError):
    """A rebalance plan cannot be made from the data at hand; the message names what is missing."""


class ExchangeAuthError(FatalError):
    """The venue refused our credentials or permissions."""
