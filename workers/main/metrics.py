"""The main service's metrics: market-data ingest (``cse_md_*``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

# ingest
BOOKS_PUBLISHED = Counter("cse_md_books_published_total", "Order books published", ["venue"])
BOOKS_UNCHANGED = Counter("cse_md_books_unchanged_total", "Books skipped as unchanged", ["venue"])
FETCH_ERRORS = Counter("cse_md_fetch_errors_total", "Failed order-book fetches", ["venue"])
BOOK_AGE = Gauge("cse_md_book_age_seconds",
                 "Age of the freshest book from the venue (venue timestamp)", ["venue"])
PAIRS_OWNED = Gauge("cse_md_pairs_owned", "Venue/symbol pairs this replica polls")
