"""The signed webhook channel: HTTP POST of the notification JSON.

- **Signature**: `X-Remsguard-Signature: sha256=<hex HMAC-SHA256 of the raw body>` with the
  shared secret; receivers recompute it over the bytes they got (`verify_signature`).
  `X-Remsguard-Notification` carries the notification id (stable across retries: dedupe on it).
- **Retries**: on a connection error, a timeout, 5xx or 429, up to `max_attempts` attempts in
  all, waiting `base_delay * 2**(attempt-1)` capped at `max_delay`, with full jitter (a random
  share between 50% and 100% of that), so a receiver that comes back is not hit by every
  notifier at once. Other 4xx answers are permanent: no retry.
- **Dead letter**: when the last attempt fails (or on a permanent failure), `dead_letter` is
  called with the notification, the attempts made and the last error; the alerting service
  records it as a `notification.dead_lettered` audit record.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

import httpx
import structlog

from remsguard.alerting.channels import Notification

__all__ = ["SIGNATURE_HEADER", "DeadLetter", "WebhookChannel", "sign", "verify_signature"]

log = structlog.get_logger(__name__)

SIGNATURE_HEADER: Final = "X-Remsguard-Signature"
NOTIFICATION_HEADER: Final = "X-Remsguard-Notification"


def sign(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify_signature(secret: bytes, body: bytes, header: str | None) -> bool:
    return header is not None and hmac.compare_digest(sign(secret, body), header)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    notification: Notification
    channel: str
    url: str
    attempts: int
    error: str


class WebhookChannel:
    name = "webhook"

    def __init__(
        self,
        url: str,
        secret: bytes,
        *,
        max_attempts: int = 6,
        base_delay: float = 0.5,
        max_delay: float = 30.0,
        timeout: float = 5.0,
        dead_letter: Callable[[DeadLetter], Awaitable[None]] | None = None,
        on_attempt: Callable[[int, str], None] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: Callable[[], float] = random.random,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.url = url
        self._secret = secret
        self.max_attempts = max_attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._dead_letter = dead_letter
        self._on_attempt = on_attempt
        self._sleep = sleep
        self._rng = rng
        self._client = client or httpx.AsyncClient(timeout=timeout)

    def backoff(self, attempt: int) -> float:
        """The wait after failed attempt number `attempt` (1-based), jittered."""
        ceiling = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        return float(ceiling * (0.5 + 0.5 * self._rng()))

    async def deliver(self, notification: Notification) -> bool:
        body = notification.to_json()
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(self._secret, body),
            NOTIFICATION_HEADER: notification.notification_id,
        }
        error = ""
        attempt = 0
        for attempt in range(1, self.max_attempts + 1):
            retry = True
            try:
                response = await self._client.post(self.url, content=body, headers=headers)
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
            else:
                if response.is_success:
                    self._attempted(attempt, "delivered")
                    return True
                error = f"HTTP {response.status_code}"
                retry = response.status_code >= 500 or response.status_code == 429
            self._attempted(attempt, "retry" if retry else "failed")
            if not retry or attempt == self.max_attempts:
                break
            await self._sleep(self.backoff(attempt))
        log.warning(
            "webhook.dead_letter",
            notification_id=notification.notification_id,
            alert_id=notification.alert_id,
            attempts=attempt,
            error=error,
        )
        if self._dead_letter is not None:
            await self._dead_letter(DeadLetter(notification, self.name, self.url, attempt, error))
        return False

    def _attempted(self, attempt: int, outcome: str) -> None:
        if self._on_attempt is not None:
            self._on_attempt(attempt, outcome)

    async def aclose(self) -> None:
        await self._client.aclose()
