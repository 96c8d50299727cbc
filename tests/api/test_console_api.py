"""`remsguard api` with the staff console, without a broker: the session view is fed the
changelog records the processor writes (`encode_stored_session`), and the board and discharge
readiness are the engine's answers over those sessions. (The Kafka path end to end is in
tests/integration/test_console_kafka.py.)"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from fastapi.testclient import TestClient

from remsguard.adapters.kafka.session_view import SessionView, changelog_topic
from remsguard.adapters.storage import PrincipalRole
from remsguard.bootstrap import build_engine
from remsguard.config import Settings
from remsguard.domain.events import DoseAdministered, Event, SessionOpened, VitalsRecorded
from remsguard.domain.session import Session
from remsguard.entrypoints.api import ApiContainer
from remsguard.entrypoints.http import create_app
from remsguard.handlers.stored_session import encode_stored_session


def _events(sid: str, clinic: str, dose_at: datetime) -> list[Event]:
    def env(n: int, minutes: float) -> dict[str, object]:
        return {
            "event_id": f"{sid}-{n}",
            "session_id": sid,
            "clinic_id": clinic,
            "occurred_at": dose_at + timedelta(minutes=minutes),
        }

    return [
        SessionOpened(**env(1, -20), patient_ref=f"pt-{sid}"),  # type: ignore[arg-type]
        VitalsRecorded(**env(2, -10), systolic=128, diastolic=80),  # type: ignore[arg-type]
        DoseAdministered(**env(3, 0), drug="esketamine", route="intranasal", dose_mg=56),  # type: ignore[arg-type]
        VitalsRecorded(**env(4, 5), systolic=131, diastolic=82, spo2=97),  # type: ignore[arg-type]
    ]


def _sessions(events: list[Event]) -> dict[str, Session]:
    engine = build_engine("spravato-rems")
    for event in events:
        engine.handle(event)
    return dict(engine.sessions)


def test_view_keeps_the_latest_state_forgets_tombstones_and_idle_sessions() -> None:
    now = datetime.now(UTC)
    view = SessionView("unused:9092", "t", retention=timedelta(hours=24), clock=lambda: now)
    fresh = _sessions(_events("s1", "c1", now - timedelta(minutes=30)))["s1"]
    old = _sessions(_events("s2", "c1", now - timedelta(hours=30)))["s2"]
    view.apply(b"s1", encode_stored_session(0, fresh))
    view.apply(b"s2", encode_stored_session(1, old))  # idle past the retention: not kept
    view.apply(b"s3", b"not a pickle")
    assert sorted(view.sessions) == ["s1"] and view.undecodable == 1
    view.apply(b"s1", None)
    assert view.sessions == {}
    assert changelog_topic(Settings(processor_app_id="p1")) == "p1-sessions-changelog"


def test_board_and_readiness_come_from_the_engine_over_the_processor_state(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    container = ApiContainer.open(
        Settings(database_url=url, api_staff_console=True), check_deadlines=False
    )
    assert container.console is not None
    _, token = container.compliance.create_principal("rn-a", PrincipalRole.STAFF, ["c1"])
    headers = {"Authorization": f"Bearer {token}"}
    dose_at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
    events = _events("s1", "c1", dose_at) + _events("s9", "c9", dose_at)
    view = container.console.sessions
    client = TestClient(create_app(container))  # no lifespan: the view is fed by hand
    try:
        before = client.get("/sessions/s1/discharge-readiness", headers=headers)
        assert before.status_code == 503  # the changelog is not read yet
        for sid, session in _sessions(events).items():
            view.apply(sid.encode(), encode_stored_session(0, session))
        view._follower.caught_up = True

        ready = client.get("/sessions/s1/discharge-readiness", headers=headers)
        assert ready.status_code == 200, ready.text
        body = ready.json()
        assert body["ready"] is False and body["patient_ref"] == "pt-s1"
        assert body["earliest_discharge_at"] == (dose_at + timedelta(hours=2)).isoformat().replace(
            "+00:00", "Z"
        )
        assert any("window" in reason for reason in body["reasons"])
        assert [c["label"] for c in body["next_checks"]]  # the 40-minute BP is still owed
        other = client.get("/sessions/s9/discharge-readiness", headers=headers)
        assert other.status_code == 404  # another clinic's session is not revealed

        state = client.get("/console/api/state", headers=headers).json()
        [row] = state["sessions"]
        assert row["session_id"] == "s1" and row["latest"]["bp"]["systolic"] == 131
        for key in ("ready", "earliest_discharge_at", "reasons"):
            assert row["readiness"][key] == body[key]
    finally:
        container.compliance.close()
