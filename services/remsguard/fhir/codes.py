"""The code tables FHIR resources are read with: data files, not code branches.

`codes.toml` and `assessments.toml` beside this module are the defaults; a clinic's own files
(same shape) add to them, in order. A `Coding` is looked up as "SYSTEM|CODE" (FHIR's token
form), then by its code alone (for tables with bare keys, like UCUM units).
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, TypeVar, cast

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


class CodeError(ValueError):
    """A code file is not usable (said with the file and the key)."""


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
        for path in (*DEFAULT_FILES, *files):
            try:
                data = tomllib.loads(path.read_text(encoding="utf-8"))
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise CodeError(f"{path}: {exc}") from None
            table._add(data, str(path))
        return table

    def _add(self, data: Mapping[str, object], where: str) -> None:
        def read(name: str, check: Callable[[object], bool], what: str) -> dict[str, object]:
            section = data.get(name, {})
            if not isinstance(section, dict):
                raise CodeError(f"{where}: [{name}] must be a table")
            for key, value in section.items():
                if not check(value):
                    raise CodeError(f"{where}: {name}.{key} must be {what}")
            return section

        def one_of(allowed: frozenset[str]) -> Callable[[object], bool]:
            return lambda value: isinstance(value, str) and value in allowed

        def choices(allowed: frozenset[str]) -> str:
            return "one of " + ", ".join(sorted(allowed))

        boolean = (lambda value: isinstance(value, bool), "true or false")
        text = (lambda value: isinstance(value, str) and bool(value), "a string")
        unit = (
            lambda value: (
                isinstance(value, list)
                and len(value) == 2
                and isinstance(value[0], str)
                and isinstance(value[1], int | float)
                and not isinstance(value[1], bool)
            ),
            "[unit, factor]",
        )
        self.vital_sign_categories.update(_typed(read("vital_sign_categories", *boolean)))
        self.observations.update(_typed(read("observations", one_of(_VITALS), choices(_VITALS))))
        units: dict[str, list[Any]] = _typed(read("units", *unit))
        self.units.update({k: (v[0], float(v[1])) for k, v in units.items()})
        self.field_units.update(_typed(read("field_units", *text)))
        self.drugs.update(_typed(read("drugs", one_of(_DRUGS), choices(_DRUGS))))
        words: dict[str, Drug] = _typed(read("drug_words", one_of(_DRUGS), choices(_DRUGS)))
        self.drug_words.update({k.lower(): v for k, v in words.items()})
        routes: dict[str, Route] = _typed(read("routes", one_of(_ROUTES), choices(_ROUTES)))
        self.routes.update({k.lower(): v for k, v in routes.items()})
        self.default_routes.update(
            _typed(read("default_routes", one_of(_ROUTES), choices(_ROUTES)))
        )
        self.discharge_dispositions.update(_typed(read("discharge_dispositions", *boolean)))
        self.assessments.update(
            _typed(read("assessments", one_of(_ASSESSMENTS), choices(_ASSESSMENTS)))
        )
        self.answers.update(_typed(read("answers", *boolean)))

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
        for token in tokens:
            for key in token.lookup_keys():
                parts = key.split("-")
                for end in range(len(parts), 0, -1):
                    found = self.drugs.get("-".join(parts[:end]))
                    if found is not None:
                        return found
        lowered = text.lower()
        for word, drug in self.drug_words.items():
            if word in lowered:
                return drug
        return None


def _typed(section: Mapping[str, object]) -> dict[str, T]:
    """A section whose values `read` has checked, typed as what they were checked to be."""
    return cast(dict[str, T], dict(section))
