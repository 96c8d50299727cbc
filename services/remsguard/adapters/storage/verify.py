"""Recompute every chain and every signed tree head of a compliance log.

One pass over the records in ``log_index`` order (memory: one entry per chain plus the
Merkle frontier). The first problem stops the pass and names the record and the reason.
What is caught: an edited row (its hash no longer matches its content), a deleted row (a gap
in ``log_index`` and in its chain, or a signed head covering more records than remain), two
rows swapped (position and chain fields are inside the hash, and ``prev_hash`` links break),
a forged or re-rooted tree head, and a truncated tail (the writer's chain-head cache or a
signed head still counts the lost records).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Engine, Table, select

from remsguard.adapters.storage.chain import GENESIS, entry_hash, row_entry
from remsguard.adapters.storage.models import AuditRow, ChainHead, TreeHead, utc
from remsguard.adapters.storage.signing import verify_head_signature
from remsguard.domain import merkle
from remsguard.domain.decisions import AuditKind

AUDIT: Table = AuditRow.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class VerifyReport:
    records: int
    chains: int
    heads: int
    problem: str | None = None
    record_id: str | None = None
    log_index: int | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


def verify_log(engine: Engine, public_key: Ed25519PublicKey | None = None) -> VerifyReport:
    with engine.connect() as conn:
        heads = [
            TreeHead.model_validate(r._asdict())
            for r in conn.execute(
                select(TreeHead.__table__).order_by(TreeHead.__table__.c.tree_size)  # type: ignore[attr-defined]
            )
        ]
        cached = {
            r.chain_id: (r.chain_seq, r.hash)
            for r in conn.execute(select(ChainHead.__table__))  # type: ignore[attr-defined]
        }
        chains: dict[str, tuple[int, str]] = {}
        acc = merkle.CompactRange()
        pending = list(heads)
        count = 0

        def fail(problem: str, row: Any = None) -> VerifyReport:
            return VerifyReport(
                count,
                len(chains),
                len(heads),
                problem,
                None if row is None else row.record_id,
                None if row is None else row.log_index,
            )

        def check_head(head: TreeHead) -> str | None:
            root = acc.root().hex()
            if root != head.root_hash:
                return (
                    f"signed tree head of size {head.tree_size}: root {head.root_hash} does not "
                    f"match the records' root {root}"
                )
            if public_key is not None and not verify_head_signature(
                public_key, head.tree_size, head.root_hash, head.signed_at, head.signature
            ):
                return f"signed tree head of size {head.tree_size}: bad signature"
            return None

        while pending and pending[0].tree_size == 0:
            if (bad := check_head(pending.pop(0))) is not None:
                return fail(bad)
        result = conn.execute(
            select(AUDIT).order_by(AUDIT.c.log_index).execution_options(yield_per=20_000)
        )
        for row in result:
            where = f"record {row.record_id} (log index {row.log_index}, chain {row.chain_id!r} "
            where += f"seq {row.chain_seq})"
            if row.log_index != count:
                return fail(
                    f"{where}: expected log index {count}; "
                    f"{row.log_index - count} record(s) before it are missing",
                    row,
                )
            seq, prev = chains.get(row.chain_id, (-1, GENESIS))
            if row.chain_seq != seq + 1:
                return fail(
                    f"{where}: expected chain seq {seq + 1}: records of this chain are "
                    "missing or out of order",
                    row,
                )
            if row.prev_hash != prev:
                return fail(f"{where}: prev_hash does not match its predecessor's hash", row)
            try:
                recomputed = entry_hash(row_entry(row))
            except (ValueError, TypeError) as exc:
                return fail(f"{where}: unreadable content: {exc}", row)
            if recomputed != row.hash:
                return fail(f"{where}: hash mismatch: the record's content was altered", row)
            if (bad := _derived_mismatch(row)) is not None:
                return fail(f"{where}: {bad} does not match the hashed content", row)
            chains[row.chain_id] = (row.chain_seq, row.hash)
            acc.append(merkle.leaf_hash(bytes.fromhex(row.hash)))
            count += 1
            while pending and pending[0].tree_size == count:
                if (bad := check_head(pending.pop(0))) is not None:
                    return fail(bad, row)
        if pending:
            return fail(
                f"signed tree head of size {pending[0].tree_size} covers more records than the "
                f"log holds ({count}): records at the end were deleted"
            )
        for chain_id, (seq, hash_) in sorted(cached.items()):
            if chains.get(chain_id) != (seq, hash_):
                have = chains.get(chain_id, (-1, GENESIS))[0]
                return fail(
                    f"chain {chain_id!r} ends at seq {have} but the writer appended up to seq "
                    f"{seq}: records at the end of the chain were deleted or altered"
                )
        return VerifyReport(count, len(chains), len(heads))


def _derived_mismatch(row: Any) -> str | None:
    expected_time = row.occurred_at if row.occurred_at is not None else row.appended_at
    if utc(row.event_time) != utc(expected_time):
        return "event_time"
    if row.kind == AuditKind.ALERT_RAISED:
        detail = orjson.loads(row.detail)
        rule, severity = detail.get("rule"), detail.get("severity")
    else:
        rule = severity = None
    if row.rule != (None if rule is None else str(rule)):
        return "rule"
    if row.severity != (None if severity is None else str(severity)):
        return "severity"
    return None
