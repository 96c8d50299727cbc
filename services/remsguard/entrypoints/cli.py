"""The `remsguard` command: one subcommand per service."""

from __future__ import annotations

import typer

from remsguard import __version__
from remsguard.adapters.logs import configure_logging
from remsguard.alerting.notifier import notifier_command
from remsguard.config import get_settings
from remsguard.contract.schemas import schemas_app
from remsguard.entrypoints.api import api_command, principals_app
from remsguard.entrypoints.audit import audit_app, audit_sink_command
from remsguard.entrypoints.replay import replay_command
from remsguard.entrypoints.simulate import simulate_command
from remsguard.entrypoints.streaming import (
    alerts_app,
    processor_command,
    publish_command,
    topics_app,
)
from remsguard.entrypoints.up import up_command

app = typer.Typer(
    name="remsguard",
    help="REMS-style monitoring compliance for esketamine and ketamine sessions.",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(schemas_app, name="schemas")
app.command("replay")(replay_command)
app.command("simulate")(simulate_command)
app.add_typer(audit_app, name="audit")
app.command("audit-sink")(audit_sink_command)
app.add_typer(topics_app, name="topics")
app.add_typer(alerts_app, name="alerts")
app.command("processor")(processor_command)
app.command("publish")(publish_command)
app.command("up")(up_command)
app.command("notifier")(notifier_command)
app.command("api")(api_command)
app.add_typer(principals_app, name="principals")


@app.callback()
def root() -> None:
    """REMS-style monitoring compliance for esketamine and ketamine sessions."""
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)


@app.command()
def version() -> None:
    """Print the installed version."""
    typer.echo(__version__)


def main() -> None:
    app()
