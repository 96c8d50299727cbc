"""Compliance log at scale in PostgreSQL: sink insert rate vs raw COPY, and auditor queries.

python3 -m uv run --frozen python -m bench.audit_log [--records 10000000] [--sink-records N]

One run, one fresh database on the server (REMSGUARD_DATABASE_URL, else the local one from
deploy/postgres/postgres.sh), dropped at the end unless --keep:
1. the audit sink's insert path (`ComplianceLog.append_audit` + `save_alerts`, batches of
   5,000, hashing and chaining included) for the first --sink-records records, its input
   generated before the clock starts;
2. a raw `COPY ... FROM STDIN` of exactly those rows (exported from the log first), in text
   and in binary format, each into an identical table with the same indexes and no triggers;
   1 and 2 alternate in 5 rounds, so a change in the machine's load hits both alike, and the
   ratio is reported against each format and against the faster;
3. the remaining records up to --records through the same insert path (not timed as sink),
   in appends of 50,000 with the indexes that back no constraint dropped and rebuilt afterwards;
4. after ANALYZE, p50/p95 over --queries runs each of the typical auditor queries through
   the repository (one session's timeline; one clinic-day's alerts; one rule across a
   30-day month, first page of 100; clinic + rule + severity across a month).
"""

from __future__ import annotations

import argparse
import io
import itertools
import os
import random
import statistics
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from remsguard.adapters.storage import AlertQuery, AuditQuery, ComplianceLog
from remsguard.domain.decisions import Alert, AuditKind, AuditRecord, Severity, stable_id

START = datetime(2026, 1, 1, tzinfo=UTC)
DAYS = 90
CLINICS = 40
PER_SESSION = 60  # audit records per session (about what the engine writes for one session)
RULES = ["BP_HIGH", "SPO2_LOW", "POST_DOSE_BP_MISSED", "VITALS_GAP", "SEDATION_DEEP"]
BATCH = 5000
ROUNDS = 5  # sink and raw COPY alternate, each round over sink-records / ROUNDS


def server_url() -> str:
    if url := os.environ.get("REMSGUARD_DATABASE_URL"):
        return url
    script = Path(__file__).resolve().parents[1] / "deploy" / "postgres" / "postgres.sh"
    done = subprocess.run(
        ["bash", str(script), "start"], capture_output=True, text=True, check=True
    )
    return done.stdout.strip().splitlines()[-1]


def traffic(total: int, seed: int = 11) -> Iterator[tuple[list[AuditRecord], list[Alert]]]:
    """Batches of synthetic audit records (and the alerts among them), session by session."""
    rng = random.Random(seed)
    records: list[AuditRecord] = []
    alerts: list[Alert] = []
    produced = session = 0
    while produced < total:
        clinic = f"clinic-{session % CLINICS:02d}"
        sid = f"sess-{session:08d}"
        start = START + timedelta(minutes=rng.randrange(DAYS * 24 * 60))
        for n in range(min(PER_SESSION, total - produced)):
            at = start + timedelta(seconds=30 * n)
            if n % 20 == 19:
                rule = RULES[rng.randrange(len(RULES))]
                severity = Severity.CRITICAL if rng.random() < 0.2 else Severity.WARNING
                alert = Alert(
                    alert_id=stable_id("bench", sid, str(n)),
                    rule=rule,
                    severity=severity,
                    session_id=sid,
                    clinic_id=clinic,
                    triggered_at=at,
                    message=f"{rule} in {sid}",
                    evidence=(f"{sid}-{n - 1:04d}",),
                    protocol="spravato-rems",
                    protocol_version="bench",
                )
                alerts.append(alert)
                kind, subject = AuditKind.ALERT_RAISED, alert.alert_id
                detail: dict[str, object] = {"rule": rule, "severity": severity.value}
            else:
                kind, subject = AuditKind.EVENT_ACCEPTED, f"{sid}-{n:04d}"
                detail = {"type": "vitals.recorded"}
            records.append(
                AuditRecord(
                    record_id=stable_id(kind, sid, subject),
                    kind=kind,
                    subject_id=subject,
                    session_id=sid,
                    clinic_id=clinic,
                    occurred_at=at,
                    detail=detail,
                )
            )
            produced += 1
            if len(records) == BATCH:
                yield records, alerts
                records, alerts = [], []
        session += 1
    if records:
        yield records, alerts


