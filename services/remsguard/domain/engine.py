"""MonitoringEngine: events in, decisions out, driven by event time and an explicit clock.

Threshold rules are decided when a reading arrives, against the readings of the same kind
known so far in event-time order. Everything that depends on the *absence* of an event (the
pre-dose BP, the 40-minute check, discharge checks, gaps, the window) is a deadline, decided
once the clock passes it plus the protocol's allowed lateness, so late events still count.
"""

from __future__ import annotations

import heapq
from bisect import bisect_right
from collections.abc import Callable, Mapping, MutableMapping
from datetime import datetime
from itertools import count
from operator import itemgetter

from remsguard.domain.admission import SESSION_OF_ANOTHER_CLINIC, UNKNOWN_PROTOCOL, rejection_of
from remsguard.domain.deadlines import Check, due_checks, run_check
from remsguard.domain.decisions import (
    Alert,
    AuditKind,
    AuditRecord,
    Decisions,
    Outcome,
    Rejection,
    alert_raised,
    stable_id,
    stable_id_prefix,
)
from remsguard.domain.events import (
    EVENT_TYPES_BY_CLASS,
    AssessmentRecorded,
    DoseAdministered,
    Event,
    Medication,
    SessionDischarged,
    SessionOpened,
    VitalsRecorded,
)
from remsguard.domain.findings import Finding
from remsguard.domain.protocol import MonitoringProtocol
from remsguard.domain.readiness import DischargeReadiness, discharge_readiness
from remsguard.domain.session import LAST_ID, BPReading, Mark, Measurement, Session, insert
from remsguard.domain.thresholds import Thresholds, all_starts, starts_at


