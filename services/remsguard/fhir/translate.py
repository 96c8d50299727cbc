"""One FHIR resource (parsed JSON) in, wire events or issues out. Never raises.

The resource is validated with the FHIR model library (fhir.resources, R4B models: the same
wire format as R4 for these resources), then mapped by its type's module. A problem is an
`Issue` naming the element (prefixed with the resource's place in a Bundle); a resource with
an error issue yields no event at all.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from fhir.resources.R4B.encounter import Encounter
from fhir.resources.R4B.medicationadministration import MedicationAdministration
from fhir.resources.R4B.observation import Observation
from pydantic import BaseModel, ValidationError

from remsguard.fhir.context import BundleIndex, Reader, Refused, Source
from remsguard.fhir.encounters import encounter
from remsguard.fhir.medications import medication_administration
from remsguard.fhir.observations import observation
from remsguard.fhir.outcome import error, from_validation
from remsguard.fhir.translated import Translated

__all__ = ["TAKEN", "translate"]

Mapper = Callable[[Any, Mapping[str, Any], Source, Reader, BundleIndex], Translated]
TAKEN: Final[dict[str, tuple[type[BaseModel], Mapper]]] = {
    "Encounter": (Encounter, encounter),
    "MedicationAdministration": (MedicationAdministration, medication_administration),
    "Observation": (Observation, observation),
}


def translate(
    raw: Mapping[str, Any], source: Source, reader: Reader, bundle: BundleIndex | None = None
) -> Translated:
    """What `raw` (a resource of one of the `TAKEN` types) becomes."""
    kind = raw.get("resourceType")
    if not isinstance(kind, str) or kind not in TAKEN:
        shown = kind if isinstance(kind, str) else "(none)"
        out = Translated(shown, malformed=True)
        out.issues.append(
            error("not-supported", f"resourceType {shown!r} is not taken here ({', '.join(TAKEN)})")
        )
        return _placed(out, source)
    model_type, mapper = TAKEN[kind]
    try:
        model = model_type.model_validate(raw)
    except ValidationError as exc:
        return _placed(Translated(kind, issues=from_validation(exc, kind), malformed=True), source)
    except Exception as exc:  # the model library on hostile input: this resource only
        issue = error("structure", f"unreadable {kind}: {type(exc).__name__}", kind)
        return _placed(Translated(kind, issues=[issue], malformed=True), source)
    try:
        out = mapper(model, raw, source, reader, bundle or BundleIndex())
    except Refused as refused:
        out = Translated(kind, issues=refused.issues)
    except Exception as exc:  # a shape nobody foresaw: an error for this resource only
        out = Translated(kind, issues=[error("exception", f"{type(exc).__name__}", kind)])
    return _placed(out, source)


def _placed(out: Translated, source: Source) -> Translated:
    if source.prefix:
        out.issues = [issue.at(source.prefix) for issue in out.issues]
    if out.failed:
        out.events.clear()
    return out
