"""The inbound event contract: what clinic devices send, as pydantic v2 models.

One JSON object per event: a common envelope (`EventBase`) plus a type-specific `data` object.
`EventCreate` is the discriminated union over `type`; each member converts itself to the
pure domain event of its `type` with `to_domain()`.

Choices the issue leaves open, made here:
- `data` is required for every type (it may be `{}` for `assessment.recorded`).
- Unknown keys in `data` are rejected; unknown keys in the envelope are ignored, so devices
  may add transport metadata without breaking the contract.
- Validation is strict: numbers must be JSON numbers, booleans JSON booleans, MOAA/S a JSON
  integer; strings are kept exactly as sent (no stripping) and ids must be non-empty.
- Non-finite numbers (`NaN`, `Infinity`) are rejected.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from remsguard.domain.admission import EARLIEST, LATEST
from remsguard.domain.events import EVENT_CLASSES_BY_TYPE, Event, Medication

__all__ = [
    "DEFAULT_PROTOCOL",
    "AssessmentRecordedData",
    "AssessmentRecordedEvent",
    "DoseAdministeredData",
    "DoseAdministeredEvent",
    "Drug",
    "EventBase",
    "EventCreate",
    "NonEmptyStr",
    "Route",
    "SessionDischargedData",
    "SessionDischargedEvent",
    "SessionOpenedData",
    "SessionOpenedEvent",
    "VitalsRecordedData",
    "VitalsRecordedEvent",
    "wire_event",
]

DEFAULT_PROTOCOL = "spravato-rems"

NonEmptyStr = Annotated[str, Field(min_length=1)]
Drug = Literal["esketamine", "ketamine"]
Route = Literal["intranasal", "iv", "im", "sublingual", "oral"]

_ENVELOPE_CONFIG = ConfigDict(strict=True, extra="ignore", allow_inf_nan=False, frozen=True)
_DATA_CONFIG = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False, frozen=True)


# --------------------------------------------------------------------------- data payloads


class SessionOpenedData(BaseModel):
    model_config = _DATA_CONFIG

    patient_ref: NonEmptyStr = Field(description="Pseudonymous patient reference.")
    protocol: NonEmptyStr | None = Field(
        default=None,
        description=f"Monitoring protocol name; `{DEFAULT_PROTOCOL}` when absent.",
    )
    concomitant_medications: tuple[Medication, ...] = Field(
        default=(), description="Concomitant medication classes recorded on the session."
    )


def _bp_schema_extra(schema: dict[str, Any]) -> None:
    schema["minProperties"] = 1
    schema["dependentRequired"] = {"systolic": ["diastolic"], "diastolic": ["systolic"]}
    schema["description"] = (
        "At least one vital. `systolic` and `diastolic` come together or not at all, "
        "and systolic > diastolic."
    )


class VitalsRecordedData(BaseModel):
    model_config = ConfigDict(
        strict=True,
        extra="forbid",
        allow_inf_nan=False,
        frozen=True,
        json_schema_extra=_bp_schema_extra,
    )

    systolic: float | None = Field(default=None, ge=40, le=300, description="mmHg")
    diastolic: float | None = Field(default=None, ge=20, le=200, description="mmHg")
    heart_rate: float | None = Field(default=None, ge=20, le=300, description="beats/min")
    spo2: float | None = Field(default=None, ge=50, le=100, description="%")
    respiratory_rate: float | None = Field(default=None, ge=0, le=80, description="breaths/min")

    @model_validator(mode="after")
    def _check_vitals(self) -> VitalsRecordedData:
        systolic, diastolic = self.systolic, self.diastolic
        if systolic is None:
            if diastolic is not None:
                raise PydanticCustomError("bp_incomplete", "diastolic given without systolic")
            if self.heart_rate is None and self.spo2 is None and self.respiratory_rate is None:
                raise PydanticCustomError("vitals_empty", "no vital sign in the reading")
        elif diastolic is None:
            raise PydanticCustomError("bp_incomplete", "systolic given without diastolic")
        elif systolic <= diastolic:
            raise PydanticCustomError("bp_order", "systolic must be greater than diastolic")
        return self


class DoseAdministeredData(BaseModel):
    model_config = _DATA_CONFIG

    drug: Drug
    route: Route
    dose_mg: float = Field(gt=0)
    lot_number: NonEmptyStr | None = None


class AssessmentRecordedData(BaseModel):
    model_config = _DATA_CONFIG

    sedation_moaas: int | None = Field(default=None, ge=0, le=5, description="MOAA/S score")
    dissociation: bool | None = None
    respiratory_depression: bool | None = None


class SessionDischargedData(BaseModel):
    model_config = _DATA_CONFIG

    staff_id: NonEmptyStr
    clinically_stable: bool


# --------------------------------------------------------------------------- envelopes


class EventBase(BaseModel):
    """Fields every event carries."""

    model_config = _ENVELOPE_CONFIG

    event_id: NonEmptyStr = Field(description="Unique per event; a repeated id is a duplicate.")
    session_id: NonEmptyStr = Field(description="The treatment session (one patient, one visit).")
    clinic_id: NonEmptyStr = Field(description="The healthcare setting.")
    occurred_at: AwareDatetime = Field(
        ge=EARLIEST,
        lt=LATEST,
        description=(
            "Event time, RFC 3339 with an offset, e.g. `2026-11-23T09:00:00Z`; from 2000 to "
            "2099. Live paths also refuse times more than a few minutes ahead of their clock "
            "(`occurred_in_future`) or older than their horizon (`too_old`)."
        ),
    )
    device_id: NonEmptyStr | None = Field(default=None, description="The sending device.")

    def to_domain(self) -> Event:
        """The domain event of the member's `type`, from the envelope's other fields, then the
        data's (the domain events name theirs the same)."""
        envelope = dict(self)
        kind = envelope.pop("type")
        data: BaseModel = envelope.pop("data")
        return EVENT_CLASSES_BY_TYPE[kind](**{**envelope, **dict(data)})


class SessionOpenedEvent(EventBase):
    type: Literal["session.opened"]
    data: SessionOpenedData


class VitalsRecordedEvent(EventBase):
    type: Literal["vitals.recorded"]
    data: VitalsRecordedData


class DoseAdministeredEvent(EventBase):
    type: Literal["dose.administered"]
    data: DoseAdministeredData


class AssessmentRecordedEvent(EventBase):
    type: Literal["assessment.recorded"]
    data: AssessmentRecordedData


class SessionDischargedEvent(EventBase):
    type: Literal["session.discharged"]
    data: SessionDischargedData


EventCreate = Annotated[
    SessionOpenedEvent
    | VitalsRecordedEvent
    | DoseAdministeredEvent
    | AssessmentRecordedEvent
    | SessionDischargedEvent,
    Field(discriminator="type"),
]
"""One inbound event, discriminated on `type`."""


def wire_event(
    kind: str,
    event_id: str,
    session_id: str,
    clinic_id: str | None,
    at: datetime,
    data: Mapping[str, object],
    device_id: str | None = None,
) -> dict[str, Any]:
    """One event as the JSON this contract reads, built by a reader of another wire format
    (FHIR, HL7 v2); `device_id` only when there is one. A missing clinic stays None for
    `decode_event` to refuse."""
    wire: dict[str, Any] = {
        "type": kind,
        "event_id": event_id,
        "session_id": session_id,
        "clinic_id": clinic_id,
        "occurred_at": at.isoformat(),
        "data": dict(data),
    }
    if device_id:
        wire["device_id"] = device_id
    return wire
