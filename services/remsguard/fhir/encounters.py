"""`Encounter` -> `session.opened` (and `session.discharged` once it is finished). Pure.

The Encounter is the session: its id (or, for an entry of a transaction posted without one,
the uuid of its `urn:uuid:` fullUrl) is the session id. `status` in-progress (or onleave)
with `period.start` opens the session; finished with `period.end` also discharges it, by the
participant typed DIS (discharger), else the first participant, as `staff_id`, clinically
stable unless `hospitalization.dischargeDisposition` says otherwise (`codes.toml`). planned,
arrived and triaged are not started yet; cancelled and entered-in-error are not sessions.
`subject` gives the pseudonymous `patient_ref`, `serviceProvider` the clinic. A later version
(the status change) yields the same `session.opened` again, which is a duplicate.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from fhir.resources.R4B.encounter import Encounter

from remsguard.contract.events import wire_event
from remsguard.fhir.context import (
    BundleIndex,
    Reader,
    Refused,
    Source,
    clinic_of,
    event_id,
    instant,
    reference_id,
    status_of,
    tokens,
)
from remsguard.fhir.outcome import error, information
from remsguard.fhir.translated import Translated

__all__ = ["encounter", "session_id_of"]

_OPEN: Final = frozenset({"in-progress", "onleave"})
_NOT_STARTED: Final = frozenset({"planned", "arrived", "triaged"})
_NOT_A_SESSION: Final = frozenset({"cancelled", "entered-in-error", "unknown"})
_KNOWN_STATUS: Final = _OPEN | _NOT_STARTED | _NOT_A_SESSION | {"finished"}
_DISCHARGER: Final = "DIS"


def session_id_of(raw: Mapping[str, Any], source: Source) -> str | None:
    own = raw.get("id")
    if isinstance(own, str) and own:
        return own
    if source.full_url and source.full_url.startswith("urn:uuid:"):
        return source.full_url.removeprefix("urn:uuid:")
    return None


def encounter(
    model: Encounter, raw: Mapping[str, Any], source: Source, reader: Reader, bundle: BundleIndex
) -> Translated:
    out = Translated("Encounter")
    status = status_of(model.status, _KNOWN_STATUS, "Encounter")
    if status in _NOT_STARTED or status in _NOT_A_SESSION:
        out.issues.append(
            information(
                f"status {status}: no session under way, nothing recorded", "Encounter.status"
            )
        )
        return out
    session = session_id_of(raw, source)
    if session is None:
        raise Refused(
            error("required", "Encounter.id (the session id) is required", "Encounter.id")
        )
    patient = _patient(model, bundle)
    clinic = clinic_of(
        [(model.serviceProvider.reference or "", "Encounter.serviceProvider")]
        if model.serviceProvider is not None
        else [],
        session,
        reader,
        bundle,
        "Encounter.serviceProvider",
    )
    period = model.period
    start = instant(period.start if period else None, "Encounter.period.start")
    opened = event_id(clinic, "Encounter", session, "opened")
    out.events.append(
        wire_event("session.opened", opened, session, clinic, start, {"patient_ref": patient})
    )
    if status != "finished":
        return out
    end = instant(period.end if period else None, "Encounter.period.end")
    stable = _stable(model, reader, out)
    data = {"staff_id": _discharger(model, bundle), "clinically_stable": stable}
    discharged = event_id(clinic, "Encounter", session, "discharged")
    out.events.append(wire_event("session.discharged", discharged, session, clinic, end, data))
    return out


def _patient(model: Encounter, bundle: BundleIndex) -> str:
    subject = model.subject
    if subject is not None:
        if subject.reference:
            found = reference_id(subject.reference, "Patient", bundle)
            if found:
                return found
        if subject.identifier is not None and subject.identifier.value:
            return subject.identifier.value
    raise Refused(
        error("required", "subject must reference the (pseudonymous) patient", "Encounter.subject")
    )


def _discharger(model: Encounter, bundle: BundleIndex) -> str:
    people = []
    for n, participant in enumerate(model.participant or []):
        individual = participant.individual
        if individual is None:
            continue
        name = None
        if individual.reference:
            for kind in ("Practitioner", "PractitionerRole", "RelatedPerson"):
                name = name or reference_id(individual.reference, kind, bundle)
        name = name or (individual.identifier.value if individual.identifier else None)
        if not name:
            continue
        types = [t.code for concept in participant.type or [] for t in tokens(concept)]
        people.append((_DISCHARGER not in types, n, name))
    if not people:
        raise Refused(
            error(
                "required",
                "a finished Encounter needs the discharging staff "
                "(participant.individual, typed DIS)",
                "Encounter.participant",
            )
        )
    return min(people)[2]


def _stable(model: Encounter, reader: Reader, out: Translated) -> bool:
    hospitalization = model.hospitalization
    disposition = hospitalization.dischargeDisposition if hospitalization else None
    if disposition is None:
        out.issues.append(
            information(
                "no dischargeDisposition: taken as clinically stable",
                "Encounter.hospitalization.dischargeDisposition",
            )
        )
        return True
    codes = reader.codes
    stable = codes.lookup(codes.discharge_dispositions, tokens(disposition))
    if stable is None:
        raise Refused(
            error(
                "value",
                "dischargeDisposition is not a known code",
                "Encounter.hospitalization.dischargeDisposition",
            )
        )
    return stable
