"""How the stream processor stores a session: its table (and so its changelog topic) holds,
per session id, either `(partition, Session)` pickled (a live session) or, once the engine
evicted the finished session (`MonitoringEngine.evict_finished`), a small `Evicted` record:
the engine's tombstone (clinic and end), so a late event is judged as after an eviction by
whichever worker owns the partition next. When the engine forgets the tombstone, the key is
deleted (a Kafka tombstone, which compaction removes). The processor writes these
(`SessionStore.flush`); the console's `SessionView` reads the changelog back. The changelog
is trusted like the table."""

from __future__ import annotations

import pickle
from datetime import datetime
from typing import Final, NamedTuple

from remsguard.domain.session import Session

__all__ = [
    "Evicted",
    "decode_stored",
    "decode_stored_session",
    "encode_evicted",
    "encode_stored_session",
]

# Never the start of a pickle (protocol 2+ starts with PROTO, 0x80).
_EVICTED: Final = b"E1\x1f"


class Evicted(NamedTuple):
    """An evicted session's tombstone, as the engine keeps it: `(clinic, end)`."""

    clinic_id: str
    end: datetime


def encode_stored_session(partition: int, session: Session) -> bytes:
    """A session as the processor's table (and so its changelog topic) holds it."""
    return pickle.dumps((partition, session), protocol=pickle.HIGHEST_PROTOCOL)


def encode_evicted(partition: int, evicted: Evicted) -> bytes:
    """An evicted session's tombstone as the table holds it (~60 bytes)."""
    fields = (str(partition), evicted.clinic_id, evicted.end.isoformat())
    return _EVICTED + "\x1f".join(fields).encode("utf-8")


def decode_stored(blob: bytes) -> tuple[int, Session | Evicted]:
    """`(partition, session)` or `(partition, tombstone)` from a table value."""
    if blob.startswith(_EVICTED):
        partition, clinic, end = blob[len(_EVICTED) :].decode("utf-8").split("\x1f")
        return int(partition), Evicted(clinic, datetime.fromisoformat(end))
    partition, session = pickle.loads(blob)
    return int(partition), session


def decode_stored_session(blob: bytes) -> tuple[int, Session]:
    """`(partition, session)` from a table value that holds a live session."""
    partition, stored = decode_stored(blob)
    if isinstance(stored, Evicted):
        raise ValueError("the table value is an evicted session's tombstone")
    return partition, stored
