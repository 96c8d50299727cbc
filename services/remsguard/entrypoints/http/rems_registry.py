"""The REMS registry of a clinic: its certification and its enrolled patients.

`PUT /v1/clinics/{clinic}/certification` and `PUT /v1/clinics/{clinic}/enrollments/{patient}`
(admin) record a change with a chained audit record (`rems.certification.recorded`,
`rems.enrollment.recorded`) naming the caller; the same values again answer
`changed: false` and record nothing. `GET` of both for staff, auditors and admins. Every
route is clinic-scoped: a principal bound to other clinics gets 404. In embedded mode the
engine judges doses by the new registry from the next event on.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from pydantic import BaseModel, ConfigDict, Field

from remsguard.adapters.storage.registry import (
    RegistryError,
    RegistryStore,
    certification_dict,
    enrollment_dict,
)
from remsguard.entrypoints.http.auth import require
from remsguard.entrypoints.http.capabilities import ServedProcess
from remsguard.entrypoints.http.errors import ApiError
from remsguard.identity import Principal, Role

__all__ = ["router"]

router = APIRouter(tags=["rems registry"])
_READERS = require(Role.STAFF, Role.AUDITOR, Role.ADMIN)
_WRITERS = require(Role.ADMIN)
_PRINTABLE = r"^[^\x00-\x1f\x7f]+$"  # no control characters (PostgreSQL refuses NUL)
_CLINIC = Path(min_length=1, max_length=128, pattern=_PRINTABLE)


class CertificationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    certification_id: str = Field(min_length=1, max_length=128, pattern=_PRINTABLE)
    valid_from: date
    valid_to: date | None = None


class EnrollmentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enrolled_on: date


def _store(request: Request) -> RegistryStore:
    return RegistryStore(request.app.state.container.compliance)


def _scoped(principal: Principal, clinic: str) -> None:
    if not principal.may_see(clinic):
        raise ApiError(404, "not_found", f"no clinic {clinic!r}")


async def _readable(clinic: str = _CLINIC, principal: Principal = Depends(_READERS)) -> str:
    """The path's clinic, for a reader who may see it. (The writes check theirs in the route:
    a 422 for a bad body comes before the 404.)"""
    _scoped(principal, clinic)
    return clinic


ReadableClinic = Annotated[str, Depends(_readable)]


def _changed(request: Request) -> None:
    """Tell the engine of this process (embedded mode) that the registry changed."""
    process: ServedProcess = request.app.state.container
    process.registry_changed()


@router.get("/v1/clinics/{clinic}/certification", summary="The clinic's REMS certification")
def get_certification(request: Request, clinic: ReadableClinic) -> dict[str, Any]:
    found = _store(request).load().certification_of(clinic)
    if found is None:
        raise ApiError(404, "not_certified", f"clinic {clinic!r} has no certification on record")
    return certification_dict(found)


@router.put("/v1/clinics/{clinic}/certification", summary="Record the clinic's certification")
def put_certification(
    request: Request,
    body: CertificationIn,
    clinic: str = _CLINIC,
    principal: Principal = Depends(_WRITERS),
) -> dict[str, Any]:
    _scoped(principal, clinic)
    try:
        found, changed = _store(request).certify(
            clinic, body.certification_id, body.valid_from, body.valid_to, by=principal.name
        )
    except RegistryError as exc:
        raise ApiError(422, "invalid_registry_change", str(exc)) from None
    if changed:
        _changed(request)
    return {"changed": changed, "certification": certification_dict(found)}


@router.get("/v1/clinics/{clinic}/enrollments", summary="The clinic's enrolled patients")
def get_enrollments(request: Request, clinic: ReadableClinic) -> dict[str, Any]:
    patients = _store(request).load().patients_of(clinic)
    return {"clinic_id": clinic, "enrollments": [enrollment_dict(e) for e in patients]}


@router.put(
    "/v1/clinics/{clinic}/enrollments/{patient_ref}",
    summary="Record a patient's REMS enrollment at the clinic",
)
def put_enrollment(
    request: Request,
    body: EnrollmentIn,
    clinic: str = _CLINIC,
    patient_ref: str = Path(min_length=1, max_length=128, pattern=_PRINTABLE),
    principal: Principal = Depends(_WRITERS),
) -> dict[str, Any]:
    _scoped(principal, clinic)
    try:
        found, changed = _store(request).enroll(
            clinic, patient_ref, body.enrolled_on, by=principal.name
        )
    except RegistryError as exc:
        raise ApiError(422, "invalid_registry_change", str(exc)) from None
    if changed:
        _changed(request)
    return {"changed": changed, "enrollment": enrollment_dict(found)}
