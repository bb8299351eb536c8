"""structlog, configured once per process.

JSON lines on stdout when not attached to a terminal (containers, the embedded stack's
log files), a readable console renderer on a TTY. Secrets are redacted twice over: any
key that looks like a credential has its value replaced, and every secret value the
process registered with :func:`register_secret` is masked wherever it appears in a
string (an exception message, a URL with a password, ...).
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any

import structlog
from pydantic import SecretStr

MASK = "***"
_SECRET_KEY = re.compile(
    r"(api[_-]?key|apikey|secret|token|passw(or)?d|passphrase|signature|authorization|"
    r"private[_-]?key|credential)",
    re.IGNORECASE,
)
# user:password@ in URLs (redis://:pw@host, http://user:pw@host)
_URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]+)@")

_registered: set[str] = set()


def register_secret(value: str | SecretStr | None) -> None:
    """Mask ``value`` wherever it would appear in a log line from now on."""
    raw = value.get_secret_value() if isinstance(value, SecretStr) else value
    if raw and len(raw) >= 4:  # masking 1-3 characters would garble ordinary text
        _registered.add(raw)


def redact_text(text: str) -> str:
    """Mask registered secrets and URL passwords inside free text."""
    for secret in _registered:
        if secret in text:
            text = text.replace(secret, MASK)
    return _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)


def _redact_value(key: str | None, value: Any) -> Any:
    if key is not None and _SECRET_KEY.search(key) and value not in (None, ""):
        return MASK
    if isinstance(value, SecretStr):
        return MASK
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, MutableMapping):
        return {k: _redact_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_redact_value(None, v) for v in value)
    if isinstance(value, BaseException):
        return redact_text(repr(value))
    return value


def redact_processor(_logger: Any, _name: str, event_dict: MutableMapping[str, Any]) -> Any:
    """structlog processor: the last line of defence before rendering."""
    for key in list(event_dict):
        event_dict[key] = _redact_value(key if key != "event" else None, event_dict[key])
    return event_dict


def _redact_rendered(_logger: Any, _name: str, line: str) -> str:
    # exc_info is rendered into text after the dict processors ran: mask it too.
    return redact_text(line) if isinstance(line, str) else line


def configure(level: str = "info", fmt: str = "auto", stream: Any = None, **context: Any) -> None:
    """Configure structlog and stdlib logging for the whole process."""
    stream = stream or sys.stdout
    use_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_processor,
    ]
    renderer: Iterable[Any]
    if use_json:
        renderer = [
            structlog.processors.dict_tracebacks,
            structlog.processors.JSONRenderer(),
            _redact_rendered,
        ]
    else:
        renderer = [structlog.dev.ConsoleRenderer(colors=stream.isatty()), _redact_rendered]
    structlog.configure(
        processors=[*shared, *renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
    # Libraries (aiokafka, aiohttp) log through stdlib: route them through the same
    # redaction and format, at WARNING, or INFO when we are debugging. Never their DEBUG: it
    # traces every request on the wire (aiokafka logs each fetch, about a hundred lines a
    # second per consumer), and a worker doing that misses its own healthcheck.
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO if level == "debug" else logging.WARNING)
    structlog.contextvars.clear_contextvars()
    if context:
        structlog.contextvars.bind_contextvars(**context)


def get_logger(name: str | None = None, **initial: Any) -> Any:
    """A structlog logger; ``name`` becomes the ``component`` field."""
    if name:
        initial["component"] = name
    # a lazy proxy: module-level loggers created before configure() still follow it
    return structlog.get_logger(**initial)
