"""The server-sent-events hub: consoles subscribe, the alerting service publishes.

One process-local fan-out. Each subscriber has a bounded queue; a console that cannot keep
up (queue full) is dropped and reconnects, so one slow tablet never slows the others or the
notifier. Every message is scoped to a clinic; a subscriber only gets its clinics' messages.
The hub is also a `Channel` (name `sse`): a notification becomes an `alert` event.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from remsguard.alerting.channels import Notification

__all__ = ["SseHub", "Subscriber", "format_event"]

QUEUE_SIZE: Final = 10_000  # frames; a burst of alerts (a restart, a simulator) must fit
_OPTS: Final = orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC


def format_event(event: str, data: Any, event_id: str | None = None) -> bytes:
    """One SSE frame: `event:`, optional `id:`, one `data:` line of JSON, blank line."""
    payload = data if isinstance(data, bytes) else orjson.dumps(data, option=_OPTS)
    head = f"event: {event}\n" + (f"id: {event_id}\n" if event_id else "")
    return head.encode() + b"data: " + payload + b"\n\n"


@dataclass(eq=False)
class Subscriber:
    clinics: frozenset[str] | None  # None: every clinic
    queue: asyncio.Queue[bytes | None] = field(default_factory=lambda: asyncio.Queue(QUEUE_SIZE))
    dropped: bool = False

    def wants(self, clinic_id: str | None) -> bool:
        return self.clinics is None or clinic_id is None or clinic_id in self.clinics


class SseHub:
    name = "sse"

    def __init__(self) -> None:
        self._subscribers: set[Subscriber] = set()
        self.published = 0

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def subscribe(self, clinics: frozenset[str] | None) -> Subscriber:
        subscriber = Subscriber(clinics)
        self._subscribers.add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.discard(subscriber)

    def publish(
        self, event: str, data: Any, clinic_id: str | None, event_id: str | None = None
    ) -> int:
        """Queue one event for every subscriber of `clinic_id`; returns how many got it.

        Call from the event loop's thread."""
        frame = format_event(event, data, event_id)
        sent = 0
        for subscriber in list(self._subscribers):
            if not subscriber.wants(clinic_id):
                continue
            try:
                subscriber.queue.put_nowait(frame)
                sent += 1
            except asyncio.QueueFull:
                subscriber.dropped = True
                self._subscribers.discard(subscriber)
                _close(subscriber)
        self.published += 1
        return sent

    async def deliver(self, notification: Notification) -> bool:
        self.publish(
            "alert",
            notification.payload(),
            notification.clinic_id,
            notification.notification_id,
        )
        return True

    async def aclose(self) -> None:
        for subscriber in list(self._subscribers):
            _close(subscriber)
        self._subscribers.clear()

    async def stream(self, subscriber: Subscriber, heartbeat: float = 15.0) -> AsyncIterator[bytes]:
        """Frames for one subscriber until it is dropped or the hub closes."""
        try:
            while True:
                try:
                    frame = await asyncio.wait_for(subscriber.queue.get(), timeout=heartbeat)
                except TimeoutError:
                    yield b": keep-alive\n\n"
                    continue
                if frame is None:
                    return
                yield frame
        finally:
            self.unsubscribe(subscriber)


def _close(subscriber: Subscriber) -> None:
    try:
        subscriber.queue.put_nowait(None)
    except asyncio.QueueFull:
        # full: drain one frame so the end marker fits (the console reconnects and reloads)
        subscriber.queue.get_nowait()
        subscriber.queue.put_nowait(None)
