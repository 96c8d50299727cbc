"""The FHIR ingest's tables from the settings: code files and the organization map."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from remsguard.config import Settings
from remsguard.contract.code_tables import clinic_map
from remsguard.fhir.codes import CodeError, FhirCodes

__all__ = ["FhirConfigError", "FhirTables", "tables_of"]


class FhirConfigError(ValueError):
    """The FHIR settings cannot be used (said with the file)."""


@dataclass(frozen=True, slots=True)
class FhirTables:
    codes: FhirCodes
    organizations: Mapping[str, str] | None  # None: an Organization's id is the clinic id


def tables_of(settings: Settings) -> FhirTables:
    """The tables for these settings (read once per set of files)."""
    return _load(tuple(settings.fhir_code_files), settings.fhir_organizations_file)


@lru_cache(maxsize=8)
def _load(code_files: tuple[Path, ...], organizations: Path | None) -> FhirTables:
    """The code files, and `[organizations]` "Organization/id" (or "id") = "clinic id"."""
    try:
        codes = FhirCodes.load(code_files)
        return FhirTables(codes, clinic_map(organizations, "organizations", "organizations"))
    except CodeError as exc:
        raise FhirConfigError(str(exc)) from None
