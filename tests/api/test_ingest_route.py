"""`POST /v1/events` runs its handler without FastAPI's dependency resolution (a measured fast
path, `entrypoints/http/events.py`), so it must never be given dependencies it would skip:
one given at `include_router` is refused on the route's first request, not ignored (the
route included as `create_app` includes it is exercised by every ingest test)."""

from __future__ import annotations

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from remsguard.entrypoints.http import events


def test_a_dependency_given_to_the_ingest_route_is_refused_not_skipped() -> None:
    ran: list[str] = []
    app = FastAPI()
    app.include_router(events.router, dependencies=[Depends(lambda: ran.append("ran"))])
    with pytest.raises(TypeError, match="resolves no dependencies"):
        TestClient(app).post("/v1/events", content=b"[]")
    assert ran == []
