"""Who is calling: a `Principal` (an API caller, a device, a listener) and its `Role`.

Every door that takes events or answers requests names its caller with these, in embedded mode
and in `remsguard api` alike; they depend on nothing else in the package. The compliance log
stores principals and their tokens (`adapters/storage/principals.py`, whose `PrincipalRole`
has the same values); the HTTP layer's token check (`entrypoints/http/auth.py`) turns a
stored one into a `Principal`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["Principal", "Role"]


class Role(StrEnum):
    """What a caller may do. `device` may only post events (the HTTP layer's `require`)."""

    DEVICE = "device"
    AUDITOR = "auditor"
    STAFF = "staff"
    ADMIN = "admin"


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
