"""The FHIR ingest's tables from the settings: code files and the organization map."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from remsguard.config import Settings
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
    try:
        codes = FhirCodes.load(code_files)
    except CodeError as exc:
        raise FhirConfigError(str(exc)) from None
    return FhirTables(codes, _organizations(organizations))


def _organizations(path: Path | None) -> dict[str, str] | None:
    """`[organizations]` "Organization/id" (or "id") = "clinic id", from a TOML file."""
    if path is None:
        return None
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise FhirConfigError(f"{path}: {exc}") from None
    table = data.get("organizations")
    if not isinstance(table, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and v for k, v in table.items()
    ):
        raise FhirConfigError(f"{path}: [organizations] must map organizations to clinic ids")
    return dict(table)
