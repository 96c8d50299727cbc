"""`remsguard registry certify | enroll | list`: the REMS registry of the compliance log.

A clinic's certification (identifier, valid from, valid to) and its enrolled patients
(`patient_ref`, enrollment date). Each change is written with a chained audit record naming
the operator (`cli:<user>`); recording the same values again changes nothing. The log is
`--db URL`, `--data-dir DIR` (embedded mode's `DIR/remsguard.db`) or
`REMSGUARD_DATABASE_URL`, as for `remsguard principals`. A running `remsguard up` picks a
change made here up at its next start; changes made through its API
(`PUT /v1/clinics/{clinic}/...`) apply from the next event on, and the Kafka processor
re-reads the registry every `REMSGUARD_REGISTRY_REFRESH_SECONDS`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Annotated, NoReturn

import orjson
import typer

from remsguard.adapters.storage.registry import (
    RegistryError,
    RegistryStore,
    registry_lines,
)
from remsguard.entrypoints.principals import DataDir, Db, _operator, compliance_log

__all__ = ["registry_app"]

registry_app = typer.Typer(
    help="The REMS registry: clinics' certifications and patients' enrollments.",
    no_args_is_help=True,
)
Clinic = Annotated[str, typer.Option("--clinic", help="the clinic (healthcare setting) id")]


def _fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"remsguard registry: {message}", err=True)
    raise typer.Exit(code)


def _day(value: str, option: str) -> date:
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        _fail(f"{option} {value!r} is not a date (YYYY-MM-DD)", 2)


def _recorded(change: str, changed: bool) -> None:
    """Say what the registry now holds, and whether this command changed it."""
    typer.echo(f"{change} ({'recorded' if changed else 'unchanged'})", err=True)


@contextmanager
def _store(db: str | None, data_dir: Path | None) -> Iterator[RegistryStore]:
    with compliance_log(db, data_dir, _fail) as log:
        try:
            yield RegistryStore(log)
        except RegistryError as exc:
            _fail(str(exc), 2)


@registry_app.command("certify")
def registry_certify_command(
    clinic: Clinic,
    certification_id: Annotated[str, typer.Option("--id", help="the REMS certification id")],
    valid_from: Annotated[str, typer.Option("--from", help="valid from, YYYY-MM-DD")],
    valid_to: Annotated[
        str | None, typer.Option("--to", help="valid to (inclusive); none: open-ended")
    ] = None,
    db: Db = None,
    data_dir: DataDir = None,
) -> None:
    """Record a clinic's REMS certification (replacing the one on record)."""
    start = _day(valid_from, "--from")
    end = None if valid_to is None else _day(valid_to, "--to")
    with _store(db, data_dir) as store:
        found, changed = store.certify(clinic, certification_id, start, end, by=_operator())
    until = "open-ended" if found.valid_to is None else f"to {found.valid_to}"
    _recorded(
        f"clinic {found.clinic_id}: certification {found.certification_id} from "
        f"{found.valid_from} {until}",
        changed,
    )


@registry_app.command("enroll")
def registry_enroll_command(
    clinic: Clinic,
    patient_ref: Annotated[str, typer.Option("--patient", help="the patient_ref")],
    enrolled_on: Annotated[str, typer.Option("--on", help="the enrollment date, YYYY-MM-DD")],
    db: Db = None,
    data_dir: DataDir = None,
) -> None:
    """Record a patient's REMS enrollment at a clinic (replacing the one on record)."""
    day = _day(enrolled_on, "--on")
    with _store(db, data_dir) as store:
        found, changed = store.enroll(clinic, patient_ref, day, by=_operator())
    _recorded(
        f"clinic {found.clinic_id}: patient {found.patient_ref} enrolled on {found.enrolled_on}",
        changed,
    )


@registry_app.command("list")
def registry_list_command(
    clinic: Annotated[str | None, typer.Option("--clinic", help="only this clinic")] = None,
    db: Db = None,
    data_dir: DataDir = None,
) -> None:
    """The registry as JSON lines: one per certification, then one per enrollment."""
    with _store(db, data_dir) as store:
        registry = store.load()
    for line in registry_lines(registry):
        if clinic is None or orjson.loads(line)["clinic_id"] == clinic:
            typer.echo(line.decode())
