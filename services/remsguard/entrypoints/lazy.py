"""Subcommands registered by name and loaded on use, so `remsguard --help` imports none of them.

Each entry names the module and attribute of a typer command function or a `typer.Typer`
sub-app, and the one line `remsguard --help` shows for it. Only the command actually run is
imported (with FastAPI, alembic, faust ... as it needs); `tests/unit/test_cli_startup.py`
holds the help lines to the commands' own docstrings.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass

import typer
from typer._click import Command, Context  # this typer carries its own click
from typer.core import TyperCommand, TyperGroup

__all__ = ["LazyCommand", "LazyGroup", "lazy_group"]


@dataclass(frozen=True, slots=True)
class LazyCommand:
    """A subcommand by reference: `target` is "module:attribute" (a command function or a
    `typer.Typer` of subcommands); `help` is its line in the parent's help."""

    name: str
    target: str
    help: str

    def load(self) -> Command:
        module_name, _, attribute = self.target.partition(":")
        found = getattr(importlib.import_module(module_name), attribute)
        if isinstance(found, typer.Typer):
            group = typer.main.get_group(found)
            group.name = self.name
            return group
        single = typer.Typer(add_completion=False)
        single.command(self.name)(found)
        return typer.main.get_command(single)

    def placeholder(self) -> Command:
        """What the parent's help lists: the name and help line, nothing imported."""
        return TyperCommand(self.name, help=self.help)


class LazyGroup(TyperGroup):
    """A typer group whose `lazy_commands` are listed from their entries and imported only
    when resolved for running (or for their own `--help`)."""

    lazy_commands: Sequence[LazyCommand] = ()

    def _lazy(self, name: str) -> LazyCommand | None:
        return next((entry for entry in self.lazy_commands if entry.name == name), None)

    def list_commands(self, ctx: Context) -> list[str]:
        eager = super().list_commands(ctx)
        return [*(entry.name for entry in self.lazy_commands), *eager]

    def get_command(self, ctx: Context, cmd_name: str) -> Command | None:
        entry = self._lazy(cmd_name)
        if entry is not None:
            return entry.placeholder()
        return super().get_command(ctx, cmd_name)

    def resolve_command(
        self, ctx: Context, args: list[str]
    ) -> tuple[str | None, Command | None, list[str]]:
        name, command, rest = super().resolve_command(ctx, args)
        entry = None if name is None else self._lazy(name)
        if entry is not None:
            command = entry.load()
        return name, command, rest


def lazy_group(commands: Sequence[LazyCommand]) -> type[LazyGroup]:
    """A `LazyGroup` class over these entries, for `typer.Typer(cls=...)`."""
    return type("RemsguardCommands", (LazyGroup,), {"lazy_commands": tuple(commands)})
