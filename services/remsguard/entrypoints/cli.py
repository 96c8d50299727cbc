"""The `remsguard` command: one subcommand per service.

Subcommands are registered by name (`COMMANDS`, see `lazy.py`) and imported only when run, so
`remsguard --help` and a small `remsguard replay` start at once: a command brings in FastAPI,
alembic or faust only if it uses them.

Expected failures (a broker out of reach, a topic laid out wrongly, bad settings) end in one
or two lines on stderr and exit 2 (configuration or usage) or 1 (runtime); `--debug` shows
the traceback instead.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from remsguard import __version__
from remsguard.entrypoints.lazy import LazyCommand, lazy_group

_E = "remsguard.entrypoints"

# In the order `remsguard --help` lists them; each help line is its command's docstring's first
# paragraph (a test holds them together).
COMMANDS: tuple[LazyCommand, ...] = (
    LazyCommand(
        "replay",
        f"{_E}.replay:replay_command",
        'Run the engine over a file; print each alert, and each withdrawal of one (`"kind": '
        '"alert.withdrawn"`), as one JSON line on stdout, as the alerts stream carries them.',
    ),
    LazyCommand(
        "simulate",
        f"{_E}.simulate:simulate_command",
        "Generate realistic clinic days with injected violations and transport faults.",
    ),
    LazyCommand(
        "audit-sink",
        f"{_E}.audit:audit_sink_command",
        "Consume rems.audit.v1 (and rems.alerts.v1) into the compliance log, batched, "
        "at-least-once with idempotent inserts; offsets are committed after the DB commit.",
    ),
    LazyCommand(
        "processor",
        f"{_E}.streaming:processor_command",
        "Run a stream-processor worker (faust-streaming); stops cleanly on SIGTERM.",
    ),
    LazyCommand(
        "publish",
        f"{_E}.streaming:publish_command",
        "Publish each event of a JSON-lines file to the topic of its type (acks=all), and "
        "wait for every acknowledgement. Exit 1 if a line was refused or not delivered.",
    ),
    LazyCommand(
        "hl7-gateway",
        f"{_E}.hl7_gateway:hl7_gateway_command",
        "Take HL7 v2 (ORU^R01 vitals, RAS^O17 doses) over MLLP and publish the events to "
        "Kafka; each message is acknowledged once Kafka has acknowledged its events.",
    ),
    LazyCommand(
        "up",
        f"{_E}.up:up_command",
        "Run everything in one process: device ingest, engine, compliance log, API, metrics.",
    ),
    LazyCommand(
        "notifier",
        "remsguard.alerting.notifier:notifier_command",
        "Consume the alerts topic: store, notify (SSE, signed webhook), escalate unacknowledged.",
    ),
    LazyCommand(
        "api",
        f"{_E}.api:api_command",
        "Serve the auditor API over the compliance log (no ingest); with "
        "REMSGUARD_API_STAFF_CONSOLE, the staff console over the processor's state too.",
    ),
    LazyCommand("version", f"{_E}.cli:version", "Print the installed version."),
    LazyCommand(
        "schemas",
        "remsguard.contract.schemas:schemas_app",
        "JSON Schema files of the event, alert, audit-record and rejection contracts.",
    ),
    LazyCommand("audit", f"{_E}.audit:audit_app", "Tamper evidence of the compliance log."),
    LazyCommand("topics", f"{_E}.streaming:topics_app", "Kafka topics of the production path."),
    LazyCommand("alerts", f"{_E}.streaming:alerts_app", "Read the alerts stream."),
    LazyCommand(
        "deadletter", f"{_E}.streaming:deadletter_app", "Read and replay the dead-letter topic."
    ),
    LazyCommand(
        "principals", f"{_E}.principals:principals_app", "API principals and their tokens."
    ),
    LazyCommand("forms", f"{_E}.forms:forms_app", "Patient Monitoring Forms as documents."),
    LazyCommand(
        "registry",
        f"{_E}.registry:registry_app",
        "The REMS registry: clinics' certifications and patients' enrollments.",
    ),
)

app = typer.Typer(
    name="remsguard",
    cls=lazy_group(COMMANDS),
    help="REMS-style monitoring compliance for esketamine and ketamine sessions.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # locals may hold secrets
)


_debug = {"on": False}


@app.callback()
def root(
    debug: Annotated[bool, typer.Option("--debug", help="show the traceback of a failure")] = False,
) -> None:
    """REMS-style monitoring compliance for esketamine and ketamine sessions."""
    from remsguard.adapters.logs import configure_logging, set_debug
    from remsguard.config import get_settings

    _debug["on"] = debug
    set_debug(debug)
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)


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
    from remsguard.config import UnsetDatabase, get_settings

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
