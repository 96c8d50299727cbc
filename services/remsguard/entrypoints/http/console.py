"""The staff console: one HTML page, small scripts and a stylesheet, no build step.

- `GET /console`: the page (public; it holds no data). Staff sign in with their token, which
  the page keeps in `sessionStorage` and sends as `Authorization: Bearer`.
- `GET /console/api/state`: the signed-in principal, the sessions board and the unresolved
  alerts (the same snapshot `GET /v1/stream` sends as `sessions` events).
The page then follows `GET /v1/stream` and acknowledges/resolves with the `/v1/alerts/{id}/...`
endpoints.
"""

from __future__ import annotations

from importlib import resources
from typing import Final

from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from remsguard.entrypoints.http.auth import require
from remsguard.entrypoints.http.capabilities import Process
from remsguard.entrypoints.http.common import json_response
from remsguard.entrypoints.http.errors import ApiError
from remsguard.entrypoints.http.sse import snapshot
from remsguard.identity import Principal, Role

__all__ = ["router"]

router = APIRouter(tags=["console"])
_STATIC: Final = resources.files("remsguard.entrypoints.http") / "static"
_TYPES: Final = {
    "dom.js": "text/javascript; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
}


@router.get("/", include_in_schema=False)
async def root() -> RedirectResponse:
    return RedirectResponse("/console")


@router.get("/console", include_in_schema=False)
async def page() -> HTMLResponse:
    return HTMLResponse(
        (_STATIC / "console.html").read_text(encoding="utf-8"),
        headers={"Cache-Control": "no-store"},
    )


@router.get("/console/static/{name}", include_in_schema=False)
async def static(name: str) -> Response:
    if name not in _TYPES:
        raise ApiError(404, "not_found", f"no file {name!r}")
    return Response(
        (_STATIC / name).read_bytes(),
        media_type=_TYPES[name],
        headers={"Cache-Control": "no-cache"},
    )


@router.get(
    "/console/api/state",
    summary="The console's state: who is signed in, sessions board, unresolved alerts",
)
async def state(
    process: Process,
    principal: Principal = Depends(require(Role.STAFF, Role.ADMIN, Role.AUDITOR)),
) -> Response:
    body = await snapshot(process, principal)
    body["me"] = {
        "principal_id": principal.principal_id,
        "name": principal.name,
        "role": principal.role.value,
        "clinics": sorted(principal.clinics),
    }
    return json_response(body)
