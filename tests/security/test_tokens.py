"""Issue 13, finding 6 (tokens): `remsguard principals list | revoke | rotate`, expiry, and a
refused token refused at once, by `remsguard up` and by `remsguard api`, when the change is
made by the CLI in another process against the same database.

Each case has its counterpart that must not fire: the other tokens keep working.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from integration.embedded_support import Up, free_port, remsguard, start_up
from remsguard.adapters.storage import AuditRow, ComplianceLog, PrincipalRole, verify_log
from remsguard.adapters.storage.principals import PRINCIPALS, PrincipalError, PrincipalStore
from remsguard.domain.decisions import AuditKind
from remsguard.entrypoints.cli import app
from remsguard.entrypoints.principals import parse_expiry

AUDIT = AuditRow.__table__  # type: ignore[attr-defined]
TOKEN = re.compile(r"rg_[A-Za-z0-9_-]{20,}")


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    server = start_up(tmp_path_factory.mktemp("tokens") / "data")
    try:
        yield server
    finally:
        server.stop()


def _cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["principals", *args])
    return result.exit_code, result.stdout, result.stderr


def _issued(stdout: str) -> str:
    token = stdout.strip().splitlines()[-1]
    assert TOKEN.fullmatch(token), stdout
    return token


def _get(base: str, token: str) -> int:
    response = httpx.get(
        f"{base}/v1/alerts", headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    return response.status_code


# -- embedded mode (`remsguard up`) ------------------------------------------------------------


def test_a_token_revoked_by_the_cli_in_another_process_is_refused_on_the_next_request(
    up: Up,
) -> None:
    data = str(up.data_dir)
    code, out, _ = _cli("create", "--role", "staff", "--name", "rn-revoke", "--data-dir", data)
    assert code == 0
    token = _issued(out)
    assert _get(up.base, token) == 200
    # A separate process, as an operator would run it, against the running server's log.
    revoked = remsguard("principals", "revoke", "rn-revoke", "--data-dir", data)
    assert revoked.returncode == 0, revoked.stderr
    assert _get(up.base, token) == 401  # the very next request: no cache window
    assert _get(up.base, up.tokens["admin"]) == 200  # other tokens are untouched


def test_rotate_refuses_the_old_token_at_once_and_the_new_one_works(up: Up) -> None:
    data = str(up.data_dir)
    code, out, _ = _cli("create", "--role", "auditor", "--name", "aud-rot", "--data-dir", data)
    old = _issued(out)
    assert code == 0 and _get(up.base, old) == 200
    code, out, err = _cli("rotate", "aud-rot", "--data-dir", data)
    assert code == 0, err
    new = _issued(out)
    assert new != old
    assert _get(up.base, old) == 401
    assert _get(up.base, new) == 200


def test_an_expired_token_is_refused_and_an_unexpired_one_works(up: Up) -> None:
    now = datetime.now(UTC)
    with ComplianceLog.open(f"sqlite:///{up.data_dir / 'remsguard.db'}") as log:
        # Created two hours ago with a one-hour lifetime: expired an hour ago.
        past = PrincipalStore(log, now=lambda: now - timedelta(hours=2))
        _, expired = past.create(
            "aud-expired", PrincipalRole.AUDITOR, expires_at=now - timedelta(hours=1), by="test"
        )
        _, fresh = PrincipalStore(log).create(
            "aud-fresh", PrincipalRole.AUDITOR, expires_at=now + timedelta(hours=1), by="test"
        )
    assert _get(up.base, expired) == 401
    assert _get(up.base, fresh) == 200


def test_list_shows_principals_but_never_a_token_or_its_hash(up: Up) -> None:
    data = str(up.data_dir)
    code, out, _ = _cli(
        "create", "--role", "auditor", "--name", "aud-list", "--clinic", "c7",
        "--expires-in", "90d", "--data-dir", data,
    )  # fmt: skip
    token = _issued(out)
    assert _cli("revoke", "aud-list", "--data-dir", data)[0] == 0
    code, table, _ = _cli("list", "--data-dir", data)
    assert code == 0
    code, lines, _ = _cli("list", "--json", "--data-dir", data)
    assert code == 0
    with (
        ComplianceLog.open(f"sqlite:///{up.data_dir / 'remsguard.db'}") as log,
        log.engine.connect() as conn,
    ):
        hashes = {h for (h,) in conn.execute(select(PRINCIPALS.c.token_hash))}
    for output in (table, lines):
        assert not TOKEN.search(output), output
        assert token not in output and not any(h in output for h in hashes)
    header = table.splitlines()[0].split()
    assert header == ["NAME", "ROLE", "CLINICS", "CREATED", "EXPIRES", "REVOKED"]
    rows = {r["name"]: r for r in map(orjson.loads, lines.splitlines())}
    assert set(rows["aud-list"]) == {
        "name", "role", "clinics", "created_at", "expires_at", "revoked_at"
    }  # fmt: skip
    assert rows["aud-list"]["clinics"] == ["c7"] and rows["aud-list"]["revoked_at"]
    expires = datetime.fromisoformat(rows["aud-list"]["expires_at"])
    assert timedelta(days=89) < expires - datetime.now(UTC) <= timedelta(days=90)
    assert rows["admin"]["revoked_at"] is None and rows["admin"]["expires_at"] is None


# -- the CLI's refusals --------------------------------------------------------------------


def test_commands_that_cannot_do_their_job_say_so_and_exit_non_zero(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'log.db'}"
    assert _cli("create", "--role", "admin", "--name", "root", "--db", db)[0] == 0
    assert _cli("create", "--role", "staff", "--name", "gone", "--db", db)[0] == 0
    assert _cli("revoke", "gone", "--db", db)[0] == 0
    refusals = [
        (("revoke", "nobody", "--db", db), 1, "no principal named 'nobody'"),
        (("rotate", "nobody", "--db", db), 1, "no principal named 'nobody'"),
        (("revoke", "gone", "--db", db), 1, "was revoked at"),
        (("rotate", "gone", "--db", db), 1, "create a new one"),
        (("create", "--role", "staff", "--name", "root", "--db", db), 1, "exists"),
        (("create", "--role", "staff", "--name", "x", "--expires-in", "3x", "--db", db), 2, ""),
        (("create", "--role", "staff", "--name", "x", "--expires-at", "2001-01-01", "--db", db),
         2, "not in the future"),
        (("list", "--db", db, "--data-dir", str(tmp_path)), 2, "not both"),
        (("list", "--data-dir", str(tmp_path / "none")), 1, "no compliance log"),
        (("rotate", "root", "--no-expiry", "--expires-in", "1d", "--db", db), 2, "excludes"),
    ]  # fmt: skip
    for args, status, message in refusals:
        code, _, err = _cli(*args)
        said = [line for line in err.splitlines() if not line.startswith("{")]  # not log lines
        assert code == status, (args, err)
        assert message in "\n".join(said) and 0 < len(said) <= 2, (args, err)
    # ... and the same commands do their job when they can.
    assert _cli("rotate", "root", "--expires-in", "1d", "--db", db)[0] == 0
    assert (
        _cli("create", "--role", "staff", "--name", "x", "--expires-in", "12h", "--db", db)[0] == 0
    )


def test_parse_expiry() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_expiry("90d", None, now) == now + timedelta(days=90)
    assert parse_expiry("2w", None, now) == now + timedelta(weeks=2)
    assert parse_expiry(None, "2026-03-01T00:00Z", now) == datetime(2026, 3, 1, tzinfo=UTC)
    assert parse_expiry(None, "2026-03-01", now) == datetime(2026, 3, 1, tzinfo=UTC)  # naive: UTC
    assert parse_expiry(None, None, now) is None
    for bad in (("0d", None), ("-1d", None), ("d", None), (None, "soon"), ("1d", "2027-01-01")):
        with pytest.raises(ValueError):
            parse_expiry(*bad, now)
    with pytest.raises(ValueError):
        parse_expiry(None, "2025-12-31T23:59:59Z", now)


# -- the chain -----------------------------------------------------------------------------


def test_create_rotate_revoke_are_chained_records_without_the_token(tmp_path: Path) -> None:
    with ComplianceLog.open(f"sqlite:///{tmp_path / 'log.db'}") as log:
        store = PrincipalStore(log)
        info, first = store.create("aud", PrincipalRole.AUDITOR, ["c1", "c2"], by="cli:ops")
        _, second = store.rotate("aud", by="cli:ops")
        store.revoke("aud", by="cli:boss")
        with pytest.raises(PrincipalError):
            store.revoke("aud", by="cli:boss")
        with log.engine.connect() as conn:
            rows = conn.execute(select(AUDIT).order_by(AUDIT.c.log_index)).all()
        assert [(r.kind, orjson.loads(r.detail)["action"]) for r in rows] == [
            (AuditKind.PRINCIPAL_CREATED, "created"),
            (AuditKind.PRINCIPAL_CREATED, "rotated"),
            (AuditKind.PRINCIPAL_REVOKED, "revoked"),
        ]
        for row in rows:
            detail = orjson.loads(row.detail)
            assert row.subject_id == info.principal_id and detail["name"] == "aud"
            assert detail["role"] == "auditor" and detail["clinics"] == ["c1", "c2"]
            assert first not in row.detail and second not in row.detail
        assert [orjson.loads(r.detail)["by"] for r in rows] == ["cli:ops", "cli:ops", "cli:boss"]
        report = verify_log(log.engine)
        assert report.ok, report.problem


# -- `remsguard api` (the Kafka deployment's API) ----------------------------------------------


def test_remsguard_api_refuses_a_revoked_token_on_the_next_request(
    tmp_path: Path, database_url: str
) -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"rg_tokens_{os.getpid()}_{time.monotonic_ns() % 10**9}"
    admin = create_engine(database_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(database_url).set(database=name).render_as_string(hide_password=False)
    port = free_port()
    env = {**os.environ, "REMSGUARD_DATABASE_URL": url, "REMSGUARD_API_PORT": str(port)}
    try:
        out = _cli("create", "--role", "auditor", "--name", "aud", "--db", url)[1]
        keep = _issued(_cli("create", "--role", "auditor", "--name", "keep", "--db", url)[1])
        token = _issued(out)
        proc = subprocess.Popen(
            [sys.executable, "-m", "remsguard", "api"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                assert proc.poll() is None and time.monotonic() < deadline, "api did not start"
                try:
                    if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
            assert _get(base, token) == 200
            revoked = remsguard("principals", "revoke", "aud", env=env)
            assert revoked.returncode == 0, revoked.stderr
            assert _get(base, token) == 401
            assert _get(base, keep) == 200
        finally:
            proc.terminate()
            proc.wait(timeout=20)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
