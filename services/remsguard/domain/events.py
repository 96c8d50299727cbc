"""Domain events: what clinic devices report, already validated against the wire contract."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class Medication(StrEnum):
    """Concomitant medication classes the REMS form asks about."""

    BENZODIAZEPINE = "benzodiazepine"
    SEDATIVE_HYPNOTIC = "sedative_hypnotic"
    OPIOID = "opioid"
    PSYCHOSTIMULANT = "psychostimulant"
    MAOI = "maoi"


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Fields every event carries; `occurred_at` is event time and always timezone-aware."""

    event_id: str
    session_id: str
    clinic_id: str
    occurred_at: datetime
    device_id: str | None = None

    @property
    def type(self) -> str:
        return EVENT_TYPES_BY_CLASS[type(self)]


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionOpened(Event):
    patient_ref: str
    protocol: str | None = None
    concomitant_medications: tuple[Medication, ...] = field(default_factory=tuple)


@dataclass(frozen=True, slots=True, kw_only=True)
class VitalsRecorded(Event):
    systolic: float | None = None
    diastolic: float | None = None
    heart_rate: float | None = None
    spo2: float | None = None
    respiratory_rate: float | None = None

    @property
    def is_bp_reading(self) -> bool:
        return self.systolic is not None and self.diastolic is not None


@dataclass(frozen=True, slots=True, kw_only=True)
class DoseAdministered(Event):
    drug: str
    route: str
    dose_mg: float
    lot_number: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AssessmentRecorded(Event):
    sedation_moaas: int | None = None
    dissociation: bool | None = None
    respiratory_depression: bool | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionDischarged(Event):
    staff_id: str
    clinically_stable: bool


EVENT_TYPES_BY_CLASS: dict[type[Event], str] = {
    SessionOpened: "session.opened",
    VitalsRecorded: "vitals.recorded",
    DoseAdministered: "dose.administered",
    AssessmentRecorded: "assessment.recorded",
    SessionDischarged: "session.discharged",
}
EVENT_CLASSES_BY_TYPE: dict[str, type[Event]] = {t: c for c, t in EVENT_TYPES_BY_CLASS.items()}
