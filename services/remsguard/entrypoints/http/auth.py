"""Bearer-token authentication and role checks, as FastAPI dependencies.

    @router.get("/v1/things")
    def things(principal: Principal = Depends(require(Role.AUDITOR, Role.ADMIN))): ...

Tokens are looked up in the compliance log's principals (only their SHA-256 is stored); a
lookup is cached for `CACHE_SECONDS`, so a revoked token stops working within that time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

from fastapi import Request

from remsguard.embedded.compliance import Principal, Role, authenticate
from remsguard.entrypoints.http.errors import ApiError

__all__ = ["current_principal", "require"]

CACHE_SECONDS: Final = 10.0
_CHALLENGE: Final = {"WWW-Authenticate": 'Bearer realm="remsguard"'}


class _TokenCache:
    def __init__(self) -> None:
        self._entries: dict[str, tuple[float, Principal | None]] = {}

    def get(self, token: str) -> tuple[bool, Principal | None]:
        entry = self._entries.get(token)
        if entry is None or entry[0] < time.monotonic():
            return False, None
        return True, entry[1]

    def put(self, token: str, principal: Principal | None) -> None:
        if len(self._entries) > 10_000:
            self._entries.clear()
        self._entries[token] = (time.monotonic() + CACHE_SECONDS, principal)


def current_principal(request: Request) -> Principal:
    """The caller, from `Authorization: Bearer TOKEN`; 401 when missing or unknown."""
    header = request.headers.get("authorization")
    if not header:
        raise ApiError(401, "unauthenticated", "missing Authorization: Bearer token", _CHALLENGE)
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise ApiError(401, "unauthenticated", "use Authorization: Bearer TOKEN", _CHALLENGE)
    state = request.app.state
    cache: _TokenCache | None = getattr(state, "token_cache", None)
    if cache is None:
        cache = state.token_cache = _TokenCache()
    hit, principal = cache.get(token)
    if not hit:
        principal = authenticate(state.container.compliance, token)
        cache.put(token, principal)
    if principal is None:
        raise ApiError(401, "unauthenticated", "unknown or revoked token", _CHALLENGE)
    return principal


def require(*roles: Role) -> Callable[[Request], Principal]:
    """A dependency admitting callers with one of `roles` (403 for other roles)."""
    allowed = frozenset(roles)

    def dependency(request: Request) -> Principal:
        principal = current_principal(request)
        if principal.role not in allowed:
            names = ", ".join(sorted(r.value for r in allowed))
            raise ApiError(
                403, "forbidden", f"role {principal.role.value!r} may not do this (needs {names})"
            )
        return principal

    return dependency
