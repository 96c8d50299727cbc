"""Embedded mode's view of the compliance log and its principals.

The compliance log itself is `remsguard.adapters.storage.ComplianceLog` on SQLite
(`DIR/remsguard.db`): the same models, migrations and hash chain as on PostgreSQL. This module
only adds what embedded mode needs on top: principals as plain values for the HTTP layer, and
the first-run principals. Roles are the storage's `PrincipalRole` (`device` may only post
events; the HTTP layer's `require` enforces it).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from remsguard.adapters.storage import ComplianceLog, PrincipalRole
from remsguard.adapters.storage.principals import PrincipalInfo, PrincipalStore

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

    @classmethod
    def of(cls, info: PrincipalInfo) -> Principal:
        return cls(info.principal_id, info.name, info.role, frozenset(info.clinics))


def authenticate(log: ComplianceLog, token: str) -> Principal | None:
    """The principal a bearer token belongs to (None: unknown, rotated away, revoked,
    expired or malformed). Reads the database every time: a revocation by another process
    holds from the next request on."""
    info = PrincipalStore(log).for_token(token)
    return None if info is None else Principal.of(info)


def has_principals(log: ComplianceLog) -> bool:
    return PrincipalStore(log).exist()


def create_principal(
    log: ComplianceLog,
    name: str,
    role: Role,
    *,
    by: str = "remsguard up",
    expires_at: datetime | None = None,
) -> str:
    """Create a principal (recorded in the hash chain) and return its token (shown once;
    only its hash is stored)."""
    _, token = PrincipalStore(log).create(name, role, expires_at=expires_at, by=by)
    return token
