"""`POST /v1/events`: device ingest. A 2xx means every accepted event is fsync'd to disk.

The body is a JSON array of events (`application/json`) or NDJSON (`application/x-ndjson`),
at most `ingest_max_body_bytes` and `ingest_max_events` events. The answer lists each event,
in order, as `accepted`, `duplicate` or `rejected` (with the contract's reason code); a batch
with rejected events is still a 200. Rejections are summarised compactly: `reasons` counts
them by reason, and a rejection's `detail` is given on the first event rejected with that
reason and detail only (identical rejections after it carry their reason, not the detail
again). Errors of the whole request are 4xx: 401 (no or unknown token), 403 (not a device or
admin token), 413 (too many bytes or events), 415 (content type), 400 (not JSON, nested
deeper than 1024 levels, not an array, empty); 503 with Retry-After when the service cannot
take events now.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Final

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from fastapi.routing import APIRoute, _effective_route_context_var

from remsguard.embedded.ingest import SUPPORTED_TYPES, Incoming, body_kind, decode_body
from remsguard.embedded.runtime import EventResult, Unavailable
from remsguard.entrypoints.http.auth import auth_errors, require
from remsguard.entrypoints.http.bodies import bounded_body, decoded
from remsguard.entrypoints.http.capabilities import ServedProcess, ingest_of
from remsguard.entrypoints.http.errors import ApiError
from remsguard.identity import Role

__all__ = ["router"]


class _IngestRoute(APIRoute):
    """`POST /v1/events` runs `post_events` as it is: FastAPI's documented hook for a route
    of its own kind (`route_class`), here so a device event does not pass through the
    request handler that resolves dependencies, reads query parameters and builds a response
    it throws away. The route is the same to routing, middleware, exception handlers and the
    OpenAPI. It resolves no dependencies, so its router is included without any. A
    hand-tuned fast path: 8 connections 1,843-1,912 -> 2,021-2,028 requests/s
    (paired runs, wrk, on top of the kept token-lookup connection)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        # As `APIRoute.get_route_handler` does: an included route is built in the context of
        # its inclusion (FastAPI's private context variable; an upgrade that drops it fails
        # at import, not silently), which carries dependencies given to `include_router`.
        included = _effective_route_context_var.get()
        route = included if included is not None and included.original_route is self else self
        if route.dependant.dependencies:
            raise TypeError(f"{self.path} resolves no dependencies; it was given some")

        async def handle(request: Request) -> Response:
            return await post_events(request)  # defined below: the route is built first

        return handle


router = APIRouter(tags=["ingest"], route_class=_IngestRoute)
_DEVICES: Final = require(Role.DEVICE, Role.ADMIN)  # called, not a Depends (see below)
_OFFLOAD_BYTES: Final = 256 * 1024  # decode bigger bodies off the event loop


@router.post(
    "/v1/events",
    summary="Post device events (JSON array or NDJSON)",
    responses={
        200: {"description": "Per-event outcomes; accepted events are durable on disk."},
        400: {"description": "The body is empty, not JSON, or not an array of events."},
        **auth_errors("The token's role may not post events."),
        413: {"description": "The body has more bytes or events than the configured limits."},
        415: {"description": f"Content type is not one of {SUPPORTED_TYPES}."},
        503: {"description": "Not accepting events right now; retry after the given delay."},
    },
)
async def post_events(request: Request) -> Response:
    # A hand-tuned fast path: the caller, the ingest and the limits are looked up here rather
    # than as FastAPI dependencies (`require`, `Ingest`, `Process`), the same calls without
    # resolving a dependency graph on every device event: 8 connections 1,628-1,716 ->
    # 1,823-1,832 requests/s (bench.embedded_ingest, wrk phase). The OpenAPI is unchanged.
    principal = await _DEVICES(request)
    ingest = ingest_of(request)
    kind = body_kind(request.headers.get("content-type"))
    process: ServedProcess = request.app.state.container
    settings = process.settings
    limit: int = settings.ingest_max_body_bytes
    too_large = ApiError(413, "body_too_large", f"the body is larger than {limit} bytes")
    raw = await bounded_body(request, limit, too_large)
    max_events: int = settings.ingest_max_events
    items = await decoded(raw, lambda body: decode_body(body, kind, max_events), _OFFLOAD_BYTES)
    del raw
    try:
        results = await ingest.submit(items, principal)
    except Unavailable as exc:
        raise ApiError(503, "unavailable", str(exc), {"Retry-After": "1"}) from None
    return Response(orjson.dumps(answer(items, results)), media_type="application/json")


def answer(items: Sequence[Incoming], results: Sequence[EventResult]) -> dict[str, Any]:
    """The response body: counts, rejections by reason, and each event's outcome in order."""
    counts = {"accepted": 0, "duplicate": 0, "rejected": 0}
    reasons: Counter[str] = Counter()
    explained: set[tuple[str, str | None]] = set()
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
            reasons[result.reason] += 1
            entry["reason"] = result.reason
            key = (result.reason, result.detail)
            if key not in explained:
                explained.add(key)
                entry["detail"] = result.detail
        listed.append(entry)
    return {
        "accepted": counts["accepted"],
        "duplicates": counts["duplicate"],
        "rejected": counts["rejected"],
        "reasons": dict(reasons),
        "results": listed,
    }