class MonitoringEngine:
    """The pure core shared by replay, the Kafka processor and embedded mode."""

    def __init__(
        self,
        protocols: Mapping[str, MonitoringProtocol],
        default_protocol: str = "spravato-rems",
        sessions: MutableMapping[str, Session] | None = None,
    ) -> None:
        if default_protocol not in protocols:
            raise ValueError(f"unknown default protocol {default_protocol!r}")
        self._protocols = protocols
        self._default = default_protocol
        self._in_force: dict[
            tuple[str, frozenset[Medication]], tuple[MonitoringProtocol, Thresholds]
        ] = {}
        self.sessions: MutableMapping[str, Session] = {} if sessions is None else sessions
        self.clock: datetime | None = None
        self._queue: list[tuple[datetime, int, str]] = []
        self._order = count()

    # -- inputs ------------------------------------------------------------------------------

    def handle(self, event: Event) -> Decisions:
        """Apply one contract-valid event; duplicates (same event id) change nothing."""
        session_id, event_id = event.session_id, event.event_id
        session = self.sessions.get(session_id)
        if session is None:
            session = Session(session_id, event.clinic_id, self._default)
        elif session.clinic_id != event.clinic_id:  # a session belongs to its first clinic
            return self.reject(
                rejection_of(
                    event,
                    SESSION_OF_ANOTHER_CLINIC,
                    f"session {session_id!r} belongs to another clinic",
                ),
                source=f"{session_id}/{event_id}",
            )
        elif event_id in session.seen:
            return Decisions(outcome=Outcome.DUPLICATE)
        if isinstance(event, SessionOpened) and event.protocol not in (None, *self._protocols):
            return self.reject(
                rejection_of(
                    event, UNKNOWN_PROTOCOL, f"protocol {event.protocol!r} is not configured"
                ),
                source=f"{session_id}/{event_id}",
            )
        session.seen.add(event_id)
        # Every event's record, built here: its id is `stable_id(_ACCEPTED, session_id,
        # event_id)` hashed on from the kind's state, and it is built positionally (keyword
        # construction costs twice as much).
        digest = _ACCEPTED_ID.copy()
        digest.update(f"\x1f{session_id}\x1f{event_id}".encode("utf-8", "surrogatepass"))
        kind, occurred_at = type(event), event.occurred_at
        accepted = AuditRecord(
            digest.hexdigest(),
            _ACCEPTED,
            event_id,
            session_id,
            event.clinic_id,
            occurred_at,
            {"type": EVENT_TYPES_BY_CLASS[kind]},
        )
        decisions = Decisions([], [accepted])
        cursor = session.gap_cursor
        discharges = session.discharges
        if not discharges or discharges[0].at >= occurred_at:  # not after the discharge
            if isinstance(event, VitalsRecorded):  # most events: straight to the readings
                findings = self._vitals(session, event)
            else:
                findings = self._apply(session, event, decisions)
            if findings:
                self._raise(session, findings, decisions)
        self.sessions[session_id] = session
        # Readings only move deadlines later, so the queued one stays a safe lower bound.
        if (
            (kind is not VitalsRecorded and kind is not AssessmentRecorded)
            or session.scheduled is None
            or session.gap_cursor != cursor
        ):
            self._schedule(session)
        return decisions

    def reject(self, rejection: Rejection, *, source: str) -> Decisions:
        """Record an input that broke the contract; `source` says where it came from."""
        record = AuditRecord(
            record_id=stable_id(AuditKind.EVENT_REJECTED, source),
            kind=AuditKind.EVENT_REJECTED,
            subject_id=rejection.event_id or source,
            session_id=rejection.session_id,
            clinic_id=rejection.clinic_id,
            occurred_at=self.clock,
            detail={"reason": rejection.reason, "detail": rejection.detail, "source": source},
        )
        return Decisions(audit=[record], outcome=Outcome.REJECTED, rejection=rejection)

    def advance_to(self, now: datetime) -> Decisions:
        """Move the clock forward and decide every deadline the clock has passed.

        A check due at deadline + lateness is decided only once the clock is strictly past it,
        so an event exactly the allowed lateness late ("up to") still counts.
        """
        decisions = Decisions([], [])
        if self.clock is not None and now <= self.clock:
            return decisions
        self.clock = now
        queue = self._queue
        while queue and queue[0][0] < now:
            _, _, session_id = heapq.heappop(queue)
            session = self.sessions.get(session_id)
            if session is None:
                continue
            session.scheduled = None
            self._decide_due(session, now, decisions)
        return decisions

    def tick(self, session_id: str, now: datetime) -> Decisions:
        """Decide one session's due deadlines at `now` (for adapters that own a few sessions)."""
        decisions = Decisions([], [])
        session = self.sessions.get(session_id)
        if session is not None:
            self._decide_due(session, now, decisions)
        return decisions

    def next_due(self, session_id: str) -> datetime | None:
        """The session's earliest check; it is decided once the clock is strictly past it."""
        session = self.sessions.get(session_id)
        if session is None:
            return None
        checks = due_checks(session, self.protocol_of(session))
        return min(checks, key=_DUE).due if checks else None

    def readiness(
        self, session_id: str, now: datetime, open_critical_rules: tuple[str, ...] = ()
    ) -> DischargeReadiness | None:
        """Whether the patient may leave now; `open_critical_rules` come from the alert log."""
        session = self.sessions.get(session_id)
        if session is None:
            return None
        return discharge_readiness(session, self.protocol_of(session), now, open_critical_rules)

    def protocol_of(self, session: Session) -> MonitoringProtocol:
        """The session's protocol, tightened for its concomitant medications."""
        return self._rules_of(session)[0]

    def _rules_of(self, session: Session) -> tuple[MonitoringProtocol, Thresholds]:
        key = (session.protocol, session.medications)
        rules = self._in_force.get(key)
        if rules is None:
            protocol = self._protocols[session.protocol].for_medications(session.medications)
            rules = self._in_force[key] = (protocol, Thresholds.of(protocol))
        return rules

    def rebuild_schedule(self) -> None:
        """Queue every known session's next deadline (after loading state from elsewhere)."""
        self._queue.clear()
        for session in self.sessions.values():
            session.scheduled = None
            self._schedule(session)

    # -- state changes -----------------------------------------------------------------------

    def _apply(self, session: Session, event: Event, decisions: Decisions) -> list[Finding]:
        """Any event but a vitals reading (`handle` sends those to `_vitals`)."""
        protocol, thresholds = self._rules_of(session)
        if isinstance(event, AssessmentRecorded):
            return self._assessment(session, event, protocol, thresholds)
        if isinstance(event, DoseAdministered):
            return self._dose(session, event, thresholds, decisions)
        if isinstance(event, SessionOpened):
            session.opened = True
            session.patient_ref = event.patient_ref
            session.protocol = event.protocol or self._default
            session.medications = frozenset(event.concomitant_medications)
            opened = _state_change(AuditKind.SESSION_OPENED, event)
            opened.detail = {
                "patient_ref": event.patient_ref,
                "protocol": session.protocol,
                "concomitant_medications": [m.value for m in sorted(session.medications)],
            }
            decisions.audit.append(opened)
            now_in_force = self.protocol_of(session)
            return [] if now_in_force is protocol else self._rejudge(session, now_in_force)
        if isinstance(event, SessionDischarged):
            return self._discharge(session, event, decisions)
        return []

    def _vitals(self, session: Session, event: VitalsRecorded) -> list[Finding]:
        """Most events: the usual reading comes last and is quiet, and is only appended.

        Rows are built with `tuple.__new__` (a named tuple's own constructor is a Python
        function) and appended in place when they come last, as `insert` would.
        """
        rules = self._in_force.get((session.protocol, session.medications))
        protocol, thresholds = self._rules_of(session) if rules is None else rules
        at, event_id = event.occurred_at, event.event_id
        mark = _new_row(Mark, (at, event_id))
        vitals = session.vitals
        if not vitals or vitals[-1] <= mark:
            vitals.append(mark)
        else:
            insert(vitals, mark)
            cursor = session.gap_cursor
            if cursor is not None and mark < cursor:
                session.gap_cursor = None  # a very late reading: re-decide the gaps
        findings: list[Finding] = []
        systolic, diastolic = event.systolic, event.diastolic
        if systolic is not None and diastolic is not None:
            reading = _new_row(BPReading, (at, event_id, systolic, diastolic))
            findings += self._bp(session, reading, protocol, thresholds)
        value = event.spo2
        if value is not None:
            row = _new_row(Measurement, (at, event_id, value))
            rows = session.spo2
            if not rows or rows[-1] <= row:
                rows.append(row)
                # The usual reading: meets no SpO2 rule and came last, so starts nothing.
                if value < thresholds.spo2_quiet_from:
                    findings += _spo2(rows, len(rows) - 1, thresholds)
            else:
                findings += _spo2(rows, insert(rows, row), thresholds)
        value = event.respiratory_rate
        if value is not None:
            row = _new_row(Measurement, (at, event_id, value))
            findings += _respiratory_rate(session.respiratory_rate, row, thresholds)
        return findings

    def _bp(
        self,
        session: Session,
        reading: BPReading,
        protocol: MonitoringProtocol,
        thresholds: Thresholds,
    ) -> list[Finding]:
        doses, rows = session.doses, session.bp
        first = doses[0] if doses else None
        moves_baseline = first is not None and reading.at <= first.at
        baseline_before = session.baseline() if moves_baseline else None
        # The usual reading came last and is under a rule's levels: it starts no episode of
        # that rule, so the rule's condition need not be evaluated.
        if not rows or rows[-1] <= reading:  # as `insert` does
            rows.append(reading)
            index, last = len(rows) - 1, True
        else:
            index, last = insert(rows, reading), False
        findings: list[Finding] = []
        crisis, levels = thresholds.crisis, thresholds.crisis_from
        if crisis is not None and not (
            last and reading.systolic < levels[0] and reading.diastolic < levels[1]
        ):  # the reading may meet the crisis condition, or is not the last: judge it
            starts = starts_at(rows, index, crisis)
            findings += [Finding.bp_crisis(r, protocol.rule("BP_CRISIS")) for r in starts]
        rise = thresholds.rise
        if rise is None:
            return findings
        if moves_baseline:
            if session.baseline() != baseline_before:
                findings += _rise_rescan(session, rise)
            return findings
        if first is None:
            return findings
        # The baseline: the latest reading at or before the first dose (`Session.baseline`).
        before = bisect_right(rows, (first.at, LAST_ID))
        if not before:
            return findings
        baseline = rows[before - 1]
        if not (
            last
            and reading.systolic < baseline.systolic + rise[0]
            and reading.diastolic < baseline.diastolic + rise[1]
        ):  # the reading may meet the rise condition, or is not the last: judge it
            condition = _rise_condition(first, baseline, rise)
            findings += [Finding.bp_rise(r, baseline) for r in starts_at(rows, index, condition)]
        return findings

    def _rejudge(self, session: Session, protocol: MonitoringProtocol) -> list[Finding]:
        """A late session.opened changed the protocol: judge the earlier readings again by it."""
        t = self._rules_of(session)[1]
        findings: list[Finding] = []
        if t.crisis is not None:
            crisis = protocol.rule("BP_CRISIS")
            findings += [Finding.bp_crisis(r, crisis) for r in all_starts(session.bp, t.crisis)]
        for rule, condition in (("SPO2_CRITICAL", t.spo2_critical), ("SPO2_LOW", t.spo2_low)):
            if condition is not None:
                below = protocol.rule(rule)["below"]
                starts = all_starts(session.spo2, condition)
                findings += [Finding.spo2(rule, r, below) for r in starts]
        if t.respiratory_rate is not None:
            below = protocol.rule("RESPIRATORY_DEPRESSION")["rate_below"]
            starts = all_starts(session.respiratory_rate, t.respiratory_rate)
            findings += [Finding.respiratory_rate(r, below) for r in starts]
        if t.deep_sedation is not None:
            starts = all_starts(session.sedation, t.deep_sedation)
            findings += [Finding.deep_sedation(r) for r in starts]
        if t.rise is not None:
            findings += _rise_rescan(session, t.rise)
        return findings

    def _assessment(
        self,
        session: Session,
        event: AssessmentRecorded,
        protocol: MonitoringProtocol,
        thresholds: Thresholds,
    ) -> list[Finding]:
        findings: list[Finding] = []
        if event.sedation_moaas is not None:
            row = Measurement(event.occurred_at, event.event_id, event.sedation_moaas)
            index = insert(session.sedation, row)
            if thresholds.deep_sedation is not None:
                starts = starts_at(session.sedation, index, thresholds.deep_sedation)
                findings += [Finding.deep_sedation(start) for start in starts]
        if event.respiratory_depression and protocol.rule("RESPIRATORY_DEPRESSION").enabled:
            findings.append(Finding.respiratory_observed(event))
        return findings

    def _dose(
        self,
        session: Session,
        event: DoseAdministered,
        thresholds: Thresholds,
        decisions: Decisions,
    ) -> list[Finding]:
        first_before = session.first_dose
        insert(session.doses, Mark(event.occurred_at, event.event_id))
        decisions.audit.append(_state_change(AuditKind.SESSION_DOSED, event))
        if session.first_dose == first_before:
            return []
        session.gap_cursor = None  # the monitored interval now starts elsewhere
        if thresholds.rise is not None:
            return _rise_rescan(session, thresholds.rise)
        return []

    def _discharge(
        self, session: Session, event: SessionDischarged, decisions: Decisions
    ) -> list[Finding]:
        first_known = session.discharge is None
        insert(session.discharges, Mark(event.occurred_at, event.event_id))
        if first_known:
            decisions.audit.append(_state_change(AuditKind.SESSION_DISCHARGED, event))
        return []

    # -- deadlines ---------------------------------------------------------------------------

    def _decide_due(self, session: Session, now: datetime, decisions: Decisions) -> None:
        """Decide the session's checks due before `now` into `decisions`, then queue the next."""
        protocol = self.protocol_of(session)
        checks = due_checks(session, protocol)
        while ready := sorted([c for c in checks if c.due < now]):
            for check in ready:
                outcome = run_check(session, protocol, check)
                self._raise(session, outcome.findings, decisions)
                for kind, at, subject in outcome.changes:
                    decisions.audit.append(_state_change_at(kind, session, at, subject))
            checks = due_checks(session, protocol)
        self.sessions[session.session_id] = session
        self._queue_earliest(session, checks)

    def _schedule(self, session: Session) -> None:
        self._queue_earliest(session, due_checks(session, self.protocol_of(session)))

    def _queue_earliest(self, session: Session, checks: list[Check]) -> None:
        """Queue the session for its earliest check unless an earlier wake is already queued."""
        if not checks:
            return
        due = min(checks, key=_DUE).due
        if session.scheduled is not None and session.scheduled <= due:
            return
        session.scheduled = due
        heapq.heappush(self._queue, (due, next(self._order), session.session_id))

    # -- alerts ------------------------------------------------------------------------------

    def _raise(self, session: Session, findings: list[Finding], decisions: Decisions) -> None:
        if not findings:
            return
        protocol = self.protocol_of(session)
        for finding in findings:
            key = f"{finding.rule}:{finding.key}"
            if key in session.fired:
                continue
            session.fired.add(key)
            rule = protocol.rule(finding.rule)
            alert = Alert(
                alert_id=stable_id(session.session_id, finding.rule, finding.key),
                rule=finding.rule,
                severity=rule.severity,
                session_id=session.session_id,
                clinic_id=session.clinic_id,
                triggered_at=finding.at,
                message=finding.message,
                evidence=finding.evidence,
                protocol=protocol.name,
                protocol_version=protocol.version,
            )
            decisions.alerts.append(alert)
            decisions.audit.append(alert_raised(alert))


