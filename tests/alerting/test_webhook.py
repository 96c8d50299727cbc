"""The signed webhook against a real HTTP receiver on 127.0.0.1: the signature verifies,
5xx answers are retried with growing (jittered) delays, and after the last attempt the
notification is dead-lettered as an audit record."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import orjson
import pytest

from remsguard.adapters.storage import AuditQuery, ComplianceLog
from remsguard.alerting import records
from remsguard.alerting.channels import Notification
from remsguard.alerting.service import AlertingService
from remsguard.alerting.webhook import (
    NOTIFICATION_HEADER,
    SIGNATURE_HEADER,
    DeadLetter,
    WebhookChannel,
    verify_signature,
)

from .support import Clock, Receiver, alert

SECRET = b"test-secret-\x00\xff"


@pytest.fixture
def note() -> Notification:
    body = orjson.loads(orjson.dumps({"alert_id": "a1", "clinic_id": "c1", "session_id": "s1"}))
    return Notification("alert", body, datetime(2026, 11, 23, 9, 0, tzinfo=UTC))


def test_signature_verifies_over_the_exact_body(note: Notification) -> None:
    async def scenario(url: str) -> bool:
        channel = WebhookChannel(url, SECRET)
        try:
            return await channel.deliver(note)
        finally:
            await channel.aclose()

    with Receiver([]) as receiver:
        assert asyncio.run(scenario(receiver.url))
    [(_, headers, body)] = receiver.requests
    assert verify_signature(SECRET, body, headers[SIGNATURE_HEADER])
    assert not verify_signature(b"other", body, headers[SIGNATURE_HEADER])
    assert not verify_signature(SECRET, body + b" ", headers[SIGNATURE_HEADER])
    assert headers[NOTIFICATION_HEADER] == note.notification_id
    assert orjson.loads(body)["alert"]["alert_id"] == "a1"


def test_retries_5xx_with_exponential_backoff_then_delivers(note: Notification) -> None:
    """The waits are the ones the channel asks for (recorded, not timed: a loaded machine
    stretches wall-clock gaps): doubling from 0.1 s, full jitter within [50%, 100%]."""
    waits: list[float] = []
    draws = iter([0.0, 1.0, 0.5])  # the jitter's random draws: lowest, highest, middle

    async def recorded_sleep(seconds: float) -> None:
        waits.append(seconds)

    async def scenario(url: str) -> bool:
        channel = WebhookChannel(
            url,
            SECRET,
            max_attempts=5,
            base_delay=0.1,
            max_delay=5,
            sleep=recorded_sleep,
            rng=lambda: next(draws),
        )
        try:
            return await channel.deliver(note)
        finally:
            await channel.aclose()

    with Receiver([500, 502, 503]) as receiver:
        assert asyncio.run(scenario(receiver.url))
    assert len(receiver.requests) == 4  # three failures, then delivered
    assert waits == pytest.approx([0.05, 0.2, 0.3])  # 0.1 x 0.5, 0.2 x 1.0, 0.4 x 0.75
    bodies = {body for _, _, body in receiver.requests}
    assert len(bodies) == 1  # the same signed body each time (receivers dedupe on its id)


def test_backoff_is_capped_and_jittered() -> None:
    values = iter([0.0, 1.0, 0.5])
    channel = WebhookChannel(
        "http://127.0.0.1:9/x", SECRET, base_delay=1, max_delay=8, rng=lambda: next(values)
    )
    assert channel.backoff(1) == 0.5  # 1 s ceiling, rng 0 -> 50%
    assert channel.backoff(5) == 8.0  # 16 s capped at 8, rng 1 -> 100%
    assert channel.backoff(3) == 3.0  # 4 s ceiling, rng .5 -> 75%
    asyncio.run(channel.aclose())


def test_4xx_is_not_retried(note: Notification) -> None:
    letters: list[DeadLetter] = []

    async def dead(letter: DeadLetter) -> None:
        letters.append(letter)

    async def scenario(url: str) -> bool:
        channel = WebhookChannel(url, SECRET, max_attempts=5, base_delay=0.01, dead_letter=dead)
        try:
            return await channel.deliver(note)
        finally:
            await channel.aclose()

    with Receiver([400]) as receiver:
        assert not asyncio.run(scenario(receiver.url))
    assert len(receiver.requests) == 1
    assert [(x.attempts, x.error) for x in letters] == [(1, "HTTP 400")]


@pytest.mark.skipif(not records.KINDS_AVAILABLE, reason="alerting audit kinds not registered")
def test_dead_letter_record_after_the_last_attempt(clock: Clock, log: ComplianceLog) -> None:
    async def scenario(url: str) -> None:
        service = AlertingService(log, clock=clock)
        channel = WebhookChannel(
            url, SECRET, max_attempts=3, base_delay=0.02, dead_letter=service.dead_letter
        )
        service.channels.append(channel)
        await service.process([alert("a1")], save=True)
        await service.drain()
        await channel.aclose()

    with Receiver([500, 503, 500, 500]) as receiver:
        asyncio.run(scenario(receiver.url))
    assert len(receiver.requests) == 3
    page = log.audit_records(AuditQuery(kind=records.DEAD_LETTERED, limit=10))
    [row] = page.items
    detail = orjson.loads(row.detail)
    assert detail["alert_id"] == "a1"
    assert detail["attempts"] == 3
    assert detail["error"] == "HTTP 500"
    assert detail["channel"] == "webhook"
    assert row.clinic_id == "c1" and row.session_id == "s1"


def test_connection_errors_are_retried_then_dead_lettered(note: Notification) -> None:
    letters: list[DeadLetter] = []

    async def dead(letter: DeadLetter) -> None:
        letters.append(letter)

    with Receiver([]) as receiver:
        url = receiver.url  # a port that was bound and is now closed

    async def scenario() -> bool:
        channel = WebhookChannel(url, SECRET, max_attempts=3, base_delay=0.01, dead_letter=dead)
        try:
            return await channel.deliver(note)
        finally:
            await channel.aclose()

    assert not asyncio.run(scenario())
    assert [x.attempts for x in letters] == [3]
    assert "ConnectError" in letters[0].error
