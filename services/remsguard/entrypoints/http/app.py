"""`create_app(container)`: the FastAPI app of embedded mode, every endpoint on one port.

Adding endpoints (auditor API, console, SSE, discharge readiness): write a module with an
`APIRouter` named `router`, protect each route with `Depends(require(Role....))` from
`auth.py`, read what you need from `request.app.state.container`, and add the router to
`ROUTERS` below (or pass it in `create_app(container, routers=[...])`). Background work
(a notifier, an SSE hub) starts and stops with the container's `start`/`stop`.

`/healthz` and `/metrics` are open (no token), as scrapers and probes expect.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from remsguard import __version__
from remsguard.entrypoints.http import alerts, events
from remsguard.entrypoints.http.auditor_routes import AUDITOR_ROUTERS
from remsguard.entrypoints.http.errors import install_error_handlers
from remsguard.entrypoints.http.staff_routes import STAFF_ROUTERS

if TYPE_CHECKING:
    from remsguard.embedded.container import EmbeddedContainer
    from remsguard.entrypoints.api import ApiContainer

__all__ = ["ROUTERS", "create_app"]

ROUTERS: list[APIRouter] = [events.router, alerts.router, *STAFF_ROUTERS, *AUDITOR_ROUTERS]

_ops = APIRouter(tags=["operations"])


@_ops.get("/healthz", summary="Liveness: 200 once recovered and taking events")
async def healthz(request: Request) -> Response:
    runtime = getattr(request.app.state.container, "runtime", None)
    if runtime is not None and not runtime.running:
        return Response(b'{"status":"starting"}', 503, media_type="application/json")
    return Response(b'{"status":"ok"}', media_type="application/json")


@_ops.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    registry = request.app.state.container.telemetry.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


def create_app(
    container: EmbeddedContainer | ApiContainer, routers: Sequence[APIRouter] = ()
) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await container.start()
        try:
            yield
        finally:
            await container.stop()

    app = FastAPI(
        title="remsguard",
        version=__version__,
        summary="REMS-style monitoring compliance: device ingest, alerts, the compliance log.",
        lifespan=lifespan,
    )
    app.state.container = container
    install_error_handlers(app)
    app.include_router(_ops)
    for router in [*ROUTERS, *routers]:
        app.include_router(router)
    return app
