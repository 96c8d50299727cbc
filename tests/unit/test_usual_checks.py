"""The usual session's checks are listed by `_usual_checks`, which reads which are done from
bits kept on the session (`Session.done`) instead of looking their keys up in `fired`: held
here to the listing for any session (`_all_checks`), after every step of corpora that have
late doses and discharges, doses after discharges, reordering and sessions loaded from
pickles (issue 19)."""

from __future__ import annotations

import gzip
import pickle
from dataclasses import fields
from pathlib import Path

from remsguard.bootstrap import build_engine
from remsguard.domain.deadlines import _all_checks, due_checks
from remsguard.domain.engine import MonitoringEngine
from remsguard.domain.session import Session

from .test_changelog_compat import first_half, steps

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "changelog"


def _lines() -> list[bytes]:
    return gzip.decompress((FIXTURE / "events.jsonl.gz").read_bytes()).splitlines()


def _same_listings(engine: MonitoringEngine) -> int:
    usual = 0
    for session in engine.sessions.values():
        protocol = engine.protocol_of(session)
        listed = due_checks(session, protocol)
        assert listed == _all_checks(session, protocol), session.session_id
        usual += session.done is not None
    return usual


def test_the_usual_listing_is_the_listing_after_every_step() -> None:
    engine = build_engine("spravato-rems", None)
    usual = 0
    for number in steps(engine, _lines()):
        usual += _same_listings(engine)
        if number % 200 == 0:  # as a worker taking over: sessions from their pickles
            for session_id, session in list(engine.sessions.items()):
                engine.sessions[session_id] = pickle.loads(pickle.dumps(session))
                assert engine.sessions[session_id].done is None
            engine.rebuild_schedule()
    assert usual > 1000


def test_the_kept_bits_are_not_state() -> None:
    engine = first_half(_lines()[:300])
    session = next(s for s in engine.sessions.values() if s.done is not None)
    assert "done" not in {spec.name for spec in fields(Session)}
    state = session.__getstate__()
    assert len(state) == len(fields(Session))
    loaded = pickle.loads(pickle.dumps(session))
    assert loaded.done is None and loaded.__getstate__() == state
