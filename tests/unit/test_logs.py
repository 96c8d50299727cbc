"""configure_logging: JSON lines, stdlib routed through structlog, secrets never rendered."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from pydantic import SecretStr

from remsguard.adapters.logs import REDACTED, configure_logging, is_secret_key


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)
    logging.captureWarnings(False)
    structlog.reset_defaults()


def _json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_structlog_event_is_one_json_line_with_iso_utc_timestamp(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("info", "json")
    structlog.get_logger("remsguard.test").info("session.started", clinic="c-1", count=3)

    [record] = _json_lines(capsys.readouterr().err)
    assert record["event"] == "session.started"
    assert record["clinic"] == "c-1"
    assert record["count"] == 3
    assert record["level"] == "info"
    assert record["logger"] == "remsguard.test"
    assert record["timestamp"].endswith("Z")


def test_secrets_by_key_and_secretstr_values_never_render(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("info", "json")
    structlog.get_logger().info(
        "connecting",
        token="tok-123-abc",
        db_password="hunter2-xyz",
        Authorization="Bearer eyJhbGciOi",
        api_key="ak-999",
        signing_key=SecretStr("sk-very-secret"),
        headers={"x-api-key": "nested-key-42", "accept": "json"},
        key=SecretStr("plain-named-but-secret"),
        harmless="visible",
    )

    err = capsys.readouterr().err
    for secret in (
        "tok-123-abc",
        "hunter2-xyz",
        "eyJhbGciOi",
        "ak-999",
        "sk-very-secret",
        "nested-key-42",
        "plain-named-but-secret",
    ):
        assert secret not in err
    [record] = _json_lines(err)
    assert record["token"] == REDACTED
    assert record["key"] == REDACTED
    assert record["headers"] == {"x-api-key": REDACTED, "accept": "json"}
    assert record["harmless"] == "visible"


def test_stdlib_records_come_out_as_json_and_are_redacted(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("info", "json")
    logging.getLogger("aiokafka.consumer").warning(
        "rebalance on %s", "remsguard.events", extra={"sasl_password": "pw-777"}
    )

    err = capsys.readouterr().err
    assert "pw-777" not in err
    [record] = _json_lines(err)
    assert record["event"] == "rebalance on remsguard.events"
    assert record["logger"] == "aiokafka.consumer"
    assert record["level"] == "warning"
    assert record["sasl_password"] == REDACTED


def test_exceptions_render_without_local_variables(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", "json")
    secret_in_a_local = "local-secret-555"
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        structlog.get_logger().exception("failed")
    assert secret_in_a_local

    err = capsys.readouterr().err
    assert "local-secret-555" not in err
    [record] = _json_lines(err)
    assert record["exception"][0]["exc_type"] == "RuntimeError"


def test_level_filters_and_calling_twice_does_not_duplicate(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("debug", "json")
    configure_logging("warning", "json")
    log = structlog.get_logger()
    log.info("dropped")
    log.warning("kept")
    logging.getLogger("faust").info("dropped too")

    records = _json_lines(capsys.readouterr().err)
    assert [r["event"] for r in records] == ["kept"]


def test_console_format_is_not_json_but_still_redacts(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", "console")
    structlog.get_logger().info("hello", password="pw-console-1")

    err = capsys.readouterr().err
    assert "hello" in err
    assert "pw-console-1" not in err
    with pytest.raises(json.JSONDecodeError):
        json.loads(err.splitlines()[0])


def test_auto_is_json_when_stderr_is_not_a_tty(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", "auto")
    structlog.get_logger().info("auto")
    assert _json_lines(capsys.readouterr().err)[0]["event"] == "auto"


def test_unknown_level_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown log level"):
        configure_logging("loud", "json")


@pytest.mark.parametrize(
    ("key", "secret"),
    [
        ("token", True),
        ("refresh_token", True),
        ("Authorization", True),
        ("X-Api-Key", True),
        ("signing_key", True),
        ("client_secret", True),
        ("clinic", False),
        ("rule", False),
    ],
)
def test_secret_key_names(key: str, secret: bool) -> None:
    assert is_secret_key(key) is secret
