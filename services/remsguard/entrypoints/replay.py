"""`remsguard replay`: decode the arguments, hand the file to the replay handler."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, BinaryIO

import typer

from remsguard.bootstrap import build_engine
from remsguard.config import get_settings
from remsguard.contract.outbound import alert_to_json
from remsguard.domain.decisions import Alert, Rejection
from remsguard.domain.protocol import ProtocolError
from remsguard.handlers.replay import ReplayEvents, replay


def _parse_until(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"not an RFC 3339 time: {value!r}") from None
    if parsed.tzinfo is None:
        raise typer.BadParameter("--until needs an offset, e.g. 2026-11-23T12:00:00Z")
    return parsed


@contextmanager
def _open(file: str) -> Iterator[BinaryIO]:
    if file == "-":
        yield sys.stdin.buffer
        return
    with Path(file).open("rb") as handle:
        yield handle


def replay_command(
    file: Annotated[str, typer.Argument(help="JSON-lines events, in arrival order ('-' = stdin)")],
    until: Annotated[
        str | None, typer.Option(help="advance the clock to this RFC 3339 time at the end")
    ] = None,
    protocol: Annotated[
        str | None, typer.Option(help="default protocol for sessions that name none")
    ] = None,
    protocol_file: Annotated[
        list[Path] | None, typer.Option(help="a clinic's own protocol file (repeatable)")
    ] = None,
) -> None:
    """Run the engine over a file; print each alert as one JSON line on stdout."""
    until_at = _parse_until(until)
    try:
        engine = build_engine(protocol or get_settings().default_protocol, protocol_file)
    except (ProtocolError, ValueError) as exc:
        typer.echo(f"remsguard replay: {exc}", err=True)
        raise typer.Exit(2) from None
    out = sys.stdout.buffer

    def on_alert(alert: Alert) -> None:
        out.write(alert_to_json(alert) + b"\n")

    def on_rejected(line: int, rejection: Rejection) -> None:
        sys.stderr.write(f"line {line}: rejected: {rejection.reason}: {rejection.detail}\n")

    try:
        with _open(file) as lines:
            replay(ReplayEvents(lines, until_at), engine, on_alert, on_rejected)
    except OSError as exc:
        typer.echo(f"remsguard replay: cannot read {file}: {exc.strerror or exc}", err=True)
        raise typer.Exit(1) from None
    out.flush()
