"""`remsguard forms export --clinic C --from D --to D --out DIR`: the Patient Monitoring Form of
every session a clinic opened in those days (UTC, both inclusive) as PDFs, one per session
(`monitoring-form-{session}.pdf`), exactly as `GET /v1/sessions/{id}/monitoring-form.pdf`
draws it. Reads the compliance log (`--db URL`, `--data-dir D` for embedded mode's, else
REMSGUARD_DATABASE_URL)."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Annotated, Final

import typer

from remsguard.config import UnsetDatabase, compliance_log_url, get_settings

__all__ = ["forms_app"]

COMPLIANCE_FILE: Final = "remsguard.db"  # embedded mode's compliance log in its data dir
_SAFE: Final = re.compile(r"[^A-Za-z0-9._-]")

forms_app = typer.Typer(help="Patient Monitoring Forms as documents.", no_args_is_help=True)


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"remsguard forms: {message}", err=True)
    return typer.Exit(code)


def _day(value: str, option: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise _fail(f"{option} {value!r}: use a date, YYYY-MM-DD") from None


def _database(db: str | None, data_dir: Path | None) -> str:
    if db is not None and data_dir is not None:
        raise _fail("give --db or --data-dir, not both")
    if data_dir is not None:
        path = data_dir.expanduser().resolve() / COMPLIANCE_FILE
        if not path.is_file():
            raise _fail(f"no compliance log at {path}", 1)
        return f"sqlite:///{path}"
    if db is not None:
        return db
    try:
        return compliance_log_url(get_settings())
    except UnsetDatabase:
        raise _fail(
            "which compliance log? give --db URL, --data-dir D (embedded mode), or set "
            "REMSGUARD_DATABASE_URL"
        ) from None


@forms_app.command("export")
def export_command(
    clinic: Annotated[str, typer.Option("--clinic", help="the clinic's id")],
    start: Annotated[str, typer.Option("--from", help="first day (UTC), YYYY-MM-DD")],
    end: Annotated[str, typer.Option("--to", help="last day (UTC), YYYY-MM-DD, inclusive")],
    out: Annotated[Path, typer.Option("--out", help="folder for the PDFs (created)")],
    db: Annotated[str | None, typer.Option("--db", help="database URL")] = None,
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="embedded mode's data dir instead of --db")
    ] = None,
) -> None:
    """Write one PDF per session the clinic opened in [--from, --to]; prints each file."""
    first, last = _day(start, "--from"), _day(end, "--to")
    if last < first:
        raise _fail("--to is before --from")
    url = _database(db, data_dir)

    from remsguard.adapters.storage import ComplianceLog
    from remsguard.auditing.form_document import form_evidence, form_pdf
    from remsguard.entrypoints.http.sessions import monitoring_form
    from remsguard.protocols import load_protocols

    settings = get_settings()
    known = load_protocols(list(settings.protocol_files))
    out.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    written = 0
    with ComplianceLog.open(url) as log:
        summaries = log.summaries.opened_between(
            clinic_id=clinic,
            since=datetime.combine(first, time(), UTC),
            until=datetime.combine(last + timedelta(days=1), time(), UTC),
        )
        for summary in summaries:
            doc = monitoring_form(
                log, summary.session_id, clinic, known, settings.default_protocol, now
            )
            path = out / f"monitoring-form-{_SAFE.sub('_', summary.session_id)}.pdf"
            path.write_bytes(form_pdf(doc, form_evidence(log, doc), now))
            missing = f" ({len(doc.missing)} missing)" if doc.missing else ""
            typer.echo(f"{path}{missing}")
            written += 1
    typer.echo(f"{written} form(s) of clinic {clinic} written to {out}", err=True)
