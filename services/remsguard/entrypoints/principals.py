"""`remsguard principals create | list | rotate | revoke`: API tokens bound to a role and clinics.

Every command works on one compliance log: `--db URL`, or `--data-dir DIR` (embedded mode's
`DIR/remsguard.db`), or else `REMSGUARD_DATABASE_URL`; with none of them it refuses (exit 2)
rather than guess a SQLite file in the working directory that no API reads. Tokens are
printed once, on stdout (`create`, `rotate`); only their SHA-256 is stored and `list` never
shows either. A revoked or
rotated-away token is refused from the next request on, by every process serving that log.
A command that cannot do its job says why on stderr and exits 1 (2 for bad usage).
"""

from __future__ import annotations

import getpass
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Final, NoReturn

import orjson
import typer
from sqlalchemy.exc import SQLAlchemyError

from remsguard.adapters.storage import ComplianceLog, PrincipalRole
from remsguard.adapters.storage.principals import PrincipalError, PrincipalInfo, PrincipalStore
from remsguard.config import UnsetDatabase, compliance_log_url, get_settings

__all__ = ["compliance_log", "parse_expiry", "principals_app"]

COMPLIANCE_FILE: Final = "remsguard.db"  # embedded mode's compliance log in its data dir
_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_DURATION: Final = re.compile(r"^\s*(\d{1,6})\s*([smhdw])\s*$")

principals_app = typer.Typer(help="API principals and their tokens.", no_args_is_help=True)

Db = Annotated[str | None, typer.Option("--db", help="database URL (default: settings)")]
DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", help="embedded mode's data dir (its remsguard.db) instead of --db"),
]
ExpiresIn = Annotated[
    str | None, typer.Option("--expires-in", help="lifetime, e.g. 90d, 12h, 2w (s m h d w)")
]
ExpiresAt = Annotated[
    str | None,
    typer.Option("--expires-at", help="expiry, ISO 8601 (e.g. 2027-03-01T00:00Z; naive is UTC)"),
]


def _fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"remsguard principals: {message}", err=True)
    raise typer.Exit(code)


def parse_expiry(expires_in: str | None, expires_at: str | None, now: datetime) -> datetime | None:
    """The expiry asked for (None: none); ValueError with a message when it is unusable."""
    if expires_in is not None and expires_at is not None:
        raise ValueError("give --expires-in or --expires-at, not both")
    if expires_in is not None:
        match = _DURATION.match(expires_in)
        if match is None or int(match[1]) == 0:
            raise ValueError(f"--expires-in {expires_in!r}: use a positive count and s/m/h/d/w")
        return now + timedelta(seconds=int(match[1]) * _UNITS[match[2]])
    if expires_at is not None:
        try:
            at = datetime.fromisoformat(expires_at.strip().replace("z", "Z"))
        except ValueError:
            raise ValueError(f"--expires-at {expires_at!r} is not an ISO 8601 time") from None
        at = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
        if at <= now:
            raise ValueError(f"--expires-at {_time(at)} is not in the future")
        return at
    return None


def _database(db: str | None, data_dir: Path | None) -> str:
    if db is not None and data_dir is not None:
        _fail("give --db or --data-dir, not both", 2)
    if data_dir is None:
        if db is not None:
            return db
        try:
            return compliance_log_url(get_settings())  # never a guessed ./remsguard.db
        except UnsetDatabase:
            _fail(
                "which compliance log? give --db URL (the one the API uses), --data-dir D "
                "(embedded mode), or set REMSGUARD_DATABASE_URL",
                2,
            )
    path = data_dir.expanduser().resolve() / COMPLIANCE_FILE
    if not path.is_file():
        _fail(f"no compliance log at {path} (start `remsguard up --data-dir {data_dir}` once)")
    return f"sqlite:///{path}"


@contextmanager
def compliance_log(
    db: str | None, data_dir: Path | None, fail: Callable[[str], NoReturn] = _fail
) -> Iterator[ComplianceLog]:
    """The compliance log of `--db` / `--data-dir` / the settings, closed after; a database
    failure is one line through `fail` (exit 1)."""
    url = _database(db, data_dir)
    try:
        log = ComplianceLog.open(url)
    except SQLAlchemyError as exc:
        fail(f"cannot open the compliance log: {type(exc).__name__}: {exc.args[0]}"[:300])
    try:
        yield log
    except SQLAlchemyError as exc:
        fail(f"database error: {type(exc).__name__}: {exc.args[0]}"[:300])
    finally:
        log.close()


