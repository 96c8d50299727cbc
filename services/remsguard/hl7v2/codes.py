"""The code tables an HL7 v2 message is read with: data files, not code branches.

`codes.toml` beside this module is the default; a clinic's own files (same shape) add to it.
A coded element (`CWE`/`CE`: code ^ text ^ system) is looked up as "SYSTEM:CODE", then by the
code alone, so both `150456^MDC_PULS_OXIM_SAT_O2^MDC` and a bare `mmHg` resolve.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Final, Literal, TypeVar

from remsguard.contract import code_tables as tables
from remsguard.contract.code_tables import CodeError
from remsguard.contract.events import Drug

__all__ = ["DEFAULT_CODES", "CodeError", "CodeTable", "Coded", "Drug", "VitalField"]

DEFAULT_CODES: Final = Path(__file__).with_name("codes.toml")

VitalField = Literal[
    "systolic", "diastolic", "mean", "spo2", "heart_rate", "pulse_rate", "respiratory_rate"
]
_FIELDS: Final = frozenset(
    {"systolic", "diastolic", "mean", "spo2", "heart_rate", "pulse_rate", "respiratory_rate"}
)


@dataclass(frozen=True, slots=True)
class Coded:
    """One coded element: its code, text and coding system (each may be empty)."""

    code: str
    text: str = ""
    system: str = ""

    def lookup_keys(self) -> tuple[str, ...]:
        return tables.code_keys(self.system.strip().upper(), self.code, ":")


T = TypeVar("T")


@dataclass(slots=True)
class CodeTable(tables.CodeTables):
    default_files: ClassVar[tuple[Path, ...]] = (DEFAULT_CODES,)

    observations: dict[str, VitalField] = field(default_factory=dict)
    routes: dict[str, str] = field(default_factory=dict)

    def _add_own(self, data: Mapping[str, object], where: str) -> None:
        def read(name: str, allowed: frozenset[str]) -> dict[str, T]:
            return tables.typed(tables.section(data, name, where, tables.one_of(allowed)))

        self.observations.update(read("observations", _FIELDS))
        routes: dict[str, str] = read("routes", tables.ROUTES)
        self.routes.update({k.upper(): v for k, v in routes.items()})

    def observation(self, coded: Coded) -> VitalField | None:
        return tables.first_known(self.observations, coded.lookup_keys())

    def unit(self, coded: Coded) -> tuple[str, float] | None:
        return tables.first_known(self.units, coded.lookup_keys())

    def drug(self, coded: Coded) -> Drug | None:
        """By code (an NDC also by its labeler-product prefix), then by words in the text."""
        return self.drug_by(coded.lookup_keys(), f"{coded.text} {coded.code}")

    def route(self, coded: Coded) -> str | None:
        for key in (coded.code, coded.text):
            found = self.routes.get(key.strip().upper())
            if found is not None:
                return found
        return None
