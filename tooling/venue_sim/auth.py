"""Request parameters, HMAC-SHA256 signatures, timestamps and request weight.

Binance signs ``totalParams``: the query string followed by the body, exactly as sent
(still percent-encoded), without the ``signature`` parameter. ccxt puts ``signature``
last, so the signed text is everything before ``&signature=``; we remove that pair
wherever it is. The text is taken from ``request.rel_url.raw_query_string`` and the raw
body: a decoded query string breaks on escapes such as ``a%3Ab%2Fc``.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import urllib.parse
from collections.abc import Iterable
from decimal import Decimal

from tooling.venue_sim import errors
from tooling.venue_sim.errors import ApiError
from tooling.venue_sim.symbols import parse_decimal

MAX_RECV_WINDOW = 60_000
DEFAULT_RECV_WINDOW = 5_000
_INT = re.compile(r"^[0-9]{1,20}$")
_HEX = re.compile(r"^[0-9a-fA-F]{64}$")


def parse_pairs(raw: str) -> list[tuple[str, str]]:
    """``a=1&b=2`` -> pairs; refuses undecodable escapes and absurd parameter counts."""
    if not raw:
        return []
    try:
        return urllib.parse.parse_qsl(raw, keep_blank_values=True, errors="strict", max_num_fields=200)
    except UnicodeDecodeError:
        raise ApiError(-1100, "Illegal characters found in a parameter.") from None
    except ValueError:
        raise ApiError(-1101, "Too many parameters sent for this endpoint.") from None


class Params:
    """The request's parameters, with Binance's checks and error codes when reading them."""

    def __init__(self, pairs: Iterable[tuple[str, str]]) -> None:
        self.values: dict[str, str] = {}
        for key, value in pairs:
            if key in self.values:
                raise errors.duplicate_param()
            self.values[key] = value

    def __contains__(self, name: str) -> bool:
        return bool(self.values.get(name))

    def text(self, name: str, required: bool = False) -> str | None:
        value = self.values.get(name)
        if value is None or value == "":
            if required:
                raise errors.mandatory(name)
            return None
        return value

    def integer(self, name: str, required: bool = False, lo: int = 0, hi: int = 2**63 - 1
                ) -> int | None:
        value = self.text(name, required)
        if value is None:
            return None
        if not _INT.match(value):
            raise errors.illegal(name, errors.INT_RANGE)
        out = int(value)
        if not lo <= out <= hi:
            raise errors.not_valid(name)
        return out

    def decimal(self, name: str, required: bool = False) -> Decimal | None:
        value = self.text(name, required)
        if value is None:
            return None
        out = parse_decimal(value)
        if out is None:
            raise errors.illegal(name, errors.DECIMAL_RANGE)
        return out

    def choice(self, name: str, allowed: Iterable[str], error: ApiError, required: bool = False
               ) -> str | None:
        value = self.text(name, required)
        if value is None:
            return None
        if value not in allowed:
            raise error
        return value


def strip_signature(raw: str) -> str:
    """The raw text without its ``signature=...`` pair(s)."""
    if "signature=" not in raw:
        return raw
    return "&".join(p for p in raw.split("&") if not p.startswith("signature="))


def sign(secret: bytes, payload: str) -> str:
    return hmac.new(secret, payload.encode(), hashlib.sha256).hexdigest()


def check_signed(params: Params, secret: bytes, raw_query: str, raw_body: str, now_ms: int) -> None:
    """Timestamp window and signature, with Binance's codes (-1102, -1131, -1021, -1022)."""
    ts = params.integer("timestamp", required=True)
    recv = params.integer("recvWindow")
    recv = DEFAULT_RECV_WINDOW if recv is None else recv
    if recv > MAX_RECV_WINDOW:
        raise ApiError(-1131, "recvWindow must be less than 60000")
    signature = params.text("signature", required=True)
    assert ts is not None and signature is not None
    if ts >= now_ms + 1000:
        raise ApiError(-1021, "Timestamp for this request was 1000ms ahead of the server's time.")
    if now_ms - ts > recv:
        raise ApiError(-1021, "Timestamp for this request is outside of the recvWindow.")
    if not _HEX.match(signature):
        raise ApiError(-1022, "Signature for this request is not valid.")
    expected = sign(secret, strip_signature(raw_query) + strip_signature(raw_body))
    if not hmac.compare_digest(expected, signature.lower()):
        raise ApiError(-1022, "Signature for this request is not valid.")


class WeightLimiter:
    """Request weight per key per wall-clock window (a minute, as Binance counts it)."""

    def __init__(self, limit: int, window_s: int = 60) -> None:
        self.limit = limit
        self.window_ms = window_s * 1000
        self._minute = -1
        self._used: dict[str, int] = {}
        self._refused: set[str] = set()

    def charge(self, key: str, weight: int, now_ms: int) -> tuple[bool, int, int]:
        """(allowed, weight used in this window, seconds until the window resets)."""
        window = now_ms // self.window_ms
        if window != self._minute:
            self._minute = window
            self._used.clear()
            self._refused.clear()
        used = self._used.get(key, 0)
        retry = max(1, math.ceil(((window + 1) * self.window_ms - now_ms) / 1000))
        if used + weight > self.limit:
            return False, used, retry
        self._used[key] = used + weight
        return True, used + weight, retry

    def first_refusal(self, key: str) -> bool:
        """True the first time ``key`` is refused in the current window."""
        if key in self._refused:
            return False
        self._refused.add(key)
        return True
