"""The outbound contract: the wire form of alerts, audit records and rejections.

Times are RFC 3339 in UTC ending in `Z`; field order is the model's declaration order and
never changes. The `*_to_json` functions are the fast path (orjson, no model instance) and
produce exactly the bytes `<Model>.from_domain(x).model_dump_json()` would.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import fields
from datetime import UTC, datetime
from typing import Any, Final, Literal

import orjson
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_serializer

from remsguard.contract.decode import RejectionReason
from remsguard.domain.decisions import (
    Alert,
    AuditKind,
    AuditRecord,
    Rejection,
    Severity,
    Withdrawal,
    WithdrawalReason,
)

__all__ = [
    "WITHDRAWN",
    "AlertPublic",
    "AlertWithdrawalPublic",
    "AuditRecordPublic",
    "RejectionPublic",
    "alert_from_json",
    "alert_to_json",
    "alerts_message_from_json",
    "audit_record_to_json",
    "rejection_to_json",
    "withdrawal_to_json",
]

_OPTS: Final = orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC
_DETAIL_OPTS: Final = _OPTS | orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS
_PUBLIC_CONFIG: Final = ConfigDict(frozen=True, extra="forbid")


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC) if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _utc_z(value: datetime) -> str:
    return orjson.dumps(_utc(value), option=_OPTS)[1:-1].decode()


def _named(source: object, names: Iterable[str], **given: object) -> dict[str, Any]:
    """`source`'s attributes called `names`, in that order, but those `given` (a field the
    source has not, or one the wire writes otherwise)."""
    return {name: given[name] if name in given else getattr(source, name) for name in names}


class AlertPublic(BaseModel):
    """An alert for staff, as published on the alerts stream and printed by `replay`."""

    model_config = _PUBLIC_CONFIG

    alert_id: str
    rule: str
    severity: Severity
    session_id: str
    clinic_id: str
    triggered_at: AwareDatetime = Field(description="RFC 3339, UTC, ending in `Z`.")
    message: str
    evidence: tuple[str, ...] = Field(description="Ids of the events behind the alert.")
    protocol: str
    protocol_version: str = Field(description="Digest of the protocol file in force.")
    inhibited_by: str | None = Field(
        default=None,
        description="The higher-priority alert on the same reading that carries the "
        "notification and console card (the protocol's [inhibitions]); null if none.",
    )

    @field_serializer("triggered_at")
    def _ser_time(self, value: datetime) -> str:
        return _utc_z(value)

    @classmethod
    def from_domain(cls, alert: Alert) -> AlertPublic:
        return cls(**_named(alert, cls.model_fields))

    def to_domain(self) -> Alert:
        return Alert(**_named(self, _ALERT_FIELDS))


WITHDRAWN: Final = "alert.withdrawn"
_ALERT_FIELDS: Final = tuple(f.name for f in fields(Alert))
_WITHDRAWAL_FIELDS: Final = tuple(f.name for f in fields(Withdrawal))


class AlertWithdrawalPublic(BaseModel):
    """An alert the engine took back, as published on the alerts stream (next to the alerts,
    keyed by session) and printed by `replay`: consoles drop it, notifications stop. The
    compliance log learns it from the `alert.withdrawn` audit record, not from this."""

    model_config = _PUBLIC_CONFIG

    kind: Literal["alert.withdrawn"] = Field(description="Tells it from an alert.")
    alert_id: str
    rule: str
    session_id: str
    clinic_id: str
    withdrawn_at: AwareDatetime = Field(
        description="Event time of the fact that contradicts the alert (RFC 3339, UTC)."
    )
    reason: WithdrawalReason
    detail: str
    evidence: tuple[str, ...] = Field(description="Ids of the events that contradict it.")

    @field_serializer("withdrawn_at")
    def _ser_time(self, value: datetime) -> str:
        return _utc_z(value)

    def to_domain(self) -> Withdrawal:
        return Withdrawal(**_named(self, _WITHDRAWAL_FIELDS))


class AuditRecordPublic(BaseModel):
    """One fact for the compliance log. `detail` keys are serialized sorted."""

    model_config = _PUBLIC_CONFIG

    record_id: str
    kind: AuditKind
    subject_id: str
    session_id: str | None
    clinic_id: str | None
    occurred_at: AwareDatetime | None = Field(description="RFC 3339, UTC, ending in `Z`.")
    detail: dict[str, Any]

    @field_serializer("occurred_at")
    def _ser_time(self, value: datetime | None) -> str | None:
        return None if value is None else _utc_z(value)

    @field_serializer("detail")
    def _ser_detail(self, value: dict[str, Any]) -> Any:
        return orjson.loads(_detail_json(value))

    @classmethod
    def from_domain(cls, rec: AuditRecord) -> AuditRecordPublic:
        return cls(**_named(rec, cls.model_fields, detail=dict(rec.detail)))


class RejectionPublic(BaseModel):
    """An event that broke the contract, for the dead-letter stream and `replay`'s stderr."""

    model_config = _PUBLIC_CONFIG

    reason: RejectionReason
    detail: str
    event_id: str | None = None
    session_id: str | None = None
    clinic_id: str | None = None
    line: int | None = Field(default=None, ge=1, description="1-based input line, if known.")

    @classmethod
    def from_domain(cls, rej: Rejection, *, line: int | None = None) -> RejectionPublic:
        return cls(**_named(rej, cls.model_fields, reason=RejectionReason(rej.reason), line=line))