def load(
    log: ComplianceLog, batches: Iterator[tuple[list[AuditRecord], list[Alert]]], count: int
) -> tuple[int, float]:
    done, started = 0, time.perf_counter()
    for records, alerts in batches:
        log.append_audit(records)
        log.save_alerts(alerts)
        done += len(records)
        if done >= count:
            break
    return done, time.perf_counter() - started


BULK_GROUP = 10  # sink batches per append in the bulk remainder (50,000 records)


def bulk_load(
    log: ComplianceLog, batches: Iterator[tuple[list[AuditRecord], list[Alert]]], count: int
) -> tuple[int, float, float]:
    """Load the remainder fast, still through the insert path (``append_audit`` +
    ``save_alerts``: same chains, hashes and rows as the sink writes), in appends of 50,000
    records, with the indexes of audit_records and alerts that back no constraint dropped (the
    primary keys and the record_id unique constraint stay: the duplicate check uses it) and
    rebuilt afterwards from their own definitions (which re-checks the unique ones). Returns
    records loaded, seconds loading, seconds rebuilding indexes."""
    with log.engine.begin() as conn:
        indexes = conn.execute(
            text(
                "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema()"
                " AND tablename IN ('audit_records', 'alerts')"
                " AND indexname NOT IN (SELECT conname FROM pg_constraint)"
            )
        ).all()
        for name, _ in indexes:
            conn.execute(text(f'DROP INDEX "{name}"'))
    done, started = 0, time.perf_counter()
    while done < count:
        group = list(itertools.islice(batches, BULK_GROUP))
        if not group:
            break
        log.append_audit([r for records, _ in group for r in records])
        log.save_alerts([a for _, alerts in group for a in alerts])
        done += sum(len(records) for records, _ in group)
    loaded = time.perf_counter() - started
    with log.engine.begin() as conn:
        conn.execute(text("SET LOCAL maintenance_work_mem = '1GB'"))
        for _, ddl in indexes:
            conn.execute(text(ddl))
    return done, loaded, time.perf_counter() - started - loaded


def drop_database(admin: Engine, name: str) -> None:
    """Without FORCE (we may not terminate an autovacuum worker): retry until it is gone."""
    for attempt in range(60):
        try:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
            return
        except DBAPIError:
            if attempt == 59:
                raise
            time.sleep(2)


COPY_FORMATS = {"text": "", "binary": " (FORMAT BINARY)"}


def raw_copy(log: ComplianceLog, fmt: str, lo: int, hi: int) -> float:
    """Seconds to COPY the log's rows ``lo <= log_index < hi`` (exported first, untimed) into
    ``audit_copy_<fmt>``, a table like audit_records with the same indexes and no triggers,
    in COPY format ``fmt`` (text or binary)."""
    option = COPY_FORMATS[fmt]
    raw = log.engine.raw_connection()
    try:
        cur = raw.cursor()
        buf = io.BytesIO()
        export = (
            f"COPY (SELECT * FROM audit_records WHERE log_index >= {lo} AND log_index < {hi}"
            f" ORDER BY log_index) TO STDOUT{option}"
        )
        with cur.copy(export) as copy:  # type: ignore[attr-defined]
            for chunk in copy:
                buf.write(chunk)
        raw.commit()
        data = buf.getvalue()
        started = time.perf_counter()
        with cur.copy(f"COPY audit_copy_{fmt} FROM STDIN{option}") as copy:  # type: ignore[attr-defined]
            for i in range(0, len(data), 1 << 20):
                copy.write(data[i : i + (1 << 20)])
        raw.commit()
        return time.perf_counter() - started
    finally:
        raw.close()