def _rise_condition(
    first: Mark, baseline: BPReading, rise: tuple[float, float]
) -> Callable[[BPReading], bool]:
    systolic, diastolic = _rise_levels(baseline, rise)
    start = first.at
    return lambda r: r.at > start and (r.systolic >= systolic or r.diastolic >= diastolic)


def _rise_levels(baseline: BPReading, rise: tuple[float, float]) -> tuple[float, float]:
    return baseline.systolic + rise[0], baseline.diastolic + rise[1]


def _rise_rescan(session: Session, rise: tuple[float, float]) -> list[Finding]:
    """The first dose or the baseline moved: every post-dose reading is judged again."""
    first, baseline = session.first_dose, session.baseline()
    if first is None or baseline is None:
        return []
    condition = _rise_condition(first, baseline, rise)
    return [Finding.bp_rise(r, baseline) for r in all_starts(session.bp, condition)]


def _spo2(rows: list[Measurement], index: int, thresholds: Thresholds) -> list[Finding]:
    """Episode starts of the SpO2 rules made by the reading inserted at `index`."""
    if rows[index].value >= thresholds.spo2_quiet_from and index == len(rows) - 1:
        return []  # the usual reading: meets no SpO2 rule and came last, so starts nothing
    findings: list[Finding] = []
    if thresholds.spo2_critical is not None:
        below = thresholds.spo2_critical_below
        for start in starts_at(rows, index, thresholds.spo2_critical):
            findings.append(Finding.spo2("SPO2_CRITICAL", start, below))
    if thresholds.spo2_low is not None:
        below = thresholds.spo2_low_below
        for start in starts_at(rows, index, thresholds.spo2_low):
            findings.append(Finding.spo2("SPO2_LOW", start, below))
    return findings


