"""API principals and their tokens, over the compliance log's ``api_principals`` table.

A token is ``rg_`` + 32 random bytes (URL-safe base64); only its SHA-256 is stored, so a
token is shown once, when it is issued (``create``, ``rotate``). A token is refused when its
principal is revoked (``revoked_at``), past its ``expires_at``, or when the principal's token
was rotated (the row holds the new token's hash only).

Every lookup reads the database (no cache): a revocation or rotation by another process
(``remsguard principals revoke`` against the same database) holds from the next request on.
One indexed lookup by hash costs well under a millisecond (docs/SECURITY.md, "HTTP surface
and tokens").

Creating, rotating and revoking a principal each append a record to the hash chain
(``principal.created``, again with ``action: rotated`` for a rotation, and
``principal.revoked``): who the principal is (name, role, clinics, expiry), who did it
(``by``) and, when a token is issued, its SHA-256 (never the token), which ``audit verify``
holds the ``api_principals`` row to. The row change and its record commit in one transaction
(``AuditLog.recorded_change``): never one without the other.

``create_row``/``row_for_token`` are the log's first principal path (no expiry, no ``by``;
``ComplianceLog.create_principal``/``principal_for_token``), kept for the staff API; new
callers use ``create``/``for_token``.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Final, NamedTuple, Protocol

import orjson
from sqlalchemy import Connection, bindparam, select, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from remsguard.adapters.storage.audit_log import RecordsChanges
from remsguard.adapters.storage.db import OneRow
from remsguard.adapters.storage.models import ApiPrincipal, PrincipalRole, utc, utc_text
from remsguard.adapters.storage.tables import AUDIT, PRINCIPALS
from remsguard.domain.decisions import AuditKind, AuditRecord, stable_id

__all__ = [
    "MAX_TOKEN_LENGTH",
    "PrincipalError",
    "PrincipalInfo",
    "PrincipalStore",
    "hash_token",
    "new_token",
    "principal_created",
    "unvouched_principal_records",
]

MAX_TOKEN_LENGTH: Final = 512  # longer bearer values are refused without a lookup
_ROLES: Final = frozenset(r.value for r in PrincipalRole)
_INFO_COLUMNS: Final = tuple(
    PRINCIPALS.c[name]
    for name in (
        "principal_id", "name", "role", "clinics", "created_at", "expires_at", "revoked_at"
    )
)  # fmt: skip
# Built once: every request runs it (see `db.OneRow`).
_BY_TOKEN: Final = select(*_INFO_COLUMNS).where(
    PRINCIPALS.c.token_hash == bindparam("token_hash"), PRINCIPALS.c.revoked_at.is_(None)
)


class _Found(NamedTuple):
    """A `_BY_TOKEN` row."""

    principal_id: str
    name: str
    role: str
    clinics: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


def new_token() -> str:
    return "rg_" + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _wall_clock() -> datetime:
    return datetime.now(UTC)


class _Row(Protocol):
    """What ``PrincipalInfo.of`` reads: an ``ApiPrincipal`` or a result row of its columns."""

    @property
    def principal_id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def role(self) -> str: ...
    @property
    def clinics(self) -> str: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def expires_at(self) -> datetime | None: ...
    @property
    def revoked_at(self) -> datetime | None: ...


class PrincipalError(ValueError):
    """A principal operation that cannot be done (unknown name, name taken, revoked...)."""


@dataclass(frozen=True, slots=True)
class PrincipalInfo:
    """A principal as listed: never its token or the token's hash."""

    principal_id: str
    name: str
    role: PrincipalRole
    clinics: tuple[str, ...]  # empty: every clinic
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def of(cls, row: _Row) -> PrincipalInfo:
        clinics = orjson.loads(row.clinics) if row.clinics else []
        return cls(
            principal_id=row.principal_id,
            name=row.name,
            role=PrincipalRole(row.role),
            clinics=tuple(sorted(str(c) for c in clinics)),
            created_at=utc(row.created_at),
            expires_at=None if row.expires_at is None else utc(row.expires_at),
            revoked_at=None if row.revoked_at is None else utc(row.revoked_at),
        )

    def active(self, now: datetime) -> bool:
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)


@lru_cache(maxsize=1024)
def _info_of(found: tuple[Any, ...]) -> PrincipalInfo | None:
    """A `_BY_TOKEN` row as a principal (None: a role this version does not know), kept
    for the same row: the lookup still reads the database every request (a revocation or a
    rotation is a different row, or none), only the conversion is saved."""
    row = _Found(*found)
    if row.role not in _ROLES:
        return None
    return PrincipalInfo.of(row)


