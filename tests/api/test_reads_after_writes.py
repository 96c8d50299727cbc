"""`READS_AFTER_WRITES`: staff, devices and admins read once the compliance log holds every
write answered before they asked; an auditor's reads are served from what the log holds at
once (history is not held up behind ingest; issue 19). The log and its principals are real
(SQLite); the process around them is a small fake that counts the waits."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
from fastapi import APIRouter, Depends, FastAPI
from fastapi.testclient import TestClient

from remsguard.adapters.storage import ComplianceLog
from remsguard.entrypoints.http.auth import require
from remsguard.entrypoints.http.capabilities import READS_AFTER_WRITES
from remsguard.entrypoints.http.errors import install_error_handlers
from remsguard.identity import Principal, Role


@dataclass
class _Process:
    compliance: ComplianceLog
    waits: list[str] = field(default_factory=list)

    async def caught_up(self) -> bool:
        self.waits.append("waited")
        return True


def _app(process: _Process) -> FastAPI:
    router = APIRouter()

    @router.get("/history")
    async def history(
        principal: Principal = Depends(require(Role.AUDITOR, Role.STAFF, Role.ADMIN)),
    ) -> dict[str, str]:
        return {"role": principal.role.value}

    app = FastAPI()
    app.state.container = process
    install_error_handlers(app)
    app.include_router(router, dependencies=[READS_AFTER_WRITES])
    return app


@pytest.fixture
def process(tmp_path: Path) -> _Process:
    return _Process(ComplianceLog.open(f"sqlite:///{tmp_path / 'log.db'}"))


def _token(process: _Process, role: Role) -> dict[str, str]:
    _, token = process.compliance.principals.create(role.value, role, by="test")
    return {"Authorization": f"Bearer {token}"}


def test_an_auditor_reads_at_once_and_staff_wait_for_answered_writes(process: _Process) -> None:
    client = TestClient(_app(process))
    auditor = client.get("/history", headers=_token(process, Role.AUDITOR))
    assert auditor.status_code == 200 and auditor.json() == {"role": "auditor"}
    assert process.waits == []  # never held up behind ingest

    staff = client.get("/history", headers=_token(process, Role.STAFF))
    assert staff.status_code == 200 and staff.json() == {"role": "staff"}
    assert process.waits == ["waited"]


def test_without_a_valid_token_the_route_answers_401_as_before(process: _Process) -> None:
    client = TestClient(_app(process))
    assert client.get("/history").status_code == 401
    bad = client.get("/history", headers={"Authorization": "Bearer rg_nope"})
    assert bad.status_code == 401
    assert client.get("/history", headers=_token(process, Role.DEVICE)).status_code == 403


def test_a_token_is_looked_up_once_a_request_refused_or_not(
    process: _Process, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The route's role check and `READS_AFTER_WRITES` both ask who is calling; the store is
    read once a request, for a refused token as for a known one."""
    principals = process.compliance.principals
    looked_up: list[str] = []
    real = principals.for_token

    def counted(token: str) -> object:
        looked_up.append(token)
        return real(token)

    monkeypatch.setattr(principals, "for_token", counted)
    client = TestClient(_app(process))
    bad = client.get("/history", headers={"Authorization": "Bearer rg_nope"})
    assert bad.status_code == 401 and bad.json()["error"] == "unauthenticated"
    assert looked_up == ["rg_nope"]
    staff = _token(process, Role.STAFF)
    assert client.get("/history", headers=staff).status_code == 200
    assert len(looked_up) == 2