@contextmanager
def _store(db: str | None, data_dir: Path | None) -> Iterator[PrincipalStore]:
    with compliance_log(db, data_dir) as log:
        try:
            yield PrincipalStore(log)
        except PrincipalError as exc:
            _fail(str(exc))


def _operator() -> str:
    """Who ran the command, for the audit record's `by`."""
    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):
        return "cli"


def _time(at: datetime | None) -> str:
    return "-" if at is None else at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _scope(info: PrincipalInfo) -> str:
    return ",".join(info.clinics) if info.clinics else "*"


def _expiry_now(expires_in: str | None, expires_at: str | None) -> datetime | None:
    try:
        return parse_expiry(expires_in, expires_at, datetime.now(UTC))
    except ValueError as exc:
        _fail(str(exc), 2)


@principals_app.command("create")
def principals_create_command(
    role: Annotated[
        PrincipalRole, typer.Option(help="auditor, staff, admin or device (posts events only)")
    ],
    name: Annotated[str, typer.Option(help="unique name of the principal")],
    clinic: Annotated[
        list[str] | None,
        typer.Option(help="a clinic it may see (repeatable; none: every clinic)"),
    ] = None,
    expires_in: ExpiresIn = None,
    expires_at: ExpiresAt = None,
    db: Db = None,
    data_dir: DataDir = None,
) -> None:
    """Create a principal and print its token, once (only its SHA-256 is stored)."""
    clinics = sorted({c.strip() for c in clinic or [] if c.strip()})
    if not name.strip():
        _fail("--name must not be empty", 2)
    expiry = _expiry_now(expires_in, expires_at)
    with _store(db, data_dir) as store:
        info, token = store.create(name.strip(), role, clinics, expires_at=expiry, by=_operator())
    scope = ", ".join(clinics) if clinics else "every clinic"
    until = "" if info.expires_at is None else f", expires {_time(info.expires_at)}"
    typer.echo(f"principal {info.name} ({info.role}, {scope}{until}); token, shown once:", err=True)
    typer.echo(token)


@principals_app.command("list")
def principals_list_command(
    db: Db = None,
    data_dir: DataDir = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line")] = False,
) -> None:
    """Every principal: name, role, clinics, created, expires, revoked (never a token)."""
    with _store(db, data_dir) as store:
        rows = store.listing()
    if as_json:
        for info in rows:
            typer.echo(
                orjson.dumps(
                    {
                        "name": info.name,
                        "role": info.role.value,
                        "clinics": list(info.clinics),
                        "created_at": _time(info.created_at),
                        "expires_at": None if info.expires_at is None else _time(info.expires_at),
                        "revoked_at": None if info.revoked_at is None else _time(info.revoked_at),
                    }
                ).decode()
            )
        return
    table = [("NAME", "ROLE", "CLINICS", "CREATED", "EXPIRES", "REVOKED")]
    table += [
        (
            i.name,
            i.role.value,
            _scope(i),
            _time(i.created_at),
            _time(i.expires_at),
            _time(i.revoked_at),
        )
        for i in rows
    ]
    widths = [max(len(row[c]) for row in table) for c in range(len(table[0]))]
    for row in table:
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


@principals_app.command("revoke")
def principals_revoke_command(
    name: Annotated[str, typer.Argument(help="the principal's name")],
    db: Db = None,
    data_dir: DataDir = None,
) -> None:
    """Revoke a principal: its token is refused from the next request on."""
    with _store(db, data_dir) as store:
        info = store.revoke(name, by=_operator())
    typer.echo(f"principal {info.name} revoked at {_time(info.revoked_at)}", err=True)


@principals_app.command("rotate")
def principals_rotate_command(
    name: Annotated[str, typer.Argument(help="the principal's name")],
    expires_in: ExpiresIn = None,
    expires_at: ExpiresAt = None,
    no_expiry: Annotated[
        bool, typer.Option("--no-expiry", help="the new token never expires")
    ] = False,
    db: Db = None,
    data_dir: DataDir = None,
) -> None:
    """Issue a new token for a principal and print it, once; the old token is refused at
    once. The expiry stays unless --expires-in, --expires-at or --no-expiry is given."""
    if no_expiry and (expires_in is not None or expires_at is not None):
        _fail("--no-expiry excludes --expires-in and --expires-at", 2)
    expiry = _expiry_now(expires_in, expires_at)
    keep = expiry is None and not no_expiry
    with _store(db, data_dir) as store:
        info, token = store.rotate(name, by=_operator(), expires_at=expiry, keep_expiry=keep)
    until = "" if info.expires_at is None else f", expires {_time(info.expires_at)}"
    typer.echo(f"principal {info.name}: new token{until}, shown once:", err=True)
    typer.echo(token)
