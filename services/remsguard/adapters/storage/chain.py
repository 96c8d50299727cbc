"""Hash chains over the audit records, and the canonical form every hash is taken over.

**Chain unit: one chain per clinic** (records without a clinic, e.g. undecodable input, form
the chain ``""``). A clinic is the unit of trust and of access: an auditor is bound to
clinics, so a clinic's chain can be handed over and verified end to end without revealing
other clinics' records, and a gap or reordering inside one clinic's history is visible in
that chain alone. Per-partition chains were rejected: the audit topic is keyed by session,
so a partition mixes clinics, and its chains would change meaning whenever the topic is
repartitioned; the database order would also depend on which sink instance wrote what.
Global ordering (and tail-truncation evidence) comes from the Merkle tree over *all* records
in insertion order (``log_index``) and its signed tree heads.

**Canonical form** (version 1) of a record at ``log_index`` is the compact JSON object::

    {"v":1,"log_index":N,"chain_id":"...","chain_seq":S,"prev_hash":"<64 hex>",
     "appended_at":"<RFC 3339 Z>","record":<audit_record_to_json(record)>}

with keys in exactly this order, the record in the outbound wire form (fields in
``AuditRecordPublic`` order, ``detail`` keys sorted, times UTC ``Z``). Its SHA-256, hex, is
the record's ``hash``; the first record of a chain has ``prev_hash`` of 64 zeros. The Merkle
leaf of a record is the 32 raw bytes of its ``hash``, so the leaf hash is
``SHA-256(0x00 || hash)``. Because ``log_index`` and the chain position are inside the hashed
bytes, moving a record is as visible as editing it.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import datetime
from typing import Final, Protocol, cast

import orjson

from remsguard.adapters.storage.models import utc
from remsguard.contract.outbound import audit_record_to_json
from remsguard.domain.decisions import AuditKind, AuditRecord

__all__ = [
    "API_QUERY",
    "EVENT_STORED",
    "FORM_SUBMITTED",
    "GENESIS",
    "SERVICE_KINDS",
    "canonical_entry",
    "chain_of",
    "detail_text",
    "entry_hash",
    "entry_of",
    "hash_holds",
    "kind_of",
    "normalise",
    "record_of_row",
    "stored_form",
]

GENESIS: Final = "0" * 64
API_QUERY: Final = "api.query"  # an auditor API query: who, which filters, how many rows
FORM_SUBMITTED: Final = "form.submitted"  # a Patient Monitoring Form marked submitted
# The digests of accepted events' content as stored in ``session_events`` (``events.py``).
EVENT_STORED: Final = "event.stored"
# Staff alerting's lifecycle records (remsguard.alerting.records).
ALERTING_KINDS: Final = frozenset(
    {
        "alert.notified",
        "alert.escalated",
        "alert.acknowledged",
        "alert.resolved",
        "notification.dead_lettered",
    }
)
SERVICE_KINDS: Final = frozenset({API_QUERY, FORM_SUBMITTED, EVENT_STORED}) | ALERTING_KINDS
_OPTS: Final = orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC
_DETAIL_MEMBER: Final = b',"detail":'


def chain_of(record: AuditRecord) -> str:
    return record.clinic_id or ""


def detail_text(detail: dict[str, object]) -> str:
    """The detail as stored: canonical JSON (sorted keys), exactly as the wire form has it."""
    raw = audit_record_to_json(
        AuditRecord(
            record_id="",
            kind=AuditKind.EVENT_ACCEPTED,
            subject_id="",
            session_id=None,
            clinic_id=None,
            occurred_at=None,
            detail=detail,
        )
    )
    return orjson.dumps(orjson.loads(raw)["detail"], option=orjson.OPT_SORT_KEYS).decode()


def normalise(record: AuditRecord) -> tuple[AuditRecord, str]:
    """The record as it will read back from the database, and its stored detail text."""
    text = detail_text(record.detail)
    occurred = None if record.occurred_at is None else utc(record.occurred_at)
    return replace(record, detail=orjson.loads(text), occurred_at=occurred), text


def stored_form(
    record: AuditRecord,
) -> tuple[bytes, str, dict[str, object], datetime | None]:
    """The record serialised once, for appending: its wire JSON exactly as
    ``audit_record_to_json(normalise(record)[0])`` (what the canonical entry embeds, and what
    verify recomputes from the stored row), its stored detail text (``normalise(record)[1]``),
    that detail parsed, and its UTC event time.

    ``normalise`` + ``canonical_entry`` build the wire JSON twice and parse it twice; here it
    is built once. The detail is the wire form's last member (the members before it are strings
    or null, whose quotes are escaped, so the first ``,"detail":`` is its key); its canonical
    text re-serialises to itself, so it replaces the wire form's detail in place, which for the
    usual detail (string keys, already sorted) is a no-op."""
    raw = audit_record_to_json(record)
    at = raw.index(_DETAIL_MEMBER) + len(_DETAIL_MEMBER)
    wire_detail = raw[at:-1]
    detail = orjson.loads(wire_detail)
    text = orjson.dumps(detail, option=orjson.OPT_SORT_KEYS)
    if text != wire_detail:
        raw = raw[:at] + text + b"}"
    occurred = None if record.occurred_at is None else utc(record.occurred_at)
    return raw, text.decode(), detail, occurred


class StoredRecord(Protocol):
    """What hashing needs of a stored record: an ``AuditRow`` or a plain result row."""

    @property
    def log_index(self) -> int: ...
    @property
    def record_id(self) -> str: ...
    @property
    def chain_id(self) -> str: ...
    @property
    def chain_seq(self) -> int: ...
    @property
    def prev_hash(self) -> str: ...
    @property
    def hash(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def subject_id(self) -> str: ...
    @property
    def session_id(self) -> str | None: ...
    @property
    def clinic_id(self) -> str | None: ...
    @property
    def occurred_at(self) -> datetime | None: ...
    @property
    def detail(self) -> str: ...
    @property
    def appended_at(self) -> datetime: ...


def kind_of(value: str) -> AuditKind:
    """The kind of a stored record. Besides the engine's kinds, the log holds the service's
    own facts (``SERVICE_KINDS``: API queries, form submissions); they hash and verify like
    any record and are typed as ``AuditKind`` values for the record's sake."""
    if value in SERVICE_KINDS:
        return cast(AuditKind, value)
    return AuditKind(value)


