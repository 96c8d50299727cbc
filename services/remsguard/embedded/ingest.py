"""An ingest request body to raw events: a JSON array (or one object) or NDJSON.

Framing errors of the whole body are `BodyError`s (the HTTP layer turns them into 4xx);
anything wrong with one event is that event's own rejection, decided by `decode_event`.
"""

from __future__ import annotations

from dataclasses import dataclass
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


def decode_body(body: bytes, kind: BodyKind) -> list[Incoming]:
    if not body.strip():
        raise BodyError(400, "empty_body", "the body holds no events")
    if kind == "ndjson":
        return _ndjson(body)
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BodyError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None
    if isinstance(doc, dict):
        return [Incoming(body, decode_event(body))]
    if not isinstance(doc, list):
        raise BodyError(400, "not_an_array", "the body must be a JSON array of event objects")
    out: list[Incoming] = []
    for item in doc:
        raw = orjson.dumps(item)
        if isinstance(item, dict):
            out.append(Incoming(raw, decode_event(raw)))
        else:
            out.append(
                Incoming(
                    raw,
                    Rejection(
                        reason=RejectionReason.NOT_AN_OBJECT.value,
                        detail="an event must be a JSON object",
                    ),
                )
            )
    return out


def _ndjson(body: bytes) -> list[Incoming]:
    out: list[Incoming] = []
    for number, line in enumerate(body.split(b"\n"), start=1):
        raw = line.strip()
        if raw:
            out.append(Incoming(raw, decode_event(raw), number))
    return out
