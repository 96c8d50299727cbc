"""How the stream processor stores a session: its table (and so its changelog topic) holds
`(partition, Session)` pickled, keyed by the session id. The processor writes it
(`SessionStore.flush`); the console's `SessionView` reads the changelog back. The changelog
is trusted like the table."""

from __future__ import annotations

import pickle

from remsguard.domain.session import Session

__all__ = ["decode_stored_session", "encode_stored_session"]


def encode_stored_session(partition: int, session: Session) -> bytes:
    """A session as the processor's table (and so its changelog topic) holds it."""
    return pickle.dumps((partition, session), protocol=pickle.HIGHEST_PROTOCOL)


def decode_stored_session(blob: bytes) -> tuple[int, Session]:
    """`(partition, session)` from a table value."""
    partition, session = pickle.loads(blob)
    return int(partition), session
