"""A patient's alert notifications, grouped (issue 14, gap 6): the first goes at once, the
next ones within the window wait and go as one message, a critical one never waits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from remsguard.alerting.channels import Notification
from remsguard.alerting.grouping import NotificationGroups

T0 = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)
WINDOW = timedelta(seconds=30)


def note(alert_id: str, severity: str = "warning", session: str = "s1") -> Notification:
    body = {"alert_id": alert_id, "severity": severity, "session_id": session, "clinic_id": "c1"}
    return Notification("alert", body, T0)


def ids(messages: list[Notification]) -> list[list[str]]:
    return [[a["alert_id"] for a in m.extra.get("group", [m.alert])] for m in messages]


def test_the_first_goes_at_once_the_next_wait_and_go_together() -> None:
    groups = NotificationGroups(WINDOW)
    assert ids(groups.offer(note("a"), T0)) == [["a"]]
    assert groups.offer(note("b"), T0 + timedelta(seconds=5)) == []
    assert groups.offer(note("c"), T0 + timedelta(seconds=9)) == []
    assert groups.due(T0 + timedelta(seconds=29)) == []
    [message] = groups.due(T0 + timedelta(seconds=30))
    assert ids([message]) == [["b", "c"]] and message.alert["alert_id"] == "b"


def test_a_critical_alert_never_waits_and_carries_what_was_waiting() -> None:
    groups = NotificationGroups(WINDOW)
    groups.offer(note("a"), T0)
    groups.offer(note("b"), T0 + timedelta(seconds=2))
    [message] = groups.offer(note("x", "critical"), T0 + timedelta(seconds=3))
    assert ids([message]) == [["x", "b"]]  # the most severe leads
    assert message.alert["alert_id"] == "x"
    assert groups.due(T0 + timedelta(seconds=60)) == []


def test_other_patients_and_quiet_patients_are_not_held_back() -> None:
    groups = NotificationGroups(WINDOW)
    groups.offer(note("a", session="s1"), T0)
    assert ids(groups.offer(note("b", session="s2"), T0 + timedelta(seconds=1))) == [["b"]]
    assert ids(groups.offer(note("c", session="s1"), T0 + timedelta(seconds=31))) == [["c"]]


def test_a_window_of_zero_turns_grouping_off() -> None:
    groups = NotificationGroups(timedelta(0))
    assert ids(groups.offer(note("a"), T0) + groups.offer(note("b"), T0)) == [["a"], ["b"]]


def test_a_withdrawn_alert_leaves_its_group_before_it_goes_out() -> None:
    groups = NotificationGroups(WINDOW)
    groups.offer(note("a"), T0)
    groups.offer(note("b"), T0 + timedelta(seconds=1))
    groups.offer(note("c"), T0 + timedelta(seconds=2))
    assert groups.drop({"b", "a"}) == {"b"}  # a went out already
    assert ids(groups.due(T0 + timedelta(seconds=30))) == [["c"]]
