"""Reading the dead-letter topic back (`remsguard deadletter list|replay`).

The message format is the wire contract's (`remsguard.contract.dead_letters`); its names are
re-exported here for the modules that still import them from this one.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from remsguard.contract.dead_letters import DEAD_LETTER_MAX_BYTES, DeadLetter, dead_letter

__all__ = ["DEAD_LETTER_MAX_BYTES", "DeadLetter", "dead_letter", "read_dead_letters"]


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
