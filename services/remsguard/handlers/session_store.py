"""`SessionStore`: the engine's sessions for the stream processor, live in memory and written
behind into the processor's table (and so its changelog), with the engine's tombstones.

`backing` is the faust table (bytes key -> `stored_session` value), or a dict in tests. A
session the engine evicts (`MonitoringEngine.evict_finished`) becomes its small `Evicted`
record in the table; a tombstone the engine forgets is deleted from it (a Kafka tombstone).
So the compacted changelog holds the open and recently finished sessions and ~60 bytes per
session evicted in the last `forget_after` (31 days), and recovery reads only those.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, MutableMapping
from datetime import datetime

from remsguard.domain.engine import MonitoringEngine
from remsguard.domain.session import Session
from remsguard.handlers.stored_session import (
    Evicted,
    decode_stored,
    encode_evicted,
    encode_stored_session,
)

__all__ = ["EvictedSessions", "SessionStore", "keep_tombstones_in"]


class EvictedSessions(dict[str, tuple[str, datetime]]):
    """The engine's tombstones (session id -> clinic, end); every change the engine makes
    (`evict_finished` adds and forgets them) is reported to `changed`, so it is written."""

    def __init__(self, changed: Callable[[str], None]) -> None:
        super().__init__()
        self._changed = changed

    def __setitem__(self, session_id: str, value: tuple[str, datetime]) -> None:
        super().__setitem__(session_id, Evicted(*value))
        self._changed(session_id)

    def __delitem__(self, session_id: str) -> None:
        super().__delitem__(session_id)
        self._changed(session_id)

    def recovered(self, session_id: str, evicted: Evicted) -> None:
        """A tombstone read back from the table: nothing to write."""
        super().__setitem__(session_id, evicted)

    def dropped(self, session_id: str) -> None:
        """A tombstone of a partition given away: nothing to write."""
        super().pop(session_id, None)


class SessionStore(MutableMapping[str, Session]):
    """The engine's `sessions`: live objects in memory, persisted in `backing`.

    Reads go to memory first; writes and deletes only mark the session dirty in its
    partition (a new session: the partition being processed); `flush(p)` returns what to
    write for partition p: `(key, value)`, value None for a key to delete.
    """

    def __init__(self, backing: Mapping[bytes, bytes]) -> None:
        self.backing = backing
        self.partition = 0  # the partition of the message being processed
        self.evicted = EvictedSessions(self._mark)
        self._live: dict[str, Session] = {}
        self._partition_of: dict[str, int] = {}  # live and evicted sessions
        self._dirty: dict[int, set[str]] = {}

    def __getitem__(self, session_id: str) -> Session:
        session = self._live.get(session_id)
        if session is None:
            if session_id in self.evicted:
                raise KeyError(session_id)
            blob = self.backing.get(session_id.encode("utf-8"))
            if blob is None:
                raise KeyError(session_id)
            partition, stored = decode_stored(blob)
            self._partition_of[session_id] = partition
            if isinstance(stored, Evicted):
                self.evicted.recovered(session_id, stored)
                raise KeyError(session_id)
            self._live[session_id] = session = stored
        return session

    def __setitem__(self, session_id: str, session: Session) -> None:
        self._live[session_id] = session
        self._partition_of[session_id] = self.partition
        self._dirty.setdefault(self.partition, set()).add(session_id)

    def __delitem__(self, session_id: str) -> None:
        del self._live[session_id]  # the engine evicted it: its tombstone follows, or not
        self._mark(session_id)

    def __iter__(self) -> Iterator[str]:
        return iter(self._live)

    def __len__(self) -> int:
        return len(self._live)

    def _mark(self, session_id: str) -> None:
        partition = self._partition_of.get(session_id, self.partition)
        self._dirty.setdefault(partition, set()).add(session_id)

    def partition_of(self, session_id: str) -> int | None:
        return self._partition_of.get(session_id)

    def dirty(self, partition: int) -> bool:
        return bool(self._dirty.get(partition))

    def flush(self, partition: int) -> list[tuple[bytes, bytes | None]]:
        """What to write for `partition` since its last flush: each changed session's value,
        an evicted one's tombstone record, None for a key to delete."""
        out: list[tuple[bytes, bytes | None]] = []
        for name in sorted(self._dirty.pop(partition, ())):
            session = self._live.get(name)
            if session is not None:
                value: bytes | None = encode_stored_session(partition, session)
            elif name in self.evicted:
                value = encode_evicted(partition, Evicted(*self.evicted[name]))
            else:
                value = None
                self._partition_of.pop(name, None)
            out.append((name.encode("utf-8"), value))
        return out

    def load(self, partitions: set[int]) -> list[str]:
        """Load every stored session of `partitions` into memory (and their evicted sessions'
        tombstones into `evicted`); returns the live sessions' ids."""
        loaded = []
        for key, blob in list(self.backing.items()):
            name = key.decode("utf-8") if isinstance(key, bytes) else str(key)
            if name in self._live or name in self.evicted:
                if name in self._live and self._partition_of.get(name) in partitions:
                    loaded.append(name)
                continue
            partition, stored = decode_stored(blob)
            if partition not in partitions:
                continue
            self._partition_of[name] = partition
            if isinstance(stored, Evicted):
                self.evicted.recovered(name, stored)
            else:
                self._live[name] = stored
                loaded.append(name)
        return loaded

    def forget(self, partitions: set[int]) -> None:
        """Drop memory (and unflushed changes) of partitions this worker no longer owns."""
        for name in [n for n, p in self._partition_of.items() if p in partitions]:
            self._live.pop(name, None)
            self.evicted.dropped(name)
            self._partition_of.pop(name, None)
        for partition in partitions:
            self._dirty.pop(partition, None)


def keep_tombstones_in(engine: MonitoringEngine, store: SessionStore) -> None:
    """Make `store.evicted` the engine's tombstones, so they are written to the changelog and
    recovered with the sessions (a late event for an evicted session must not open a new one
    on the next worker); the ones the engine held already are taken over as recovered."""
    for session_id, value in engine.tombstones.items():
        store.evicted.recovered(session_id, Evicted(*value))
    engine.tombstones = store.evicted
