"""The main service's metrics: market-data ingest (``cse_md_*``), polled and streamed."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# ingest
BOOKS_PUBLISHED = Counter("cse_md_books_published_total", "Order books published", ["venue"])
BOOKS_UNCHANGED = Counter("cse_md_books_unchanged_total", "Books skipped as unchanged", ["venue"])
FETCH_ERRORS = Counter("cse_md_fetch_errors_total", "Failed order-book fetches", ["venue"])
BOOK_AGE = Gauge("cse_md_book_age_seconds",
                 "Age of the freshest book from the venue (venue timestamp)", ["venue"])
PAIRS_OWNED = Gauge("cse_md_pairs_owned", "Venue/symbol pairs this replica ingests")

# ingest over websocket streams
PAIRS_STREAMING = Gauge("cse_md_pairs_streaming",
                        "Pairs of the venue this replica follows over a live websocket stream", ["venue"])
PAIRS_POLLED = Gauge("cse_md_pairs_polled",
                     "Pairs of the venue this replica polls over REST (by configuration, or while "
                     "their stream is down or silent)", ["venue"])
STREAM_UP = Gauge("cse_md_stream_up",
                  "1 when every streamed pair of the venue this replica owns is delivering", ["venue"])
STREAM_RESYNCS = Counter("cse_md_stream_resyncs_total",
                         "Gaps in a diff stream, resynced from a new snapshot", ["venue"])
STREAM_RECONNECTS = Counter("cse_md_stream_reconnects_total",
                            "Stream connections lost and watched again", ["venue"])
STREAM_LAG = Histogram("cse_md_stream_lag_seconds",
                       "Receive time minus the venue's event time of a streamed book", ["venue"],
                       buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
EVENT_TO_BUS = Histogram("cse_md_event_to_bus_seconds",
                         "Venue event time of a streamed book to its acknowledgement by the broker",
                         ["venue"], buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                             1, 2.5, 5))
