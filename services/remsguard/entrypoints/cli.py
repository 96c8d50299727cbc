"""The `remsguard` command: one subcommand per service.

Expected failures (a broker out of reach, a topic laid out wrongly, bad settings) end in one
or two lines on stderr and exit 2 (configuration or usage) or 1 (runtime); `--debug` shows
the traceback instead.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from remsguard import __version__
from remsguard.adapters.logs import configure_logging, set_debug
from remsguard.alerting.notifier import notifier_command
from remsguard.config import UnsetDatabase, get_settings
from remsguard.contract.schemas import schemas_app
from remsguard.entrypoints.api import api_command, principals_app
from remsguard.entrypoints.audit import audit_app, audit_sink_command
from remsguard.entrypoints.forms import forms_app
from remsguard.entrypoints.hl7_gateway import hl7_gateway_command
from remsguard.entrypoints.registry import registry_app
from remsguard.entrypoints.replay import replay_command
from remsguard.entrypoints.simulate import simulate_command
from remsguard.entrypoints.streaming import (
    alerts_app,
    deadletter_app,
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
    pretty_exceptions_show_locals=False,  # locals may hold secrets
)
app.add_typer(schemas_app, name="schemas")
app.command("replay")(replay_command)
app.command("simulate")(simulate_command)
app.add_typer(audit_app, name="audit")
app.command("audit-sink")(audit_sink_command)
app.add_typer(topics_app, name="topics")
app.add_typer(alerts_app, name="alerts")
app.add_typer(deadletter_app, name="deadletter")
app.command("processor")(processor_command)
app.command("publish")(publish_command)
app.command("hl7-gateway")(hl7_gateway_command)
app.command("up")(up_command)
app.command("notifier")(notifier_command)
app.command("api")(api_command)
app.add_typer(principals_app, name="principals")
app.add_typer(forms_app, name="forms")
app.add_typer(registry_app, name="registry")


_debug = {"on": False}


@app.callback()
def root(
    debug: Annotated[bool, typer.Option("--debug", help="show the traceback of a failure")] = False,
) -> None:
    """REMS-style monitoring compliance for esketamine and ketamine sessions."""
    _debug["on"] = debug
    set_debug(debug)
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)


@app.command()
def version() -> None:
    """Print the installed version."""
    typer.echo(__version__)


def main() -> None:
    try:
        app()
    except Exception as exc:
        failure = explain(exc)
        if failure is None or _debug["on"] or "--debug" in sys.argv[1:]:
            raise
        message, code = failure
        sys.stderr.write(f"remsguard: {message}\n(run with --debug for the traceback)\n")
        raise SystemExit(code) from None


def explain(exc: BaseException) -> tuple[str, int] | None:
    """(message, exit code) of an expected failure; None for a bug (its traceback shows)."""
    from pydantic import ValidationError

    from remsguard.adapters.kafka.errors import translate

    if isinstance(exc, ValidationError) and exc.title == "Settings":  # bad REMSGUARD_* values
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": str(exc)}
        where = ".".join(str(part) for part in first["loc"])
        return f"invalid setting REMSGUARD_{where.upper()}: {first['msg']}", 2
    if isinstance(exc, UnsetDatabase):
        return str(exc), 2
    failure = translate(exc, get_settings().kafka_bootstrap)
    if failure is not None:
        return str(failure), failure.exit_code
    return None
