"""The project's small error vocabulary, translated at each boundary.

::

    CseError
     ├── TransientError        retry with backoff (broker away, store timeout, 429)
     │    └── BrokerUnavailable
     └── FatalError            stop the process, alert (bad config, auth refused)
          ├── settings.SettingsError
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
