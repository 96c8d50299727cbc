"""JSON Schema files generated from the contract models, and the `remsguard schemas` commands."""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel, TypeAdapter

from remsguard.contract.events import EventCreate
from remsguard.contract.outbound import (
    AlertPublic,
    AlertWithdrawalPublic,
    AuditRecordPublic,
    RejectionPublic,
)

__all__ = ["SCHEMA_FILES", "export_schemas", "render_schemas", "schemas_app"]

_DIALECT = "https://json-schema.org/draft/2020-12/schema"
_ID_BASE = "https://remsguard.invalid/schemas/"

SCHEMA_FILES: tuple[str, ...] = (
    "event.schema.json",
    "alert.schema.json",
    "alert-withdrawal.schema.json",
    "audit-record.schema.json",
    "rejection.schema.json",
)


def _schema(file_name: str, title: str, schema: dict[str, Any]) -> str:
    document = {**schema, "$schema": _DIALECT, "$id": _ID_BASE + file_name, "title": title}
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _model(model: type[BaseModel]) -> dict[str, Any]:
    return model.model_json_schema(mode="serialization")


def render_schemas() -> dict[str, str]:
    """File name -> file content, exactly as `export_schemas` writes them."""
    event = TypeAdapter(EventCreate).json_schema(mode="validation")
    rendered = {
        "event.schema.json": _schema("event.schema.json", "Event", event),
        "alert.schema.json": _schema("alert.schema.json", "Alert", _model(AlertPublic)),
        "alert-withdrawal.schema.json": _schema(
            "alert-withdrawal.schema.json", "AlertWithdrawal", _model(AlertWithdrawalPublic)
        ),
        "audit-record.schema.json": _schema(
            "audit-record.schema.json", "AuditRecord", _model(AuditRecordPublic)
        ),
        "rejection.schema.json": _schema(
            "rejection.schema.json", "Rejection", _model(RejectionPublic)
        ),
    }
    assert tuple(rendered) == SCHEMA_FILES
    return rendered


def export_schemas(directory: Path | str) -> list[Path]:
    """Write one JSON Schema file per contract model into `directory`; return the paths."""
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for name, content in render_schemas().items():
        path = target / name
        path.write_text(content, encoding="utf-8", newline="\n")
        written.append(path)
    return written


def schema_drift(directory: Path | str) -> list[str]:
    """Human-readable differences between `directory` and what export would write now."""
    target = Path(directory)
    problems: list[str] = []
    for name, expected in render_schemas().items():
        path = target / name
        if not path.is_file():
            problems.append(f"{path}: missing")
            continue
        actual = path.read_text(encoding="utf-8")
        if actual == expected:
            continue
        diff = list(
            difflib.unified_diff(
                actual.splitlines(),
                expected.splitlines(),
                fromfile=f"{path} (on disk)",
                tofile=f"{path} (from models)",
                lineterm="",
                n=1,
            )
        )
        changed = sum(1 for line in diff if line[:1] in "+-" and line[:3] not in ("+++", "---"))
        shown = diff[:40] + ([f"... {len(diff) - 40} more diff lines"] if len(diff) > 40 else [])
        problems.append(f"{path}: drifted ({changed} lines differ)\n" + "\n".join(shown))
    return problems


schemas_app = typer.Typer(
    help="JSON Schema files of the event, alert, audit-record and rejection contracts.",
    no_args_is_help=True,
)

_DirArg = Annotated[Path, typer.Argument(help="Directory of the schema files.")]


@schemas_app.command("export")
def export_command(directory: _DirArg = Path("schemas")) -> None:
    """Write the schema files generated from the contract models."""
    for path in export_schemas(directory):
        typer.echo(f"wrote {path}")


@schemas_app.command("check")
def check_command(directory: _DirArg = Path("schemas")) -> None:
    """Exit 1 if the schema files differ from what `export` would write now."""
    problems = schema_drift(directory)
    if problems:
        for problem in problems:
            typer.echo(problem, err=True)
        typer.echo(
            f"{len(problems)} schema file(s) out of date; run `remsguard schemas export`",
            err=True,
        )
        raise typer.Exit(1)
    typer.echo(f"{len(SCHEMA_FILES)} schema files up to date in {directory}")
