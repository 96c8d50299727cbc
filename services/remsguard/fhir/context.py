"""What translating a FHIR resource needs besides the resource: the code tables, how clinics
are named, the Bundle it came in, and the helpers every resource type shares (references,
times, numbers with units, stable event ids). Pure.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Final

import orjson

from remsguard.fhir.codes import FhirCodes, Token
from remsguard.fhir.outcome import Issue, error

__all__ = [
    "BundleIndex",
    "Reader",
    "Refused",
    "Source",
    "clinic_of",
    "event_id",
    "instant",
    "quantity",
    "reference_id",
    "status_of",
    "tokens",
]

_NO_TIME: Final = (
    "{element} has no time of day ({value}): a reading or a dose cannot be placed in the "
    "monitoring window without one; send a dateTime with hours, minutes and a time zone"
)


class Refused(Exception):
    """The resource cannot be used: the issues say why (no event is made of it)."""

    def __init__(self, *issues: Issue) -> None:
        super().__init__(issues[0].diagnostics if issues else "refused")
        self.issues = list(issues)


@dataclass(frozen=True, slots=True)
class Reader:
    """What translating needs from the service and the caller."""

    codes: FhirCodes
    # Organization reference or id -> clinic id; None: the organization's id is the clinic.
    organizations: Mapping[str, str] | None = None
    # The clinic of a session the service already knows (embedded mode), else None.
    session_clinic: Callable[[str], str | None] = lambda _session: None
    # The clinic when nothing else names one: the token's only clinic, if it has one.
    default_clinic: str | None = None


@dataclass(slots=True)
class BundleIndex:
    """The other entries of the request, for references inside it (`urn:uuid:...`)."""

    resources: dict[str, dict[str, Any]] = field(default_factory=dict)  # fullUrl -> resource
    encounter_clinics: dict[str, str] = field(default_factory=dict)  # session id -> clinic

    @classmethod
    def of(cls, entries: Iterable[tuple[str | None, dict[str, Any]]]) -> BundleIndex:
        index = cls()
        for full_url, resource in entries:
            if full_url:
                index.resources[full_url] = resource
        return index


@dataclass(frozen=True, slots=True)
class Source:
    """Where a resource is in the request, for issue expressions and references."""

    full_url: str | None = None
    prefix: str = ""  # e.g. "Bundle.entry[3].resource"; "" for a resource posted alone


def status_of(status: str | None, known: frozenset[str], resource: str) -> str:
    """A resource's status, which must be one of FHIR's codes for that resource type (else
    the resource is refused: a status is required)."""
    found = status or ""
    if found not in known:
        article = "an" if resource[0] in "AEIOU" else "a"
        raise Refused(
            error(
                "required" if not found else "value",
                f"status {found or '(none)'!r} is not {article} {resource} status",
                f"{resource}.status",
            )
        )
    return found


def reference_id(reference: str, kind: str, bundle: BundleIndex) -> str | None:
    """The logical id a reference names, when it is of `kind`: `Kind/id`, an absolute URL
    ending in `Kind/id[/_history/v]`, or a `urn:uuid:` of an entry of the same request
    (that entry's id, else the uuid)."""
    reference = reference.strip()
    if reference.startswith(("urn:uuid:", "urn:oid:")):
        target = bundle.resources.get(reference)
        if target is None or target.get("resourceType") != kind:
            return None
        own = target.get("id")
        return own if isinstance(own, str) and own else reference.rsplit(":", 1)[1]
    parts = reference.split("/")
    if "_history" in parts:
        parts = parts[: parts.index("_history")]
    if len(parts) >= 2 and parts[-2] == kind and parts[-1]:
        return parts[-1]
    return None


def clinic_of(
    organizations: Sequence[tuple[str, str]],
    session_id: str,
    reader: Reader,
    bundle: BundleIndex,
    where: str,
) -> str:
    """The clinic: an organization the resource names (through the configured map, or its
    id), else the session's Encounter in the same request, else the session the service
    knows, else the token's only clinic."""
    for reference, expression in organizations:
        org = reference_id(reference, "Organization", bundle)
        if org is None:
            continue
        if reader.organizations is None:
            return org
        clinic = reader.organizations.get(reference) or reader.organizations.get(org)
        if clinic is None:
            raise Refused(
                error(
                    "business-rule",
                    f"organization {reference!r} is not mapped to a clinic",
                    expression,
                )
            )
        return clinic
    clinic = (
        bundle.encounter_clinics.get(session_id)
        or reader.session_clinic(session_id)
        or reader.default_clinic
    )
    if clinic is None:
        raise Refused(
            error(
                "required",
                "no clinic: name the organization (Encounter.serviceProvider, a performer), "
                "post the Encounter in the same Bundle, or use a token bound to one clinic",
                where,
            )
        )
    return clinic


def tokens(concept: Any) -> list[Token]:
    """The codings of a CodeableConcept (fhir.resources model), as table lookups."""
    if concept is None:
        return []
    return [Token(c.system or "", c.code or "") for c in (concept.coding or [])]


def concept_text(concept: Any) -> str:
    if concept is None:
        return ""
    words = [concept.text or ""] + [c.display or "" for c in (concept.coding or [])]
    return " ".join(w for w in words if w)


def instant(value: object, expression: str) -> datetime:
    """An aware datetime from a FHIR dateTime/instant; a date alone is refused."""
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value
    if value is None:
        raise Refused(error("required", "no time given", expression))
    shown = value.isoformat() if isinstance(value, date) else str(value)
    element = expression.rsplit(".", 1)[-1]
    raise Refused(error("value", _NO_TIME.format(element=element, value=shown), expression))


def quantity(value: Any, wanted: str, codes: FhirCodes, expression: str) -> float:
    """A Quantity's value in the unit `wanted` (by its UCUM code, else its unit text)."""
    if value is None or value.value is None:
        raise Refused(error("required", "no value", expression))
    number = value.value
    if not isinstance(number, Decimal | int | float) or not Decimal(number).is_finite():
        raise Refused(error("value", "not a finite number", f"{expression}.value"))
    unit = None
    for key in (value.code, value.unit):
        if isinstance(key, str) and key.strip():
            unit = codes.units.get(key.strip())
            if unit is not None:
                break
    if unit is None or unit[0] != wanted:
        shown = value.code or value.unit or "(none)"
        raise Refused(
            error("value", f"unit {shown!r} cannot be read as {wanted}", f"{expression}.code")
        )
    return round(float(number) * unit[1], 3)


def identity(resource_type: str, resource: Mapping[str, Any]) -> str:
    """What names a resource across re-sends: its id, else a digest of its content."""
    own = resource.get("id")
    if isinstance(own, str) and own:
        return f"id:{own}"
    content = orjson.dumps(resource, option=orjson.OPT_SORT_KEYS)
    return "sha:" + hashlib.blake2b(content, digest_size=16).hexdigest()


def event_id(clinic: str, resource_type: str, who: str, role: str) -> str:
    """Stable across re-sends and versions of the same resource (the duplicate rules of the
    service then decide a re-send), distinct across clinics."""
    key = "\x1f".join((clinic, resource_type, who, role)).encode("utf-8", "replace")
    return "fhir-" + hashlib.blake2b(key, digest_size=12).hexdigest()
