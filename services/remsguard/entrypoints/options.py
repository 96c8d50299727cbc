"""What several commands take alike: the protocol options and RFC 3339 times. Imported by the
commands themselves, so it stays light (the CLI loads a command only when it runs)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

__all__ = ["ProtocolFiles", "ProtocolOption", "aware_time"]

ProtocolOption = Annotated[
    str | None, typer.Option(help="default protocol for sessions that name none")
]
ProtocolFiles = Annotated[
    list[Path] | None, typer.Option(help="a clinic's own protocol file (repeatable)")
]


def aware_time(value: str, option: str, example: str) -> datetime:
    """The RFC 3339 time given for `option`, which must carry an offset (like `example`)."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"not an RFC 3339 time: {value!r}") from None
    if parsed.tzinfo is None:
        raise typer.BadParameter(f"{option} needs an offset, e.g. {example}")
    return parsed
