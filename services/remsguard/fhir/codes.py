"""The code tables FHIR resources are read with: data files, not code branches.

`codes.toml` and `assessments.toml` beside this module are the defaults; a clinic's own files
(same shape) add to them, in order. A `Coding` is looked up as "SYSTEM|CODE" (FHIR's token
form), then by its code alone (for tables with bare keys, like UCUM units).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal, TypeVar

from remsguard.contract.code_tables import (
    BOOLEAN,
    TEXT,
    Check,
    CodeError,
    drug_of,
    one_of,
    read_files,
    section,
    typed,
    unit_factors,
)

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
Drug = Literal["esketamine", "ketamine"]
Route = Literal["intranasal", "iv", "im", "sublingual", "oral"]
_VITALS: Final = frozenset(
    {"blood_pressure", "systolic", "diastolic", "spo2", "heart_rate", "respiratory_rate"}
)
_ASSESSMENTS: Final = frozenset({"sedation_moaas", "dissociation", "respiratory_depression"})
_DRUGS: Final = frozenset({"esketamine", "ketamine"})
_ROUTES: Final = frozenset({"intranasal", "iv", "im", "sublingual", "oral"})


@dataclass(frozen=True, slots=True)
class Token:
    """One FHIR coding (system and code) or a text, as looked up in the tables."""

    system: str = ""
    code: str = ""

    def lookup_keys(self) -> tuple[str, ...]:
        code = self.code.strip()
        if not code:
            return ()
        system = self.system.strip()
        return (f"{system}|{code}", code) if system else (code,)


T = TypeVar("T")


@dataclass(slots=True)
class FhirCodes:
    vital_sign_categories: dict[str, bool] = field(default_factory=dict)
    observations: dict[str, VitalCode] = field(default_factory=dict)
    units: dict[str, tuple[str, float]] = field(default_factory=dict)
    field_units: dict[str, str] = field(default_factory=dict)
    drugs: dict[str, Drug] = field(default_factory=dict)
    drug_words: dict[str, Drug] = field(default_factory=dict)
    routes: dict[str, Route] = field(default_factory=dict)
    default_routes: dict[str, Route] = field(default_factory=dict)
    discharge_dispositions: dict[str, bool] = field(default_factory=dict)
    assessments: dict[str, AssessmentField] = field(default_factory=dict)
    answers: dict[str, bool] = field(default_factory=dict)

    @classmethod
    def load(cls, files: Iterable[Path] = ()) -> FhirCodes:
        """The default tables, then each of `files` added to them in order."""
        table = cls()
        for data, where in read_files((*DEFAULT_FILES, *files)):
            table._add(data, where)
        return table

    def _add(self, data: Mapping[str, object], where: str) -> None:
        def read(name: str, check: Check) -> dict[str, T]:
            return typed(section(data, name, where, check))

        self.vital_sign_categories.update(read("vital_sign_categories", BOOLEAN))
        self.observations.update(read("observations", one_of(_VITALS)))
        self.units.update(unit_factors(data, where))
        self.field_units.update(read("field_units", TEXT))
        self.drugs.update(read("drugs", one_of(_DRUGS)))
        words: dict[str, Drug] = read("drug_words", one_of(_DRUGS))
        self.drug_words.update({k.lower(): v for k, v in words.items()})
        routes: dict[str, Route] = read("routes", one_of(_ROUTES))
        self.routes.update({k.lower(): v for k, v in routes.items()})
        self.default_routes.update(read("default_routes", one_of(_ROUTES)))
        self.discharge_dispositions.update(read("discharge_dispositions", BOOLEAN))
        self.assessments.update(read("assessments", one_of(_ASSESSMENTS)))
        self.answers.update(read("answers", BOOLEAN))

    def lookup(self, table: Mapping[str, T], tokens: Iterable[Token]) -> T | None:
        """The first of `tokens` the table knows (by "system|code", then by code)."""
        for token in tokens:
            for key in token.lookup_keys():
                if key in table:
                    return table[key]
        return None

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
        keys = (key for token in tokens for key in token.lookup_keys())
        return drug_of(self.drugs, self.drug_words, keys, text)
