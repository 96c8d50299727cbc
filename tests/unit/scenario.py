"""A tiny scenario builder for engine tests: events at minute offsets, and the replay loop.

`run(events)` drives the engine exactly as `remsguard replay` does: after each event,
`engine.handle(event)` then `engine.advance_to(greatest occurred_at seen so far)`, and at the
end `engine.advance_to(until)` (default: the last event time). Pure: no I/O, no wall clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache

from remsguard.domain.decisions import Alert, Decisions, Withdrawal
from remsguard.domain.engine import MonitoringEngine
from remsguard.domain.events import (
    AssessmentRecorded,
    DoseAdministered,
    Event,
    Medication,
    SessionDischarged,
    SessionOpened,
    VitalsRecorded,
)
from remsguard.domain.protocol import MonitoringProtocol
from remsguard.domain.registry import RemsRegistry
from remsguard.protocols import bundled_protocols

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    """Event time `minutes` after T0 (the usual dose time in these tests)."""
    return T0 + timedelta(minutes=minutes)


@cache
def protocols() -> dict[str, MonitoringProtocol]:
    return bundled_protocols()


@dataclass
class Session:
    """Builds one session's events; ids are `<session>-<kind><n>` unless given."""

    session_id: str = "s1"
    clinic_id: str = "c1"
    _n: int = field(default=0, repr=False)

    def _id(self, kind: str, event_id: str | None) -> str:
        if event_id is not None:
            return event_id
        self._n += 1
        return f"{self.session_id}-{kind}{self._n}"

    def _env(self, kind: str, t: float, event_id: str | None) -> dict[str, object]:
        return {
            "event_id": self._id(kind, event_id),
            "session_id": self.session_id,
            "clinic_id": self.clinic_id,
            "occurred_at": at(t),
        }

    def opened(
        self,
        t: float,
        protocol: str | None = None,
        meds: Iterable[str] = (),
        *,
        id: str | None = None,
    ) -> SessionOpened:
        return SessionOpened(
            **self._env("open", t, id),  # type: ignore[arg-type]
            patient_ref="p-" + self.session_id,
            protocol=protocol,
            concomitant_medications=tuple(Medication(m) for m in meds),
        )

    def vitals(
        self,
        t: float,
        systolic: float | None = None,
        diastolic: float | None = None,
        *,
        spo2: float | None = None,
        rr: float | None = None,
        hr: float | None = None,
        id: str | None = None,
    ) -> VitalsRecorded:
        return VitalsRecorded(
            **self._env("v", t, id),  # type: ignore[arg-type]
            systolic=systolic,
            diastolic=diastolic,
            spo2=spo2,
            respiratory_rate=rr,
            heart_rate=hr,
        )

    def bp(self, t: float, systolic: float = 120, diastolic: float = 80, *, id: str | None = None):
        return self.vitals(t, systolic, diastolic, id=id)

    def normal(self, t: float, *, id: str | None = None) -> VitalsRecorded:
        """A full set of unremarkable vitals."""
        return self.vitals(t, 120, 80, spo2=98, rr=14, hr=70, id=id)

    def hr(self, t: float, *, id: str | None = None) -> VitalsRecorded:
        """Vitals with only a heart rate: counts against VITALS_GAP, is not a BP reading."""
        return self.vitals(t, hr=70, id=id)

    def dose(self, t: float = 0, *, id: str | None = None) -> DoseAdministered:
        return DoseAdministered(
            **self._env("dose", t, id),  # type: ignore[arg-type]
            drug="esketamine",
            route="intranasal",
            dose_mg=56,
        )

    def assess(
        self,
        t: float,
        moaas: int | None = None,
        *,
        resp: bool | None = None,
        id: str | None = None,
    ) -> AssessmentRecorded:
        return AssessmentRecorded(
            **self._env("a", t, id),  # type: ignore[arg-type]
            sedation_moaas=moaas,
            respiratory_depression=resp,
        )

    def discharge(
        self, t: float, *, stable: bool = True, id: str | None = None
    ) -> SessionDischarged:
        return SessionDischarged(
            **self._env("dis", t, id),  # type: ignore[arg-type]
            staff_id="nurse-1",
            clinically_stable=stable,
        )

    def compliant(self, dose_at: float = 0, discharge_at: float = 125) -> list[Event]:
        """A session that meets every rule of spravato-rems: the quiet baseline of many tests."""
        t = dose_at
        events: list[Event] = [self.bp(t - 5), self.dose(t)]
        minute = 10
        while minute < discharge_at - t:
            events.append(self.normal(t + minute))
            minute += 10
        events.append(self.assess(discharge_at - 2, 5))
        events.append(self.normal(discharge_at - 1))
        events.append(self.discharge(discharge_at))
        return events


def timeline(*parts: Event | Iterable[Event]) -> list[Event]:
    """Events (or lists of them) in event-time order; ties keep their given order."""
    events: list[Event] = []
    for part in parts:
        events.extend([part] if isinstance(part, Event) else part)
    return sorted(events, key=lambda e: e.occurred_at)


def engine(
    default: str = "spravato-rems", registry: RemsRegistry | None = None
) -> MonitoringEngine:
    return MonitoringEngine(protocols(), default_protocol=default, registry=registry)


@dataclass
class Replay:
    """The replay loop over one engine, keeping every decision for inspection."""

    engine: MonitoringEngine = field(default_factory=engine)
    decisions: list[Decisions] = field(default_factory=list)
    latest: datetime | None = None

    def feed(self, events: Iterable[Event]) -> Replay:
        for event in events:
            self.decisions.append(self.engine.handle(event))
            if self.latest is None or event.occurred_at > self.latest:
                self.latest = event.occurred_at
            self.decisions.append(self.engine.advance_to(self.latest))
        return self

    def finish(self, until: datetime | None = None) -> Replay:
        end = until if until is not None else self.latest
        if end is not None:
            self.decisions.append(self.engine.advance_to(end))
        return self

    @property
    def alerts(self) -> list[Alert]:
        return [alert for d in self.decisions for alert in d.alerts]

    @property
    def audit(self) -> list:  # type: ignore[type-arg]
        return [record for d in self.decisions for record in d.audit]

    @property
    def withdrawals(self) -> list[Withdrawal]:
        return [w for d in self.decisions for w in d.withdrawals]

    @property
    def open_alerts(self) -> list[Alert]:
        """The alerts raised and not withdrawn, in the order raised."""
        gone = {w.alert_id for w in self.withdrawals}
        return [alert for alert in self.alerts if alert.alert_id not in gone]


def run(
    events: Sequence[Event] | Iterable[Event],
    until: datetime | float | None = None,
    protocol: str = "spravato-rems",
    registry: RemsRegistry | None = None,
) -> list[Alert]:
    """Alerts of one replay; `until` may be minutes after T0; `protocol` is the default one."""
    end = at(until) if isinstance(until, int | float) else until
    return Replay(engine(protocol, registry)).feed(events).finish(end).alerts


def run_open(
    events: Sequence[Event] | Iterable[Event],
    until: datetime | float | None = None,
    protocol: str = "spravato-rems",
    registry: RemsRegistry | None = None,
) -> list[Alert]:
    """The alerts still open at the end of one replay (raised, not withdrawn)."""
    end = at(until) if isinstance(until, int | float) else until
    return Replay(engine(protocol, registry)).feed(events).finish(end).open_alerts


def rules(alerts: Iterable[Alert]) -> list[str]:
    return [a.rule for a in alerts]


def only(alerts: Iterable[Alert], rule: str) -> list[Alert]:
    return [a for a in alerts if a.rule == rule]