def _respiratory_rate(
    rows: list[Measurement], row: Measurement, thresholds: Thresholds
) -> list[Finding]:
    index = insert(rows, row)
    condition = thresholds.respiratory_rate
    last = index == len(rows) - 1
    if condition is None or (row.value >= thresholds.rate_quiet_from and last):
        return []  # rule off, or the usual reading: above the rule's level and last
    starts = starts_at(rows, index, condition)
    return [Finding.respiratory_rate(start, thresholds.rate_below) for start in starts]


# Looked up once: on Python 3.11 reading an enum member costs as much as building a tuple.
_ACCEPTED = AuditKind.EVENT_ACCEPTED
_ACCEPTED_ID = stable_id_prefix(_ACCEPTED)
# A C call: a named tuple's own constructor is a Python function, and vitals make 2-3 rows.
_new_row = tuple.__new__
# The first check due: ties keep list order (equal instants may differ in their offsets).
_DUE = itemgetter(0)


def _state_change(kind: AuditKind, event: Event) -> AuditRecord:
    return AuditRecord(
        record_id=stable_id(kind, event.session_id, event.event_id),
        kind=kind,
        subject_id=event.event_id,
        session_id=event.session_id,
        clinic_id=event.clinic_id,
        occurred_at=event.occurred_at,
    )


def _state_change_at(kind: AuditKind, session: Session, at: datetime, subject: str) -> AuditRecord:
    return AuditRecord(
        record_id=stable_id(kind, session.session_id, subject),
        kind=kind,
        subject_id=subject,
        session_id=session.session_id,
        clinic_id=session.clinic_id,
        occurred_at=at,
    )


__all__ = ["MonitoringEngine"]
