"""Logging for every remsguard process: structlog, JSON lines on stderr, secrets redacted.

Call `configure_logging` once at start-up (the CLI does it from `Settings`). Records from
the standard library (faust, aiokafka, uvicorn, ...) go through the same processors and
renderer, so a process writes one format only.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any, Literal, TextIO

import structlog
from pydantic import SecretBytes, SecretStr

REDACTED = "[redacted]"

# A key containing any of these (case-insensitive, `-` read as `_`) never shows its value.
_SECRET_KEY_PARTS = (
    "token",
    "password",
    "passwd",
    "secret",
    "authorization",
    "api_key",
    "apikey",
    "signing_key",
    "private_key",
)

# Libraries that install their own handlers; theirs are removed so records reach ours.
_ROUTED_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "faust", "aiokafka", "kafka")


def is_secret_key(key: object) -> bool:
    name = str(key).lower().replace("-", "_")
    return any(part in name for part in _SECRET_KEY_PARTS)


def _redact_value(key: object, value: Any) -> Any:
    if is_secret_key(key) or isinstance(value, SecretStr | SecretBytes):
        return REDACTED
    if isinstance(value, Mapping):
        return {k: _redact_value(k, v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value(None, v) for v in value]
    return value


def redact_secrets(
    _logger: Any, _method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: secret-named keys and Secret* values become "[redacted]"."""
    for key, value in list(event_dict.items()):
        if key == "event" and not isinstance(value, SecretStr | SecretBytes):
            continue
        event_dict[key] = _redact_value(key, value)
    return event_dict


def _json_key(key: object) -> str:
    if isinstance(key, tuple):
        return "/".join(str(part) for part in key)
    return str(key)


def _json_safe(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k if isinstance(k, str) else _json_key(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def json_safe_keys(
    _logger: Any, _method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: mapping keys that JSON cannot hold (tuples, ...) become strings,
    so a JSON log line is always valid JSON whatever a caller logs."""
    for key, value in list(event_dict.items()):
        if isinstance(value, Mapping | list | tuple):
            event_dict[key] = _json_safe(value)
    return event_dict


_format = {"json": True, "debug": False}


def set_debug(on: bool) -> None:
    """`--debug`: tracebacks and the client libraries' own connection errors are shown."""
    _format["debug"] = on


def debug_enabled() -> bool:
    return _format["debug"]


def announce(message: str, **fields: Any) -> None:
    """One start-up line the operator needs (an address), whatever the log level: a JSON
    object in JSON mode (so every line of the log parses), else the message itself."""
    if _format["json"]:
        from datetime import UTC, datetime

        import orjson

        doc = {
            "event": message,
            **fields,
            "logger": "remsguard",
            "level": "notice",
            "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        }
        line = orjson.dumps(doc, default=str).decode()
    else:
        line = message
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


class _StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever `sys.stderr` is at emit time (survives stream swaps in tests)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def _level_number(level: str) -> int:
    number = logging.getLevelNamesMapping().get(level.upper())
    if number is None:
        raise ValueError(f"unknown log level {level!r}")
    return number


def configure_logging(level: str, fmt: Literal["auto", "json", "console"] = "auto") -> None:
    """Configure structlog and the standard library; safe to call again (replaces, never adds)."""
    number = _level_number(level)
    console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    _format["json"] = not console

    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        redact_secrets,
    ]
    renderer: Any
    if console:
        # Plain tracebacks: rich/better-exceptions would print local variables (secrets).
        renderer = structlog.dev.ConsoleRenderer(
            colors=sys.stderr.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
        final: list[Any] = [structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer]
    else:
        renderer = structlog.processors.JSONRenderer(sort_keys=False)
        final = [
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            json_safe_keys,
            # Structured tracebacks without local variables, which may hold secrets.
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            ),
            renderer,
        ]

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            structlog.stdlib.PositionalArgumentsFormatter(),
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Not cached: a logger bound before configure_logging must still pick this up.
        cache_logger_on_first_use=False,
    )

    handler = _StderrHandler()
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.ExtraAdder(), *shared],
            processors=final,
        )
    )

    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _StderrHandler)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(number)

    for name in _ROUTED_LOGGERS:
        library_logger = logging.getLogger(name)
        library_logger.handlers.clear()
        library_logger.propagate = True

    logging.captureWarnings(True)
