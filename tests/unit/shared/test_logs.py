"""Secrets never reach a log line."""

from __future__ import annotations

import io
import json

import structlog
from pydantic import SecretStr

from shared import logs


def capture(**context: object) -> tuple[io.StringIO, object]:
    out = io.StringIO()
    logs.configure("info", "json", stream=out, **context)
    return out, structlog.get_logger()


def test_credential_keys_are_masked_in_json_lines() -> None:
    out, log = capture(worker="t")
    log.info("connect", api_key="AKIA123456", secret="s3cr3t-value", password="pw-1234",
             headers={"Authorization": "Bearer abcdefgh", "Accept": "json"},
             token=SecretStr("zzz-token"), venue="binance")
    line = json.loads(out.getvalue())
    assert line["api_key"] == line["secret"] == line["password"] == line["token"] == "***"
    assert line["headers"] == {"Authorization": "***", "Accept": "json"}
    assert line["venue"] == "binance" and line["worker"] == "t"
    for raw in ("AKIA123456", "s3cr3t-value", "pw-1234", "abcdefgh", "zzz-token"):
        assert raw not in out.getvalue()


def test_registered_secrets_are_masked_inside_text_and_tracebacks() -> None:
    out, log = capture()
    logs.register_secret(SecretStr("hmac-key-0123456789"))
    try:
        raise RuntimeError("signature failed for key hmac-key-0123456789")
    except RuntimeError:
        log.exception("order_failed", detail="sent hmac-key-0123456789 to venue")
    text = out.getvalue()
    assert "hmac-key-0123456789" not in text
    assert "order_failed" in text and "***" in text


def test_url_passwords_are_masked() -> None:
    out, log = capture()
    log.warning("redis_down", url="redis://:hunter2hunter2@redis:6379/0", dsn="http://u:p4ss@h/x")
    text = out.getvalue()
    assert "hunter2hunter2" not in text and "p4ss" not in text
    assert "redis://:***@redis:6379/0" in text


def test_stdlib_loggers_are_redacted_too() -> None:
    import logging

    out, _ = capture()
    logs.register_secret("lib-secret-42")
    logging.getLogger("aiokafka").error("failed with lib-secret-42")
    assert "lib-secret-42" not in out.getvalue() and "failed with ***" in out.getvalue()


def test_debug_level_keeps_library_wire_tracing_out() -> None:
    """At debug, our own debug lines and libraries' info pass; libraries' debug (every request
    on the wire) does not: it cost the arbitrage workers their healthcheck on a real cluster."""
    import logging

    out = io.StringIO()
    logs.configure(level="debug", fmt="json", stream=out)
    logs.get_logger("t").debug("own_debug_line")
    logging.getLogger("aiokafka").info("library_info_line")
    logging.getLogger("aiokafka").debug("library_wire_line")
    text = out.getvalue()
    assert "own_debug_line" in text and "library_info_line" in text
    assert "library_wire_line" not in text
