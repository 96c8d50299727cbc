"""Audit record and alert ids are persisted: the way they are computed must never change them.

`stable_id` is the 16-byte BLAKE2b of its parts joined by U+001F (UTF-8, surrogates passed
through), in hex; the engine's per-event `event.accepted` id is hashed on from a state kept
for the kind, and must be the same id.
"""

from __future__ import annotations

import hashlib

import pytest

from remsguard.domain.decisions import AuditKind, stable_id, stable_id_prefix
from remsguard.domain.engine import MonitoringEngine

from .scenario import Session, protocols

PARTS = [
    ("event.accepted", "sess-1", "sess-1-0001"),
    ("event.accepted", "séance-é", "\ud800x"),  # non-ASCII, and a lone surrogate
    ("alert.raised", "abc"),
    ("",),
    ("a\x1fb", "", "c"),
]


def _reference(*parts: str) -> str:
    key = "\x1f".join(parts).encode("utf-8", "surrogatepass")
    return hashlib.blake2b(key, digest_size=16).hexdigest()


def test_known_ids_are_unchanged() -> None:
    assert stable_id("event.accepted", "sess-1", "sess-1-0001") == (
        "d1f053c63b917a4118603823b2e672ae"
    )
    assert stable_id("event.accepted", "séance-é", "\ud800x") == "1021e75806439b0e10967fb4ebd9e543"
    assert stable_id("alert.raised", "abc") == "f3a2169ad518f99c4b491414dc83ad39"


@pytest.mark.parametrize("parts", PARTS)
def test_stable_id_is_the_blake2b_of_the_joined_parts(parts: tuple[str, ...]) -> None:
    assert stable_id(*parts) == _reference(*parts)


@pytest.mark.parametrize("parts", [p for p in PARTS if len(p) > 1])
def test_a_prefix_state_hashed_on_gives_the_same_id(parts: tuple[str, ...]) -> None:
    head, rest = parts[0], parts[1:]
    digest = stable_id_prefix(head).copy()
    digest.update(("\x1f" + "\x1f".join(rest)).encode("utf-8", "surrogatepass"))
    assert digest.hexdigest() == stable_id(*parts)


@pytest.mark.parametrize("session_id", ["s1", "séance-é", "s\ud800"])
def test_accepted_records_keep_their_ids(session_id: str) -> None:
    engine = MonitoringEngine(protocols())
    session = Session(session_id=session_id)
    events = [session.opened(0), session.vitals(1, spo2=97), session.dose(2), session.discharge(9)]
    for event in events:
        (record, *_) = engine.handle(event).audit
        assert record.kind is AuditKind.EVENT_ACCEPTED
        assert record.record_id == _reference(
            AuditKind.EVENT_ACCEPTED, event.session_id, event.event_id
        )
        assert record.detail == {"type": event.type}
