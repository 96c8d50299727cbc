"""MonitoringEngine: events in, decisions out, driven by event time and an explicit clock.

Threshold rules are decided when a reading arrives, against the readings of the same kind
known so far in event-time order. Everything that depends on the *absence* of an event (the
pre-dose BP, the 40-minute check, discharge checks, gaps, the window) is a deadline, decided
once the clock passes it plus the protocol's allowed lateness, so late events still count.
"""

from __future__ import annotations

import heapq
import sys
from bisect import bisect_right
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from datetime import datetime, timedelta
from functools import partial
from itertools import count
from operator import itemgetter

from remsguard.domain.admission import SESSION_OF_ANOTHER_CLINIC, UNKNOWN_PROTOCOL, rejection_of
from remsguard.domain.deadlines import Check, due_checks, gap_holds, run_check, settled
from remsguard.domain.decisions import (
    Alert,
    AuditKind,
    AuditRecord,
    Decisions,
    Outcome,
    Rejection,
    Withdrawal,
    WithdrawalReason,
    alert_raised,
    alert_withdrawn,
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
from remsguard.domain.findings import Finding, clock_time
from remsguard.domain.inhibition import inhibit
from remsguard.domain.protocol import MonitoringProtocol
from remsguard.domain.readiness import DischargeReadiness, discharge_readiness
from remsguard.domain.registry import RemsRegistry
from remsguard.domain.session import LAST_ID, BPReading, Mark, Measurement, Row, Session, insert
from remsguard.domain.thresholds import Thresholds, all_starts, starts_at

# `evict_finished`: how long a finished session stays (late events, the console's day), and
# how long its tombstone does (beyond the 30 days of the oldest event a live door accepts).
DEFAULT_RETENTION = timedelta(hours=24)
DEFAULT_FORGET_AFTER = timedelta(days=31)


class MonitoringEngine:
    """The pure core shared by replay, the Kafka processor and embedded mode.

    `registry` is the REMS registry (certified settings, enrolled patients) that the REMS
    gate asks about each dose of a session whose protocol sets `rems_gate`. None means the
    gate is not checked at all: no PATIENT_NOT_ENROLLED or SETTING_NOT_CERTIFIED alert is
    ever raised. The attribute may be replaced between steps (the registry changed); a dose
    is judged by the registry in place when it is handled (or, for a dose that came before
    its `session.opened`, when the opening names the patient), and is not judged again.
    """

    def __init__(
        self,
        protocols: Mapping[str, MonitoringProtocol],
        default_protocol: str = "spravato-rems",
        sessions: MutableMapping[str, Session] | None = None,
        registry: RemsRegistry | None = None,
    ) -> None:
        self.registry = registry
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
        # Evicted sessions: id -> (clinic, end) (`evict_finished`); the stream processor keeps
        # them in its store, which writes them to the changelog.
        self.tombstones: MutableMapping[str, tuple[str, datetime]] = {}

    # -- state, for snapshots ----------------------------------------------------------------

    @property
    def protocols(self) -> Mapping[str, MonitoringProtocol]:
        """The protocols the engine was built with, by name."""
        return self._protocols

    @property
    def default_protocol(self) -> str:
        return self._default

    def wakes(self) -> list[tuple[datetime, int, str]]:
        """The wake queue as it is (stale entries included), shared, not copied: a snapshot
        pickles it before the next step. Restored as it was, deadlines are decided in the
        same order after a restart as without one."""
        return self._queue

    def restore_wakes(self, queue: list[tuple[datetime, int, str]]) -> None:
        """Take over a snapshot's wake queue; wakes queued from now on are ordered after it."""
        self._queue = queue
        self._order = count(max((order for _, order, _ in queue), default=-1) + 1)

    # -- inputs ------------------------------------------------------------------------------

    def handle(self, event: Event) -> Decisions:
        """Apply one contract-valid event; duplicates (same event id) change nothing."""
        session_id, event_id = event.session_id, event.event_id
        session = self.sessions.get(session_id)
        if session is None:
            if session_id in self.tombstones:
                return self._after_eviction(event)
            # The clinic id interned: compared on every event, one string per clinic stays
            # warm in memory where each session's own copy went cold.
            session = Session(session_id, sys.intern(event.clinic_id), self._default)
        elif session.clinic_id != event.clinic_id:  # a session belongs to its first clinic
            detail = f"session {session_id!r} belongs to another clinic"
            return self._refuse(event, SESSION_OF_ANOTHER_CLINIC, detail)
        elif event_id in session.seen:
            return Decisions(outcome=Outcome.DUPLICATE)
        if isinstance(event, SessionOpened) and event.protocol not in (None, *self._protocols):
            detail = f"protocol {event.protocol!r} is not configured"
            return self._refuse(event, UNKNOWN_PROTOCOL, detail)
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
        if kind is VitalsRecorded:  # most events: straight to the readings
            findings = self._vitals(session, event, decisions)  # type: ignore[arg-type]
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

    def _refuse(self, event: Event, reason: str, detail: str) -> Decisions:
        """Reject a contract-valid event the engine does not take, from its ids (`reject`)."""
        rejection = rejection_of(event, reason, detail)
        return self.reject(rejection, source=f"{event.session_id}/{event.event_id}")

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
            return self._assessment(session, event, protocol, thresholds, decisions)
        if isinstance(event, DoseAdministered):
            return self._dose(session, event, decisions)
        if isinstance(event, SessionOpened):
            session.opened = True
            session.patient_ref = event.patient_ref
            session.protocol = event.protocol or self._default
            medications = frozenset(event.concomitant_medications)
            # One set per combination (a key of the rules in force, hashed on every reading).
            session.medications = _MEDICATION_SETS.setdefault(medications, medications)
            opened = _state_change(AuditKind.SESSION_OPENED, event)
            opened.detail = {
                "patient_ref": event.patient_ref,
                "protocol": session.protocol,
                "concomitant_medications": [m.value for m in sorted(session.medications)],
            }
            decisions.audit.append(opened)
            now_in_force = self.protocol_of(session)
            # Doses that came before the opening had no patient to judge: judge them now.
            gate = self._gate(session, session.doses)
            if now_in_force is protocol:
                return gate
            # The protocol arrived after some of the session: everything judged so far is
            # judged again by the rules now in force, and what they do not hold is withdrawn.
            session.gap_cursor = None  # gaps are decided again by the new limit
            self._regap(session, now_in_force, event, decisions)
            return gate + self._reconcile(
                session, _ALL_RULES, event, WithdrawalReason.PROTOCOL_ARRIVED_LATE, decisions
            )
        if isinstance(event, SessionDischarged):
            return self._discharge(session, event, decisions)
        return []

    def _vitals(
        self, session: Session, event: VitalsRecorded, decisions: Decisions
    ) -> list[Finding]:
        """Most events: the usual reading comes last and is quiet, and is only appended.

        Rows are built with `tuple.__new__` (a named tuple's own constructor is a Python
        function) and appended in place when they come last, as `insert` would. A reading
        that comes last at an instant of its own is judged against the one before it; any
        other (late, or sharing an instant) has its rules judged again over the session.
        """
        rules = self._in_force.get((session.protocol, session.medications))
        protocol, thresholds = self._rules_of(session) if rules is None else rules
        at, event_id = event.occurred_at, event.event_id
        mark = _new_row(Mark, (at, event_id))
        vitals = session.vitals
        if not vitals or vitals[-1].at < at:
            # The usual reading, later than every reading so far: every row of `bp`, `spo2`
            # and `respiratory_rate` has its mark in `vitals`, so it is later than each of
            # theirs too, and is appended to them without reading their last rows (gone cold
            # in memory at thousands of sessions: bench.engine_scale --engine-only, paired
            # A/B). The same as below for such a reading, without the `again` list.
            vitals.append(mark)
            if session.discharges:
                end = session.discharge
                if end is not None and at > end.at:  # after the session's end: not judged
                    return self._after_end(session, event, mark)
            findings: list[Finding] = []
            systolic, diastolic = event.systolic, event.diastolic
            if systolic is not None and diastolic is not None:
                reading = _new_row(BPReading, (at, event_id, systolic, diastolic))
                session.bp.append(reading)
                findings += self._bp(session, reading, protocol, thresholds)
            value = event.spo2
            if value is not None:
                rows = session.spo2
                rows.append(_new_row(Measurement, (at, event_id, value)))
                if value < thresholds.spo2_quiet_from:
                    findings += _spo2(rows, len(rows) - 1, thresholds)
            value = event.respiratory_rate
            if value is not None:
                rows = session.respiratory_rate
                rows.append(_new_row(Measurement, (at, event_id, value)))
                condition = thresholds.respiratory_rate
                if condition is not None and value < thresholds.rate_quiet_from:
                    starts = starts_at(rows, len(rows) - 1, condition)
                    findings += [Finding.respiratory_rate(r, thresholds.rate_below) for r in starts]
            return findings
        if vitals[-1] <= mark:
            vitals.append(mark)
        else:
            insert(vitals, mark)
            cursor = session.gap_cursor
            if cursor is not None and mark < cursor:
                session.gap_cursor = None  # a very late reading: re-decide the gaps
        judged = True
        if session.discharges:
            end = session.discharge
            judged = end is None or at <= end.at  # after the session's end: kept, not judged
        findings = []
        again: list[str] = []  # rules to judge again over the whole session
        systolic, diastolic = event.systolic, event.diastolic
        if systolic is not None and diastolic is not None:
            reading = _new_row(BPReading, (at, event_id, systolic, diastolic))
            if _placed_last(session.bp, reading):
                if judged:
                    findings += self._bp(session, reading, protocol, thresholds)
            elif judged:
                again += _BP_RULES
        value = event.spo2
        if value is not None:
            rows = session.spo2
            if _placed_last(rows, _new_row(Measurement, (at, event_id, value))):
                # The usual reading: meets no SpO2 rule and came last, so starts nothing.
                if judged and value < thresholds.spo2_quiet_from:
                    findings += _spo2(rows, len(rows) - 1, thresholds)
            elif judged:
                again += _SPO2_RULES
        value = event.respiratory_rate
        if value is not None:
            rows = session.respiratory_rate
            if _placed_last(rows, _new_row(Measurement, (at, event_id, value))):
                condition = thresholds.respiratory_rate
                if judged and condition is not None and value < thresholds.rate_quiet_from:
                    starts = starts_at(rows, len(rows) - 1, condition)
                    findings += [Finding.respiratory_rate(r, thresholds.rate_below) for r in starts]
            elif judged:
                again.append("RESPIRATORY_DEPRESSION")
        if again:
            reason = WithdrawalReason.READING_ARRIVED_LATE
            findings += self._reconcile(session, again, event, reason, decisions)
        return findings

    @staticmethod
    def _after_end(session: Session, event: VitalsRecorded, mark: Mark) -> list[Finding]:
        """A reading after the session's end that came last (its mark appended): its rows are
        kept, appended as the last of their kinds, and judged by no rule."""
        at, event_id = mark
        systolic, diastolic = event.systolic, event.diastolic
        if systolic is not None and diastolic is not None:
            session.bp.append(_new_row(BPReading, (at, event_id, systolic, diastolic)))
        if event.spo2 is not None:
            session.spo2.append(_new_row(Measurement, (at, event_id, event.spo2)))
        if event.respiratory_rate is not None:
            rate = event.respiratory_rate
            session.respiratory_rate.append(_new_row(Measurement, (at, event_id, rate)))
        return []

    def _bp(
        self,
        session: Session,
        reading: BPReading,
        protocol: MonitoringProtocol,
        thresholds: Thresholds,
    ) -> list[Finding]:
        """A BP reading just appended last, at an instant of its own."""
        doses, rows = session.doses, session.bp
        index = len(rows) - 1
        findings: list[Finding] = []
        crisis, levels = thresholds.crisis, thresholds.crisis_from
        # The usual reading is under the rule's levels: it starts no episode of that rule, so
        # the rule's condition need not be evaluated.
        if crisis is not None and (reading.systolic >= levels[0] or reading.diastolic >= levels[1]):
            starts = starts_at(rows, index, crisis)
            findings += [Finding.bp_crisis(r, protocol.rule("BP_CRISIS")) for r in starts]
        rise = thresholds.rise
        if rise is None or not doses:
            return findings
        first = doses[0]
        if reading.at <= first.at:  # a pre-dose reading: it may be the new baseline
            if index and rows[index - 1].at > first.at:  # pragma: no cover - appended last
                return findings
            return findings  # no post-dose reading yet: nothing to judge against it
        # The baseline: the latest reading at or before the first dose (`Session.baseline`).
        if rows[0].at < first.at and rows[1].at > first.at:  # the usual: one pre-dose reading
            before = 1  # as the bisection finds it, reading two rows rather than a few cold ones
        else:
            before = bisect_right(rows, (first.at, LAST_ID))
        if not before:
            return findings
        baseline = rows[before - 1]
        if before > 1 and rows[before - 2].at == baseline.at:
            baseline = session.baseline() or baseline  # several at that instant: the lowest
        if (
            reading.systolic >= baseline.systolic + rise[0]
            or reading.diastolic >= baseline.diastolic + rise[1]
        ):  # the reading meets the rise condition: judge it
            condition = _rise_condition(first, baseline, rise)
            findings += [Finding.bp_rise(r, baseline) for r in starts_at(rows, index, condition)]
        return findings

    def _assessment(
        self,
        session: Session,
        event: AssessmentRecorded,
        protocol: MonitoringProtocol,
        thresholds: Thresholds,
        decisions: Decisions,
    ) -> list[Finding]:
        at = event.occurred_at
        end = session.discharge
        judged = end is None or at <= end.at
        findings: list[Finding] = []
        if event.sedation_moaas is not None:
            row = Measurement(at, event.event_id, event.sedation_moaas)
            rows = session.sedation
            if not rows or rows[-1].at < at:
                rows.append(row)
                if judged and thresholds.deep_sedation is not None:
                    starts = starts_at(rows, len(rows) - 1, thresholds.deep_sedation)
                    findings += [Finding.deep_sedation(start) for start in starts]
            else:
                insert(rows, row)
                if judged:
                    reason = WithdrawalReason.READING_ARRIVED_LATE
                    findings += self._reconcile(
                        session, ["DEEP_SEDATION"], event, reason, decisions
                    )
        if event.respiratory_depression:
            mark = Mark(at, event.event_id)
            insert(session.observed, mark)
            if judged and protocol.rule("RESPIRATORY_DEPRESSION").enabled:
                findings.append(Finding.respiratory_observed(mark))
        return findings

    def _dose(
        self, session: Session, event: DoseAdministered, decisions: Decisions
    ) -> list[Finding]:
        first_before, end_before = session.first_dose, session.discharge
        dose = Mark(event.occurred_at, event.event_id)
        insert(session.doses, dose)
        decisions.audit.append(_state_change(AuditKind.SESSION_DOSED, event))
        gate = self._gate(session, [dose])
        again: list[str] = []
        if session.first_dose != first_before:
            session.gap_cursor = None  # the monitored interval now starts elsewhere
            again.append("BP_RISE")  # the baseline and what counts as post-dose moved
        if session.discharges:
            # A dose after a discharge: the patient is under monitoring again from it, and
            # what came after the old end is judged now.
            again = list(_ALL_RULES) if session.discharge != end_before else [*again, *_DOSING]
        if not again:
            return gate
        reason = WithdrawalReason.DOSE_ARRIVED_LATE
        return gate + self._reconcile(session, again, event, reason, decisions)

    def _gate(self, session: Session, doses: list[Mark]) -> list[Finding]:
        """The REMS gate over `doses`: a certified setting and an enrolled patient on each
        dose's date. Not checked without a registry, for a protocol without `rems_gate`, or
        before `session.opened` names the patient (the opening judges the doses so far)."""
        registry = self.registry
        if registry is None or not doses or session.patient_ref is None:
            return []
        if not self.protocol_of(session).rems_gate:
            return []
        return _gate_findings(registry, session.clinic_id, session.patient_ref, doses)

    def _discharge(
        self, session: Session, event: SessionDischarged, decisions: Decisions
    ) -> list[Finding]:
        end_before = session.discharge
        mark = Mark(event.occurred_at, event.event_id)
        insert(session.discharges, mark)
        if end_before is None:
            decisions.audit.append(_state_change(AuditKind.SESSION_DISCHARGED, event))
        if not event.clinically_stable:
            insert(session.unstable, mark)
        end = session.discharge
        again: list[str] = list(_DOSING) if session.doses else []
        if end is not None and end != end_before and _judged_after(session, end.at):
            again = list(_ALL_RULES)  # readings after the new end were judged: take them back
        elif not event.clinically_stable:
            again.append("DISCHARGE_NOT_STABLE")
        if not again:
            return []
        reason = WithdrawalReason.DISCHARGE_ARRIVED_LATE
        return self._reconcile(session, again, event, reason, decisions)

    # -- judging again, and withdrawing -------------------------------------------------------

    def _reconcile(
        self,
        session: Session,
        rules: Iterable[str],
        cause: Event,
        reason: WithdrawalReason,
        decisions: Decisions,
    ) -> list[Finding]:
        """Judge `rules` again over the whole session, up to its end, by the rules in force.

        Returns what they find now (`_raise` skips what was raised already) and withdraws
        every alert of theirs that they no longer find, naming `cause` as the evidence.
        """
        protocol, thresholds = self._rules_of(session)
        end = session.discharge
        end_at = None if end is None else end.at
        fired, withdrawn = session.fired, session.withdrawn
        findings: list[Finding] = []
        for rule in rules:
            found, subjects = _judge(session, rule, protocol, thresholds, end_at)
            findings += found
            holds = {finding.key for finding in found}
            for subject in subjects:
                key = f"{rule}:{subject}"
                if subject not in holds and key in fired and key not in withdrawn:
                    self._withdraw(session, rule, subject, cause, reason, decisions)
        return findings

    def _regap(
        self, session: Session, protocol: MonitoringProtocol, cause: Event, decisions: Decisions
    ) -> None:
        """Withdraw the VITALS_GAP alerts that the protocol now in force does not hold."""
        fired, withdrawn = session.fired, session.withdrawn
        for point in [*session.doses[:1], *session.vitals]:
            key = f"VITALS_GAP:{point.event_id}"
            if key in fired and key not in withdrawn and not gap_holds(session, protocol, point):
                reason = WithdrawalReason.PROTOCOL_ARRIVED_LATE
                self._withdraw(session, "VITALS_GAP", point.event_id, cause, reason, decisions)

    def _withdraw(
        self,
        session: Session,
        rule: str,
        subject: str,
        cause: Event,
        reason: WithdrawalReason,
        decisions: Decisions,
    ) -> None:
        session.withdrawn.add(f"{rule}:{subject}")
        withdrawal = Withdrawal(
            alert_id=_alert_id(session, rule, subject),
            rule=rule,
            session_id=session.session_id,
            clinic_id=session.clinic_id,
            withdrawn_at=cause.occurred_at,
            reason=reason,
            detail=_withdrawal_detail(session, self.protocol_of(session), reason),
            evidence=(cause.event_id,),
        )
        decisions.withdrawals.append(withdrawal)
        decisions.audit.append(alert_withdrawn(withdrawal))

    # -- finished sessions -------------------------------------------------------------------

    def evict_finished(
        self,
        now: datetime,
        retention: timedelta = DEFAULT_RETENTION,
        forget_after: timedelta = DEFAULT_FORGET_AFTER,
    ) -> list[str]:
        """Drop the sessions finished more than `retention` before `now`; their ids, in order.

        Finished: discharged (the session's end, a discharge no dose follows, is set), that
        end more than `retention` before `now`, and every deadline check decided (nothing
        listed, no VITALS_GAP candidate: so the engine's clock has passed them all). A
        session never discharged is kept, however old: it may still be discharged and judged
        (EARLY_DISCHARGE, DISCHARGE_*), and it holds its SESSION_NOT_CLOSED alert.

        An evicted session leaves a tombstone (its clinic and end, ~200 bytes against ~12-16 KB
        for a session's state) for `forget_after` past its end; `now` also forgets older
        tombstones. A later event naming a tombstoned session is accepted with its usual
        `event.accepted` record (the same record id as on first delivery, so a re-delivered
        event doubles nothing downstream) and judged by no rule, as a live session judges no
        reading after its end: no alert can be raised for it, true or false. One from another
        clinic is refused (`session_of_another_clinic`), as before. Not judged means also: a
        dose more than `retention` after the discharge, under the same session id, raises no
        DOSE_AFTER_DISCHARGE, and a reading more than `retention` late is not judged with its
        session. After `forget_after` the id is unknown again and an event naming it opens a
        new session: keep `forget_after` beyond the oldest event a door accepts (30 days).

        For the callers (pure: the caller chooses `now` and how often): call it with the same
        clock given to `advance_to` (live: the wall clock; replay: the greatest event time),
        after `advance_to(now)`, every few minutes rather than per event (it looks at every
        session: O(sessions)). The sessions mapping must allow deletion (the stream
        processor's store refuses it until its changelog carries a tombstone). The returned
        ids are what the caller drops from its own views (the console's session view) and
        persists (a changelog tombstone, a snapshot without them).
        """
        horizon, forget = now - retention, now - forget_after
        evicted = self.tombstones
        for session_id in [s for s, (_, end) in evicted.items() if end < forget]:
            del evicted[session_id]
        gone: list[str] = []
        for session_id, session in self.sessions.items():
            end = session.discharge
            if end is None or end.at >= horizon:
                continue
            if settled(session, self.protocol_of(session)):
                gone.append(session_id)
        for session_id in gone:
            session = self.sessions[session_id]
            end = session.discharge
            assert end is not None
            del self.sessions[session_id]
            if end.at >= forget:
                evicted[session_id] = (session.clinic_id, end.at)
        return gone

    def _after_eviction(self, event: Event) -> Decisions:
        """An event naming an evicted session: recorded, judged by no rule (`evict_finished`)."""
        session_id, event_id = event.session_id, event.event_id
        if self.tombstones[session_id][0] != event.clinic_id:
            detail = f"session {session_id!r} belongs to another clinic"
            return self._refuse(event, SESSION_OF_ANOTHER_CLINIC, detail)
        accepted = AuditRecord(
            stable_id(_ACCEPTED, session_id, event_id),
            _ACCEPTED,
            event_id,
            session_id,
            event.clinic_id,
            event.occurred_at,
            {"type": EVENT_TYPES_BY_CLASS[type(event)]},
        )
        return Decisions([], [accepted])

    # -- deadlines ---------------------------------------------------------------------------

    def _decide_due(self, session: Session, now: datetime, decisions: Decisions) -> None:
        """Decide the session's checks due before `now` into `decisions`, then queue the next."""
        rules = self._in_force.get((session.protocol, session.medications))
        protocol = (self._rules_of(session) if rules is None else rules)[0]
        checks = due_checks(session, protocol)
        while ready := sorted([c for c in checks if c.due < now]):
            moved = False  # a gap check ran: the gap cursor moved
            for check in ready:
                moved = moved or check.kind == "gap"
                outcome = run_check(session, protocol, check)
                self._raise(session, outcome.findings, decisions)
                for kind, at, subject in outcome.changes:
                    decisions.audit.append(_state_change_at(kind, session, at, subject))
            # Running a check only marks it done (`fired`), except a gap check, which moves
            # the gap cursor; so unless one did, listing again gives the same list without
            # the checks just run, in the same order (bench.engine_scale --engine-only,
            # paired A/B).
            checks = due_checks(session, protocol) if moved else [c for c in checks if c.due >= now]
        self.sessions[session.session_id] = session
        self._queue_earliest(session, checks)

    def _schedule(self, session: Session) -> None:
        rules = self._in_force.get((session.protocol, session.medications))
        protocol = (self._rules_of(session) if rules is None else rules)[0]
        self._queue_earliest(session, due_checks(session, protocol))

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
        fired = session.fired
        raised: list[tuple[Alert, str]] = []
        for finding in findings:
            key = f"{finding.rule}:{finding.key}"
            if key in fired:
                if key not in session.withdrawn:
                    continue
                # Withdrawn, and later facts make it hold again (e.g. a dose after the
                # discharge that had ended the session): a new alert, the old one stays closed.
                session.withdrawn.discard(key)
                session.raised_again[key] = session.raised_again.get(key, 0) + 1
            fired.add(key)
            rule = protocol.rule(finding.rule)
            alert = Alert(
                alert_id=_alert_id(session, finding.rule, finding.key),
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
            raised.append((alert, finding.key))
        alerts = [alert for alert, _ in raised]
        if protocol.inhibitions:
            alerts = inhibit(raised, protocol.inhibitions, partial(_standing, session))
        for alert in alerts:
            decisions.alerts.append(alert)
            decisions.audit.append(alert_raised(alert))


def _standing(session: Session, rule: str, subject: str) -> str | None:
    """The id of the session's alert of `rule` about `subject`, if raised and not withdrawn."""
    key = f"{rule}:{subject}"
    if key not in session.fired or key in session.withdrawn:
        return None
    return _alert_id(session, rule, subject)


def _alert_id(session: Session, rule: str, subject: str) -> str:
    """`stable_id(session, rule, subject)`; an alert raised again after its withdrawal gets
    that with the count of times it was raised again (`again:1`, ...)."""
    again = session.raised_again.get(f"{rule}:{subject}") if session.raised_again else None
    if again is None:
        return stable_id(session.session_id, rule, subject)
    return stable_id(session.session_id, rule, subject, f"again:{again}")


def _rise_condition(
    first: Mark, baseline: BPReading, rise: tuple[float, float]
) -> Callable[[BPReading], bool]:
    systolic, diastolic = baseline.systolic + rise[0], baseline.diastolic + rise[1]
    start = first.at
    return lambda r: r.at > start and (r.systolic >= systolic or r.diastolic >= diastolic)


def _judge(
    session: Session,
    rule: str,
    protocol: MonitoringProtocol,
    t: Thresholds,
    end: datetime | None,
) -> tuple[list[Finding], list[str]]:
    """What `rule` finds over the whole session up to `end`, and the event ids it may have
    raised alerts for (its subjects)."""
    found: list[Finding] = []
    if rule == "BP_CRISIS" or rule == "BP_RISE":
        bp = session.bp
        subjects = [r.event_id for r in bp]
    if rule == "BP_CRISIS":
        if t.crisis is not None:
            crisis = protocol.rule(rule)
            found = [Finding.bp_crisis(r, crisis) for r in all_starts(bp, t.crisis, end)]
    elif rule == "BP_RISE":
        first, baseline = session.first_dose, session.baseline()
        if t.rise is not None and first is not None and baseline is not None:
            condition = _rise_condition(first, baseline, t.rise)
            found = [Finding.bp_rise(r, baseline) for r in all_starts(bp, condition, end)]
    elif rule == "SPO2_CRITICAL" or rule == "SPO2_LOW":
        rows = session.spo2
        subjects = [r.event_id for r in rows]
        low = t.spo2_critical if rule == "SPO2_CRITICAL" else t.spo2_low
        if low is not None:
            below = protocol.rule(rule)["below"]
            found = [Finding.spo2(rule, r, below) for r in all_starts(rows, low, end)]
    elif rule == "RESPIRATORY_DEPRESSION":
        rows = session.respiratory_rate
        if t.respiratory_rate is not None:
            starts = all_starts(rows, t.respiratory_rate, end)
            found = [Finding.respiratory_rate(r, t.rate_below) for r in starts]
        observed = session.observed
        if protocol.rule(rule).enabled:
            found += [Finding.respiratory_observed(m) for m in _until(observed, end)]
        return found, [r.event_id for r in rows] + [m.event_id for m in observed]
    elif rule == "DEEP_SEDATION":
        rows = session.sedation
        subjects = [r.event_id for r in rows]
        if t.deep_sedation is not None:
            found = [Finding.deep_sedation(r) for r in all_starts(rows, t.deep_sedation, end)]
    elif rule == "DOSE_AFTER_DISCHARGE":
        doses = session.doses
        if protocol.rule(rule).enabled:
            discharges = session.discharges
            previous: Mark | None = None
            for dose in doses:
                # the first discharge since the dose before (one at its instant ends it)
                if previous is not None:
                    before = session.discharge_after(previous.at)
                else:
                    before = discharges[0] if discharges else None
                if before is not None and before.at < dose.at:
                    found.append(Finding.dose_after_discharge(dose, before))
                previous = dose
        return found, [d.event_id for d in doses]
    elif rule == "DISCHARGE_NOT_STABLE":
        unstable = session.unstable
        if protocol.rule(rule).enabled:
            found = [Finding.discharge_not_stable(m) for m in _until(unstable, end)]
        return found, [m.event_id for m in unstable]
    else:  # pragma: no cover - every caller names a rule above
        raise ValueError(f"not a rule judged again: {rule}")
    return found, subjects


def _gate_findings(
    registry: RemsRegistry, clinic_id: str, patient_ref: str, doses: list[Mark]
) -> list[Finding]:
    findings: list[Finding] = []
    certification = registry.certification_of(clinic_id)
    enrollment = registry.enrollment_of(clinic_id, patient_ref)
    for dose in doses:
        if registry.certification_on(clinic_id, dose.at) is None:
            findings.append(Finding.setting_not_certified(dose, clinic_id, certification))
        if registry.enrollment_on(clinic_id, patient_ref, dose.at) is None:
            findings.append(Finding.patient_not_enrolled(dose, patient_ref, enrollment))
    return findings


def _until(rows: list[Mark], end: datetime | None) -> list[Mark]:
    return rows if end is None else rows[: bisect_right(rows, (end, LAST_ID))]


def _judged_after(session: Session, at: datetime) -> bool:
    """Whether anything that rules judge is stamped after `at` (and so may have raised)."""
    return any(
        rows and rows[-1].at > at
        for rows in (session.vitals, session.sedation, session.observed, session.unstable)
    )


def _withdrawal_detail(
    session: Session, protocol: MonitoringProtocol, reason: WithdrawalReason
) -> str:
    if reason is WithdrawalReason.PROTOCOL_ARRIVED_LATE:
        meds = ", ".join(sorted(session.medications))
        with_meds = f" with {meds}" if meds else ""
        return (
            f"The session's protocol is {protocol.name}{with_meds}, which arrived after the "
            "readings; by its rules this alert does not hold."
        )
    if reason is WithdrawalReason.DISCHARGE_ARRIVED_LATE:
        end = session.discharge
        when = "" if end is None else f" at {clock_time(end.at)}"
        return (
            f"The patient was discharged{when}, which arrived after the alert; what it was "
            "raised for came after the discharge."
        )
    if reason is WithdrawalReason.DOSE_ARRIVED_LATE:
        return (
            "A dose that arrived late moved the first dose, the baseline or the end of "
            "monitoring; judged again, this alert does not hold."
        )
    return (
        "A reading that arrived late belongs to the same episode or instant; judged again "
        "in event-time order, this alert does not hold."
    )


def _placed_last(rows: list[Row], row: Row) -> bool:
    """Put `row` into `rows` in event-time order; True when it is later than every row so far
    (appended last, at an instant of its own), False when it is inserted among them."""
    if not rows or rows[-1].at < row.at:
        rows.append(row)
        return True
    insert(rows, row)
    return False


def _spo2(rows: list[Measurement], index: int, thresholds: Thresholds) -> list[Finding]:
    """Episode starts of the SpO2 rules made by the reading appended last at `index`."""
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


# The rules judged on arrival, which `_reconcile` judges again; in the order raised.
_BP_RULES = ("BP_CRISIS", "BP_RISE")
_SPO2_RULES = ("SPO2_CRITICAL", "SPO2_LOW")
_DOSING = ("DOSE_AFTER_DISCHARGE", "DISCHARGE_NOT_STABLE")
_ALL_RULES = (
    *_BP_RULES,
    *_SPO2_RULES,
    "RESPIRATORY_DEPRESSION",
    "DEEP_SEDATION",
    *_DOSING,
)


# Sessions' concomitant medications, one frozenset per combination (at most 2^5).
_MEDICATION_SETS: dict[frozenset[Medication], frozenset[Medication]] = {}
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
