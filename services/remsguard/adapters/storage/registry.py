"""The REMS registry in the compliance log: ``rems_certifications`` and ``rems_enrollments``.

``RegistryStore.certify`` and ``enroll`` write a row and, in the same transaction
(``AuditLog.recorded_change``), a chained record in the clinic's chain
(``rems.certification.recorded`` / ``rems.enrollment.recorded``) saying what was recorded
and by whom; recording the same values again changes nothing and records nothing.
``load`` reads the whole registry as the engine's pure ``RemsRegistry``. ``check_registry``
is ``audit verify``'s check: every row is what its latest record says, and every recorded
key still has its row (rows are replaced, never deleted).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime
from typing import Any, Final

import orjson
from sqlalchemy import Connection, Table, select
from sqlalchemy.dialects import postgresql, sqlite

from remsguard.adapters.storage.audit_log import RecordsChanges
from remsguard.adapters.storage.models import (
    AuditRow,
    RemsCertificationRow,
    RemsEnrollmentRow,
    utc,
    utc_text,
)
from remsguard.domain.decisions import AuditKind, AuditRecord, stable_id
from remsguard.domain.registry import Certification, Enrollment, RemsRegistry

__all__ = [
    "RegistryError",
    "RegistryStore",
    "certification_dict",
    "check_registry",
    "enrollment_dict",
    "read_registry_lines",
    "registry_lines",
]

CERTIFICATIONS: Final[Table] = RemsCertificationRow.__table__  # type: ignore[attr-defined]
ENROLLMENTS: Final[Table] = RemsEnrollmentRow.__table__  # type: ignore[attr-defined]
AUDIT: Final[Table] = AuditRow.__table__  # type: ignore[attr-defined]
MAX_TEXT: Final = 128


class RegistryError(ValueError):
    """A registry change that cannot be recorded (empty id, dates the wrong way round)."""


def _wall_clock() -> datetime:
    return datetime.now(UTC)


def _checked(name: str, value: str) -> str:
    value = value.strip()
    if not value or len(value) > MAX_TEXT:
        raise RegistryError(f"{name} must be 1 to {MAX_TEXT} characters")
    return value


class RegistryStore:
    """Record and read certifications and enrollments; ``now`` is the wall clock."""

    def __init__(self, log: RecordsChanges, now: Callable[[], datetime] = _wall_clock) -> None:
        self.log = log
        self._now = now

    def load(self) -> RemsRegistry:
        with self.log.reader.connect() as conn:
            certifications = [
                Certification(r.clinic_id, r.certification_id, r.valid_from, r.valid_to)
                for r in conn.execute(select(CERTIFICATIONS))
            ]
            enrollments = [
                Enrollment(r.clinic_id, r.patient_ref, r.enrolled_on)
                for r in conn.execute(select(ENROLLMENTS))
            ]
        return RemsRegistry.of(certifications, enrollments)

    def certify(
        self,
        clinic_id: str,
        certification_id: str,
        valid_from: date,
        valid_to: date | None,
        *,
        by: str,
    ) -> tuple[Certification, bool]:
        """Record the clinic's certification; (it, whether anything changed)."""
        wanted = Certification(
            _checked("clinic", clinic_id),
            _checked("certification_id", certification_id),
            valid_from,
            valid_to,
        )
        if valid_to is not None and valid_to < valid_from:
            raise RegistryError("valid_to must not be before valid_from")
        if self.load().certification_of(wanted.clinic_id) == wanted:
            return wanted, False
        row = {
            "clinic_id": wanted.clinic_id,
            "certification_id": wanted.certification_id,
            "valid_from": valid_from,
            "valid_to": valid_to,
        }
        self._record(CERTIFICATIONS, AuditKind.REMS_CERTIFICATION_RECORDED, row, by)
        return wanted, True

    def enroll(
        self, clinic_id: str, patient_ref: str, enrolled_on: date, *, by: str
    ) -> tuple[Enrollment, bool]:
        """Record the patient's enrollment at the clinic; (it, whether anything changed)."""
        wanted = Enrollment(
            _checked("clinic", clinic_id), _checked("patient_ref", patient_ref), enrolled_on
        )
        if self.load().enrollment_of(wanted.clinic_id, wanted.patient_ref) == wanted:
            return wanted, False
        row = {
            "clinic_id": wanted.clinic_id,
            "patient_ref": wanted.patient_ref,
            "enrolled_on": enrolled_on,
        }
        self._record(ENROLLMENTS, AuditKind.REMS_ENROLLMENT_RECORDED, row, by)
        return wanted, True

    def _record(self, table: Table, kind: AuditKind, row: dict[str, Any], by: str) -> None:
        """Upsert `row` and chain its record, in one transaction."""
        now = utc(self._now())
        detail: dict[str, object] = {key: _plain(value) for key, value in row.items()}
        detail["by"] = by
        subject = "/".join(str(row[c.name]) for c in table.primary_key.columns)
        record = AuditRecord(
            record_id=stable_id(kind, subject, orjson.dumps(detail).decode(), now.isoformat()),
            kind=kind,
            subject_id=subject,
            session_id=None,
            clinic_id=str(row["clinic_id"]),
            occurred_at=now,
            detail=detail,
        )
        values = {**row, "recorded_at": now, "recorded_by": by}
        with self.log.recorded_change() as change:
            dialect = postgresql if change.conn.dialect.name == "postgresql" else sqlite
            insert = dialect.insert(table).values(**values)
            keys = [c.name for c in table.primary_key.columns]
            change.conn.execute(
                insert.on_conflict_do_update(
                    index_elements=keys,
                    set_={k: v for k, v in values.items() if k not in keys},
                )
            )
            change.append([record])


