"""The capability dependencies (`entrypoints.http.capabilities`): a route asking for a part the
process lacks is answered for it, 404 where the process has no such door, 503 where the part
is off or not ready; a part the process has is handed to the route."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from remsguard.entrypoints.http.capabilities import Ingest, LiveSessions, StaffAlerting
from remsguard.entrypoints.http.errors import install_error_handlers


def _client(**parts: object) -> TestClient:
    app = FastAPI()
    install_error_handlers(app)
    app.state.container = SimpleNamespace(
        **{"ingest": None, "staff_alerting": None, "live_sessions": None, **parts}
    )

    @app.get("/ingest")
    async def ingest(part: Ingest) -> str:
        return str(part)

    @app.get("/alerting")
    async def alerting(part: StaffAlerting) -> str:
        return str(part)

    @app.get("/engine")
    async def engine(part: LiveSessions) -> str:
        return str(part)

    return TestClient(app)


@pytest.mark.parametrize(
    ("path", "status", "body"),
    [
        ("/ingest", 404, {"error": "not_found", "message": "this service does not ingest events"}),
        (
            "/alerting",
            503,
            {"error": "no_alerting", "message": "staff alerting is not running in this process"},
        ),
        (
            "/engine",
            503,
            {
                "error": "no_engine",
                "message": "discharge readiness is served where the engine runs",
            },
        ),
    ],
)
def test_a_missing_part_is_answered_for_the_route(path: str, status: int, body: object) -> None:
    response = _client().get(path)
    assert response.status_code == status
    assert response.json() == body


def test_a_part_the_process_has_is_handed_to_the_route() -> None:
    client = _client(ingest="the ingest", staff_alerting="the service", live_sessions="the engine")
    assert client.get("/ingest").json() == "the ingest"
    assert client.get("/alerting").json() == "the service"
    assert client.get("/engine").json() == "the engine"
