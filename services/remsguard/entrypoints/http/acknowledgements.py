"""`POST /v1/alerts/{id}/acknowledge`, `/resolve` and `/shelve`, attributed to the staff member.

The caller's principal (staff or admin) is the one recorded: the alert's `acknowledged_by` /
`resolved_by` and the `alert.acknowledged` / `alert.resolved` audit record carry its id (and
the audit record its name). Both are idempotent: acknowledging an alert that is already
acknowledged or resolved answers 200 with `changed: false` and the stored state.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

import orjson
from fastapi import APIRouter, Body, Depends, Path
from fastapi.responses import Response

from remsguard.alerting.service import (
    AlertNotFound,
    NotShelvable,
    Transition,
    alert_row_dict,
)
from remsguard.entrypoints.http.auth import auth_errors, require
from remsguard.entrypoints.http.capabilities import StaffAlerting
from remsguard.entrypoints.http.errors import ApiError
from remsguard.identity import Principal, Role

__all__ = ["router"]

router = APIRouter(tags=["staff"])
_RESPONSES: dict[int | str, dict[str, str]] = {
    200: {"description": '`{"changed": bool, "alert": {...}}`'},
    **auth_errors("Not a staff or admin token."),
    404: {"description": "No such alert, or not one of this principal's clinics."},
}


def _answer(result: Transition) -> Response:
    body = {"changed": result.changed, "alert": alert_row_dict(result.row)}
    return Response(orjson.dumps(body), media_type="application/json")


@contextmanager
def _known(alert_id: str) -> Iterator[None]:
    """An alert that does not exist, or is not one of the principal's clinics, is a 404."""
    try:
        yield
    except AlertNotFound:
        raise ApiError(404, "not_found", f"no alert {alert_id!r}") from None


Step = Callable[[str, str, str, frozenset[str] | None], Awaitable[Transition]]


def _transition_route(action: str, summary: str, step: Callable[[StaffAlerting], Step]) -> None:
    """`POST /v1/alerts/{alert_id}/<action>`: the service's `step` (acknowledge or resolve),
    credited to the signed-in principal."""

    async def transition(
        alert_id: str = Path(min_length=1, max_length=64),
        principal: Principal = Depends(require(Role.STAFF, Role.ADMIN)),
        *,
        service: StaffAlerting,
    ) -> Response:
        who = (principal.principal_id, principal.name, principal.clinic_scope)
        with _known(alert_id):
            result = await step(service)(alert_id, *who)
        return _answer(result)

    router.add_api_route(
        f"/v1/alerts/{{alert_id}}/{action}",
        transition,
        methods=["POST"],
        name=action,
        summary=summary,
        responses=_RESPONSES,
    )


_transition_route(
    "acknowledge",
    "Acknowledge an alert as the signed-in staff member",
    lambda service: service.acknowledge,
)
_transition_route(
    "resolve", "Resolve an alert as the signed-in staff member", lambda service: service.resolve
)


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
        with _known(alert_id):
            result = await service.shelve(
                alert_id,
                principal.principal_id,
                principal.name,
                minutes,
                reason,
                principal.clinic_scope,
            )
    except NotShelvable as exc:
        raise ApiError(409, "not_shelvable", str(exc)) from None
    return _answer(result)
