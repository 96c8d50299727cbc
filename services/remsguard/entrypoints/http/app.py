"""`create_app(container)`: the FastAPI app of embedded mode, every endpoint on one port.

Adding endpoints (auditor API, console, SSE, discharge readiness): write a module with an
`APIRouter` named `router`, protect each route with `Depends(require(Role....))` from
`auth.py`, ask for what the process offers with the dependencies of `capabilities.py`
(`Process`, `Compliance`, `Ingest`, `StaffAlerting`, `LiveSessions`), and add the router to
`ROUTERS` below (or pass it in `create_app(container, routers=[...])`). Background work
(a notifier, an SSE hub) starts and stops with the container's `start`/`stop`.

`/healthz` is open (probes). `/metrics` is open unless `REMSGUARD_METRICS_TOKEN` is set; then
it needs `Authorization: Bearer <that token>` (`security.py`). Every response carries the
security headers (`SecurityHeaders`, outermost). The API docs (`/openapi.json`, `/docs`) are
off unless `REMSGUARD_HTTP_DOCS=true` (`docs.py`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from fastapi import APIRouter, Depends, FastAPI
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import ASGIApp

from remsguard import __version__
from remsguard.config import Settings
from remsguard.entrypoints.http import (
    acknowledgements,
    alerts,
    audit,
    console,
    events,
    fhir,
    form_document,
    readiness,
    rems_registry,
    reports,
    session_chart,
    sessions,
    sse,
    staff,
    summary,
)
from remsguard.entrypoints.http.capabilities import READS_AFTER_WRITES, Process, ServedProcess
from remsguard.entrypoints.http.docs import OPENAPI_URL, docs_router, swagger_ui_files
from remsguard.entrypoints.http.errors import install_error_handlers
from remsguard.entrypoints.http.security import SecurityHeaders, require_metrics_token

__all__ = ["INGEST_ROUTERS", "ROUTERS", "create_app", "surface_line"]

# The ingest doors answer once events are journaled; every other router reads or changes the
# compliance log, so its routes first wait for it to hold every write answered before
# (`READS_AFTER_WRITES`: a client that got its 2xx sees the alerts its events raised).
INGEST_ROUTERS: list[APIRouter] = [events.router, fhir.router]
ROUTERS: list[APIRouter] = [
    alerts.router,
    rems_registry.router,
    # staff alerting: acknowledge, resolve and shelve, discharge readiness, the live stream,
    # staff tokens, the console and its session chart
    acknowledgements.router,
    readiness.router,
    sse.router,
    staff.router,
    console.router,
    session_chart.router,
    # the auditor API: log queries and proofs, sessions' timelines and forms, the compliance
    # summary and report
    audit.router,
    sessions.router,
    form_document.router,
    summary.router,
    reports.router,
]

_ops = APIRouter(tags=["operations"])


@_ops.get("/healthz", summary="Liveness: 200 once recovered and taking events")
async def healthz(process: Process) -> Response:
    if not process.taking_events:
        return Response(b'{"status":"starting"}', 503, media_type="application/json")
    return Response(b'{"status":"ok"}', media_type="application/json")


@_ops.get(
    "/metrics",
    summary="Prometheus metrics",
    include_in_schema=False,
    dependencies=[Depends(require_metrics_token)],
)
def metrics(process: Process) -> Response:
    registry = process.telemetry.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


class _App(FastAPI):
    """FastAPI with `SecurityHeaders` outside every layer (errors middleware included)."""

    def build_middleware_stack(self) -> ASGIApp:
        return SecurityHeaders(super().build_middleware_stack())


def surface_line(settings: Settings, base: str) -> str:
    """What `remsguard up` prints about /metrics and the API docs."""
    metrics = "token required" if _metrics_protected(settings) else "open"
    if not settings.http_docs:
        docs = "API docs off (REMSGUARD_HTTP_DOCS=true turns them on)"
    elif swagger_ui_files() is None:
        docs = f"OpenAPI {base}{OPENAPI_URL}"
    else:
        docs = f"API docs {base}/docs"
    return f"  metrics {base}/metrics ({metrics})    {docs}"


def _metrics_protected(settings: Settings) -> bool:
    return settings.metrics_token is not None and bool(settings.metrics_token.get_secret_value())


def create_app(container: ServedProcess, routers: Sequence[APIRouter] = ()) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await container.start()
        try:
            yield
        finally:
            await container.stop()

    docs = container.settings.http_docs
    app = _App(
        title="remsguard",
        version=__version__,
        summary="REMS-style monitoring compliance: device ingest, alerts, the compliance log.",
        lifespan=lifespan,
        openapi_url=OPENAPI_URL if docs else None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.container = container
    install_error_handlers(app)
    app.include_router(_ops)
    files = swagger_ui_files() if docs else None
    if files is not None:
        app.include_router(docs_router(files))
    for router in INGEST_ROUTERS:
        app.include_router(router)
    for router in [*ROUTERS, *routers]:
        app.include_router(router, dependencies=[READS_AFTER_WRITES])
    return app
