"""Embedded mode's view of the compliance log and its principals.

The compliance log itself is `remsguard.adapters.storage.ComplianceLog` on SQLite
(`DIR/remsguard.db`): the same models, migrations and hash chain as on PostgreSQL. This module
only adds what embedded mode needs on top: principals as plain values for the HTTP layer, and
the first-run principals. Roles are the storage's `PrincipalRole` (`device` may only post
events; the HTTP layer's `require` enforces it).
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson
from sqlalchemy import select
from sqlmodel import Session

from remsguard.adapters.storage import ApiPrincipal, ComplianceLog, PrincipalRole

__all__ = ["Principal", "Role", "authenticate", "create_principal", "has_principals"]


Role = PrincipalRole  # one set of roles for storage and HTTP


@dataclass(frozen=True, slots=True)
class Principal:
    principal_id: str
    name: str
    role: Role
    clinics: frozenset[str] = frozenset()  # empty: every clinic

    def may_see(self, clinic_id: str) -> bool:
        return not self.clinics or clinic_id in self.clinics

    @property
    def clinic_scope(self) -> frozenset[str] | None:
        """For queries: None means every clinic."""
        return self.clinics or None


def _principal(row: ApiPrincipal) -> Principal | None:
    try:
        role = Role(row.role)
    except ValueError:
        return None
    clinics = orjson.loads(row.clinics) if row.clinics else []
    return Principal(row.principal_id, row.name, role, frozenset(str(c) for c in clinics))


def authenticate(log: ComplianceLog, token: str) -> Principal | None:
    """The principal a bearer token belongs to (None: unknown, revoked or malformed)."""
    if not token or len(token) > 512:
        return None
    row = log.principal_for_token(token)
    return None if row is None else _principal(row)


def has_principals(log: ComplianceLog) -> bool:
    with Session(log.engine) as session:
        return session.scalars(select(ApiPrincipal).limit(1)).first() is not None


def create_principal(log: ComplianceLog, name: str, role: Role) -> str:
    """Create a principal and return its token (shown once; only its hash is stored)."""
    _, token = log.create_principal(name, role)
    return token
