"""The Kafka path's expected failures, each with a message that says what to do.

Every command of the Kafka path raises one of these for a failure an operator can fix (a
broker out of reach, a topic with the wrong partition count, a message the broker refused);
the CLI prints its message in one or two lines and exits with `exit_code` (2: configuration
or usage, 1: runtime), the traceback only behind `--debug`. `translate` turns the client
libraries' own connection errors into `BrokerUnreachable`.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "BrokerUnreachable",
    "DeliveryFailed",
    "KafkaPathError",
    "TopicLayoutError",
    "translate",
]


class KafkaPathError(Exception):
    """An expected failure of a Kafka-path command; `str()` is what the operator reads."""

    exit_code: ClassVar[int] = 1


class BrokerUnreachable(KafkaPathError):
    """No broker answered within the connection timeout."""

    def __init__(self, bootstrap: str, timeout_seconds: float | None = None) -> None:
        within = "" if timeout_seconds is None else f" within {timeout_seconds:g} s"
        super().__init__(
            f"cannot reach the Kafka broker at {bootstrap}{within}; check "
            "REMSGUARD_KAFKA_BOOTSTRAP and that the broker is up "
            "(REMSGUARD_KAFKA_CONNECT_TIMEOUT_SECONDS sets the wait)"
        )
        self.bootstrap = bootstrap


class TopicLayoutError(KafkaPathError):
    """Topics that exist with a layout remsguard cannot run on (co-partitioning)."""

    exit_code: ClassVar[int] = 2

    def __init__(self, wrong: dict[str, int], partitions: int) -> None:
        listed = ", ".join(f"{name} has {count}" for name, count in sorted(wrong.items()))
        super().__init__(
            f"topics with a partition count other than {partitions} "
            f"(REMSGUARD_TOPIC_PARTITIONS): {listed}; every topic of a deployment, the "
            "processor's changelog included, needs the same count: delete and re-create "
            "them, or use another REMSGUARD_TOPIC_PREFIX / REMSGUARD_PROCESSOR_APP_ID"
        )
        self.wrong = dict(wrong)
        self.partitions = partitions


class DeliveryFailed(KafkaPathError):
    """Messages the broker did not acknowledge; `failures`: (what, why) for each."""

    def __init__(self, failures: list[tuple[str, str]]) -> None:
        first = "; ".join(f"{what}: {why}" for what, why in failures[:3])
        more = f" (and {len(failures) - 3} more)" if len(failures) > 3 else ""
        super().__init__(f"{len(failures)} message(s) not delivered: {first}{more}")
        self.failures = list(failures)


def translate(exc: BaseException, bootstrap: str) -> KafkaPathError | None:
    """The client libraries' "no broker answered" errors as `BrokerUnreachable`."""
    if isinstance(exc, KafkaPathError):
        return exc
    from kafka.errors import KafkaConnectionError, KafkaTimeoutError

    if isinstance(exc, KafkaConnectionError):
        return BrokerUnreachable(bootstrap)
    if isinstance(exc, KafkaTimeoutError) and "bootstrap" in str(exc).lower():
        return BrokerUnreachable(bootstrap)
    return None
