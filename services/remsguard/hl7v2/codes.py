"""The code tables an HL7 v2 message is read with: data files, not code branches.

`codes.toml` beside this module is the default; a clinic's own files (same shape) add to it.
A coded element (`CWE`/`CE`: code ^ text ^ system) is looked up as "SYSTEM:CODE", then by the
code alone, so both `150456^MDC_PULS_OXIM_SAT_O2^MDC` and a bare `mmHg` resolve.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal, TypeVar

from remsguard.contract import code_tables as tables
from remsguard.contract.code_tables import CodeError

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


T = TypeVar("T")


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
        for data, where in tables.read_files((DEFAULT_CODES, *files)):
            table._add(data, where)
        return table

    def _add(self, data: Mapping[str, object], where: str) -> None:
        def read(name: str, allowed: frozenset[str] | None) -> dict[str, T]:
            check = tables.TEXT if allowed is None else tables.one_of(allowed)
            return tables.typed(tables.section(data, name, where, check))

        self.observations.update(read("observations", _FIELDS))
        self.units.update(tables.unit_factors(data, where))
        self.field_units.update(read("field_units", None))
        self.drugs.update(read("drugs", _DRUGS))
        words: dict[str, Drug] = read("drug_words", _DRUGS)
        self.drug_words.update({k.lower(): v for k, v in words.items()})
        routes: dict[str, str] = read("routes", _ROUTES)
        self.routes.update({k.upper(): v for k, v in routes.items()})

    def observation(self, coded: Coded) -> VitalField | None:
        return _first(self.observations, coded.lookup_keys())

    def unit(self, coded: Coded) -> tuple[str, float] | None:
        return _first(self.units, coded.lookup_keys())

    def drug(self, coded: Coded) -> Drug | None:
        """By code (an NDC also by its labeler-product prefix), then by words in the text."""
        return tables.drug_of(
            self.drugs, self.drug_words, coded.lookup_keys(), f"{coded.text} {coded.code}"
        )

    def route(self, coded: Coded) -> str | None:
        for key in (coded.code, coded.text):
            found = self.routes.get(key.strip().upper())
            if found is not None:
                return found
        return None


def _first(table: Mapping[str, T], keys: Iterable[str]) -> T | None:
    for key in keys:
        if key in table:
            return table[key]
    return None
