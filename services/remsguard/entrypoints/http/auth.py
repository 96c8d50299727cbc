"""Bearer-token authentication and role checks, as FastAPI dependencies.

    @router.get("/v1/things")
    def things(principal: Principal = Depends(require(Role.AUDITOR, Role.ADMIN))): ...

Tokens are looked up in the compliance log's principals (only their SHA-256 is stored) on
every request, without a cache: a token revoked, rotated away or expired, even by
`remsguard principals` in another process, is refused from the very next request on. The
lookup is one indexed query (under 0.1 ms on SQLite, 0.7 ms on PostgreSQL; docs/SECURITY.md).
`require` runs it on the event loop when the log is a local SQLite file (cheaper than a hop
to a worker thread, and a WAL read never waits for a writer), else in the thread pool.
A stream already open (`GET /v1/stream`) was authenticated when it opened.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from remsguard.adapters.storage import ComplianceLog
from remsguard.entrypoints.http.errors import ApiError
from remsguard.identity import Principal, Role

__all__ = ["UNAUTHENTICATED", "auth_errors", "caller", "current_principal", "require"]

_CHALLENGE: Final = {"WWW-Authenticate": 'Bearer realm="remsguard"'}
UNAUTHENTICATED: Final = "Missing or unknown bearer token."
_CALLER: Final = "remsguard.principal"  # the ASGI scope's key for the caller once looked up


def auth_errors(forbidden: str) -> dict[int | str, dict[str, Any]]:
    """The `responses=` entries of a route behind `require`: 401 as `current_principal`
    answers it, and 403 with `forbidden` saying whom the route refuses."""
    return {401: {"description": UNAUTHENTICATED}, 403: {"description": forbidden}}


def authenticate(log: ComplianceLog, token: str) -> Principal | None:
    """The principal a bearer token belongs to (None: unknown, rotated away, revoked,
    expired or malformed). Reads the database every time: a revocation by another process
    holds from the next request on."""
    info = log.principals.for_token(token)
    if info is None:
        return None
    return Principal(info.principal_id, info.name, Role(info.role), frozenset(info.clinics))


def current_principal(request: Request) -> Principal:
    """The caller, from `Authorization: Bearer TOKEN`; 401 when missing or unknown. Looked
    up once a request, refusals included (kept in the request's ASGI scope): a read route's
    own check and `READS_AFTER_WRITES` both ask."""
    known = request.scope.get(_CALLER)
    if isinstance(known, Principal):
        return known
    if isinstance(known, ApiError):
        raise known
    try:
        principal = _bearer(request)
    except ApiError as refused:
        request.scope[_CALLER] = refused
        raise
    request.scope[_CALLER] = principal
    return principal


def _bearer(request: Request) -> Principal:
    header = request.headers.get("authorization")
    if not header:
        raise ApiError(401, "unauthenticated", "missing Authorization: Bearer token", _CHALLENGE)
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise ApiError(401, "unauthenticated", "use Authorization: Bearer TOKEN", _CHALLENGE)
    principal = authenticate(request.app.state.container.compliance, token)
    if principal is None:
        raise ApiError(401, "unauthenticated", "unknown, revoked or expired token", _CHALLENGE)
    return principal


async def caller(request: Request) -> Principal:
    """`current_principal`, on the event loop when the log is a local SQLite file (cheaper
    than a hop to a worker thread, and a WAL read never waits for a writer), else in the
    thread pool."""
    if request.app.state.container.compliance.local:
        return current_principal(request)
    return await run_in_threadpool(current_principal, request)


def require(*roles: Role) -> Callable[[Request], Awaitable[Principal]]:
    """A dependency admitting callers with one of `roles` (403 for other roles)."""
    allowed = frozenset(roles)

    async def dependency(request: Request) -> Principal:
        principal = await caller(request)
        if principal.role not in allowed:
            names = ", ".join(sorted(r.value for r in allowed))
            raise ApiError(
                403, "forbidden", f"role {principal.role.value!r} may not do this (needs {names})"
            )
        return principal

    return dependency