def certification_dict(c: Certification) -> dict[str, Any]:
    """A certification as JSON (the API's and `registry list`'s shape)."""
    return {
        "clinic_id": c.clinic_id,
        "certification_id": c.certification_id,
        "valid_from": c.valid_from.isoformat(),
        "valid_to": None if c.valid_to is None else c.valid_to.isoformat(),
    }


def enrollment_dict(e: Enrollment) -> dict[str, Any]:
    return {
        "clinic_id": e.clinic_id,
        "patient_ref": e.patient_ref,
        "enrolled_on": e.enrolled_on.isoformat(),
    }


def registry_lines(registry: RemsRegistry) -> list[bytes]:
    """The registry as JSON lines (`remsguard registry list`, a `replay --registry` file):
    one per certification, then one per enrollment."""
    certs = sorted(registry.certifications.values(), key=lambda c: c.clinic_id)
    people = sorted(registry.enrollments.values(), key=lambda e: (e.clinic_id, e.patient_ref))
    return [orjson.dumps(certification_dict(c)) for c in certs] + [
        orjson.dumps(enrollment_dict(e)) for e in people
    ]


def read_registry_lines(lines: Iterable[bytes | str]) -> RemsRegistry:
    """A registry from `registry_lines`; ValueError naming the line that is not one."""
    certifications: list[Certification] = []
    enrollments: list[Enrollment] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = orjson.loads(line)
            if "patient_ref" in row:
                enrollments.append(
                    Enrollment(
                        str(row["clinic_id"]),
                        str(row["patient_ref"]),
                        date.fromisoformat(row["enrolled_on"]),
                    )
                )
            else:
                end = row.get("valid_to")
                certifications.append(
                    Certification(
                        str(row["clinic_id"]),
                        str(row["certification_id"]),
                        date.fromisoformat(row["valid_from"]),
                        None if end is None else date.fromisoformat(end),
                    )
                )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"line {number}: not a certification or enrollment ({exc})") from None
    return RemsRegistry.of(certifications, enrollments)


def _plain(value: object) -> object:
    return value.isoformat() if isinstance(value, date) else value


def check_registry(conn: Connection) -> str | None:
    """The first registry row that disagrees with its latest chained record, or None."""
    for table, kind in (
        (CERTIFICATIONS, AuditKind.REMS_CERTIFICATION_RECORDED),
        (ENROLLMENTS, AuditKind.REMS_ENROLLMENT_RECORDED),
    ):
        latest: dict[str, Any] = {}
        query = select(AUDIT).where(AUDIT.c.kind == kind.value).order_by(AUDIT.c.log_index)
        for record in conn.execute(query):
            latest[record.subject_id] = record
        keys = [c.name for c in table.primary_key.columns]
        for row in conn.execute(select(table)):
            subject = "/".join(str(getattr(row, k)) for k in keys)
            where = f"{table.name} {subject!r}"
            record = latest.pop(subject, None)
            if record is None:
                return f"{where}: no {kind.value} record (the row was written around the log)"
            detail = orjson.loads(record.detail)
            for column in table.columns:
                name = column.name
                value = getattr(row, name)
                if name == "recorded_at":
                    same = utc_text(value) == utc_text(record.occurred_at)
                elif name == "recorded_by":
                    same = detail.get("by") == value
                else:
                    same = detail.get(name) == _plain(value)
                if not same:
                    return f"{where}: {name} differs from {record.record_id}"
        for subject, record in sorted(latest.items()):
            return f"{table.name} {subject!r} recorded in {record.record_id} has no row: deleted"
    return None
