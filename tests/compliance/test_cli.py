"""`replay --db`, `audit verify`, `audit proof`/`check-proof`, `audit sign-head`: end to end."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from remsguard.adapters.storage import AlertQuery, AuditQuery, ComplianceLog
from remsguard.adapters.storage.models import utc
from remsguard.config import get_settings
from remsguard.entrypoints.cli import app

from .factories import synthetic_events

runner = CliRunner()


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    private, public = tmp_path / "sth.key", tmp_path / "sth.pub"
    result = runner.invoke(
        app, ["audit", "keygen", "--private-out", str(private), "--public-out", str(public)]
    )
    assert result.exit_code == 0, result.output
    return private, public


@pytest.fixture
def events(tmp_path: Path) -> Path:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"".join(synthetic_events(3000)))
    return path


def all_alerts(log: ComplianceLog) -> set[bytes]:
    from remsguard.contract.outbound import AlertPublic

    out: set[bytes] = set()
    cursor = None
    while True:
        page = log.alerts(AlertQuery(limit=1000, cursor=cursor))
        for row in page.items:
            out.add(
                AlertPublic(
                    alert_id=row.alert_id,
                    rule=row.rule,
                    severity=row.severity,  # type: ignore[arg-type]
                    session_id=row.session_id,
                    clinic_id=row.clinic_id,
                    triggered_at=utc(row.triggered_at),
                    message=row.message,
                    evidence=tuple(orjson.loads(row.evidence)),
                    protocol=row.protocol,
                    protocol_version=row.protocol_version,
                )
                .model_dump_json()
                .encode()
            )
        if page.next_cursor is None:
            return out
        cursor = page.next_cursor


def run_replay_db(events: Path, url: str) -> set[bytes]:
    result = runner.invoke(app, ["replay", str(events), "--db", url])
    assert result.exit_code == 0, result.output
    return {line for line in result.stdout_bytes.splitlines() if line.startswith(b"{")}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'log.db'}"
    factory: Callable[[], str] = request.getfixturevalue("pg_database_factory")
    return factory()


def test_replay_db_writes_the_alerts_replay_prints(events: Path, db_url: str) -> None:
    printed = run_replay_db(events, db_url)
    plain = runner.invoke(app, ["replay", str(events)])
    assert {line for line in plain.stdout_bytes.splitlines() if line} == printed
    assert len(printed) > 10
    with ComplianceLog.open(db_url) as log:
        assert all_alerts(log) == printed
        size = log.size()
        summaries = log.summaries.opened_between()
        assert summaries and all(s.patient_ref for s in summaries)
        assert sum(s.alerts_total for s in summaries) == len(printed)
    again = run_replay_db(events, db_url)  # re-audit the same file: nothing doubles
    assert again == printed
    with ComplianceLog.open(db_url) as log:
        assert log.size() == size
        alert_records = log.audit_records(AuditQuery(kind="alert.raised", limit=1000)).items
        assert len(alert_records) == len(printed)
    result = runner.invoke(app, ["audit", "verify", "--db", db_url])
    assert result.exit_code == 0 and result.stdout.startswith("ok:"), result.output


def test_verify_sign_prove_and_check_offline(
    events: Path, tmp_path: Path, keys: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    run_replay_db(events, url)
    private, public = keys
    monkeypatch.setenv("REMSGUARD_SIGNING_KEY_FILE", str(private))
    get_settings.cache_clear()
    try:
        signed = runner.invoke(app, ["audit", "sign-head", "--db", url])
    finally:
        get_settings.cache_clear()
    assert signed.exit_code == 0, signed.output
    head = orjson.loads(signed.stdout.strip().splitlines()[-1])
    with ComplianceLog.open(url) as log:
        assert head["tree_size"] == log.size()
        victim = log.audit_records(AuditQuery(kind="alert.raised", limit=1)).items[0]
    ok = runner.invoke(app, ["audit", "verify", "--db", url, "--public-key", str(public)])
    assert ok.exit_code == 0 and "signatures checked" in ok.stdout, ok.output

    proof = runner.invoke(app, ["audit", "proof", victim.record_id, "--db", url])
    assert proof.exit_code == 0, proof.output
    proof_file = tmp_path / "proof.json"
    proof_file.write_bytes(proof.stdout_bytes)
    check = runner.invoke(
        app, ["audit", "check-proof", str(proof_file), "--public-key", str(public)]
    )
    assert check.exit_code == 0 and victim.record_id in check.stdout, check.output

    document = orjson.loads(proof.stdout_bytes)
    for key, value in (
        ("entry", document["entry"].replace("alert.raised", "event.accepted")),
        ("leaf_index", document["leaf_index"] + 1),
        ("path", document["path"][1:]),
        ("head", {**document["head"], "root_hash": "00" * 32}),
    ):
        proof_file.write_bytes(orjson.dumps({**document, key: value}))
        bad = runner.invoke(
            app, ["audit", "check-proof", str(proof_file), "--public-key", str(public)]
        )
        assert bad.exit_code == 1 and bad.stdout.startswith("FAILED"), (key, bad.output)

    with ComplianceLog.open(url) as log, log.engine.begin() as conn:
        conn.execute(text("DROP TRIGGER audit_records_no_update"))
        conn.execute(
            text("UPDATE audit_records SET subject_id = 'forged' WHERE record_id = :r"),
            {"r": victim.record_id},
        )
    bad = runner.invoke(app, ["audit", "verify", "--db", url, "--public-key", str(public)])
    assert bad.exit_code == 1
    assert victim.record_id in bad.stdout and "hash mismatch" in bad.stdout, bad.output


@pytest.mark.parametrize(
    "command",
    [["audit-sink"], ["notifier"], ["api"], ["audit", "verify"], ["audit", "proof", "r-1"]],
)
def test_commands_of_the_compliance_log_refuse_to_guess_a_database(
    command: list[str], tmp_path: Path
) -> None:
    """Issue 15, item 7: without REMSGUARD_DATABASE_URL (or --db) a command said nothing and
    used ./remsguard.db, which no API on PostgreSQL reads. It says so and creates nothing."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "REMSGUARD_DATABASE_URL"}
    done = subprocess.run(
        [sys.executable, "-m", "remsguard", *command],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "REMSGUARD_DATABASE_URL" in done.stderr and "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []
