"""Auditor API fixtures: one compliance log per module and backend (a fresh SQLite file, or a
fresh PostgreSQL database on the shared server), seeded by running the engine over a few
sessions in two clinics, and a TestClient over `create_app(ApiContainer)` with a fixed clock.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from remsguard.adapters.storage import ComplianceLog, HeadSigner, PrincipalRole
from remsguard.bootstrap import build_engine
from remsguard.config import Settings
from remsguard.domain.decisions import Alert, AuditRecord, Outcome
from remsguard.domain.events import (
    AssessmentRecorded,
    DoseAdministered,
    Event,
    Medication,
    SessionDischarged,
    SessionOpened,
    VitalsRecorded,
)
from remsguard.entrypoints.api import ApiContainer
from remsguard.entrypoints.http import create_app

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def _env(sid: str, clinic: str, n: int, minutes: float) -> dict[str, object]:
    return {
        "event_id": f"{sid}-e{n:02d}",
        "session_id": sid,
        "clinic_id": clinic,
        "occurred_at": at(minutes),
    }


def compliant_session(sid: str = "a-s1", clinic: str = "clinic-a") -> list[Event]:
    """Everything the form asks for, in range, discharged after 125 minutes."""
    e = lambda n, m: _env(sid, clinic, n, m)  # noqa: E731
    return [
        SessionOpened(
            **e(1, -20),
            patient_ref="patient-1",
            concomitant_medications=(Medication.BENZODIAZEPINE,),
        ),  # type: ignore[arg-type]
        VitalsRecorded(**e(2, -10), systolic=128, diastolic=82, spo2=98),  # type: ignore[arg-type]
        DoseAdministered(
            **e(3, 0), drug="esketamine", route="intranasal", dose_mg=56, lot_number="LOT-7"
        ),  # type: ignore[arg-type]
        *[
            VitalsRecorded(**e(4 + i, m), systolic=132, diastolic=84, spo2=97, respiratory_rate=14)  # type: ignore[arg-type]
            for i, m in enumerate(range(8, 121, 8))
        ],
        AssessmentRecorded(
            **e(30, 40), sedation_moaas=4, dissociation=True, respiratory_depression=False
        ),  # type: ignore[arg-type]
        AssessmentRecorded(**e(31, 118), sedation_moaas=5, dissociation=False),  # type: ignore[arg-type]
        SessionDischarged(**e(32, 125), staff_id="nurse-1", clinically_stable=True),  # type: ignore[arg-type]
    ]


def crisis_session(sid: str = "b-s1", clinic: str = "clinic-b") -> list[Event]:
    """A BP crisis and an early discharge; no lot number, no assessment."""
    e = lambda n, m: _env(sid, clinic, n, m)  # noqa: E731
    return [
        SessionOpened(**e(1, -15), patient_ref="patient-2"),  # type: ignore[arg-type]
        VitalsRecorded(**e(2, -5), systolic=150, diastolic=95),  # type: ignore[arg-type]
        DoseAdministered(**e(3, 0), drug="ketamine", route="iv", dose_mg=35),  # type: ignore[arg-type]
        VitalsRecorded(**e(4, 35), systolic=185, diastolic=110),  # type: ignore[arg-type]
        SessionDischarged(**e(5, 60), staff_id="nurse-2", clinically_stable=False),  # type: ignore[arg-type]
    ]


def open_session(sid: str = "a-s2", clinic: str = "clinic-a") -> list[Event]:
    """Dosed, never discharged."""
    e = lambda n, m: _env(sid, clinic, n, m)  # noqa: E731
    return [
        SessionOpened(**e(1, 100), patient_ref="patient-3"),  # type: ignore[arg-type]
        VitalsRecorded(**e(2, 110), systolic=120, diastolic=80),  # type: ignore[arg-type]
        DoseAdministered(**e(3, 115), drug="esketamine", route="intranasal", dose_mg=84),  # type: ignore[arg-type]
    ]


def seed(log: ComplianceLog, events: list[Event], until: datetime) -> list[Alert]:
    """Run the engine over the events (as replay does) and store its compliance log."""
    engine = build_engine("spravato-rems")
    records: list[AuditRecord] = []
    alerts: list[Alert] = []
    accepted: list[Event] = []
    for event in sorted(events, key=lambda ev: ev.occurred_at):
        step = engine.handle(event)
        if step.outcome == Outcome.ACCEPTED and step.rejection is None:
            accepted.append(event)
        records += step.audit
        alerts += step.alerts
        advanced = engine.advance_to(event.occurred_at)
        records += advanced.audit
        alerts += advanced.alerts
    last = engine.advance_to(until)
    records += last.audit
    alerts += last.alerts
    log.append_audit(records)
    log.save_alerts(alerts)
    log.save_events(accepted)
    sessions = {e.session_id for e in events}
    log.refresh_sessions(
        sessions,
        patient_refs={s: engine.sessions[s].patient_ref for s in sessions},
        protocols={s: engine.sessions[s].protocol for s in sessions},
    )
    return alerts


@dataclass
class Clock:
    now: datetime = field(default_factory=lambda: at(24 * 60))

    def __call__(self) -> datetime:
        return self.now


@dataclass
class World:
    url: str
    log: ComplianceLog
    clock: Clock
    client: TestClient
    tokens: dict[str, str]
    signer: HeadSigner
    alerts: list[Alert]

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}


@pytest.fixture(scope="module")
def pg_database(database_url: str) -> Iterator[Callable[[], str]]:
    admin = create_engine(database_url, isolation_level="AUTOCOMMIT")
    created: list[str] = []

    def make() -> str:
        name = f"rg_api_{uuid.uuid4().hex[:16]}"
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        created.append(name)
        return make_url(database_url).set(database=name).render_as_string(hide_password=False)

    yield make
    with admin.connect() as conn:
        for name in created:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def make_world(url: str) -> Iterator[World]:
    log = ComplianceLog.open(url)
    alerts = seed(log, compliant_session() + crisis_session() + open_session(), until=at(10 * 60))
    tokens = {}
    for name, role, clinics in (
        ("admin", PrincipalRole.ADMIN, ()),
        ("auditor", PrincipalRole.AUDITOR, ()),
        ("auditor-a", PrincipalRole.AUDITOR, ("clinic-a",)),
        ("staff-a", PrincipalRole.STAFF, ("clinic-a",)),
        ("staff-b", PrincipalRole.STAFF, ("clinic-b",)),
    ):
        _, tokens[name] = log.create_principal(name, role, clinics)
    signer = HeadSigner(Ed25519PrivateKey.generate())
    log.sign_head(signer)
    clock = Clock()
    container = ApiContainer.open(
        Settings(database_url=url, http_docs=True),  # schemathesis reads /openapi.json
        clock=clock,
        compliance=log,
        check_deadlines=False,
    )
    with TestClient(create_app(container)) as client:
        yield World(url, log, clock, client, tokens, signer, alerts)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    if request.param == "sqlite":
        path: Path = tmp_path_factory.mktemp("api") / "log.db"
        url = f"sqlite:///{path}"
    else:
        url = request.getfixturevalue("pg_database")()
    yield from make_world(url)