def pct(samples: list[float], q: float) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[int(q) - 1] * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=10_000_000)
    parser.add_argument("--sink-records", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    sink_n = min(args.sink_records, args.records)

    base = server_url()
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    name = f"rg_bench_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(base).set(database=name).render_as_string(hide_password=False)
    print(f"database {name}: {args.records:,} records, sink measured over {sink_n:,}")
    log = ComplianceLog.open(url)
    try:
        batches = traffic(args.records)
        # The sink's input is generated before the clock starts (the sink gets it decoded
        # from Kafka): only the insert path is timed.
        sink_batches = list(itertools.islice(batches, -(-sink_n // BATCH)))
        # Sink and raw COPY alternate in ROUNDS rounds, each COPY loading exactly the rows the
        # sink just wrote into a copy table that grows as the log does: a drift in the
        # machine's load hits both alike.
        with log.engine.begin() as conn:
            for fmt in COPY_FORMATS:
                conn.execute(
                    text(f"CREATE TABLE audit_copy_{fmt} (LIKE audit_records INCLUDING ALL)")
                )
        done, sink_s = 0, 0.0
        copy_s = dict.fromkeys(COPY_FORMATS, 0.0)
        per_round = -(-len(sink_batches) // ROUNDS)
        for start in range(0, len(sink_batches), per_round):
            n, seconds = load(log, iter(sink_batches[start : start + per_round]), sink_n - done)
            sink_s += seconds
            for fmt in COPY_FORMATS:
                copy_s[fmt] += raw_copy(log, fmt, done, done + n)
            done += n
        del sink_batches
        with log.engine.begin() as conn:
            for fmt in COPY_FORMATS:
                conn.execute(text(f"DROP TABLE audit_copy_{fmt}"))
        sink_rate = done / sink_s
        print(f"sink insert path: {done:,} records in {sink_s:.1f} s = {sink_rate:,.0f} rec/s")
        for fmt, seconds in copy_s.items():
            print(
                f"raw COPY ({fmt}) of the same rows: {seconds:.1f} s = "
                f"{done / seconds:,.0f} rec/s; sink/COPY = {seconds / sink_s:.0%}"
            )
        best = min(copy_s, key=copy_s.__getitem__)
        print(f"sink / fastest raw COPY ({best}) = {copy_s[best] / sink_s:.0%}")

        rest = args.records - done
        if rest > 0:
            more, rest_s, index_s = bulk_load(log, batches, rest)
            print(
                f"bulk remainder: {more:,} records in {rest_s:.1f} s = {more / rest_s:,.0f} rec/s "
                f"(non-constraint indexes dropped), indexes rebuilt in {index_s:.1f} s"
            )
        with log.engine.connect() as conn:
            conn.execute(text("ANALYZE"))
            conn.commit()
            total = conn.execute(text("SELECT count(*) FROM audit_records")).scalar_one()
            alerts_n = conn.execute(text("SELECT count(*) FROM alerts")).scalar_one()
            db_size = conn.execute(text("SELECT pg_database_size(current_database())")).scalar_one()
        sessions = -(-total // PER_SESSION)
        print(
            f"loaded: {total:,} audit records, {alerts_n:,} alerts, {db_size / 1e9:.1f} GB on disk"
        )

        rng = random.Random(3)

        def timeline() -> int:
            sid = f"sess-{rng.randrange(sessions):08d}"
            return len(log.audit_records(AuditQuery(session_id=sid, limit=1000)).items)

        def clinic_day() -> int:
            day = START + timedelta(days=rng.randrange(DAYS))
            return len(
                log.alerts(
                    AlertQuery(
                        clinic_id=f"clinic-{rng.randrange(CLINICS):02d}",
                        since=day,
                        until=day + timedelta(days=1),
                        limit=1000,
                    )
                ).items
            )

        def rule_month() -> int:
            month = START + timedelta(days=rng.randrange(DAYS - 30))
            return len(
                log.audit_records(
                    AuditQuery(
                        rule=RULES[rng.randrange(len(RULES))],
                        since=month,
                        until=month + timedelta(days=30),
                        limit=100,
                    )
                ).items
            )

        def rule_month_severity_clinic() -> int:
            month = START + timedelta(days=rng.randrange(DAYS - 30))
            return len(
                log.audit_records(
                    AuditQuery(
                        clinic_id=f"clinic-{rng.randrange(CLINICS):02d}",
                        severity="critical",
                        rule=RULES[rng.randrange(len(RULES))],
                        since=month,
                        until=month + timedelta(days=30),
                        limit=100,
                    )
                ).items
            )

        for label, query in (
            ("one session's timeline", timeline),
            ("one clinic-day's alerts", clinic_day),
            ("one rule across a month (first 100)", rule_month),
            ("clinic + rule + severity across a month", rule_month_severity_clinic),
        ):
            for _ in range(10):
                query()  # warm
            times, rows = [], []
            for _ in range(args.queries):
                t = time.perf_counter()
                rows.append(query())
                times.append(time.perf_counter() - t)
            print(
                f"{label}: p50 {pct(times, 50):.1f} ms, p95 {pct(times, 95):.1f} ms, "
                f"rows/query mean {statistics.mean(rows):.0f}"
            )
    finally:
        log.close()
        if not args.keep:
            drop_database(admin, name)
        admin.dispose()


if __name__ == "__main__":
    main()
