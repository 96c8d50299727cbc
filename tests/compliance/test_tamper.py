"""The tamper table of docs/SECURITY.md ("Tamper evidence"): one test per row, each on SQLite
(embedded) and PostgreSQL.

The world is a compliance log as the writers leave it: the engine's records, alerts and the
stored events of two sessions (a compliant one, dose 56 mg, pre-dose BP 117/74; and a BP
crisis), an acknowledged and a resolved alert, a submitted form, principals (one revoked),
and a signed tree head. Each test tampers as someone with write access to the database would
(dropping the append-only triggers first), then asks `verify_log`, and where a view is built
from the tampered table, the view.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Connection, text

from remsguard.adapters.storage import ComplianceLog, HeadSigner, PrincipalRole, verify_log
from remsguard.adapters.storage.chain import EVENT_STORED, row_entry
from remsguard.adapters.storage.events import content_digest
from remsguard.adapters.storage.log import AuditQuery
from remsguard.adapters.storage.verify import VerifyReport
from remsguard.bootstrap import build_engine
from remsguard.contract.decode import decode_event
from remsguard.domain.decisions import Alert, AuditRecord, Outcome
from remsguard.domain.events import Event

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
LAG = timedelta(minutes=10)  # twice a 5-minute signing interval


def _at(minutes: float) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")


def _event(kind: str, eid: str, sid: str, clinic: str, minutes: float, **data: object) -> Event:
    raw = orjson.dumps(
        {
            "type": kind,
            "event_id": eid,
            "session_id": sid,
            "clinic_id": clinic,
            "occurred_at": _at(minutes),
            "data": data,
        }
    )
    event = decode_event(raw)
    assert isinstance(event, Event), event
    return event


def sessions() -> list[Event]:
    ok = [
        _event("session.opened", "a-open", "a-s1", "clinic-a", -20, patient_ref="pt-1"),
        _event("vitals.recorded", "a-bp0", "a-s1", "clinic-a", -10, systolic=117, diastolic=74),
        _event(
            "dose.administered", "a-dose", "a-s1", "clinic-a", 0,
            drug="esketamine", route="intranasal", dose_mg=56, lot_number="LOT-7",
        ),
        *[
            _event("vitals.recorded", f"a-v{m}", "a-s1", "clinic-a", m, systolic=125,
                   diastolic=80, spo2=98)
            for m in range(10, 121, 10)
        ],
        _event("session.discharged", "a-out", "a-s1", "clinic-a", 125, staff_id="rn-1",
               clinically_stable=True),
    ]  # fmt: skip
    crisis = [
        _event("session.opened", "b-open", "b-s1", "clinic-b", -15, patient_ref="pt-2"),
        _event("vitals.recorded", "b-bp0", "b-s1", "clinic-b", -5, systolic=150, diastolic=95),
        _event("dose.administered", "b-dose", "b-s1", "clinic-b", 0, drug="ketamine",
               route="iv", dose_mg=35),
        _event("vitals.recorded", "b-bp1", "b-s1", "clinic-b", 35, systolic=185, diastolic=110),
        _event("session.discharged", "b-out", "b-s1", "clinic-b", 60, staff_id="rn-2",
               clinically_stable=False),
    ]  # fmt: skip
    return ok + crisis


def seed(log: ComplianceLog) -> list[Alert]:
    """The engine over the sessions, stored as `replay --db` stores it."""
    engine = build_engine("spravato-rems")
    records: list[AuditRecord] = []
    alerts: list[Alert] = []
    accepted: list[Event] = []
    for event in sessions():
        step = engine.handle(event)
        if step.outcome == Outcome.ACCEPTED and step.rejection is None:
            accepted.append(event)
        records += step.audit
        alerts += step.alerts
        records += (advanced := engine.advance_to(event.occurred_at)).audit
        alerts += advanced.alerts
    last = engine.advance_to(T0 + timedelta(hours=6))
    log.append_audit([*records, *last.audit])
    log.save_alerts([*alerts, *last.alerts])
    log.save_events(accepted)
    log.refresh_sessions({e.session_id for e in accepted})
    return [*alerts, *last.alerts]


@dataclass
class World:
    log: ComplianceLog
    backend: str
    signer: HeadSigner
    alerts: list[Alert]
    now: list[datetime]  # the log's clock (appended_at, signed_at)

    def sql(self, *statements: str, **params: object) -> None:
        """Statements as an attacker with database access runs them (triggers dropped)."""
        with self.log.engine.begin() as conn:
            bypass_triggers(conn)
            for statement in statements:
                conn.execute(text(statement), params)

    def verify(self, *, key: bool = True, tables: bool = True) -> VerifyReport:
        return verify_log(
            self.log.engine,
            self.signer.public_key if key else None,
            max_head_lag=LAG,
            tables=tables,
        )

    def rechain(self) -> None:
        """Recompute every record's ``prev_hash`` and ``hash`` and the chain-head cache, as
        an attacker who knows the algorithm does after editing records."""
        rows = self.log.audit_records(AuditQuery(limit=1000)).items
        rows = sorted(rows, key=lambda r: r.log_index)
        heads: dict[str, tuple[int, str]] = {}
        with self.log.engine.begin() as conn:
            bypass_triggers(conn)
            conn.execute(  # out of the way of the unique indexes while rows move
                text(
                    "UPDATE audit_records "
                    "SET log_index = -1 - log_index, chain_seq = -1 - chain_seq"
                )
            )
            for index, row in enumerate(rows):
                seq, prev = heads.get(row.chain_id, (-1, "0" * 64))
                row.log_index, row.chain_seq, row.prev_hash = index, seq + 1, prev
                row.hash = entry_hash_of(row)
                conn.execute(
                    text(
                        "UPDATE audit_records SET log_index = :i, chain_seq = :s, "
                        "prev_hash = :p, hash = :h WHERE record_id = :r"
                    ),
                    {"i": index, "s": seq + 1, "p": prev, "h": row.hash, "r": row.record_id},
                )
                heads[row.chain_id] = (seq + 1, row.hash)
            conn.execute(text("DELETE FROM audit_chain_heads"))
            for chain, (seq, hash_) in heads.items():
                conn.execute(
                    text("INSERT INTO audit_chain_heads VALUES (:c, :s, :h)"),
                    {"c": chain, "s": seq, "h": hash_},
                )


def entry_hash_of(row: object) -> str:
    from remsguard.adapters.storage.chain import entry_hash

    return entry_hash(row_entry(row))  # type: ignore[arg-type]


def bypass_triggers(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(text("ALTER TABLE audit_records DISABLE TRIGGER USER"))
        conn.execute(text("ALTER TABLE audit_tree_heads DISABLE TRIGGER USER"))
        return
    for table in ("audit_records", "audit_tree_heads"):
        for verb in ("update", "delete"):
            conn.execute(text(f"DROP TRIGGER IF EXISTS {table}_no_{verb}"))


@pytest.fixture(params=["sqlite", "postgres"])
def world(
    request: pytest.FixtureRequest, tmp_path: Path, pg_database_factory: Callable[[], str]
) -> Iterator[World]:
    url = f"sqlite:///{tmp_path / 'log.db'}" if request.param == "sqlite" else pg_database_factory()
    now = [T0 + timedelta(hours=7)]
    log = ComplianceLog.open(url)
    log._now = lambda: now[0]  # the log's clock, driven by the test
    alerts = seed(log)
    crisis = next(a for a in alerts if a.rule == "BP_CRISIS")
    early = next(a for a in alerts if a.session_id == "b-s1" and a.alert_id != crisis.alert_id)
    log.alert_store.acknowledge(crisis.alert_id, "staff-1", detail={"by_name": "rn-1"})
    log.alert_store.resolve(early.alert_id, "staff-2")
    log.forms.submit("a-s1", "rn-1", {"signed": True})
    log.create_principal("auditor-1", PrincipalRole.AUDITOR, ["clinic-a"])
    log.create_principal("device-1", PrincipalRole.DEVICE, ["clinic-a"])
    gone, _ = log.create_principal("device-2", PrincipalRole.DEVICE)
    _revoke(log, gone.principal_id, now[0])
    signer = HeadSigner(Ed25519PrivateKey.generate())
    log.sign_head(signer)
    w = World(log, request.param, signer, alerts, now)
    report = w.verify()
    assert report.ok, report.problem
    yield w
    log.close()


def _revoke(log: ComplianceLog, principal_id: str, at: datetime) -> None:
    """A revocation as `remsguard principals revoke` writes it: the row, then its record."""
    from remsguard.domain.decisions import AuditKind, stable_id

    with log.engine.begin() as conn:
        conn.execute(
            text("UPDATE api_principals SET revoked_at = :at WHERE principal_id = :p"),
            {"at": at, "p": principal_id},
        )
    log.append_audit(
        [
            AuditRecord(
                record_id=stable_id(AuditKind.PRINCIPAL_REVOKED, principal_id),
                kind=AuditKind.PRINCIPAL_REVOKED,
                subject_id=principal_id,
                session_id=None,
                clinic_id=None,
                occurred_at=at,
                detail={"principal_id": principal_id, "action": "revoked", "by": "admin"},
            )
        ]
    )


def fails(report: VerifyReport, *words: str) -> None:
    assert not report.ok, "the tamper was not detected"
    for word in words:
        assert word in (report.problem or ""), report.problem


def _dose_payload(world: World) -> str:
    with world.log.engine.connect() as conn:
        return str(
            conn.execute(
                text("SELECT payload FROM session_events WHERE event_id = 'a-dose'")
            ).scalar_one()
        )


# -- events -------------------------------------------------------------------------------


def test_edit_event_content_dose_56_to_560(world: World) -> None:
    edited = _dose_payload(world).replace('"dose_mg":56', '"dose_mg":560')
    world.sql("UPDATE session_events SET payload = :p WHERE event_id = 'a-dose'", p=edited)
    fails(world.verify(), "a-dose", "differs from the digest")
    vouched = world.log.vouched_session_events("a-s1")
    assert vouched.unvouched == ["a-dose"]  # the form and timeline leave it out
    assert "a-dose" not in {r.event_id for r in vouched.events}


def test_edit_event_content_pre_dose_bp(world: World) -> None:
    with world.log.engine.connect() as conn:
        payload = conn.execute(
            text("SELECT payload FROM session_events WHERE event_id = 'a-bp0'")
        ).scalar_one()
    edited = payload.replace('"systolic":117', '"systolic":199').replace(
        '"diastolic":74', '"diastolic":99'
    )
    world.sql("UPDATE session_events SET payload = :p WHERE event_id = 'a-bp0'", p=edited)
    fails(world.verify(), "a-bp0")
    assert world.log.vouched_session_events("a-s1").unvouched == ["a-bp0"]


def test_edit_event_index_column(world: World) -> None:
    world.sql("UPDATE session_events SET type = 'session.opened' WHERE event_id = 'a-dose'")
    fails(world.verify(), "a-dose", "column type")


def test_delete_event(world: World) -> None:
    world.sql("DELETE FROM session_events WHERE event_id = 'a-dose'")
    fails(world.verify(), "a-dose", "deleted")


def test_insert_event_around_the_log(world: World) -> None:
    forged = _dose_payload(world).replace('"a-dose"', '"a-dose2"')
    world.sql(
        "INSERT INTO session_events SELECT session_id, 'a-dose2', clinic_id, type, "
        "occurred_at, :p FROM session_events WHERE event_id = 'a-dose'",
        p=forged,
    )
    fails(world.verify(), "a-dose2", "no event.stored record")


def test_edit_event_and_its_digest_without_rechaining(world: World) -> None:
    edited = _dose_payload(world).replace('"dose_mg":56', '"dose_mg":560')
    record = world.log.audit_records(AuditQuery(kind=EVENT_STORED, session_id="a-s1")).items[0]
    detail = orjson.loads(record.detail)
    detail["events"]["a-dose"] = content_digest(edited)
    world.sql(
        "UPDATE session_events SET payload = :p WHERE event_id = 'a-dose'",
        "UPDATE audit_records SET detail = :d WHERE record_id = :r",
        p=edited,
        d=orjson.dumps(detail, option=orjson.OPT_SORT_KEYS).decode(),
        r=record.record_id,
    )
    fails(world.verify(key=False), "hash mismatch")
    vouched = world.log.vouched_session_events("a-s1")  # the record no longer vouches at all
    assert "a-dose" in vouched.unvouched and vouched.events == []


def test_edit_event_and_digest_rechaining_is_caught_by_the_signed_head(world: World) -> None:
    edited = _dose_payload(world).replace('"dose_mg":56', '"dose_mg":560')
    record = world.log.audit_records(AuditQuery(kind=EVENT_STORED, session_id="a-s1")).items[0]
    detail = orjson.loads(record.detail)
    detail["events"]["a-dose"] = content_digest(edited)
    world.sql(
        "UPDATE session_events SET payload = :p WHERE event_id = 'a-dose'",
        "UPDATE audit_records SET detail = :d WHERE record_id = :r",
        p=edited,
        d=orjson.dumps(detail, option=orjson.OPT_SORT_KEYS).decode(),
        r=record.record_id,
    )
    world.rechain()
    assert world.verify(key=False, tables=True).problem is not None  # the old head's root
    fails(world.verify(), "does not match the records' root")
    # ... and with the heads deleted too, the public key still wants a head.
    world.sql("DELETE FROM audit_tree_heads")
    fails(world.verify(), "no signed tree head")
    assert world.verify(key=False).ok  # the limit: without a key nothing says heads existed


# -- records: reorder, truncate -----------------------------------------------------------


def test_reorder_records_rechained_is_caught_by_the_signed_head(world: World) -> None:
    rows = sorted(world.log.audit_records(AuditQuery(limit=1000)).items, key=lambda r: r.log_index)
    a, b = rows[3], rows[4]
    world.sql(
        "UPDATE audit_records SET log_index = -1 WHERE record_id = :a",
        "UPDATE audit_records SET log_index = :ia WHERE record_id = :b",
        "UPDATE audit_records SET log_index = :ib WHERE record_id = :a",
        a=a.record_id,
        b=b.record_id,
        ia=a.log_index,
        ib=b.log_index,
    )
    fails(world.verify(key=False))
    world.rechain()
    fails(world.verify(), "does not match the records' root")


def test_truncate_tail_with_heads_and_chain_cache_fixed(world: World) -> None:
    size = world.log.size()
    world.sql("DELETE FROM audit_records WHERE log_index >= :n", n=size - 3)
    fails(world.verify(key=False), "covers more records")
    world.sql("DELETE FROM audit_tree_heads")
    world.rechain()
    fails(world.verify(), "no signed tree head")


# -- alerts -------------------------------------------------------------------------------


def test_delete_every_alert_row(world: World) -> None:
    world.sql("DELETE FROM alerts")
    fails(world.verify(), "has no row: it was deleted")


def test_resolve_alerts_as_intruder(world: World) -> None:
    world.sql(
        "UPDATE alerts SET status = 'resolved', resolved_by = 'intruder', resolved_at = :at",
        at=world.now[0],
    )
    fails(world.verify(), "without a chained alert.resolved record")


def test_change_who_acknowledged(world: World) -> None:
    world.sql("UPDATE alerts SET acknowledged_by = 'intruder' WHERE acknowledged_by IS NOT NULL")
    fails(world.verify(), "acknowledged by 'intruder'")


def test_reopen_an_acknowledged_alert(world: World) -> None:
    world.sql(
        "UPDATE alerts SET status = 'open', acknowledged_by = NULL, acknowledged_at = NULL "
        "WHERE acknowledged_by IS NOT NULL"
    )
    fails(world.verify(), "acknowledged")


def test_edit_alert_severity(world: World) -> None:
    world.sql("UPDATE alerts SET severity = 'info' WHERE rule = 'BP_CRISIS'")
    fails(world.verify(), "differ from")


def test_insert_alert_around_the_log(world: World) -> None:
    world.sql(
        "INSERT INTO alerts (alert_id, rule, severity, session_id, clinic_id, triggered_at, "
        "message, evidence, protocol, protocol_version, recorded_at, status) "
        "VALUES ('forged', 'BP_CRISIS', 'critical', 'a-s1', 'clinic-a', :at, 'x', '[]', "
        "'spravato-rems', 'v', :at, 'open')",
        at=world.now[0],
    )
    fails(world.verify(), "alert forged", "no alert.raised record")


# -- forms --------------------------------------------------------------------------------


def test_set_a_forms_submitted_at(world: World) -> None:
    world.sql(
        "UPDATE monitoring_forms SET submitted_at = :at, submitted_by = 'rn-x' "
        "WHERE session_id = 'b-s1'",
        at=world.now[0],
    )
    fails(world.verify(), "b-s1", "without a chained form.submitted record")


def test_undo_a_form_submission(world: World) -> None:
    world.sql(
        "UPDATE monitoring_forms SET submitted_at = NULL, submitted_by = NULL "
        "WHERE session_id = 'a-s1'"
    )
    fails(world.verify(), "a-s1", "records it submitted")


def test_change_a_submitted_forms_body(world: World) -> None:
    world.sql(
        "UPDATE monitoring_forms SET payload = :p WHERE session_id = 'a-s1'", p='{"signed":false}'
    )
    fails(world.verify(), "a-s1", "submitted body")


# -- principals ---------------------------------------------------------------------------


def test_insert_a_principal_around_the_log(world: World) -> None:
    world.sql(
        "INSERT INTO api_principals (principal_id, name, token_hash, role, clinics, "
        "created_at) VALUES ('p-x', 'backdoor', :h, 'admin', '[]', :at)",
        h="0" * 64,
        at=world.now[0],
    )
    fails(world.verify(), "p-x", "no principal.created record")


def test_raise_a_principals_role(world: World) -> None:
    world.sql("UPDATE api_principals SET role = 'admin' WHERE name = 'device-1'")
    fails(world.verify(), "device-1", "role differs")


def test_swap_a_principals_token(world: World) -> None:
    world.sql("UPDATE api_principals SET token_hash = :h WHERE name = 'auditor-1'", h="1" * 64)
    fails(world.verify(), "auditor-1", "token_sha256 differs")


def test_undo_a_revocation(world: World) -> None:
    world.sql("UPDATE api_principals SET revoked_at = NULL WHERE name = 'device-2'")
    fails(world.verify(), "device-2", "revoked in the chain")


def test_delete_a_principal(world: World) -> None:
    world.sql("DELETE FROM api_principals WHERE name = 'auditor-1'")
    fails(world.verify(), "has no row: deleted")


# -- heads --------------------------------------------------------------------------------


def test_delete_every_head(world: World) -> None:
    world.sql("DELETE FROM audit_tree_heads")
    fails(world.verify(), "no signed tree head")
    assert world.verify(key=False).ok  # documented: without the public key, not detected


def test_delete_the_latest_heads(world: World) -> None:
    world.now[0] += timedelta(minutes=5)
    world.log.append_audit([_note(1)])
    world.log.sign_head(world.signer)
    world.now[0] += timedelta(minutes=20)  # the signer kept signing every 5 minutes
    world.log.append_audit([_note(2)])
    world.log.sign_head(world.signer)
    assert world.verify().ok
    latest = max(h.tree_size for h in world.log.heads())
    world.sql("DELETE FROM audit_tree_heads WHERE tree_size = :n", n=latest)
    fails(world.verify(), "older than the newest record")


def test_forge_a_head(world: World) -> None:
    world.sql("UPDATE audit_tree_heads SET root_hash = :r", r="ab" * 32)
    fails(world.verify(key=False), "does not match the records' root")


def test_resign_a_head_with_another_key(world: World) -> None:
    other = HeadSigner(Ed25519PrivateKey.generate())
    world.sql("DELETE FROM audit_tree_heads")
    world.log.sign_head(other)
    fails(world.verify(), "bad signature")


def _note(i: int) -> AuditRecord:
    from remsguard.domain.decisions import AuditKind, stable_id

    return AuditRecord(
        record_id=stable_id("note", str(i)),
        kind=AuditKind.EVENT_REJECTED,
        subject_id=f"x-{i}",
        session_id=None,
        clinic_id=None,
        occurred_at=None,
        detail={"reason": "malformed"},
    )


def test_reopen_a_withdrawn_alert(world: World) -> None:
    from .factories import withdrawal

    victim = world.alerts[-1]
    world.log.withdraw_alerts([withdrawal(victim)])
    report = world.verify()
    assert report.ok, report.problem
    world.sql("UPDATE alerts SET status = 'open' WHERE status = 'withdrawn'")
    fails(world.verify(), "records it withdrawn")


def test_withdraw_alerts_as_intruder(world: World) -> None:
    world.sql("UPDATE alerts SET status = 'withdrawn' WHERE status = 'open'")
    fails(world.verify(), "withdrawn without a chained alert.withdrawn record")
