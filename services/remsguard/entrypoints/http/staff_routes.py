"""The staff-alerting routers, for `create_app(container, routers=STAFF_ROUTERS)`."""

from __future__ import annotations

from fastapi import APIRouter

from remsguard.entrypoints.http import (
    acknowledgements,
    console,
    readiness,
    session_chart,
    sse,
    staff,
)

__all__ = ["STAFF_ROUTERS"]

STAFF_ROUTERS: list[APIRouter] = [
    acknowledgements.router,
    readiness.router,
    sse.router,
    staff.router,
    console.router,
    session_chart.router,
]
