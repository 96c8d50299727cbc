"""The dead-letter topic's message format (standard library only): writing one, reading one back.

A dead letter is the raw input (cut at `DEAD_LETTER_MAX_BYTES`), keyed like the input, with
headers `reason` (a `RejectionReason` code), `detail`, `source` (`topic/partition/offset`,
or `publish` for a line no input topic could take) and, when cut, `truncated` (the original
size). The processor writes them for every input it refuses; `publish` and
`simulate --kafka` write them for lines they cannot route.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

__all__ = ["DEAD_LETTER_MAX_BYTES", "DeadLetter", "dead_letter"]

DEAD_LETTER_MAX_BYTES: Final = 512 * 1024
"""Raw values above this are cut in the dead-letter copy (header `truncated`: the size)."""


def dead_letter(
    raw: bytes, reason: str, detail: str, source: str
) -> tuple[bytes, tuple[tuple[str, bytes], ...]]:
    """(value, headers) of the dead letter of `raw`."""
    headers: list[tuple[str, bytes]] = [
        ("reason", reason.encode()),
        ("detail", detail.encode("utf-8", "replace")),
        ("source", source.encode("utf-8", "replace")),
    ]
    value = raw
    if len(raw) > DEAD_LETTER_MAX_BYTES:
        value = raw[:DEAD_LETTER_MAX_BYTES]
        headers.append(("truncated", str(len(raw)).encode()))
    return value, tuple(headers)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes
    reason: str
    detail: str
    source: str
    truncated: int | None

    @classmethod
    def of(cls, record: Any) -> DeadLetter:
        """From a consumed record (`partition`, `offset`, `timestamp`, `key`, `value`,
        `headers` as kafka-python's `ConsumerRecord` has them)."""
        headers = {name: value for name, value in record.headers or ()}

        def text(name: str) -> str:
            raw = headers.get(name)
            return raw.decode("utf-8", "replace") if raw is not None else ""

        cut = text("truncated")
        return cls(
            partition=record.partition,
            offset=record.offset,
            timestamp_ms=record.timestamp,
            key=record.key,
            value=record.value or b"",
            reason=text("reason") or "unknown",
            detail=text("detail"),
            source=text("source"),
            truncated=int(cut) if cut.isdigit() else None,
        )

    def summary(self) -> dict[str, Any]:
        return {
            "partition": self.partition,
            "offset": self.offset,
            "reason": self.reason,
            "detail": self.detail,
            "source": self.source,
            "key": None if self.key is None else self.key.decode("utf-8", "replace"),
            "bytes": self.truncated or len(self.value),
            "truncated": self.truncated is not None,
            "value": self.value[:200].decode("utf-8", "replace"),
        }
