"""The code tables an HL7 v2 message is read with: data files, not code branches.

`codes.toml` beside this module is the default; a clinic's own files (same shape) add to it.
A coded element (`CWE`/`CE`: code ^ text ^ system) is looked up as "SYSTEM:CODE", then by the
code alone, so both `150456^MDC_PULS_OXIM_SAT_O2^MDC` and a bare `mmHg` resolve.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal, TypeVar, cast

__all__ = ["DEFAULT_CODES", "CodeError", "CodeTable", "Coded", "Drug", "VitalField"]

DEFAULT_CODES: Final = Path(__file__).with_name("codes.toml")

VitalField = Literal[
    "systolic", "diastolic", "mean", "spo2", "heart_rate", "pulse_rate", "respiratory_rate"
]
Drug = Literal["esketamine", "ketamine"]
_FIELDS: Final = frozenset(
    {"systolic", "diastolic", "mean", "spo2", "heart_rate", "pulse_rate", "respiratory_rate"}
)
_DRUGS: Final = frozenset({"esketamine", "ketamine"})
_ROUTES: Final = frozenset({"intranasal", "iv", "im", "sublingual", "oral"})


class CodeError(ValueError):
    """A code file is not usable (said with the file and the key)."""


@dataclass(frozen=True, slots=True)
class Coded:
    """One coded element: its code, text and coding system (each may be empty)."""

    code: str
    text: str = ""
    system: str = ""

    def lookup_keys(self) -> tuple[str, ...]:
        code = self.code.strip()
        if not code:
            return ()
        system = self.system.strip().upper()
        return (f"{system}:{code}", code) if system else (code,)


@dataclass(slots=True)
class CodeTable:
    observations: dict[str, VitalField] = field(default_factory=dict)
    units: dict[str, tuple[str, float]] = field(default_factory=dict)
    field_units: dict[str, str] = field(default_factory=dict)
    drugs: dict[str, Drug] = field(default_factory=dict)
    drug_words: dict[str, Drug] = field(default_factory=dict)
    routes: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, files: Iterable[Path] = ()) -> CodeTable:
        """The default table, then each of `files` added to it in order."""
        table = cls()
        for path in (DEFAULT_CODES, *files):
            try:
                data = tomllib.loads(path.read_text(encoding="utf-8"))
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise CodeError(f"{path}: {exc}") from None
            table._add(data, str(path))
        return table

    def _add(self, data: Mapping[str, object], where: str) -> None:
        observations = _table(data, "observations", where, _FIELDS)
        self.observations.update({k: cast(VitalField, v) for k, v in observations.items()})
        for key, value in _section(data, "units", where).items():
            if not (
                isinstance(value, list)
                and len(value) == 2
                and isinstance(value[0], str)
                and isinstance(value[1], int | float)
            ):
                raise CodeError(f"{where}: units.{key} must be [unit, factor]")
            self.units[key] = (value[0], float(value[1]))
        self.field_units.update(_table(data, "field_units", where, None))
        drugs = _table(data, "drugs", where, _DRUGS)
        self.drugs.update({k: cast(Drug, v) for k, v in drugs.items()})
        words = _table(data, "drug_words", where, _DRUGS)
        self.drug_words.update({k.lower(): cast(Drug, v) for k, v in words.items()})
        routes = _table(data, "routes", where, _ROUTES)
        self.routes.update({k.upper(): v for k, v in routes.items()})

    def observation(self, coded: Coded) -> VitalField | None:
        return _first(self.observations, coded.lookup_keys())

    def unit(self, coded: Coded) -> tuple[str, float] | None:
        return _first(self.units, coded.lookup_keys())

    def drug(self, coded: Coded) -> Drug | None:
        """By code (an NDC also by its labeler-product prefix), then by words in the text."""
        for key in coded.lookup_keys():
            parts = key.split("-")
            for end in range(len(parts), 0, -1):
                found = self.drugs.get("-".join(parts[:end]))
                if found is not None:
                    return found
        text = f"{coded.text} {coded.code}".lower()
        for word, drug in self.drug_words.items():
            if word in text:
                return drug
        return None

    def route(self, coded: Coded) -> str | None:
        for key in (coded.code, coded.text):
            found = self.routes.get(key.strip().upper())
            if found is not None:
                return found
        return None


T = TypeVar("T")


def _first(table: Mapping[str, T], keys: Iterable[str]) -> T | None:
    for key in keys:
        if key in table:
            return table[key]
    return None


def _section(data: Mapping[str, object], name: str, where: str) -> Mapping[str, object]:
    section = data.get(name, {})
    if not isinstance(section, dict):
        raise CodeError(f"{where}: [{name}] must be a table")
    return section


def _table(
    data: Mapping[str, object], name: str, where: str, allowed: frozenset[str] | None
) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in _section(data, name, where).items():
        if not isinstance(value, str) or (allowed is not None and value not in allowed):
            choices = "a string" if allowed is None else ", ".join(sorted(allowed))
            raise CodeError(f"{where}: {name}.{key} must be one of {choices}")
        out[key] = value
    return out
