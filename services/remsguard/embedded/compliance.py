"""Embedded mode's view of the compliance log and its principals.

The compliance log itself is `remsguard.adapters.storage.ComplianceLog` on SQLite
(`DIR/remsguard.db`): the same models, migrations and hash chain as on PostgreSQL. This module
only adds what embedded mode needs on top: the first-run principals. (`Principal` and
`Role` live in `remsguard.identity`: both API modes own them.)
"""

from __future__ import annotations

from datetime import datetime

from remsguard.adapters.storage import ComplianceLog, PrincipalRole
from remsguard.adapters.storage.principals import PrincipalStore
from remsguard.identity import Role

__all__ = ["create_principal", "has_principals"]


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
    _, token = PrincipalStore(log).create(name, PrincipalRole(role), expires_at=expires_at, by=by)
    return token
