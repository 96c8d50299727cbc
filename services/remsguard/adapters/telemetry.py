"""The metrics catalogue: every Prometheus family remsguard exports, in one place.

Each process builds one `Telemetry(registry)` at start-up (the registry from
`remsguard.adapters.metrics.new_registry()`, served by `serve_metrics` or mounted with
`metrics_asgi_app`) and hands it to its adapters, which record with one call:

    telemetry.observe_decisions(decisions, topic=topic, event=event, ingested_at=ts)

Naming follows Prometheus conventions: `remsguard_` prefix, base units (seconds), counters
end in `_total`, durations are `_seconds` histograms. Labels are bounded: clinic, rule,
severity, topic, reason, event type, partition, service, channel, outcome. Never a session,
patient, event or alert id (that would be one series per patient).

A device chooses the clinic ids it sends, so `clinic` label values come from `ClinicLabels`:
a clinic's own id only once the service knows it (configured, or it opened a session that the
engine accepted; for the staff alerting families also a clinic the compliance log's alerts
name), at most `max_clinics` of each; every other clinic is counted as `other`.

The dashboards in `dashboards/` and the rules in `deploy/prometheus/` use these names only;
`tests/observability/` checks that each name they use is defined here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from remsguard.adapters.metrics import PerMessageCounter, PerMessageHistogram
from remsguard.domain.deadlines import due_checks
from remsguard.domain.decisions import Decisions, Outcome
from remsguard.domain.events import Event, SessionOpened
from remsguard.domain.protocol import MonitoringProtocol
from remsguard.domain.session import Session

__all__ = [
    "ACK_BUCKETS",
    "BATCH_BUCKETS",
    "DEFAULT_MAX_CLINICS",
    "EVENT_TIME_BUCKETS",
    "INGEST_BUCKETS",
    "METRIC_NAMES",
    "OTHER_CLINIC",
    "SERVICES",
    "ClinicLabels",
    "Series",
    "Telemetry",
    "session_state",
    "violated_rules",
]

# Where an event came from when it did not come from Kafka (embedded mode's HTTP ingest).
HTTP_TOPIC = "http"
# The `service` label of remsguard_worker_up: the long-running CLI commands.
SERVICES = ("processor", "audit-sink", "notifier", "api", "up")

# ingest -> decision: milliseconds when healthy, seconds under load.
INGEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
# event time -> decision: includes network and device buffering, so up to hours.
EVENT_TIME_BUCKETS = (
    0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600,
)  # fmt: skip
# alert raised -> acknowledged by staff.
ACK_BUCKETS = (5, 10, 15, 30, 45, 60, 90, 120, 180, 300, 600, 900, 1800, 3600)
# one audit-sink batch (decode + insert + commit).
BATCH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

# The `clinic` label value of every clinic without a label of its own.
OTHER_CLINIC: Final = "other"
# Clinics with a label of their own, at most (`REMSGUARD_METRICS_MAX_CLINICS`).
DEFAULT_MAX_CLINICS: Final = 1_000


def _ts(value: datetime | float | None) -> float | None:
    if value is None or isinstance(value, float | int):
        return value
    return value.timestamp()


def violated_rules(session: Session) -> frozenset[str]:
    """The rules that raised at least one alert for this session (from the engine's state)."""
    return frozenset(key.split(":", 1)[0] for key in session.fired if not key.startswith("check:"))


def session_state(session: Session, protocol: MonitoringProtocol) -> str:
    """`monitoring` until the session is discharged and every check on it is decided, then
    `complete`. Gap checks are repeating, so they never keep a discharged session open."""
    if session.discharge is None:
        return "monitoring"
    if any(check.kind != "gap" for check in due_checks(session, protocol)):
        return "monitoring"
    return "complete"


class ClinicLabels:
    """The values of the `clinic` label: bounded, and never chosen by a device alone.

    Two ways to be known, each with room for `limit` clinics:

    - `admit`: the clinic is configured, or opened a session the engine accepted. Only these
      label what the engine decides from device input (`label`: alerts raised, sessions).
    - seen: in a process that runs no engine (the notifier, the API: `engine_observed` never
      called), a clinic named by the compliance log's alerts and forms, which hold only what
      an engine accepted; these label the staff alerting families (`alerting_label`). Where
      the engine runs (embedded mode, the processor), the alerting families take only the
      admitted clinics, once the engine is observed (alerts restored from the log at start-up
      come before that, and keep the labels they got).

    Any other clinic, or one past the limit, is `OTHER_CLINIC`; a clinic keeps its label once
    it has one. A device posting for made-up clinics without opening sessions mints no label;
    token binding (tenancy) is what keeps it from opening sessions for them.
    """

    def __init__(self, limit: int = DEFAULT_MAX_CLINICS, configured: Iterable[str] = ()) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self._admitted: set[str] = set()
        self._seen: set[str] = set()
        self._engine = False
        for clinic in configured:
            self.admit(clinic)

    @property
    def known(self) -> frozenset[str]:
        """The admitted clinics (configured, or opened a session)."""
        return frozenset(self._admitted)

    def admit(self, clinic: str) -> bool:
        """Give `clinic` a label of its own if there is room; whether it has one."""
        return _add(self._admitted, clinic, self.limit)

    def engine_observed(self) -> None:
        """This process runs the engine: it knows which clinics opened sessions."""
        self._engine = True

    def label(self, clinic: str) -> str:
        return clinic if clinic in self._admitted else OTHER_CLINIC

    def alerting_label(self, clinic: str) -> str:
        """The label of a clinic named by an alert or form of the compliance log."""
        if clinic in self._admitted or clinic in self._seen:
            return clinic
        if not self._engine and _add(self._seen, clinic, self.limit):
            return clinic
        return OTHER_CLINIC


def _add(known: set[str], clinic: str, limit: int) -> bool:
    if clinic in known:
        return True
    if len(known) >= limit or clinic == OTHER_CLINIC:
        return False
    known.add(clinic)
    return True


class Series:
    """`metric.labels(*values)` looked up once per label set: prometheus_client validates and
    locks on every `labels()` call, which shows on per-event paths."""

    def __init__(self, metric: Counter | Gauge | Histogram) -> None:
        self._metric = metric
        self._known: dict[tuple[str, ...], Any] = {}

    def __call__(self, *values: str) -> Any:
        child = self._known.get(values)
        if child is None:
            child = self._known[values] = self._metric.labels(*values)
        return child


class Telemetry:
    """Every remsguard metric family, registered on `registry` (never the global default).

    `clinics` (default: none configured, `DEFAULT_MAX_CLINICS`) decides the `clinic` label
    values; `observe_decisions` and `observe_sessions` admit the clinics that open sessions,
    `know_clinics` those a process learns of otherwise (configuration, the compliance log).
    """

    def __init__(self, registry: CollectorRegistry, clinics: ClinicLabels | None = None) -> None:
        self.registry = registry
        self.clinics = ClinicLabels() if clinics is None else clinics

        # -- ingest -------------------------------------------------------------------------
        self.events_consumed = PerMessageCounter(  # once per event: see adapters/metrics.py
            "remsguard_events_consumed_total",
            "Input events read, by source topic (or `http`) and event type "
            "(`invalid` when the bytes broke the contract).",
            ["topic", "type"],
            registry=registry,
        )
        self.events_rejected = Counter(
            "remsguard_events_rejected_total",
            "Input events that broke the event contract, by source and rejection reason.",
            ["topic", "reason"],
            registry=registry,
        )
        self.events_duplicate = Counter(
            "remsguard_events_duplicate_total",
            "Input events already seen (same event id); they change nothing.",
            ["topic"],
            registry=registry,
        )
        self.dead_letters = Counter(
            "remsguard_dead_letters_total",
            "Messages written to the dead-letter topic, by source topic and reason.",
            ["topic", "reason"],
            registry=registry,
        )
        self.consumer_lag = Gauge(
            "remsguard_consumer_lag_messages",
            "Messages between the consumer's position and the end of the partition.",
            ["topic", "partition"],
            registry=registry,
        )

        # -- decisions ----------------------------------------------------------------------
        self.alerts_raised = Counter(
            "remsguard_alerts_raised_total",
            "Alerts raised by the engine, by clinic, rule and severity.",
            ["clinic", "rule", "severity"],
            registry=registry,
        )
        self.event_to_decision = PerMessageHistogram(
            "remsguard_event_to_decision_seconds",
            "From an event's own time (occurred_at) to the engine's decision on it.",
            registry=registry,
            buckets=EVENT_TIME_BUCKETS,
        )
        self.ingest_to_decision = PerMessageHistogram(
            "remsguard_ingest_to_decision_seconds",
            "From ingest (Kafka record timestamp or HTTP receipt) to the engine's decision.",
            registry=registry,
            buckets=INGEST_BUCKETS,
        )

        # -- sessions -----------------------------------------------------------------------
        self.sessions_monitored = Gauge(
            "remsguard_sessions_under_monitoring",
            "Sessions open now (not yet discharged with every check decided), by clinic.",
            ["clinic"],
            registry=registry,
        )
        self.sessions_completed = Counter(
            "remsguard_sessions_completed_total",
            "Sessions completed (discharged, every check decided), by clinic and outcome: "
            "`compliant` (no alert) or `violations` (at least one alert).",
            ["clinic", "outcome"],
            registry=registry,
        )
        self.session_violations = Counter(
            "remsguard_session_violations_total",
            "Completed sessions that violated a rule at least once, by clinic and rule.",
            ["clinic", "rule"],
            registry=registry,
        )
        self.forms_overdue = Gauge(
            "remsguard_forms_overdue",
            "Patient monitoring forms past their submission deadline, by clinic.",
            ["clinic"],
            registry=registry,
        )

        # -- staff alerting -----------------------------------------------------------------
        self.alerts_open = Gauge(
            "remsguard_alerts_open",
            "Alerts raised and not yet acknowledged, by clinic and severity.",
            ["clinic", "severity"],
            registry=registry,
        )
        self._open_keys: set[tuple[str, str]] = set()  # series `alerts_open` has shown
        self.alerts_past_escalation = Gauge(
            "remsguard_alerts_open_past_escalation",
            "Open (unacknowledged) alerts whose clinic's last escalation step has passed, "
            "by clinic and severity.",
            ["clinic", "severity"],
            registry=registry,
        )
        self.ack_seconds = Histogram(
            "remsguard_alert_acknowledgement_seconds",
            "From an alert being raised to a staff member acknowledging it.",
            ["clinic", "severity"],
            registry=registry,
            buckets=ACK_BUCKETS,
        )
        self.escalations = Counter(
            "remsguard_escalations_total",
            "Escalation steps taken for unacknowledged alerts, by clinic and severity.",
            ["clinic", "severity"],
            registry=registry,
        )
        # Alarm burden: what reaches people, per clinic. Divided by the sessions under
        # monitoring it is notifications per monitored session-hour (the compliance board).
        self.people_notified = Counter(
            "remsguard_alert_notifications_total",
            "Alert notifications pushed to staff (raised, escalated, unshelved), by clinic.",
            ["clinic", "type"],
            registry=registry,
        )
        self.notifications = Counter(
            "remsguard_notifications_total",
            "Notification deliveries, by channel (webhook, sse, email) and outcome.",
            ["channel", "outcome"],
            registry=registry,
        )

        # -- compliance log -----------------------------------------------------------------
        self.audit_rows = Counter(
            "remsguard_audit_sink_rows_total",
            "Audit records the sink wrote (`inserted`) or found already stored (`duplicate`).",
            ["result"],
            registry=registry,
        )
        for result in ("inserted", "duplicate"):  # exported at 0 so a stall shows as rate 0
            self.audit_rows.labels(result)
        self.audit_batch_seconds = Histogram(
            "remsguard_audit_sink_batch_seconds",
            "Time to write one batch of audit records to the compliance log.",
            registry=registry,
            buckets=BATCH_BUCKETS,
        )
        self.audit_last_commit = Gauge(
            "remsguard_audit_sink_last_commit_timestamp_seconds",
            "Unix time of the audit sink's last committed batch.",
            registry=registry,
        )

        # -- liveness -----------------------------------------------------------------------
        self.worker_up = Gauge(
            "remsguard_worker_up",
            "1 while the service is running its main loop, 0 while starting or stopping.",
            ["service"],
            registry=registry,
        )

        self._completed: set[str] = set()
        self._monitored_clinics: set[str] = set()
        self._seeded = False

    # -- engine decisions -------------------------------------------------------------------

    def observe_decisions(
        self,
        decisions: Decisions,
        *,
        topic: str | None = None,
        event: Event | None = None,
        ingested_at: datetime | float | None = None,
        decided_at: float | None = None,
        dead_lettered: bool = False,
    ) -> None:
        """Record one engine step.

        - input from `topic` (a Kafka topic or `http`): counts the event by type, a rejection
          by reason (and as a dead letter if `dead_lettered`), a duplicate;
        - `event` (when accepted): event-time -> decision latency; `ingested_at` (record
          timestamp, datetime or unix seconds): ingest -> decision latency;
        - every alert, by clinic, rule and severity (also for clock steps: `topic=None`).
        """
        self.clinics.engine_observed()
        if topic is not None:
            if decisions.outcome is Outcome.REJECTED:
                reason = decisions.rejection.reason if decisions.rejection else "unknown"
                self.events_consumed.labels(topic, "invalid").inc()
                self.events_rejected.labels(topic, reason).inc()
                if dead_lettered:
                    self.dead_letters.labels(topic, reason).inc()
            else:
                self.events_consumed.labels(topic, event.type if event else "unknown").inc()
                if decisions.outcome is Outcome.DUPLICATE:
                    self.events_duplicate.labels(topic).inc()
        now = time.time() if decided_at is None else decided_at
        if event is not None and decisions.outcome is Outcome.ACCEPTED:
            if isinstance(event, SessionOpened):
                self.clinics.admit(event.clinic_id)
            self.event_to_decision.observe(max(0.0, now - event.occurred_at.timestamp()))
        ingest = _ts(ingested_at)
        if ingest is not None:
            self.ingest_to_decision.observe(max(0.0, now - ingest))
        label = self.clinics.label
        for alert in decisions.alerts:
            self.alerts_raised.labels(
                label(alert.clinic_id), alert.rule, alert.severity.value
            ).inc()

    def know_clinics(self, clinics: Iterable[str]) -> None:
        """Clinics this process knows of (configured, or from the compliance log): each gets a
        `clinic` label of its own while there is room."""
        for clinic in clinics:
            self.clinics.admit(clinic)

    def dead_letter(self, topic: str, reason: str) -> None:
        """A message dead-lettered outside the engine (e.g. an exception while processing)."""
        self.dead_letters.labels(topic, reason).inc()

    def set_consumer_lag(self, topic: str, partition: int, lag: int) -> None:
        self.consumer_lag.labels(topic, str(partition)).set(max(0, lag))

    # -- sessions ---------------------------------------------------------------------------

    def observe_sessions(
        self,
        sessions: Iterable[Session],
        protocol_of: Callable[[Session], MonitoringProtocol],
        *,
        count_existing: bool = False,
    ) -> None:
        """Scan the engine's sessions (periodically, e.g. every 10 s, off the hot path).

        Sets sessions under monitoring per clinic, and counts each session once when it
        completes, as compliant or with its violated rules. The first scan of a process only
        remembers the sessions already complete (unless `count_existing`), so a restart does
        not count the whole history again. `engine.sessions.values()` and `engine.protocol_of`
        are the arguments for a `MonitoringEngine`.
        """
        monitoring: dict[str, int] = dict.fromkeys(self._monitored_clinics, 0)
        seeding = not self._seeded and not count_existing
        clinics = self.clinics
        clinics.engine_observed()
        for session in sessions:
            if session.opened:
                clinics.admit(session.clinic_id)
            clinic = clinics.label(session.clinic_id)
            monitoring.setdefault(clinic, 0)  # every labelled clinic shows, even at 0
            if session_state(session, protocol_of(session)) == "monitoring":
                monitoring[clinic] += 1
            elif session.session_id not in self._completed:
                self._completed.add(session.session_id)
                if not seeding:
                    self.session_completed(session.clinic_id, violated_rules(session))
        self._seeded = True
        for clinic, count in monitoring.items():
            self.sessions_monitored.labels(clinic).set(count)
        self._monitored_clinics = set(monitoring)

    def session_completed(self, clinic: str, rules: Iterable[str]) -> None:
        rules = set(rules)
        outcome = "violations" if rules else "compliant"
        label = self.clinics.label(clinic)
        self.sessions_completed.labels(label, outcome).inc()
        for rule in rules:
            self.session_violations.labels(label, rule).inc()

    def set_forms_overdue(self, by_clinic: Mapping[str, int]) -> None:
        for clinic, count in self._by_label(by_clinic).items():
            self.forms_overdue.labels(clinic).set(count)

    def _by_label(self, counts: Mapping[Any, int]) -> dict[Any, int]:
        """Counts by clinic (or by a tuple starting with the clinic) summed by label value."""
        label = self.clinics.alerting_label
        out: dict[Any, int] = {}
        for key, count in counts.items():
            key = (label(key[0]), *key[1:]) if isinstance(key, tuple) else label(key)
            out[key] = out.get(key, 0) + count
        return out

    # -- staff alerting ---------------------------------------------------------------------

    def alert_opened(self, clinic: str, severity: str) -> None:
        clinic = self.clinics.alerting_label(clinic)
        self.alerts_open.labels(clinic, severity).inc()
        self._open_keys.add((clinic, severity))
        # Export the clinic's acknowledgement and escalation series at 0 from its first alert,
        # so the first acknowledgement or escalation shows as an increase to rate().
        self.ack_seconds.labels(clinic, severity)
        self.escalations.labels(clinic, severity)

    def alert_acknowledged(
        self,
        clinic: str,
        severity: str,
        raised_at: datetime | float,
        acknowledged_at: datetime | float | None = None,
    ) -> None:
        clinic = self.clinics.alerting_label(clinic)
        raised = _ts(raised_at)
        acked = _ts(acknowledged_at)
        assert raised is not None
        seconds = (time.time() if acked is None else acked) - raised
        self.ack_seconds.labels(clinic, severity).observe(max(0.0, seconds))
        self.alerts_open.labels(clinic, severity).dec()

    def set_open_alerts(self, counts: Mapping[tuple[str, str], int]) -> None:
        """Set open alerts from a count by (clinic, severity), e.g. after a restart; a series
        shown before and missing from `counts` drops to 0."""
        labelled = self._by_label(counts)
        for (clinic, severity), count in {**dict.fromkeys(self._open_keys, 0), **labelled}.items():
            self.alerts_open.labels(clinic, severity).set(count)
        self._open_keys |= set(labelled)

    def set_open_past_escalation(self, counts: Mapping[tuple[str, str], int]) -> None:
        """Open alerts past their last escalation step, by (clinic, severity); the notifier sets
        it from its escalation timers (the `RemsguardCriticalAlertUnacknowledged` rule)."""
        for (clinic, severity), count in self._by_label(counts).items():
            self.alerts_past_escalation.labels(clinic, severity).set(count)

    def escalated(self, clinic: str, severity: str) -> None:
        self.escalations.labels(self.clinics.alerting_label(clinic), severity).inc()

    def pushed(self, clinic: str, kind: str) -> None:
        """One notification about an alert went out to staff (grouped ones count once)."""
        self.people_notified.labels(self.clinics.alerting_label(clinic), kind).inc()

    def notified(self, channel: str, outcome: str = "delivered") -> None:
        self.notifications.labels(channel, outcome).inc()

    # -- compliance log ---------------------------------------------------------------------

    def audit_batch(self, inserted: int, duplicates: int, seconds: float) -> None:
        """One audit-sink batch committed: rows written and found already stored, duration."""
        self.audit_rows.labels("inserted").inc(inserted)
        self.audit_rows.labels("duplicate").inc(duplicates)
        self.audit_batch_seconds.observe(seconds)
        self.audit_last_commit.set_to_current_time()

    # -- liveness ---------------------------------------------------------------------------

    def up(self, service: str, running: bool = True) -> None:
        self.worker_up.labels(service).set(1 if running else 0)


def _metric_names() -> frozenset[str]:
    """Every sample name the catalogue exports (with _total, _bucket, ... suffixes)."""
    from prometheus_client import CollectorRegistry as _Registry

    registry = _Registry()
    Telemetry(registry)
    names: set[str] = set()
    for family in registry.collect():
        if family.type == "counter":
            names.update({family.name + "_total", family.name + "_created"})
        elif family.type == "histogram":
            names.update(family.name + s for s in ("_bucket", "_count", "_sum", "_created"))
        else:
            names.add(family.name)
    return frozenset(names)


METRIC_NAMES: frozenset[str] = _metric_names()
"""Sample names a query may use (tests check dashboards and rules against it)."""
