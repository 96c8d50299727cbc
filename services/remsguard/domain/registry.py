"""RemsRegistry: which settings are certified in the REMS and which patients are enrolled.

SPRAVATO may only be given in a certified healthcare setting, to a patient enrolled in the
REMS before the first treatment. The registry is a pure, immutable value: per clinic its
certification (identifier, valid from, valid to or open-ended) and its enrolled patients
(`patient_ref`, enrollment date). The storage adapter loads it from the compliance log; the
engine asks it about the date of each dose.

Dates are calendar dates, and a dose's date is its event time's date in UTC (the contract
carries no clinic time zone). Both ends of a certification are inclusive; a patient enrolled
on the day of a dose counts as enrolled for it (the form is filed before the treatment).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from types import MappingProxyType


@dataclass(frozen=True, slots=True)
class Certification:
    """A healthcare setting's REMS certification; `valid_to` None means open-ended."""

    clinic_id: str
    certification_id: str
    valid_from: date
    valid_to: date | None = None

    def covers(self, day: date) -> bool:
        return self.valid_from <= day and (self.valid_to is None or day <= self.valid_to)


@dataclass(frozen=True, slots=True)
class Enrollment:
    """A patient's REMS enrollment at one clinic."""

    clinic_id: str
    patient_ref: str
    enrolled_on: date

    def covers(self, day: date) -> bool:
        return self.enrolled_on <= day


def dose_date(at: datetime) -> date:
    """The calendar date a dose is judged on: its event time's date in UTC."""
    return at.astimezone(UTC).date()


@dataclass(frozen=True, slots=True)
class RemsRegistry:
    """Certifications by clinic and enrollments by (clinic, patient); never changed in place:
    `with_certification` and `with_enrollment` return a new registry."""

    certifications: Mapping[str, Certification] = field(
        default_factory=lambda: MappingProxyType({})
    )
    enrollments: Mapping[tuple[str, str], Enrollment] = field(
        default_factory=lambda: MappingProxyType({})
    )

    @classmethod
    def of(
        cls, certifications: Iterable[Certification] = (), enrollments: Iterable[Enrollment] = ()
    ) -> RemsRegistry:
        """A registry of these records; a later record for the same key replaces an earlier."""
        return cls(
            MappingProxyType({c.clinic_id: c for c in certifications}),
            MappingProxyType({(e.clinic_id, e.patient_ref): e for e in enrollments}),
        )

    def with_certification(self, certification: Certification) -> RemsRegistry:
        return RemsRegistry.of([*self.certifications.values(), certification], self.enrollment_list)

    def with_enrollment(self, enrollment: Enrollment) -> RemsRegistry:
        return RemsRegistry.of(self.certifications.values(), [*self.enrollment_list, enrollment])

    @property
    def enrollment_list(self) -> list[Enrollment]:
        return list(self.enrollments.values())

    def certification_of(self, clinic_id: str) -> Certification | None:
        """The clinic's certification, whatever its dates."""
        return self.certifications.get(clinic_id)

    def enrollment_of(self, clinic_id: str, patient_ref: str) -> Enrollment | None:
        """The patient's enrollment at the clinic, whatever its date."""
        return self.enrollments.get((clinic_id, patient_ref))

    def certification_on(self, clinic_id: str, at: datetime) -> Certification | None:
        """The clinic's certification if it covers the date of `at`."""
        found = self.certifications.get(clinic_id)
        return found if found is not None and found.covers(dose_date(at)) else None

    def enrollment_on(self, clinic_id: str, patient_ref: str, at: datetime) -> Enrollment | None:
        """The patient's enrollment at the clinic if it was in place on the date of `at`."""
        found = self.enrollments.get((clinic_id, patient_ref))
        return found if found is not None and found.covers(dose_date(at)) else None

    def patients_of(self, clinic_id: str) -> list[Enrollment]:
        """The clinic's enrollments, by patient."""
        return sorted(
            (e for e in self.enrollments.values() if e.clinic_id == clinic_id),
            key=lambda e: e.patient_ref,
        )


__all__ = ["Certification", "Enrollment", "RemsRegistry", "dose_date"]
