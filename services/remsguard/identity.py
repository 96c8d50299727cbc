"""Who is calling: a `Principal` (an API caller, a device, a listener) and its `Role`.

Every door that takes events or answers requests names its caller with these, in embedded mode
and in `remsguard api` alike; they depend on nothing else in the package. The compliance log
stores principals and their tokens (`adapters/storage/principals.py`, whose `PrincipalRole`
has the same values); `principal_from_record` turns a stored one into this value.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

__all__ = ["Principal", "Role", "principal_from_record"]


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


class PrincipalRecord(Protocol):
    """A stored principal, as the compliance log's principal store returns it."""

    @property
    def principal_id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def role(self) -> str: ...
    @property
    def clinics(self) -> Iterable[str]: ...


def principal_from_record(record: PrincipalRecord) -> Principal:
    return Principal(record.principal_id, record.name, Role(record.role), frozenset(record.clinics))
