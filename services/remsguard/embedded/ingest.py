"""An ingest request body to raw events: a JSON array (or one object) or NDJSON.

Framing errors of the whole body are `BodyError`s (the HTTP layer turns them into 4xx);
anything wrong with one event is that event's own rejection, decided by `decode_event`.

Work per request is bounded before any event is decoded: the body is at most
`ingest_max_body_bytes` (the HTTP layer), and a body holding more than `max_events` events is
refused as a whole (413 `too_many_events`). NDJSON lines are counted on the bytes; a JSON array
is parsed once by orjson (whose nesting limit, 1024, makes a deeper body a 400) and its length
checked before any item is re-encoded or decoded.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Final, Literal

import orjson

from remsguard.contract.decode import RejectionReason, decode_event
from remsguard.domain.decisions import Rejection
from remsguard.domain.events import Event

__all__ = ["BodyError", "BodyKind", "Incoming", "body_kind", "decode_body"]

BodyKind = Literal["json", "ndjson"]

_JSON_TYPES: Final = frozenset({"application/json"})
_NDJSON_TYPES: Final = frozenset(
    {
        "application/x-ndjson",
        "application/ndjson",
        "application/jsonl",
        "application/x-jsonlines",
        "application/jsonlines",
    }
)
SUPPORTED_TYPES: Final = ", ".join(sorted(_JSON_TYPES | _NDJSON_TYPES))
# A non-blank NDJSON line: what `bytes.strip()` leaves something of (ASCII whitespace).
_EVENT_LINE: Final = re.compile(rb"^[ \t\r\x0b\x0c]*[^ \t\r\n\x0b\x0c][^\n]*", re.MULTILINE)
_NOT_AN_OBJECT: Final = Rejection(
    reason=RejectionReason.NOT_AN_OBJECT.value, detail="an event must be a JSON object"
)
_TOO_DEEP: Final = Rejection(
    reason=RejectionReason.INVALID_JSON.value,
    detail="the event is nested too deeply to be read",
)


class BodyError(Exception):
    """The body as a whole cannot be read: `status` is the HTTP status to answer with."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Incoming:
    """One event of a request: its raw JSON and what the contract made of it."""

    raw: bytes
    decoded: Event | Rejection
    line: int | None = None  # 1-based NDJSON line, when the body is NDJSON


def body_kind(content_type: str | None) -> BodyKind:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media in _JSON_TYPES:
        return "json"
    if media in _NDJSON_TYPES:
        return "ndjson"
    raise BodyError(
        415,
        "unsupported_media_type",
        f"content type {media or '(none)'!r} is not supported; use one of {SUPPORTED_TYPES}",
    )


def too_many_events(max_events: int) -> BodyError:
    return BodyError(
        413,
        "too_many_events",
        f"the body holds more than {max_events} events; send at most {max_events} per request",
    )


def decode_body(body: bytes, kind: BodyKind, max_events: int) -> list[Incoming]:
    """The body's events, in order; `BodyError` for the body as a whole (413 above
    `max_events` events, before any of them is decoded)."""
    if not body.strip():
        raise BodyError(400, "empty_body", "the body holds no events")
    if kind == "ndjson":
        return _ndjson(body, max_events)
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BodyError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None
    if isinstance(doc, dict):
        return [Incoming(body, decode_event(body))]
    if not isinstance(doc, list):
        raise BodyError(400, "not_an_array", "the body must be a JSON array of event objects")
    if len(doc) > max_events:
        raise too_many_events(max_events)
    return [_item(item) for item in doc]


def _item(item: object) -> Incoming:
    """One array item, re-encoded (orjson refuses past 254 levels of nesting: a rejection)."""
    try:
        raw = orjson.dumps(item)
    except orjson.JSONEncodeError:
        return Incoming(b"", _TOO_DEEP)
    if isinstance(item, dict):
        return Incoming(raw, decode_event(raw))
    return Incoming(raw, _NOT_AN_OBJECT)


def _ndjson(body: bytes, max_events: int) -> list[Incoming]:
    # Fewer newlines than the cap cannot be too many lines; else count the non-blank ones.
    if body.count(b"\n") >= max_events and _more_lines_than(body, max_events):
        raise too_many_events(max_events)
    return [Incoming(raw, decode_event(raw), number) for number, raw in _lines(body)]


def _more_lines_than(body: bytes, limit: int) -> bool:
    return sum(1 for _ in islice(_EVENT_LINE.finditer(body), limit + 1)) > limit


def _lines(body: bytes) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, stripped line) of each non-blank line."""
    number, counted_to = 1, 0
    for match in _EVENT_LINE.finditer(body):
        start = match.start()
        number += body.count(b"\n", counted_to, start)
        counted_to = start
        yield number, match.group().strip()
