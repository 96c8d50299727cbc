"""`POST /v1/staff`: an admin issues a staff member's console token (shown once).

Body: `{"name": "rn-jane", "clinics": ["c1"]}` (`clinics` empty or absent: every clinic). The
answer holds the new principal's id and its token; only the token's hash is stored.
"""

from __future__ import annotations

import asyncio

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import IntegrityError

from remsguard.adapters.storage import PrincipalRole
from remsguard.entrypoints.http.auth import auth_errors, require
from remsguard.entrypoints.http.errors import ApiError
from remsguard.identity import Principal, Role

__all__ = ["router"]

router = APIRouter(tags=["staff"])


class NewStaff(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128, pattern=r"^[\w.@ -]+$")
    clinics: list[str] = Field(default_factory=list, max_length=100)


@router.post(
    "/v1/staff",
    summary="Create a staff principal (console sign-in token, shown once)",
    status_code=201,
    responses={
        201: {"description": '`{"principal_id", "name", "role", "clinics", "token"}`'},
        **auth_errors("Not an admin token."),
        409: {"description": "A principal of that name exists."},
    },
)
async def create_staff(
    request: Request,
    body: NewStaff,
    _admin: Principal = Depends(require(Role.ADMIN)),
) -> Response:
    log = request.app.state.container.compliance
    clinics = sorted({c for c in body.clinics if c})
    try:
        row, token = await asyncio.to_thread(
            log.create_principal, body.name, PrincipalRole.STAFF, clinics
        )
    except IntegrityError:
        raise ApiError(409, "exists", f"a principal named {body.name!r} exists") from None
    payload = {
        "principal_id": row.principal_id,
        "name": row.name,
        "role": row.role,
        "clinics": clinics,
        "token": token,
    }
    return Response(orjson.dumps(payload), status_code=201, media_type="application/json")
