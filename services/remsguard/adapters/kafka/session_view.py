"""`SessionView`: a read-only copy of the stream processor's session state, for the console.

The processor keeps each session's engine state in its faust table `sessions`, whose
changelog topic (`{processor_app_id}-sessions-changelog`, compacted) holds, per raw UTF-8
session id, `encode_stored_session(partition, session)`. The view follows that topic from
the beginning (`TopicFollower`) and keeps the latest `Session` per id in `sessions`, a plain
dict that a `MonitoringEngine` reads through (`MonitoringEngine(..., sessions=view.sessions)`),
so discharge readiness and next checks are the engine's own answers over the engine's own
state, never recomputed. The view never writes anything and never runs the engine's inputs.

It lags the processor by its state flush (`state_flush_seconds`) plus a poll. Sessions whose
latest activity (dose, vitals, assessment, discharge) is older than `retention` are dropped,
and so are sessions the processor evicted (their changelog value becomes an `Evicted`
record, then a Kafka tombstone), so the view's memory stays bounded by the clinics' recent
days, not their history. A session with no activity yet (opened only) is kept from when the
view first saw it, and dropped `retention` after that if still silent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import structlog

from remsguard.adapters.kafka.follow import TopicFollower
from remsguard.config import Settings
from remsguard.domain.session import Session
from remsguard.handlers.stored_session import Evicted, decode_stored

__all__ = ["SessionView", "changelog_topic", "last_activity"]

log = structlog.get_logger(__name__)

PRUNE_EVERY: Final = timedelta(minutes=1)


def changelog_topic(settings: Settings) -> str:
    """The changelog topic of the processor's `sessions` table (faust's naming)."""
    return f"{settings.processor_app_id}-sessions-changelog"


def last_activity(session: Session) -> datetime | None:
    """Event time of the session's latest dose, vitals, assessment or discharge."""
    rows = (session.doses, session.vitals, session.sedation, session.discharges)
    times = [r[-1].at for r in rows if r]
    return max(times) if times else None


def _wall_clock() -> datetime:
    return datetime.now(UTC)


class SessionView:
    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *,
        retention: timedelta = timedelta(hours=24),
        clock: Callable[[], datetime] = _wall_clock,
    ) -> None:
        self.sessions: dict[str, Session] = {}
        self.retention = retention
        self.clock = clock
        self.undecodable = 0
        self._first_seen: dict[str, datetime] = {}  # sessions with no activity yet
        self._pruned_at: datetime | None = None
        self._follower = TopicFollower(bootstrap, topic, self._on_batch, from_beginning=True)

    @classmethod
    def from_settings(cls, settings: Settings) -> SessionView:
        return cls(
            settings.kafka_bootstrap,
            changelog_topic(settings),
            retention=timedelta(hours=settings.api_session_retention_hours),
        )

    @property
    def caught_up(self) -> bool:
        """Read up to where the changelog ended when the view started."""
        return self._follower.caught_up

    def start(self) -> None:
        self._follower.start()

    async def stop(self) -> None:
        await self._follower.stop()

    async def _on_batch(self, records: Sequence[Any]) -> None:
        for record in records:
            self.apply(record.key, record.value)
        self.prune()
        await asyncio.sleep(0)  # a long catch-up must not starve the HTTP handlers

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        """One changelog record: the session's new state (None: a tombstone, forget it)."""
        if key is None:
            return
        name = key.decode("utf-8", errors="replace")
        if value is None:
            self._drop(name)
            return
        try:
            _partition, stored = decode_stored(value)
        except Exception as exc:  # a format from another version: skip it, do not stop
            self.undecodable += 1
            log.warning("session_view.undecodable", session=name, error=repr(exc)[:200])
            return
        if isinstance(stored, Evicted):  # the processor evicted it: finished long ago
            self._drop(name)
            return
        now = self.clock()
        if last_activity(stored) is None:
            self._first_seen.setdefault(name, now)
        else:
            self._first_seen.pop(name, None)
        if self._expired(name, stored, now - self.retention):
            self._drop(name)
        else:
            self.sessions[name] = stored

    def _drop(self, name: str) -> None:
        self.sessions.pop(name, None)
        self._first_seen.pop(name, None)

    def prune(self) -> int:
        """Drop sessions idle past the retention (at most once a minute); returns how many."""
        now = self.clock()
        if self._pruned_at is not None and now - self._pruned_at < PRUNE_EVERY:
            return 0
        self._pruned_at = now
        horizon = now - self.retention
        old = [name for name, s in self.sessions.items() if self._expired(name, s, horizon)]
        for name in old:
            self._drop(name)
        return len(old)

    def _expired(self, name: str, session: Session, horizon: datetime) -> bool:
        last = last_activity(session)
        if last is None:  # opened only: judged by when the view first saw it
            last = self._first_seen.get(name)
        return last is not None and last < horizon
