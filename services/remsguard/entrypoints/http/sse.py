"""`GET /v1/stream`: server-sent events for the staff console.

Events (each `data:` is one JSON object):
- `hello`: who is connected (`principal_id`, `name`, `role`, `clinics`).
- `alert`: a notification of the alerting service: `kind` (`alert`, `escalation`,
  `acknowledged`, `resolved`), `alert` (the stored alert with its lifecycle fields), `by`...
- `sessions`: the sessions board (see `board.py`) and the unresolved alerts, on connect and
  then every `SNAPSHOT_SECONDS`; it doubles as the keep-alive.

Only the principal's clinics are streamed. Authenticated with `Authorization: Bearer`, so a
browser reads it with `fetch` and a stream reader (EventSource cannot send the header); the
console does that.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any, Final

from fastapi import APIRouter, Depends
from fastapi.responses import StreamingResponse

from remsguard.alerting.sse import format_event
from remsguard.entrypoints.http.auth import auth_errors, require
from remsguard.entrypoints.http.board import board_now, open_alerts, sessions_board
from remsguard.entrypoints.http.capabilities import Process, ServedProcess, StaffAlerting
from remsguard.identity import Principal, Role

__all__ = ["SNAPSHOT_SECONDS", "router", "snapshot"]

router = APIRouter(tags=["staff"])
SNAPSHOT_SECONDS: Final = 2.0
ALERT_REFRESH_SECONDS: Final = 0.25
MIN_SNAPSHOT_SECONDS: Final = 1.0


async def snapshot(process: ServedProcess, principal: Principal) -> dict[str, Any]:
    """The console's state: sessions board and unresolved alerts, for this principal."""
    engine = process.live_sessions
    now = board_now(engine)
    alerts = await asyncio.to_thread(open_alerts, process.compliance, principal.clinic_scope, now)
    sessions = [] if engine is None else sessions_board(engine, principal.clinic_scope, now, alerts)
    return {"as_of": now, "sessions": sessions, "alerts": alerts}


@router.get(
    "/v1/stream",
    summary="Server-sent events: alert notifications and the sessions board",
    responses={
        200: {"description": "`text/event-stream` of `hello`, `alert` and `sessions` events."},
        **auth_errors("A device token."),
    },
)
async def stream(
    process: Process,
    principal: Principal = Depends(require(Role.STAFF, Role.ADMIN, Role.AUDITOR)),
    *,
    service: StaffAlerting,
) -> StreamingResponse:
    hub = service.hub
    subscriber = hub.subscribe(principal.clinic_scope)

    async def frames() -> AsyncIterator[bytes]:
        try:
            yield format_event(
                "hello",
                {
                    "principal_id": principal.principal_id,
                    "name": principal.name,
                    "role": principal.role.value,
                    "clinics": sorted(principal.clinics),
                },
            )
            next_snapshot = last_snapshot = 0.0
            while True:
                wait = next_snapshot - time.monotonic()
                if wait <= 0:
                    yield format_event("sessions", await snapshot(process, principal))
                    last_snapshot = time.monotonic()
                    next_snapshot = last_snapshot + SNAPSHOT_SECONDS
                    continue
                try:
                    frame = await asyncio.wait_for(subscriber.queue.get(), timeout=wait)
                except TimeoutError:
                    continue
                if frame is None:  # dropped (too slow) or the hub closed
                    return
                yield frame
                # an alert usually comes with fresh vitals: refresh the board soon after, but
                # never more often than every MIN_SNAPSHOT_SECONDS
                soon = max(
                    last_snapshot + MIN_SNAPSHOT_SECONDS, time.monotonic() + ALERT_REFRESH_SECONDS
                )
                next_snapshot = min(next_snapshot, soon)
        finally:
            hub.unsubscribe(subscriber)

    return StreamingResponse(
        frames(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
