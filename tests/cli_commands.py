"""Walk the remsguard CLI as click resolves it: subcommands registered lazily (by name,
imported only when run: `entrypoints/lazy.py`) are loaded, so a check sees what would run."""

from __future__ import annotations

from typing import Any

import typer


def subcommands(command: Any) -> dict[str, Any] | None:
    """A group's subcommands by name, each resolved as for running it; None for a command.

    Duck-typed: typer vendors its own click, so `click.Group` is not the class to test against.
    """
    if not isinstance(getattr(command, "commands", None), dict):
        return None
    ctx = typer.Context(command)
    found: dict[str, Any] = {}
    for name in command.list_commands(ctx):
        _, resolved, _ = command.resolve_command(ctx, [name])
        found[name] = resolved
    return found