class PrincipalStore:
    """Create, look up, list, rotate and revoke principals; ``now`` is the wall clock."""

    def __init__(self, log: RecordsChanges, now: Callable[[], datetime] = _wall_clock) -> None:
        self.log = log
        self._now = now
        self._by_token = OneRow(log.reader, _BY_TOKEN)  # every request runs it

    # -- reading --------------------------------------------------------------------------

    def for_token(self, token: str) -> PrincipalInfo | None:
        """The active principal a bearer token belongs to (None: unknown, rotated away,
        revoked, expired, or a role this version does not know)."""
        if not token or len(token) > MAX_TOKEN_LENGTH:
            return None
        found = self._by_token.first({"token_hash": hash_token(token)})
        if found is None:
            return None
        info = _info_of(found)
        return info if info is not None and info.active(utc(self._now())) else None

    def close(self) -> None:
        self._by_token.close()

    def exist(self) -> bool:
        with Session(self.log.reader) as s:
            return s.scalars(select(PRINCIPALS.c.principal_id).limit(1)).first() is not None

    def listing(self) -> list[PrincipalInfo]:
        with Session(self.log.reader) as s:
            rows = s.scalars(select(ApiPrincipal).order_by(PRINCIPALS.c.name)).all()
        return [PrincipalInfo.of(r) for r in rows if r.role in _ROLES]

    def row_for_token(self, token: str) -> ApiPrincipal | None:
        """The unrevoked principal row of a token, whatever its expiry or role."""
        with Session(self.log.reader) as s:
            return s.scalars(
                select(ApiPrincipal).where(
                    PRINCIPALS.c.token_hash == hash_token(token),
                    PRINCIPALS.c.revoked_at.is_(None),
                )
            ).first()

    def get(self, name: str) -> PrincipalInfo:
        with Session(self.log.reader) as s:
            row = s.scalars(select(ApiPrincipal).where(PRINCIPALS.c.name == name)).first()
        if row is None:
            raise PrincipalError(f"no principal named {name!r}")
        return PrincipalInfo.of(row)

    # -- writing --------------------------------------------------------------------------

    def create(
        self,
        name: str,
        role: PrincipalRole,
        clinics: Sequence[str] = (),
        *,
        expires_at: datetime | None = None,
        by: str,
    ) -> tuple[PrincipalInfo, str]:
        """A new principal and its token (shown once); recorded as ``principal.created``."""
        now = utc(self._now())
        if expires_at is not None and utc(expires_at) <= now:
            raise PrincipalError(f"expiry {utc(expires_at).isoformat()} is not in the future")
        row, token = _new_row(name, role, clinics, now, expires_at)
        info = PrincipalInfo.of(row)
        record = _record(AuditKind.PRINCIPAL_CREATED, "created", info, by, now, row.token_hash)
        try:
            self._insert(row, record)
        except IntegrityError:
            raise PrincipalError(f"a principal named {name!r} exists") from None
        return info, token

    def create_row(
        self, name: str, role: PrincipalRole, clinics: Sequence[str] = ()
    ) -> tuple[ApiPrincipal, str]:
        """A new principal row and its token (shown once; only a hash is kept), with its
        chained ``principal_created`` record (name, role, clinics, the token's hash)."""
        principal, token = _new_row(name, role, clinics, utc(self._now()))
        self._insert(principal, principal_created(principal))
        return principal, token

    def _insert(self, row: ApiPrincipal, record: AuditRecord) -> None:
        """Insert a principal's row with its record, in one transaction."""
        with self.log.recorded_change() as change:
            change.conn.execute(PRINCIPALS.insert(), [row.model_dump()])
            change.append([record])

    def revoke(self, name: str, *, by: str) -> PrincipalInfo:
        """Revoke a principal: its token is refused from the next request on."""
        info = self.get(name)
        if info.revoked_at is not None:
            raise PrincipalError(f"principal {name!r} was revoked at {_iso(info.revoked_at)}")
        now = utc(self._now())
        revoked = replace(info, revoked_at=now)
        record = _record(AuditKind.PRINCIPAL_REVOKED, "revoked", revoked, by, now)
        self._update_unrevoked(info, record, revoked_at=now)
        return revoked

    def rotate(
        self, name: str, *, by: str, expires_at: datetime | None = None, keep_expiry: bool = True
    ) -> tuple[PrincipalInfo, str]:
        """A new token for the same principal (the old one is refused at once).

        The expiry stays as it was when ``keep_expiry``; otherwise it becomes ``expires_at``
        (None: never). A revoked principal cannot be rotated, nor one whose kept expiry has
        passed."""
        info = self.get(name)
        now = utc(self._now())
        if info.revoked_at is not None:
            raise PrincipalError(
                f"principal {name!r} was revoked at {_iso(info.revoked_at)}; create a new one"
            )
        expiry = info.expires_at if keep_expiry else expires_at
        if expiry is not None and utc(expiry) <= now:
            raise PrincipalError(
                f"expiry {_iso(utc(expiry))} of {name!r} is not in the future; give a new one"
            )
        token = new_token()
        digest = hash_token(token)
        expiry = None if expiry is None else utc(expiry)
        rotated = replace(info, expires_at=expiry)
        record = _record(AuditKind.PRINCIPAL_CREATED, "rotated", rotated, by, now, digest)
        self._update_unrevoked(info, record, token_hash=digest, expires_at=expiry)
        return rotated, token

    def _update_unrevoked(self, info: PrincipalInfo, record: AuditRecord, **values: object) -> None:
        """Set `values` on the principal's row while it is not revoked, with its record."""
        with self.log.recorded_change() as change:
            changed = change.conn.execute(
                update(PRINCIPALS)
                .where(PRINCIPALS.c.principal_id == info.principal_id)
                .where(PRINCIPALS.c.revoked_at.is_(None))
                .values(**values)
            ).rowcount
            if not changed:
                raise PrincipalError(f"principal {info.name!r} was revoked meanwhile")
            change.append([record])


