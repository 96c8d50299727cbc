"""`POST /v1/events`: device ingest. A 2xx means every accepted event is fsync'd to disk.

The body is a JSON array of events (`application/json`) or NDJSON (`application/x-ndjson`),
at most `ingest_max_body_bytes`. The answer lists each event, in order, as `accepted`,
`duplicate` or `rejected` (with the contract's reason code and a detail); a batch with
rejected events is still a 200. Errors of the whole request are 4xx: 401 (no or unknown
token), 403 (not a device or admin token), 413 (too large), 415 (content type), 400 (not
JSON / not an array / empty); 503 with Retry-After when the service cannot take events now.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from remsguard.embedded.compliance import Principal, Role
from remsguard.embedded.ingest import SUPPORTED_TYPES, body_kind, decode_body
from remsguard.embedded.runtime import Unavailable
from remsguard.entrypoints.http.auth import require
from remsguard.entrypoints.http.errors import ApiError

__all__ = ["router"]

router = APIRouter(tags=["ingest"])
_OFFLOAD_BYTES: Final = 256 * 1024  # decode bigger bodies off the event loop


@router.post(
    "/v1/events",
    summary="Post device events (JSON array or NDJSON)",
    responses={
        200: {"description": "Per-event outcomes; accepted events are durable on disk."},
        400: {"description": "The body is empty, not JSON, or not an array of events."},
        401: {"description": "Missing or unknown bearer token."},
        403: {"description": "The token's role may not post events."},
        413: {"description": "The body is larger than the configured limit."},
        415: {"description": f"Content type is not one of {SUPPORTED_TYPES}."},
        503: {"description": "Not accepting events right now; retry after the given delay."},
    },
)
async def post_events(
    request: Request, principal: Principal = Depends(require(Role.DEVICE, Role.ADMIN))
) -> Response:
    container = request.app.state.container
    runtime = getattr(container, "runtime", None)
    if runtime is None:
        raise ApiError(404, "not_found", "this service does not ingest events")
    kind = body_kind(request.headers.get("content-type"))
    limit: int = container.settings.ingest_max_body_bytes
    too_large = ApiError(413, "body_too_large", f"the body is larger than {limit} bytes")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large
    raw = bytes(body)
    if len(raw) > _OFFLOAD_BYTES:
        items = await asyncio.to_thread(decode_body, raw, kind)
    else:
        items = decode_body(raw, kind)
    try:
        results = await runtime.submit(items, principal)
    except Unavailable as exc:
        raise ApiError(503, "unavailable", str(exc), {"Retry-After": "1"}) from None
    counts = {"accepted": 0, "duplicate": 0, "rejected": 0}
    listed: list[dict[str, Any]] = []
    for index, (item, result) in enumerate(zip(items, results, strict=True)):
        counts[result.outcome.value] += 1
        entry: dict[str, Any] = {
            "index": index,
            "outcome": result.outcome.value,
            "event_id": result.event_id,
        }
        if item.line is not None:
            entry["line"] = item.line
        if result.reason is not None:
            entry["reason"] = result.reason
            entry["detail"] = result.detail
        listed.append(entry)
    payload = {
        "accepted": counts["accepted"],
        "duplicates": counts["duplicate"],
        "rejected": counts["rejected"],
        "results": listed,
    }
    return Response(orjson.dumps(payload), media_type="application/json")
