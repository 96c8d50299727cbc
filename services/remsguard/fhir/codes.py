"""The code tables FHIR resources are read with: data files, not code branches.

`codes.toml` and `assessments.toml` beside this module are the defaults; a clinic's own files
(same shape) add to them, in order. A `Coding` is looked up as "SYSTEM|CODE" (FHIR's token
form), then by its code alone (for tables with bare keys, like UCUM units).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Final, Literal, TypeVar

from remsguard.contract.code_tables import (
    BOOLEAN,
    ROUTES,
    Check,
    CodeError,
    CodeTables,
    code_keys,
    first_known,
    one_of,
    section,
    typed,
)
from remsguard.contract.events import Drug, Route

__all__ = [
    "DEFAULT_FILES",
    "AssessmentField",
    "CodeError",
    "FhirCodes",
    "Token",
    "VitalCode",
]

DEFAULT_FILES: Final = (
    Path(__file__).with_name("codes.toml"),
    Path(__file__).with_name("assessments.toml"),
)

VitalCode = Literal[
    "blood_pressure", "systolic", "diastolic", "spo2", "heart_rate", "respiratory_rate"
]
AssessmentField = Literal["sedation_moaas", "dissociation", "respiratory_depression"]
_VITALS: Final = frozenset(
    {"blood_pressure", "systolic", "diastolic", "spo2", "heart_rate", "respiratory_rate"}
)
_ASSESSMENTS: Final = frozenset({"sedation_moaas", "dissociation", "respiratory_depression"})


@dataclass(frozen=True, slots=True)
class Token:
    """One FHIR coding (system and code) or a text, as looked up in the tables."""

    system: str = ""
    code: str = ""

    def lookup_keys(self) -> tuple[str, ...]:
        return code_keys(self.system.strip(), self.code, "|")


T = TypeVar("T")


@dataclass(slots=True)
class FhirCodes(CodeTables):
    default_files: ClassVar[tuple[Path, ...]] = DEFAULT_FILES

    vital_sign_categories: dict[str, bool] = field(default_factory=dict)
    observations: dict[str, VitalCode] = field(default_factory=dict)
    routes: dict[str, Route] = field(default_factory=dict)
    default_routes: dict[str, Route] = field(default_factory=dict)
    discharge_dispositions: dict[str, bool] = field(default_factory=dict)
    assessments: dict[str, AssessmentField] = field(default_factory=dict)
    answers: dict[str, bool] = field(default_factory=dict)

    def _add_own(self, data: Mapping[str, object], where: str) -> None:
        def read(name: str, check: Check) -> dict[str, T]:
            return typed(section(data, name, where, check))

        self.vital_sign_categories.update(read("vital_sign_categories", BOOLEAN))
        self.observations.update(read("observations", one_of(_VITALS)))
        routes: dict[str, Route] = read("routes", one_of(ROUTES))
        self.routes.update({k.lower(): v for k, v in routes.items()})
        self.default_routes.update(read("default_routes", one_of(ROUTES)))
        self.discharge_dispositions.update(read("discharge_dispositions", BOOLEAN))
        self.assessments.update(read("assessments", one_of(_ASSESSMENTS)))
        self.answers.update(read("answers", BOOLEAN))

    def lookup(self, table: Mapping[str, T], tokens: Iterable[Token]) -> T | None:
        """The first of `tokens` the table knows (by "system|code", then by code)."""
        return first_known(table, (key for token in tokens for key in token.lookup_keys()))

    def route(self, tokens: Iterable[Token], text: str) -> Route | None:
        """By coding (case-insensitive), then by the route's text."""
        for token in tokens:
            for key in token.lookup_keys():
                found = self.routes.get(key.lower())
                if found is not None:
                    return found
        return self.routes.get(text.strip().lower())

    def drug(self, tokens: Iterable[Token], text: str) -> Drug | None:
        """By code (an NDC also by its labeler-product prefix), then by words in the text."""
        return self.drug_by((key for token in tokens for key in token.lookup_keys()), text)