def _new_row(
    name: str,
    role: PrincipalRole,
    clinics: Sequence[str],
    created_at: datetime,
    expires_at: datetime | None = None,
) -> tuple[ApiPrincipal, str]:
    """A principal row with a new token's hash, and the token."""
    token = new_token()
    row = ApiPrincipal(
        principal_id=uuid.uuid4().hex,
        name=name,
        token_hash=hash_token(token),
        role=PrincipalRole(role).value,
        clinics=orjson.dumps(sorted(set(clinics))).decode(),
        created_at=created_at,
        expires_at=None if expires_at is None else utc(expires_at),
    )
    return row, token


def principal_created(principal: ApiPrincipal) -> AuditRecord:
    """The chained record of a row made by ``create_row`` (what verify holds the row to)."""
    return AuditRecord(
        record_id=stable_id(AuditKind.PRINCIPAL_CREATED, principal.principal_id),
        kind=AuditKind.PRINCIPAL_CREATED,
        subject_id=principal.principal_id,
        session_id=None,
        clinic_id=None,
        occurred_at=utc(principal.created_at),
        detail={
            "principal_id": principal.principal_id,
            "name": principal.name,
            "role": principal.role,
            "clinics": orjson.loads(principal.clinics),
            "token_sha256": principal.token_hash,
            "expires_at": utc_text(principal.expires_at),
        },
    )


def unvouched_principal_records(conn: Connection) -> list[AuditRecord]:
    """The ``principal.created`` records for rows stored before the log chained them
    (migration 0005), vouching for the rows as they are now."""
    created = set(
        conn.execute(
            select(AUDIT.c.subject_id).where(AUDIT.c.kind == AuditKind.PRINCIPAL_CREATED)
        ).scalars()
    )
    return [
        principal_created(
            ApiPrincipal(
                principal_id=r.principal_id,
                name=r.name,
                token_hash=r.token_hash,
                role=r.role,
                clinics=r.clinics,
                created_at=utc(r.created_at),
            )
        )
        for r in conn.execute(
            select(
                PRINCIPALS.c.principal_id,
                PRINCIPALS.c.name,
                PRINCIPALS.c.token_hash,
                PRINCIPALS.c.role,
                PRINCIPALS.c.clinics,
                PRINCIPALS.c.created_at,
            ).order_by(PRINCIPALS.c.created_at, PRINCIPALS.c.principal_id)
        )
        if r.principal_id not in created
    ]


def _record(
    kind: AuditKind,
    action: str,
    info: PrincipalInfo,
    by: str,
    at: datetime,
    token_hash: str | None = None,
) -> AuditRecord:
    """One chained record. Its ``detail`` is what ``audit verify`` holds the row to (name,
    role, clinics and, when a token is issued, the token's SHA-256; never the token). Ids:
    one ``principal.created`` per principal, one per rotation (by the new token's hash), one
    ``principal.revoked``."""
    parts = (
        (kind, info.principal_id)
        if action != "rotated"
        else (kind, info.principal_id, token_hash or "")
    )
    detail: dict[str, object] = {
        "principal_id": info.principal_id,
        "action": action,
        "name": info.name,
        "role": info.role.value,
        "clinics": list(info.clinics),
        "expires_at": None if info.expires_at is None else _iso(info.expires_at),
        "by": by,
    }
    if token_hash is not None:
        detail["token_sha256"] = token_hash
    return AuditRecord(
        record_id=stable_id(*parts),
        kind=kind,
        subject_id=info.principal_id,
        session_id=None,
        clinic_id=None,
        occurred_at=at,
        detail=detail,
    )


def _iso(at: datetime) -> str:
    return utc(at).isoformat().replace("+00:00", "Z")
