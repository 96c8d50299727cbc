"""`remsguard audit ...` (verify, check-proof, proof, sign-head, keygen) and
`remsguard audit-sink`."""

from __future__ import annotations

import signal
import sys
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import structlog
import typer

from remsguard.adapters.storage import ComplianceLog, HeadSigner, make_engine, verify_log
from remsguard.adapters.storage.chain import entry_hash
from remsguard.adapters.storage.signing import (
    load_private_key,
    load_public_key,
    private_pem,
    public_pem,
    verify_head_signature,
)
from remsguard.config import Settings, compliance_log_url, get_settings
from remsguard.domain import merkle

if TYPE_CHECKING:
    from remsguard.adapters.telemetry import Telemetry

audit_app = typer.Typer(help="Tamper evidence of the compliance log.", no_args_is_help=True)

DbOption = Annotated[str | None, typer.Option("--db", help="database URL (default: settings)")]


def load_signer(settings: Settings) -> HeadSigner | None:
    """The Ed25519 head-signing key: ``REMSGUARD_SIGNING_KEY`` (PEM or 32-byte hex/base64
    seed) or ``REMSGUARD_SIGNING_KEY_FILE`` (a file holding either)."""
    if settings.signing_key is not None:
        return HeadSigner(load_private_key(settings.signing_key.get_secret_value()))
    if settings.signing_key_file is not None:
        return HeadSigner(load_private_key(settings.signing_key_file.read_bytes()))
    return None


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"remsguard audit: {message}", err=True)
    return typer.Exit(code)


@audit_app.command("verify")
def verify_command(
    db: DbOption = None,
    public_key: Annotated[
        Path | None, typer.Option(help="Ed25519 public key (PEM or hex) to check head signatures")
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            help="an embedded data directory: its remsguard.db, and its tree-head-key.pub.pem "
            "unless --public-key is given"
        ),
    ] = None,
    head_interval: Annotated[
        float | None,
        typer.Option(
            min=0.001,
            help="seconds between signed heads (default: REMSGUARD_TREE_HEAD_INTERVAL_SECONDS); "
            "with a public key, the latest head may trail the newest record by twice this",
        ),
    ] = None,
) -> None:
    """Recompute every chain and signed tree head and hold the tables (events, alerts, forms,
    principals) to their chained records; exit 1 naming the first problem.

    With a public key, the log must have signed heads and the latest must be recent."""
    from remsguard.embedded.container import COMPLIANCE_FILE
    from remsguard.embedded.head_signing import PUBLIC_KEY_FILE

    settings = get_settings()
    if data_dir is not None:
        db = db or f"sqlite:///{data_dir / COMPLIANCE_FILE}"
        if public_key is None and (data_dir / PUBLIC_KEY_FILE).exists():
            public_key = data_dir / PUBLIC_KEY_FILE
    key = None
    if public_key is not None:
        try:
            key = load_public_key(public_key)
        except (OSError, ValueError) as exc:
            raise _fail(f"cannot read public key {public_key}: {exc}") from None
    interval = settings.tree_head_interval_seconds if head_interval is None else head_interval
    engine = make_engine(db or compliance_log_url(settings))
    try:
        report = verify_log(engine, key, max_head_lag=timedelta(seconds=2 * interval))
    finally:
        engine.dispose()
    if report.ok:
        signed = "signatures checked" if key is not None else "signatures NOT checked"
        typer.echo(
            f"ok: {report.records} records in {report.chains} chains, "
            f"{report.heads} signed tree heads ({signed}); events, alerts, forms and "
            "principals match their records"
        )
        return
    typer.echo(f"FAILED: {report.problem}")
    raise typer.Exit(1)


@audit_app.command("sign-head")
def sign_head_command(db: DbOption = None) -> None:
    """Sign a tree head over every record now in the log (needs the signing key)."""
    settings = get_settings()
    signer = load_signer(settings)
    if signer is None:
        raise _fail("no signing key: set REMSGUARD_SIGNING_KEY or REMSGUARD_SIGNING_KEY_FILE")
    with ComplianceLog.open(db or compliance_log_url(settings)) as clog:
        head = clog.sign_head(signer)
    typer.echo(
        orjson.dumps(
            {"tree_size": head.tree_size, "root_hash": head.root_hash, "key_id": head.key_id}
        )
    )


@audit_app.command("proof")
def proof_command(
    record_id: Annotated[str, typer.Argument(help="the audit record's id")],
    db: DbOption = None,
    tree_size: Annotated[int | None, typer.Option(help="signed head to prove against")] = None,
) -> None:
    """Print the inclusion proof of one record against the latest (or given) signed head."""
    with ComplianceLog.open(db or compliance_log_url(get_settings())) as clog:
        proof = clog.inclusion_proof(record_id, tree_size)
    if proof is None:
        raise _fail(f"no proof: unknown record {record_id!r} or not yet under a signed head", 1)
    sys.stdout.buffer.write(proof.to_json() + b"\n")


