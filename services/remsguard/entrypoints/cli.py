"""The `remsguard` command: one subcommand per service."""

from __future__ import annotations

import typer

from remsguard import __version__

app = typer.Typer(
    name="remsguard",
    help="REMS-style monitoring compliance for esketamine and ketamine sessions.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def root() -> None:
    """REMS-style monitoring compliance for esketamine and ketamine sessions."""


@app.command()
def version() -> None:
    """Print the installed version."""
    typer.echo(__version__)


def main() -> None:
    app()
