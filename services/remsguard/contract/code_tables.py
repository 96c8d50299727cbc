"""Code tables as data: what the HL7 v2 and FHIR readers share.

Both read TOML files of sections that map a code to a value (`hl7v2/codes.toml`,
`fhir/codes.toml`, a clinic's own files added in order), check every value, and find a drug by
its code or the words of its name: `CodeTables` holds the sections both have (units, field
units, drugs), each reader's subclass adds its own. Both read a TOML map of senders to clinic
ids (`[facilities]` for HL7's MSH-4, `[organizations]` for FHIR). A file that cannot be used
is a `CodeError` naming the file and the key. Drugs and routes are the event contract's.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Final, Self, TypeVar, cast, get_args

from remsguard.contract.events import Drug, Route

__all__ = [
    "BOOLEAN",
    "DRUGS",
    "ROUTES",
    "TEXT",
    "UNIT_FACTOR",
    "Check",
    "CodeError",
    "CodeTables",
    "clinic_map",
    "code_keys",
    "drug_of",
    "first_known",
    "one_of",
    "read_files",
    "section",
    "typed",
    "unit_factors",
]

T = TypeVar("T")
Check = tuple[Callable[[object], bool], str]
"""A check of one value, and what it must be (for the error)."""
DRUGS: Final = frozenset(get_args(Drug))
ROUTES: Final = frozenset(get_args(Route))


class CodeError(ValueError):
    """A code file is not usable (said with the file and the key)."""


def _toml(path: Path) -> dict[str, object]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CodeError(f"{path}: {exc}") from None


def read_files(paths: Iterable[Path]) -> Iterator[tuple[Mapping[str, object], str]]:
    """Each file's TOML and its name, in order."""
    for path in paths:
        yield _toml(path), str(path)


def one_of(allowed: frozenset[str]) -> Check:
    return (
        lambda value: isinstance(value, str) and value in allowed,
        "one of " + ", ".join(sorted(allowed)),
    )


BOOLEAN: Check = (lambda value: isinstance(value, bool), "true or false")
TEXT: Check = (lambda value: isinstance(value, str) and bool(value), "a string")
UNIT_FACTOR: Check = (
    lambda value: (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], int | float)
        and not isinstance(value[1], bool)
    ),
    "[unit, factor]",
)


def section(data: Mapping[str, object], name: str, where: str, check: Check) -> dict[str, object]:
    """The `[name]` table of a file (empty when absent), every value checked."""
    found = data.get(name, {})
    if not isinstance(found, dict):
        raise CodeError(f"{where}: [{name}] must be a table")
    test, what = check
    for key, value in found.items():
        if not test(value):
            raise CodeError(f"{where}: {name}.{key} must be {what}")
    return found


def typed(checked: Mapping[str, object]) -> dict[str, T]:
    """A section whose values `section` has checked, typed as what they were checked to be."""
    return cast(dict[str, T], dict(checked))


def unit_factors(data: Mapping[str, object], where: str) -> dict[str, tuple[str, float]]:
    """`[units]`: a unit code -> (the unit it is read as, the factor to it)."""
    units: dict[str, list[str | float]] = typed(section(data, "units", where, UNIT_FACTOR))
    return {key: (str(unit), float(factor)) for key, (unit, factor) in units.items()}


def drug_of(
    codes: Mapping[str, T], words: Mapping[str, T], keys: Iterable[str], text: str
) -> T | None:
    """By code (an NDC also by its labeler-product prefix), then by words in the text."""
    for key in keys:
        parts = key.split("-")
        for end in range(len(parts), 0, -1):
            found = codes.get("-".join(parts[:end]))
            if found is not None:
                return found
    lowered = text.lower()
    for word, drug in words.items():
        if word in lowered:
            return drug
    return None


def code_keys(system: str, code: str, separator: str) -> tuple[str, ...]:
    """The keys a coded value is looked up by: "SYSTEM<separator>CODE", then the code alone
    (for tables with bare keys, like units); none without a code."""
    code = code.strip()
    if not code:
        return ()
    return (f"{system}{separator}{code}", code) if system else (code,)


def first_known(table: Mapping[str, T], keys: Iterable[str]) -> T | None:
    """The value of the first of `keys` the table knows."""
    for key in keys:
        if key in table:
            return table[key]
    return None


@dataclass(slots=True)
class CodeTables:
    """The sections every reader's tables have: `[units]`, `[field_units]` (the unit each
    contract field is in), `[drugs]` by code and `[drug_words]` (lower-cased) by a word of the
    name. `load` reads the reader's `default_files`, then a clinic's files, in order; a
    subclass reads its own sections in `_add_own`, after these."""

    default_files: ClassVar[tuple[Path, ...]] = ()

    units: dict[str, tuple[str, float]] = field(default_factory=dict)
    field_units: dict[str, str] = field(default_factory=dict)
    drugs: dict[str, Drug] = field(default_factory=dict)
    drug_words: dict[str, Drug] = field(default_factory=dict)

    @classmethod
    def load(cls, files: Iterable[Path] = ()) -> Self:
        """The default tables, then each of `files` added to them in order."""
        tables = cls()
        for data, where in read_files((*cls.default_files, *files)):
            tables._add(data, where)
        return tables

    def _add(self, data: Mapping[str, object], where: str) -> None:
        self.units.update(unit_factors(data, where))
        self.field_units.update(typed(section(data, "field_units", where, TEXT)))
        self.drugs.update(typed(section(data, "drugs", where, one_of(DRUGS))))
        words: dict[str, Drug] = typed(section(data, "drug_words", where, one_of(DRUGS)))
        self.drug_words.update({k.lower(): v for k, v in words.items()})
        self._add_own(data, where)

    def _add_own(self, data: Mapping[str, object], where: str) -> None:
        """The reader's own sections of one file."""

    def drug_by(self, keys: Iterable[str], text: str) -> Drug | None:
        """By code (an NDC also by its labeler-product prefix), then by words in the text."""
        return drug_of(self.drugs, self.drug_words, keys, text)


def clinic_map(path: Path | None, name: str, what: str) -> dict[str, str] | None:
    """`[name]` of a TOML file: each of `what` -> a clinic id; None when no file is set."""
    if path is None:
        return None
    table = _toml(path).get(name)
    if not isinstance(table, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and v for k, v in table.items()
    ):
        raise CodeError(f"{path}: [{name}] must map {what} to clinic ids")
    return dict(table)