def _default(value: object) -> object:
    """orjson fallback for detail values: sets sorted, everything else as its string."""
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)
    return str(value)


def _detail_json(detail: dict[str, Any]) -> bytes:
    if not detail:
        return b"{}"
    return orjson.dumps(detail, default=_default, option=_DETAIL_OPTS)


def alert_to_json(alert: Alert) -> bytes:
    """Compact JSON for one alert, fields in `AlertPublic` order."""
    wire = _named(alert, AlertPublic.model_fields, triggered_at=_utc(alert.triggered_at))
    return orjson.dumps(wire, option=_OPTS)


def alert_from_json(raw: bytes | str) -> Alert:
    """Parse an alert produced by `alert_to_json`; raises `pydantic.ValidationError` if bad."""
    return AlertPublic.model_validate_json(raw).to_domain()


def withdrawal_to_json(withdrawal: Withdrawal) -> bytes:
    """Compact JSON for one withdrawal, fields in `AlertWithdrawalPublic` order."""
    at = _utc(withdrawal.withdrawn_at)
    wire = _named(withdrawal, AlertWithdrawalPublic.model_fields, kind=WITHDRAWN, withdrawn_at=at)
    return orjson.dumps(wire, option=_OPTS)


def alerts_message_from_json(raw: bytes | str) -> Alert | Withdrawal:
    """One message of the alerts stream: an alert, or (with `"kind": "alert.withdrawn"`) a
    withdrawal. Raises `pydantic.ValidationError` (a ValueError) if it is neither."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if isinstance(data, dict) and "kind" in data:
        return AlertWithdrawalPublic.model_validate(data).to_domain()
    return AlertPublic.model_validate(data).to_domain()


def audit_record_to_json(rec: AuditRecord) -> bytes:
    """Compact JSON for one audit record, fields in `AuditRecordPublic` order. One per accepted
    event on the Kafka path: spelled out, not `_named` (a literal dict is the cheaper)."""
    return orjson.dumps(
        {
            "record_id": rec.record_id,
            "kind": rec.kind,
            "subject_id": rec.subject_id,
            "session_id": rec.session_id,
            "clinic_id": rec.clinic_id,
            "occurred_at": None if rec.occurred_at is None else _utc(rec.occurred_at),
            "detail": orjson.Fragment(_detail_json(rec.detail)),
        },
        option=_OPTS,
    )


def rejection_to_json(rej: Rejection, *, line: int | None = None) -> bytes:
    """Compact JSON for one rejection, fields in `RejectionPublic` order."""
    return orjson.dumps(_named(rej, RejectionPublic.model_fields, line=line), option=_OPTS)
