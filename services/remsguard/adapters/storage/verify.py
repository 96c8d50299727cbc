"""Recompute every chain and every signed tree head of a compliance log, then hold every
table an auditor or the monitoring form reads to the records that vouch for it.

**The chains** (one pass over the records in ``log_index`` order; memory: one entry per chain
plus the Merkle frontier): an edited row (its hash no longer matches its content), a deleted
row (a gap in ``log_index`` and in its chain, or a signed head covering more records than
remain), two rows swapped (position and chain fields are inside the hash, and ``prev_hash``
links break), a forged or re-rooted tree head, and a truncated tail (the writer's chain-head
cache or a signed head still counts the lost records).

**The heads**, with the public key: every head's signature; at least one head once there are
records; and the latest head no older than ``max_head_lag`` before the newest record (the
signer signs every interval and at shutdown, so a log whose heads were deleted, or which grew
long after its last head, is suspect).

**The tables**: ``session_events`` against the ``event.stored`` digests,
``alerts`` against ``alert.raised`` and the lifecycle records, ``monitoring_forms`` against
``form.submitted``, ``api_principals`` against ``principal.created``/``principal.revoked``,
``rems_certifications``/``rems_enrollments`` against their latest ``rems.*.recorded`` record.

The first problem stops the check and names the record (or row) and the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Connection, Engine, Table, select

from remsguard.adapters.storage.chain import (
    EVENT_STORED,
    FORM_SUBMITTED,
    GENESIS,
    entry_hash,
    row_entry,
)
from remsguard.adapters.storage.events import content_digest, digests_of
from remsguard.adapters.storage.models import (
    AlertRow,
    AlertStatus,
    ApiPrincipal,
    AuditRow,
    ChainHead,
    MonitoringForm,
    SessionEventRow,
    TreeHead,
    utc,
    utc_text,
)
from remsguard.adapters.storage.registry import check_registry
from remsguard.adapters.storage.signing import verify_head_signature
from remsguard.domain import merkle
from remsguard.domain.decisions import AuditKind

AUDIT: Table = AuditRow.__table__  # type: ignore[attr-defined]
ALERTS: Table = AlertRow.__table__  # type: ignore[attr-defined]
EVENTS: Table = SessionEventRow.__table__  # type: ignore[attr-defined]
FORMS: Table = MonitoringForm.__table__  # type: ignore[attr-defined]
PRINCIPALS: Table = ApiPrincipal.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class VerifyReport:
    records: int
    chains: int
    heads: int
    problem: str | None = None
    record_id: str | None = None
    log_index: int | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


def verify_log(
    engine: Engine,
    public_key: Ed25519PublicKey | None = None,
    *,
    max_head_lag: timedelta | None = None,
    tables: bool = True,
) -> VerifyReport:
    """Chains, heads (signatures, presence and age with ``public_key``), then the tables
    (``tables=False``: the chains and heads alone, for a log that holds records only)."""
    report = _verify_chains(engine, public_key, max_head_lag)
    if not report.ok or not tables:
        return report
    with engine.connect() as conn:
        problem = check_tables(conn)
    if problem is not None:
        return replace(report, problem=problem)
    return report


def _verify_chains(
    engine: Engine, public_key: Ed25519PublicKey | None, max_head_lag: timedelta | None
) -> VerifyReport:
    with engine.connect() as conn:
        heads = [
            TreeHead.model_validate(r._asdict())
            for r in conn.execute(
                select(TreeHead.__table__).order_by(TreeHead.__table__.c.tree_size)  # type: ignore[attr-defined]
            )
        ]
        cached = {
            r.chain_id: (r.chain_seq, r.hash)
            for r in conn.execute(select(ChainHead.__table__))  # type: ignore[attr-defined]
        }
        chains: dict[str, tuple[int, str]] = {}
        acc = merkle.CompactRange()
        pending = list(heads)
        count = 0
        newest: datetime | None = None  # the latest appended_at

        def fail(problem: str, row: Any = None) -> VerifyReport:
            return VerifyReport(
                count,
                len(chains),
                len(heads),
                problem,
                None if row is None else row.record_id,
                None if row is None else row.log_index,
            )

        def check_head(head: TreeHead) -> str | None:
            root = acc.root().hex()
            if root != head.root_hash:
                return (
                    f"signed tree head of size {head.tree_size}: root {head.root_hash} does not "
                    f"match the records' root {root}"
                )
            if public_key is not None and not verify_head_signature(
                public_key, head.tree_size, head.root_hash, head.signed_at, head.signature
            ):
                return f"signed tree head of size {head.tree_size}: bad signature"
            return None

        while pending and pending[0].tree_size == 0:
            if (bad := check_head(pending.pop(0))) is not None:
                return fail(bad)
        result = conn.execute(
            select(AUDIT).order_by(AUDIT.c.log_index).execution_options(yield_per=20_000)
        )
        for row in result:
            where = f"record {row.record_id} (log index {row.log_index}, chain {row.chain_id!r} "
            where += f"seq {row.chain_seq})"
            if row.log_index != count:
                return fail(
                    f"{where}: expected log index {count}; "
                    f"{row.log_index - count} record(s) before it are missing",
                    row,
                )
            seq, prev = chains.get(row.chain_id, (-1, GENESIS))
            if row.chain_seq != seq + 1:
                return fail(
                    f"{where}: expected chain seq {seq + 1}: records of this chain are "
                    "missing or out of order",
                    row,
                )
            if row.prev_hash != prev:
                return fail(f"{where}: prev_hash does not match its predecessor's hash", row)
            try:
                recomputed = entry_hash(row_entry(row))
            except (ValueError, TypeError) as exc:
                return fail(f"{where}: unreadable content: {exc}", row)
            if recomputed != row.hash:
                return fail(f"{where}: hash mismatch: the record's content was altered", row)
            if (bad := _derived_mismatch(row)) is not None:
                return fail(f"{where}: {bad} does not match the hashed content", row)
            chains[row.chain_id] = (row.chain_seq, row.hash)
            acc.append(merkle.leaf_hash(bytes.fromhex(row.hash)))
            count += 1
            appended = utc(row.appended_at)
            if newest is None or appended > newest:
                newest = appended
            while pending and pending[0].tree_size == count:
                if (bad := check_head(pending.pop(0))) is not None:
                    return fail(bad, row)
        if pending:
            return fail(
                f"signed tree head of size {pending[0].tree_size} covers more records than the "
                f"log holds ({count}): records at the end were deleted"
            )
        for chain_id, (seq, hash_) in sorted(cached.items()):
            if chains.get(chain_id) != (seq, hash_):
                have = chains.get(chain_id, (-1, GENESIS))[0]
                return fail(
                    f"chain {chain_id!r} ends at seq {have} but the writer appended up to seq "
                    f"{seq}: records at the end of the chain were deleted or altered"
                )
        if public_key is not None and (bad := _head_coverage(heads, newest, max_head_lag)):
            return fail(bad)
        return VerifyReport(count, len(chains), len(heads))


def _head_coverage(
    heads: list[TreeHead], newest: datetime | None, max_head_lag: timedelta | None
) -> str | None:
    """With a public key: heads must exist once records do, and be recent enough."""
    if newest is None:
        return None
    if not heads:
        return (
            "no signed tree head, but the log holds records: the heads were deleted, or "
            "nothing signs this log"
        )
    latest = max(heads, key=lambda h: h.tree_size)
    lag = newest - utc(latest.signed_at)
    if max_head_lag is not None and lag > max_head_lag:
        return (
            f"the latest signed tree head (size {latest.tree_size}, signed "
            f"{utc(latest.signed_at).isoformat()}) is {lag.total_seconds():.0f}s older than the "
            f"newest record; heads are signed at least every "
            f"{max_head_lag.total_seconds() / 2:.0f}s: later heads were deleted"
        )
    return None


def _derived_mismatch(row: Any) -> str | None:
    expected_time = row.occurred_at if row.occurred_at is not None else row.appended_at
    if utc(row.event_time) != utc(expected_time):
        return "event_time"
    if row.kind == AuditKind.ALERT_RAISED:
        detail = orjson.loads(row.detail)
        rule, severity = detail.get("rule"), detail.get("severity")
    else:
        rule = severity = None
    if row.rule != (None if rule is None else str(rule)):
        return "rule"
    if row.severity != (None if severity is None else str(severity)):
        return "severity"
    return None


# -- the tables the views are built from ------------------------------------------------------

_CHUNK = 500


def _records_of(conn: Connection, *kinds: str) -> list[Any]:
    return list(
        conn.execute(select(AUDIT).where(AUDIT.c.kind.in_(kinds)).order_by(AUDIT.c.log_index))
    )


def _same_time(a: datetime | None, b: datetime | None) -> bool:
    return (a is None) == (b is None) and (a is None or b is None or utc(a) == utc(b))


def check_tables(conn: Connection) -> str | None:
    """The first table row that disagrees with the chained records, or None."""
    for check in (_check_events, _check_alerts, _check_forms, _check_principals, check_registry):
        if (problem := check(conn)) is not None:
            return problem
    return None


def _check_events(conn: Connection) -> str | None:
    """Every ``session_events`` row has the digest of an ``event.stored`` record and its
    columns say what its payload says; every digest has its row."""
    sessions = sorted(
        {sid for (sid,) in conn.execute(select(EVENTS.c.session_id).distinct())}
        | {
            sid
            for (sid,) in conn.execute(
                select(AUDIT.c.session_id).where(AUDIT.c.kind == EVENT_STORED).distinct()
            )
            if sid is not None
        }
    )
    for start in range(0, len(sessions), _CHUNK):
        chunk = sessions[start : start + _CHUNK]
        vouched: dict[tuple[str, str], tuple[str, str]] = {}  # -> (digest, record id)
        for record in conn.execute(
            select(AUDIT.c.record_id, AUDIT.c.session_id, AUDIT.c.detail).where(
                AUDIT.c.kind == EVENT_STORED, AUDIT.c.session_id.in_(chunk)
            )
        ):
            for event_id, digest in digests_of(orjson.loads(record.detail)).items():
                vouched[(record.session_id, event_id)] = (digest, record.record_id)
        for row in conn.execute(select(EVENTS).where(EVENTS.c.session_id.in_(chunk))):
            where = f"session_events row (session {row.session_id!r}, event {row.event_id!r})"
            found = vouched.pop((row.session_id, row.event_id), None)
            if found is None:
                return f"{where}: no event.stored record vouches for it (written around the log)"
            if content_digest(row.payload) != found[0]:
                return f"{where}: its content differs from the digest chained in {found[1]}"
            if (bad := _event_columns(row)) is not None:
                return f"{where}: column {bad} does not match its payload"
        for (session_id, event_id), (_, record_id) in sorted(vouched.items()):
            return (
                f"session_events row (session {session_id!r}, event {event_id!r}) chained in "
                f"{record_id} is missing: it was deleted"
            )
    return None


def _event_columns(row: Any) -> str | None:
    try:
        wire = orjson.loads(row.payload)
        at = datetime.fromisoformat(wire["occurred_at"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return "payload"
    for column in ("session_id", "event_id", "clinic_id", "type"):
        if wire.get(column) != getattr(row, column):
            return column
    return None if utc(at) == utc(row.occurred_at) else "occurred_at"


def _check_alerts(conn: Connection) -> str | None:
    """Every ``alert.raised`` record has its row and every row its record, with the same
    rule, severity, session, clinic and time; each row's status, by and at are what the
    chained ``alert.acknowledged``/``alert.resolved`` records say (none: still open)."""
    raised = {r.subject_id: r for r in _records_of(conn, AuditKind.ALERT_RAISED)}
    acked = {r.subject_id: r for r in _records_of(conn, AuditKind.ALERT_ACKNOWLEDGED)}
    resolved = {r.subject_id: r for r in _records_of(conn, AuditKind.ALERT_RESOLVED)}
    withdrawn = {r.subject_id: r for r in _records_of(conn, AuditKind.ALERT_WITHDRAWN)}
    shelves: dict[str, list[Any]] = {}
    for r in _records_of(conn, AuditKind.ALERT_SHELVED):
        shelves.setdefault(r.subject_id, []).append(r)
    for row in conn.execute(select(ALERTS).order_by(ALERTS.c.alert_id)):
        where = f"alert {row.alert_id}"
        record = raised.pop(row.alert_id, None)
        if record is None:
            return f"{where}: no alert.raised record (the row was written around the log)"
        detail = orjson.loads(record.detail)
        if (
            row.rule != detail.get("rule")
            or row.severity != detail.get("severity")
            or row.session_id != record.session_id
            or row.clinic_id != record.clinic_id
            or not _same_time(row.triggered_at, record.occurred_at)
        ):
            return (
                f"{where}: rule, severity, session, clinic or time differ from {record.record_id}"
            )
        for status, by, at, chained in (
            (AlertStatus.ACKNOWLEDGED, row.acknowledged_by, row.acknowledged_at, acked),
            (AlertStatus.RESOLVED, row.resolved_by, row.resolved_at, resolved),
        ):
            if (bad := _lifecycle(row, status, by, at, chained.get(row.alert_id))) is not None:
                return f"{where}: {bad}"
        if (bad := _withdrawal(row, withdrawn.get(row.alert_id))) is not None:
            return f"{where}: {bad}"
        if (bad := _shelf(row, shelves.get(row.alert_id, []))) is not None:
            return f"{where}: {bad}"
    for alert_id, record in sorted(raised.items()):
        return f"alert {alert_id} raised in {record.record_id} has no row: it was deleted"
    return None


def _lifecycle(
    row: Any, status: AlertStatus, by: str | None, at: datetime | None, record: Any
) -> str | None:
    if record is None:
        if row.status == status.value or by is not None or at is not None:
            return f"{status.value} (by {by!r}) without a chained alert.{status.value} record"
        return None
    chained_by = orjson.loads(record.detail).get("by")
    if by != chained_by or not _same_time(at, record.occurred_at):
        return (
            f"{status.value} by {by!r} at {at} but {record.record_id} says by "
            f"{chained_by!r} at {record.occurred_at}"
        )
    if row.status not in (status.value, *_CLOSED) and not (
        status is AlertStatus.ACKNOWLEDGED and row.status == AlertStatus.SHELVED.value
    ):
        return f"status {row.status!r} but {record.record_id} records it {status.value}"
    return None


def _shelf(row: Any, records: list[Any]) -> str | None:
    """A shelved row (and only a shelved row) carries a shelf, and a chained
    ``alert.shelved`` record says who shelved it until when."""
    shelved = row.status == AlertStatus.SHELVED.value
    if not shelved:
        if row.shelved_until is not None or row.shelved_by is not None:
            return f"status {row.status!r} but it carries a shelf"
        return None
    for record in records:
        detail = orjson.loads(record.detail)
        if detail.get("by") == row.shelved_by and _same_time(
            row.shelved_until, _parse_time(detail.get("until"))
        ):
            return None
    return f"shelved by {row.shelved_by!r} until {row.shelved_until} without its chained record"


def _parse_time(value: object) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return None


# Where an alert's lifecycle ends: resolved by staff, or withdrawn by the engine.
_CLOSED = (AlertStatus.RESOLVED.value, AlertStatus.WITHDRAWN.value)


def _withdrawal(row: Any, record: Any) -> str | None:
    """A withdrawn row has its chained ``alert.withdrawn`` record, and a chained withdrawal
    closed the row (withdrawn; or resolved, if staff resolved it first)."""
    if record is None:
        if row.status == AlertStatus.WITHDRAWN.value:
            return "withdrawn without a chained alert.withdrawn record"
        return None
    if row.status not in _CLOSED:
        return f"status {row.status!r} but {record.record_id} records it withdrawn"
    return None


def _check_forms(conn: Connection) -> str | None:
    """A form's submission (who, when, the body) is what its ``form.submitted`` record says,
    and a chained submission is not undone."""
    chained = {r.subject_id: r for r in _records_of(conn, FORM_SUBMITTED)}
    for row in conn.execute(select(FORMS).order_by(FORMS.c.session_id)):
        where = f"monitoring form of session {row.session_id!r}"
        record = chained.pop(row.session_id, None)
        if record is None:
            if row.submitted_at is not None or row.submitted_by is not None:
                return f"{where}: marked submitted without a chained form.submitted record"
            continue
        detail = orjson.loads(record.detail)
        if row.submitted_at is None:
            return f"{where}: {record.record_id} records it submitted; the row says it is not"
        if row.submitted_by != detail.get("by") or not _same_time(
            row.submitted_at, record.occurred_at
        ):
            return f"{where}: submitted by or at differ from {record.record_id}"
        if "payload_sha256" in detail and detail["payload_sha256"] != (
            None if row.payload is None else content_digest(row.payload)
        ):
            return f"{where}: the submitted body differs from the digest in {record.record_id}"
    for session_id, record in sorted(chained.items()):
        return f"monitoring form of session {session_id!r} submitted in {record.record_id} is gone"
    return None


def _principal_of(record: Any) -> str:
    detail = orjson.loads(record.detail)
    found = detail.get("principal_id") if isinstance(detail, dict) else None
    return str(found) if found is not None else str(record.subject_id)


def _check_principals(conn: Connection) -> str | None:
    """Every principal row is what its latest chained ``principal.created`` record (its
    creation or last rotation) says: name, role, clinics, expiry and token hash; a chained
    revocation is not undone."""
    created: dict[str, Any] = {}
    for record in _records_of(conn, AuditKind.PRINCIPAL_CREATED):
        created[_principal_of(record)] = record  # the latest wins (a rotation re-records)
    revoked = {_principal_of(r) for r in _records_of(conn, AuditKind.PRINCIPAL_REVOKED)}
    for row in conn.execute(select(PRINCIPALS).order_by(PRINCIPALS.c.principal_id)):
        where = f"principal {row.principal_id} ({row.name!r})"
        record = created.pop(row.principal_id, None)
        if record is None:
            return f"{where}: no principal.created record (the row was written around the log)"
        detail = orjson.loads(record.detail)
        stored = {
            "name": row.name,
            "role": row.role,
            "clinics": orjson.loads(row.clinics),
            "token_sha256": row.token_hash,
            "expires_at": utc_text(row.expires_at),
        }
        for key, value in stored.items():
            if key in detail and detail[key] != value:
                return f"{where}: {key} differs from {record.record_id}"
        if row.principal_id in revoked and row.revoked_at is None:
            return f"{where}: revoked in the chain, but the row is not revoked (undone)"
    for principal_id, record in sorted(created.items()):
        if principal_id not in revoked:
            return f"principal {principal_id} created in {record.record_id} has no row: deleted"
    return None
