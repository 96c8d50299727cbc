"""The door from a file of JSON lines onto the Kafka path (`publish`, `simulate --kafka`),
through the device client: lines in, each one's fate accounted for.

One policy for both, stated in the summary they print:
- a line the client can route is published, whether or not the contract accepts it: the
  processor is the judge and dead-letters a bad one with its reason;
- a line no input topic can take (not JSON, not an object, an unknown `type`) goes straight
  to the dead-letter topic with its reason (source `publish`), so it is seen where every
  other bad input is;
- a line the client refuses (`no_key`, `message_too_large`, `occurred_in_future`,
  `too_old`) is not sent, and is a failure;
- with `skip_invalid`, every line the contract or the client refuses is skipped and counted
  instead (nothing is dead-lettered, and the run does not fail for them);
- a message the broker did not acknowledge is always a failure, reported by its line.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from remsguard.adapters.kafka.errors import DeliveryFailed
from remsguard.client import DeviceClient, RefusedEvent, UnroutableEvent
from remsguard.contract.dead_letters import dead_letter

__all__ = ["LinePublisher", "PublishReport"]


@dataclass(slots=True)
class PublishReport:
    published: int = 0
    invalid_published: Counter[str] = field(default_factory=Counter)  # the processor judges
    dead_lettered: Counter[str] = field(default_factory=Counter)  # unroutable, by reason
    skipped: Counter[str] = field(default_factory=Counter)  # --skip-invalid, by reason
    refused: Counter[str] = field(default_factory=Counter)  # not sent: a failure
    failed: list[tuple[str, str]] = field(default_factory=list)  # (line, why): a failure
    problems: list[str] = field(default_factory=list)  # one line each, for stderr

    @property
    def ok(self) -> bool:
        return not self.refused and not self.failed

    def summary(self, topic_of_dead_letters: str) -> str:
        parts = [f"published {self.published} events"]
        if self.invalid_published:
            parts.append(
                f"{sum(self.invalid_published.values())} of them fail the contract and "
                f"will be dead-lettered by the processor ({_by(self.invalid_published)})"
            )
        if self.dead_lettered:
            parts.append(
                f"{sum(self.dead_lettered.values())} unroutable lines sent to "
                f"{topic_of_dead_letters} ({_by(self.dead_lettered)})"
            )
        if self.skipped:
            parts.append(f"{sum(self.skipped.values())} lines skipped ({_by(self.skipped)})")
        if self.refused:
            parts.append(f"{sum(self.refused.values())} refused ({_by(self.refused)})")
        if self.failed:
            parts.append(f"{len(self.failed)} not delivered")
        return "; ".join(parts)


def _by(counts: Counter[str]) -> str:
    return ", ".join(f"{reason}: {n}" for reason, n in sorted(counts.items()))


class LinePublisher:
    """Publishes lines through a `DeviceClient` under the policy above."""

    def __init__(self, client: DeviceClient, *, skip_invalid: bool = False) -> None:
        self.client = client
        self.skip_invalid = skip_invalid
        self.report = PublishReport()

    def line(self, line: bytes, label: str) -> None:
        report = self.report
        try:
            routed = self.client.check(line)
        except UnroutableEvent as exc:
            if self.skip_invalid:
                report.skipped[exc.reason] += 1
                return
            value, headers = dead_letter(line, exc.reason, str(exc), "publish")
            self.client.produce_raw(
                self.client.topics.deadletter, None, value, list(headers), label=label
            )
            report.dead_lettered[exc.reason] += 1
            report.problems.append(f"{label}: not routable ({exc.reason}: {exc}), dead-lettered")
            return
        except RefusedEvent as exc:
            if self.skip_invalid:
                report.skipped[exc.reason] += 1
                return
            report.refused[exc.reason] += 1
            report.problems.append(f"{label}: not published: {exc}")
            return
        if routed.rejection is not None:
            if self.skip_invalid:
                report.skipped[routed.rejection.reason] += 1
                return
            report.invalid_published[routed.rejection.reason] += 1
        self.client.produce(routed, label)
        report.published += 1

    def lines(self, lines: Iterable[bytes]) -> PublishReport:
        for number, raw in enumerate(lines, start=1):
            line = raw.strip()
            if line:
                self.line(line, f"line {number}")
        return self.finish()

    def finish(self) -> PublishReport:
        """Wait for every acknowledgement; failed lines go to the report."""
        try:
            self.client.flush()
        except DeliveryFailed as exc:
            self.report.failed.extend(exc.failures)
            self.report.published -= len(exc.failures)
            self.report.problems.extend(
                f"{what}: not delivered: {why}" for what, why in exc.failures
            )
        return self.report