def check_proof(document: dict[str, Any], public: Any) -> str | None:
    """None if the proof holds, else why not."""
    from datetime import datetime

    try:
        entry = document["entry"].encode()
        head = document["head"]
        leaf_index, tree_size = int(document["leaf_index"]), int(document["tree_size"])
        path = [bytes.fromhex(p) for p in document["path"]]
        root = bytes.fromhex(head["root_hash"])
        signed_at = datetime.fromisoformat(head["signed_at"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        return f"malformed proof: {exc!r}"
    record_hash = entry_hash(entry)
    if record_hash != document.get("record_hash"):
        return "the entry does not hash to record_hash"
    parsed = orjson.loads(entry)
    if parsed.get("log_index") != leaf_index:
        return "the entry's log_index is not the proof's leaf_index"
    if head.get("tree_size") != tree_size:
        return "the proof is for another tree size than the head"
    if not verify_head_signature(
        public, tree_size, head["root_hash"], signed_at, head["signature"]
    ):
        return "the tree head's signature does not verify with this public key"
    leaf = merkle.leaf_hash(bytes.fromhex(record_hash))
    if not merkle.verify_inclusion(leaf, leaf_index, tree_size, path, root):
        return "the audit path does not lead to the signed root"
    return None


@audit_app.command("check-proof")
def check_proof_command(
    proof: Annotated[Path, typer.Argument(help="proof JSON from `audit proof` or the API")],
    public_key: Annotated[Path, typer.Option(help="Ed25519 public key (PEM or hex)")],
) -> None:
    """Offline: does the proof show the record is in the log the signed head commits to?"""
    try:
        document = orjson.loads(proof.read_bytes())
        key = load_public_key(public_key)
    except (OSError, ValueError) as exc:
        raise _fail(str(exc)) from None
    problem = check_proof(document, key) if isinstance(document, dict) else "not a JSON object"
    if problem is not None:
        typer.echo(f"FAILED: {problem}")
        raise typer.Exit(1)
    record = orjson.loads(document["entry"])["record"]
    typer.echo(
        f"ok: record {record['record_id']} is leaf {document['leaf_index']} of the signed "
        f"tree of size {document['tree_size']} (root {document['head']['root_hash']})"
    )


@audit_app.command("keygen")
def keygen_command(
    private_out: Annotated[Path, typer.Option(help="write the private key (PEM) here")],
    public_out: Annotated[Path, typer.Option(help="write the public key (PEM) here")],
) -> None:
    """Create an Ed25519 key pair for signing tree heads."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private_out.touch(mode=0o600, exist_ok=False)
    private_out.write_bytes(private_pem(key))
    public_out.write_bytes(public_pem(key.public_key()))
    typer.echo(f"key id {HeadSigner(key).key_id}")


def audit_sink_command(
    db: DbOption = None,
    bootstrap: Annotated[str | None, typer.Option(help="Kafka bootstrap servers")] = None,
    topic: Annotated[str | None, typer.Option(help="audit topic")] = None,
    alerts_topic: Annotated[
        str | None, typer.Option(help="alerts topic (full alerts for the alerts table)")
    ] = None,
    group: Annotated[
        str | None,
        typer.Option(
            help="consumer group [default: REMSGUARD_TOPIC_PREFIX + remsguard-audit-sink]"
        ),
    ] = None,
    batch: Annotated[int, typer.Option(min=1, help="max messages per DB transaction")] = 5000,
    sign_every: Annotated[
        float, typer.Option(help="sign a tree head every SECONDS when there is a key (0: never)")
    ] = 60.0,
    idle_timeout: Annotated[
        float | None, typer.Option(help="stop after SECONDS without a message")
    ] = None,
    events: Annotated[
        bool,
        typer.Option(help="also store the input events (dosing, vitals, sessions) for the forms"),
    ] = True,
) -> None:
    """Consume rems.audit.v1 (and rems.alerts.v1) into the compliance log, batched,
    at-least-once with idempotent inserts; offsets are committed after the DB commit."""
    from kafka import KafkaConsumer

    from remsguard.adapters.kafka.topics import Topics
    from remsguard.handlers.audit_sink import SinkBatch, Stored, store
    from remsguard.handlers.audit_sink_consumer import AuditSinkLoop, SinkTopics

    settings = get_settings()
    named = Topics.from_settings(settings)
    topics = SinkTopics(
        audit=topic or named.audit,
        alerts=alerts_topic or named.alerts,
        inputs=named.inputs if events else (),
        lag_name=(topic or named.audit).removeprefix(settings.topic_prefix),
    )
    signer = load_signer(settings)
    clog = ComplianceLog.open(db or compliance_log_url(settings))
    consumer = KafkaConsumer(
        *topics.all,
        bootstrap_servers=bootstrap or settings.kafka_bootstrap,
        group_id=group or f"{settings.topic_prefix}remsguard-audit-sink",  # one per environment
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=batch,
        fetch_max_bytes=64 * 1024 * 1024,
    )
    telemetry, metrics_server = _sink_telemetry(settings.metrics_port)

    def store_batch(decoded: SinkBatch) -> Stored:
        return store(clog, decoded)

    loop = AuditSinkLoop(
        consumer,
        topics,
        store_batch,
        telemetry,
        sign_head=None if signer is None else lambda: clog.sign_head(signer),
        batch=batch,
        sign_every=sign_every,
        idle_timeout=idle_timeout,
    )
    signal.signal(signal.SIGTERM, loop.stop)
    signal.signal(signal.SIGINT, loop.stop)
    try:
        loop.run()
    finally:
        telemetry.up("audit-sink", False)
        if metrics_server is not None:
            metrics_server.close()
        consumer.close()
        clog.close()


def _sink_telemetry(port: int) -> tuple[Telemetry, Any]:
    """The sink's metrics on `port` (/metrics, /healthz); without a server if the port is taken."""
    from remsguard.adapters.metrics import new_registry, serve_metrics
    from remsguard.adapters.telemetry import Telemetry

    telemetry = Telemetry(new_registry())
    try:
        server = serve_metrics(telemetry.registry, "0.0.0.0", port)
    except OSError as exc:
        structlog.get_logger("remsguard.audit_sink").warning(
            "audit_sink.metrics_unavailable", port=port, error=str(exc)
        )
        server = None
    return telemetry, server
