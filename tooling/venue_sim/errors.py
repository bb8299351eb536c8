"""Binance error bodies: ``{"code": -2010, "msg": "..."}`` with the HTTP status Binance uses.

The messages that ccxt matches exactly (insufficient balance, would-take for
LIMIT_MAKER) are copied verbatim; ccxt maps the rest by code (its ``binance.exceptions``
table), so the codes matter more than the wording.
"""

from __future__ import annotations

INT_RANGE = "^[0-9]{1,20}$"
DECIMAL_RANGE = r"^([0-9]{1,20})(\.[0-9]{1,20})?$"
CLIENT_ID_RANGE = r"^[\.A-Z\:/a-z0-9_-]{1,36}$"

INSUFFICIENT_BALANCE = "Account has insufficient balance for requested action."
WOULD_TAKE = "Order would immediately match and take."
DUPLICATE_ORDER = "Duplicate order sent."
UNKNOWN_ERROR = "An unknown error occurred while processing the request."


class ApiError(Exception):
    """An error answered to the client as a Binance JSON body."""

    def __init__(self, code: int, msg: str, status: int = 400,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{code}: {msg}")
        self.code = code
        self.msg = msg
        self.status = status
        self.headers = headers or {}

    def body(self) -> dict[str, object]:
        return {"code": self.code, "msg": self.msg}


def mandatory(name: str) -> ApiError:
    return ApiError(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")


def illegal(name: str, legal: str) -> ApiError:
    return ApiError(-1100, f"Illegal characters found in parameter '{name}'; legal range is '{legal}'.")


def not_valid(name: str) -> ApiError:
    return ApiError(-1130, f"Data sent for parameter '{name}' is not valid.")


def not_required(name: str) -> ApiError:
    return ApiError(-1106, f"Parameter '{name}' sent when not required.")


def not_all_read(read: int, sent: int) -> ApiError:
    return ApiError(-1104, f"Not all sent parameters were read; read '{read}' parameter(s) but was "
                           f"sent '{sent}'.")


def duplicate_param() -> ApiError:
    return ApiError(-1101, "Duplicate values for a parameter detected.")


def bad_combination() -> ApiError:
    return ApiError(-1128, "Combination of optional parameters invalid.")


def invalid_symbol() -> ApiError:
    return ApiError(-1121, "Invalid symbol.")


def filter_failure(name: str) -> ApiError:
    return ApiError(-1013, f"Filter failure: {name}")


def rejected(msg: str) -> ApiError:
    return ApiError(-2010, msg)


def unknown_order() -> ApiError:
    return ApiError(-2011, "Unknown order sent.")


def no_such_order() -> ApiError:
    return ApiError(-2013, "Order does not exist.")


def unknown_error(status: int = 500) -> ApiError:
    return ApiError(-1000, UNKNOWN_ERROR, status)