def record_of_row(row: StoredRecord) -> AuditRecord:
    return AuditRecord(
        record_id=row.record_id,
        kind=kind_of(row.kind),
        subject_id=row.subject_id,
        session_id=row.session_id,
        clinic_id=row.clinic_id,
        occurred_at=None if row.occurred_at is None else utc(row.occurred_at),
        detail=orjson.loads(row.detail),
    )


def canonical_entry(
    *,
    log_index: int,
    chain_id: str,
    chain_seq: int,
    prev_hash: str,
    appended_at: datetime,
    record: AuditRecord,
) -> bytes:
    return entry_of(
        log_index=log_index,
        chain_id=chain_id,
        chain_seq=chain_seq,
        prev_hash=prev_hash,
        appended_at=appended_at,
        record_json=audit_record_to_json(record),
    )


def entry_of(
    *,
    log_index: int,
    chain_id: str,
    chain_seq: int,
    prev_hash: str,
    appended_at: datetime,
    record_json: bytes,
) -> bytes:
    """``canonical_entry`` around a record already in its wire JSON (``stored_form``)."""
    return orjson.dumps(
        {
            "v": 1,
            "log_index": log_index,
            "chain_id": chain_id,
            "chain_seq": chain_seq,
            "prev_hash": prev_hash,
            "appended_at": utc(appended_at),
            "record": orjson.Fragment(record_json),
        },
        option=_OPTS,
    )


def entry_hash(entry: bytes) -> str:
    return hashlib.sha256(entry).hexdigest()


def hash_holds(row: StoredRecord) -> bool:
    """Whether a stored record still hashes to its ``hash`` (its content is as appended).
    Readers check the records they build a view from; ``audit verify`` checks the links."""
    try:
        return entry_hash(row_entry(row)) == row.hash
    except (ValueError, TypeError):
        return False


def row_entry(row: StoredRecord) -> bytes:
    """The canonical entry recomputed from a stored row (what verify and proofs hash)."""
    return canonical_entry(
        log_index=row.log_index,
        chain_id=row.chain_id,
        chain_seq=row.chain_seq,
        prev_hash=row.prev_hash,
        appended_at=row.appended_at,
        record=record_of_row(row),
    )
