"""The dead-letter topic's message format, and reading it back (`remsguard deadletter`).

A dead letter is the raw input (cut at `DEAD_LETTER_MAX_BYTES`), keyed like the input, with
headers `reason` (a `RejectionReason` code), `detail`, `source` (`topic/partition/offset`,
or `publish` for a line no input topic could take) and, when cut, `truncated` (the original
size). The processor writes them for every input it refuses; `publish` and
`simulate --kafka` write them for lines they cannot route.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

__all__ = ["DEAD_LETTER_MAX_BYTES", "DeadLetter", "dead_letter", "read_dead_letters"]

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


def read_dead_letters(
    bootstrap: str, topic: str, timeout_seconds: float, partitions: Sequence[int] | None = None
) -> Iterator[DeadLetter]:
    """Every dead letter now on `topic`, oldest first per partition; stops at the end offsets
    read when it starts (a bounded read, however busy the topic)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        bootstrap_timeout_ms=int(timeout_seconds * 1000),
    )
    try:
        numbers = partitions if partitions is not None else consumer.partitions_for_topic(topic)
        tps = [TopicPartition(topic, p) for p in sorted(numbers or ())]
        if not tps:
            return
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = {tp: end for tp, end in consumer.end_offsets(tps).items() if end > 0}
        while ends:
            batch = consumer.poll(timeout_ms=int(timeout_seconds * 1000), max_records=1000)
            if not batch:
                break
            for tp, records in batch.items():
                for record in records:
                    if tp in ends and record.offset < ends[tp]:
                        yield DeadLetter.of(record)
                if tp in ends and consumer.position(tp) >= ends[tp]:
                    del ends[tp]
    finally:
        consumer.close()
