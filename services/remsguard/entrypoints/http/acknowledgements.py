"""`POST /v1/alerts/{id}/acknowledge`, `/resolve` and `/shelve`, attributed to the staff member.

The caller's principal (staff or admin) is the one recorded: the alert's `acknowledged_by` /
`resolved_by` and the `alert.acknowledged` / `alert.resolved` audit record carry its id (and
the audit record its name). Both are idempotent: acknowledging an alert that is already
acknowledged or resolved answers 200 with `changed: false` and the stored state.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import orjson
from fastapi import APIRouter, Body, Depends, Path
from fastapi.responses import Response

from remsguard.alerting.service import (
    AlertNotFound,
    NotShelvable,
    Transition,
    alert_row_dict,
)
from remsguard.entrypoints.http.auth import require
from remsguard.entrypoints.http.capabilities import StaffAlerting
from remsguard.entrypoints.http.errors import ApiError
from remsguard.identity import Principal, Role

__all__ = ["router"]

router = APIRouter(tags=["staff"])
_RESPONSES: dict[int | str, dict[str, str]] = {
    200: {"description": '`{"changed": bool, "alert": {...}}`'},
    401: {"description": "Missing or unknown bearer token."},
    403: {"description": "Not a staff or admin token."},
    404: {"description": "No such alert, or not one of this principal's clinics."},
}


def _answer(result: Transition) -> Response:
    body = {"changed": result.changed, "alert": alert_row_dict(result.row)}
    return Response(orjson.dumps(body), media_type="application/json")


async def _transition(
    step: Callable[[str, str, str, frozenset[str] | None], Awaitable[Transition]],
    alert_id: str,
    principal: Principal,
) -> Response:
    """Acknowledge or resolve, credited to the signed-in principal; unknown alerts are 404."""
    try:
        result = await step(
            alert_id, principal.principal_id, principal.name, principal.clinic_scope
        )
    except AlertNotFound:
        raise ApiError(404, "not_found", f"no alert {alert_id!r}") from None
    return _answer(result)


@router.post(
    "/v1/alerts/{alert_id}/acknowledge",
    summary="Acknowledge an alert as the signed-in staff member",
    responses=_RESPONSES,
)
async def acknowledge(
    alert_id: str = Path(min_length=1, max_length=64),
    principal: Principal = Depends(require(Role.STAFF, Role.ADMIN)),
    *,
    service: StaffAlerting,
) -> Response:
    return await _transition(service.acknowledge, alert_id, principal)


@router.post(
    "/v1/alerts/{alert_id}/resolve",
    summary="Resolve an alert as the signed-in staff member",
    responses=_RESPONSES,
)
async def resolve(
    alert_id: str = Path(min_length=1, max_length=64),
    principal: Principal = Depends(require(Role.STAFF, Role.ADMIN)),
    *,
    service: StaffAlerting,
) -> Response:
    return await _transition(service.resolve, alert_id, principal)


@router.post(
    "/v1/alerts/{alert_id}/shelve",
    summary="Shelve a warning for a bounded time, with a reason",
    responses={
        **_RESPONSES,
        409: {"description": "A critical alert, a closed one, or too long a shelf."},
    },
)
async def shelve(
    alert_id: str = Path(min_length=1, max_length=64),
    minutes: int = Body(ge=1, le=24 * 60),
    reason: str = Body(min_length=1, max_length=500),
    principal: Principal = Depends(require(Role.STAFF, Role.ADMIN)),
    *,
    service: StaffAlerting,
) -> Response:
    """The alert leaves the open list until the shelf expires, then is notified again; the
    shelf (who, until when, why) is a chained `alert.shelved` record."""
    try:
        result = await service.shelve(
            alert_id,
            principal.principal_id,
            principal.name,
            minutes,
            reason,
            principal.clinic_scope,
        )
    except AlertNotFound:
        raise ApiError(404, "not_found", f"no alert {alert_id!r}") from None
    except NotShelvable as exc:
        raise ApiError(409, "not_shelvable", str(exc)) from None
    return _answer(result)
