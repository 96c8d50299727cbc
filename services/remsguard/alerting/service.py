"""`AlertingService`: alert lifecycle, escalation and delivery over the compliance log.

**Lifecycle.** `open` (raised) -> `acknowledged` (by a named staff member) -> `resolved`, stored
in the compliance log's alerts table (`AlertStore.acknowledge`/`resolve`, which
are conditional updates, so concurrent clicks cannot both win). Each transition is also an
audit record naming the staff member (`records.py`), chained by the log in the same
transaction as the change, so `audit verify` holds each alert row to its records.

**De-duplication.** A new alert is claimed by writing its `alert.notified` audit record (id
derived from the alert id) before anything is delivered; an alert whose record exists, or that
is no longer open, is not notified again, whatever the redelivery. A small in-memory set of
recent ids saves the database round trip for the common redelivery. Claim-then-deliver means a
crash between the two loses that one push (the console, which reads the stored alerts, still
shows it); it never notifies twice.

**Escalation.** There are no in-memory timers to lose. The steps of an open alert are due at
`recorded_at + step.after` (the policy of its clinic and severity); a step is done when its
`alert.escalated` record exists. `tick(now)` escalates what is due and not done, re-reading
the alert first (an acknowledgement made by another process counts). On start-up the watch
list is rebuilt from the stored open alerts and the existing step records, so a restart
neither repeats a step nor forgets one; alerts recorded more than `catchup` ago are not
notified late on start-up (their escalation steps still run). An alert still open after its
last step stays counted in `remsguard_alerts_open_past_escalation` (set on every tick, by
clinic and severity) until it is acknowledged or resolved, here or by another process (each
tick re-reads their status in one query).

**Clock.** Every time comes from `clock()` (or the `now` passed to `tick`), so tests drive it.

**Threads.** `on_alerts` may be called from any thread (embedded mode calls it from the
runtime's step); the work happens in the service's own task on the event loop, and database
calls run in worker threads.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import orjson
import structlog

from remsguard.adapters.storage import AlertQuery, AlertRow, AlertStatus, ComplianceLog
from remsguard.adapters.storage.models import utc
from remsguard.adapters.telemetry import Telemetry
from remsguard.alerting import records
from remsguard.alerting.channels import Channel, Notification, NotificationKind
from remsguard.alerting.grouping import NotificationGroups
from remsguard.alerting.policy import EscalationStep, Policies
from remsguard.alerting.sse import SseHub
from remsguard.alerting.webhook import DeadLetter
from remsguard.contract.outbound import alert_to_json
from remsguard.domain.decisions import Alert, AuditRecord, Withdrawal

__all__ = ["AlertNotFound", "AlertingService", "NotShelvable", "Transition", "alert_row_dict"]

log = structlog.get_logger(__name__)

RECENT_IDS: Final = 100_000
_PAGE: Final = 1000
OPEN_COUNT_SECONDS: Final = 15.0  # how often `tick` re-counts open alerts from the log
_PUSHED: Final = frozenset({"alert", "escalation", "unshelved"})  # the alarm burden


class AlertNotFound(LookupError):
    """No such alert, or not one of the caller's clinics."""


class NotShelvable(ValueError):
    """A critical alert, one already closed, or a shelf longer than allowed."""


@dataclass(frozen=True, slots=True)
class Transition:
    """The outcome of acknowledge/resolve: the stored row and whether this call changed it."""

    row: AlertRow
    changed: bool
    followers: list[AlertRow] = field(default_factory=list)  # the alerts it carries, changed too


@dataclass(slots=True)
class _Watch:
    alert_id: str
    clinic_id: str
    severity: str
    base: datetime  # recorded_at: when the alert reached the compliance log
    steps: tuple[EscalationStep, ...]
    next_step: int
    closed: bool = False  # acknowledged or resolved: no further steps

    def due_at(self) -> datetime | None:
        if self.next_step >= len(self.steps):
            return None
        return self.base + self.steps[self.next_step].after


def _iso(value: datetime | None) -> str | None:
    return None if value is None else utc(value).isoformat().replace("+00:00", "Z")


def alert_row_dict(row: AlertRow) -> dict[str, Any]:
    """A stored alert as the API shows it: the outbound alert fields plus its lifecycle."""
    return {
        "alert_id": row.alert_id,
        "rule": row.rule,
        "severity": row.severity,
        "session_id": row.session_id,
        "clinic_id": row.clinic_id,
        "triggered_at": _iso(row.triggered_at),
        "message": row.message,
        "evidence": orjson.loads(row.evidence),
        "protocol": row.protocol,
        "protocol_version": row.protocol_version,
        "inhibited_by": row.inhibited_by,
        "status": row.status,
        "acknowledged_by": row.acknowledged_by,
        "acknowledged_at": _iso(row.acknowledged_at),
        "resolved_by": row.resolved_by,
        "resolved_at": _iso(row.resolved_at),
        "shelved_until": _iso(row.shelved_until),
        "shelved_by": row.shelved_by,
        "shelve_reason": row.shelve_reason,
        "recorded_at": _iso(row.recorded_at),
    }


def _new_alert_dict(alert: Alert, recorded_at: datetime | None) -> dict[str, Any]:
    out: dict[str, Any] = orjson.loads(alert_to_json(alert))
    out.update(
        status=AlertStatus.OPEN.value,
        acknowledged_by=None,
        acknowledged_at=None,
        resolved_by=None,
        resolved_at=None,
        shelved_until=None,
        shelved_by=None,
        shelve_reason=None,
        recorded_at=_iso(recorded_at),
    )
    return out


def _withdrawn_dict(withdrawal: Withdrawal) -> dict[str, Any]:
    """A withdrawn alert the log has not stored (the alerts topic ran ahead of the sink)."""
    return {
        "alert_id": withdrawal.alert_id,
        "rule": withdrawal.rule,
        "session_id": withdrawal.session_id,
        "clinic_id": withdrawal.clinic_id,
        "status": AlertStatus.WITHDRAWN.value,
    }


class AlertingService:
    def __init__(
        self,
        log_: ComplianceLog,
        policies: Policies | None = None,
        channels: Sequence[Channel] = (),
        *,
        hub: SseHub | None = None,
        telemetry: Telemetry | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        tick_interval: float = 1.0,
        catchup: timedelta = timedelta(hours=1),
        on_published: Callable[[Alert, float], None] | None = None,
        max_shelf: timedelta = timedelta(minutes=60),
        group_window: timedelta = timedelta(0),
    ) -> None:
        self.log = log_
        self.policies = policies or Policies()
        self.hub = hub if hub is not None else SseHub()
        self.channels: list[Channel] = [self.hub, *[c for c in channels if c is not self.hub]]
        self.telemetry = telemetry
        self.clock = clock
        self.tick_interval = tick_interval
        self.catchup = catchup
        self.on_published = on_published  # benchmarks: (alert, unix time it was published)
        self.max_shelf = max_shelf
        self.groups = NotificationGroups(group_window)  # a patient's alerts, one message
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._watch: dict[str, _Watch] = {}
        # Open alerts past their last escalation step: alert id -> (clinic, severity).
        self._exhausted: dict[str, tuple[str, str]] = {}
        self._past_keys: set[tuple[str, str]] = set()  # series the gauge has shown
        self._counted_at = time.monotonic()  # open alerts last counted from the log
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[list[Alert | Withdrawal] | None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._deliveries: set[asyncio.Task[bool]] = set()
        self._lock = asyncio.Lock()

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Rebuild the escalation watch list from the log, then run the service's task."""
        self._loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue()
        await self.restore()
        self._task = asyncio.create_task(self._run(), name="remsguard-alerting")
        if self.telemetry is not None:
            self.telemetry.up("notifier", True)

    async def stop(self) -> None:
        if self._task is not None and self._queue is not None:
            self._queue.put_nowait(None)
            try:
                await asyncio.wait_for(self._task, timeout=10)
            except TimeoutError:
                self._task.cancel()
            self._task = None
        if self._deliveries:
            _, pending = await asyncio.wait(set(self._deliveries), timeout=5)
            for task in pending:
                task.cancel()
        for channel in self.channels:
            await channel.aclose()
        if self.telemetry is not None:
            self.telemetry.up("notifier", False)

    def on_alerts(self, alerts: Iterable[Alert]) -> None:
        """New alerts from the engine (embedded ingest) or the alerts topic; returns at once.

        Thread-safe; a no-op before `start`. Delivery happens on the service's task."""
        self._enqueue(list(alerts))

    def on_withdrawals(self, withdrawals: Iterable[Withdrawal]) -> None:
        """Alerts the engine took back (embedded mode, once their records are in the log);
        thread-safe, returns at once; handled on the service's task after the alerts queued
        before them (`withdraw`)."""
        self._enqueue(list(withdrawals))

    def _enqueue(self, batch: list[Alert | Withdrawal]) -> None:
        if not batch or self._loop is None or self._queue is None or self._loop.is_closed():
            return
        queue = self._queue
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            queue.put_nowait(batch)
        else:
            self._loop.call_soon_threadsafe(queue.put_nowait, batch)

    async def _run(self) -> None:
        assert self._queue is not None
        queue = self._queue
        next_tick = time.monotonic()
        while True:
            timeout = max(0.0, next_tick - time.monotonic())
            batch: list[Alert | Withdrawal] = []
            stop = False
            try:
                first = await asyncio.wait_for(queue.get(), timeout=timeout)
            except TimeoutError:
                first = []
            if first is None:
                stop = True
            else:
                batch.extend(first)
            while not queue.empty():
                more = queue.get_nowait()
                if more is None:
                    stop = True
                else:
                    batch.extend(more)
            try:
                if alerts := [a for a in batch if isinstance(a, Alert)]:
                    await self.process(alerts)
                if withdrawals := [w for w in batch if isinstance(w, Withdrawal)]:
                    await self.withdraw(withdrawals)
                if time.monotonic() >= next_tick:
                    next_tick = time.monotonic() + self.tick_interval
                    await self.tick()
            except Exception:
                log.exception("alerting.step_failed", alerts=len(batch))
            if stop:
                return

    # -- new alerts --------------------------------------------------------------------------

    def _seen(self, alert_id: str) -> bool:
        if alert_id in self._recent:
            self._recent.move_to_end(alert_id)
            return True
        return False

    def _fresh(self, alerts: Iterable[Alert]) -> dict[str, Alert]:
        """The alerts of a batch not seen recently, once each, by id."""
        fresh: dict[str, Alert] = {}
        for alert in alerts:
            if not self._seen(alert.alert_id) and alert.alert_id not in fresh:
                fresh[alert.alert_id] = alert
        return fresh

    def _remember(self, alert_id: str) -> None:
        self._recent[alert_id] = None
        if len(self._recent) > RECENT_IDS:
            self._recent.popitem(last=False)

    async def process(self, alerts: Sequence[Alert], *, save: bool = False) -> list[Alert]:
        """Notify the alerts not notified before; returns them. `save`: store them first
        (the Kafka notifier; embedded mode's runtime has stored them already)."""
        fresh = self._fresh(alerts)
        if not fresh:
            return []
        now = self.clock()
        # An inhibited alert rides on its inhibitor's notification and card: it is stored and
        # shown to the consoles (which list it as "also: RULE"), never pushed or escalated.
        carriers = [a for a in fresh.values() if a.inhibited_by is None]
        inhibited = [a for a in fresh.values() if a.inhibited_by is not None]
        async with self._lock:
            if inhibited and save:
                await asyncio.to_thread(self.log.save_alerts, inhibited)
            claimed = await asyncio.to_thread(self._claim, carriers, now, save)
        for alert in fresh.values():
            self._remember(alert.alert_id)
        for alert in inhibited:
            note = Notification("alert", _new_alert_dict(alert, None), now)
            self.hub.publish("alert", note.payload(), note.clinic_id, note.notification_id)
        published = time.time()
        for alert, row in claimed:
            recorded = None if row is None else utc(row.recorded_at)
            body = _new_alert_dict(alert, recorded)
            self._notify(Notification("alert", body, now))
            if self.on_published is not None:
                self.on_published(alert, published)
            if self.telemetry is not None:
                self.telemetry.alert_opened(alert.clinic_id, alert.severity.value)
            steps = self.policies.steps(alert.clinic_id, alert.severity.value)
            if steps:
                self._watch[alert.alert_id] = _Watch(
                    alert.alert_id,
                    alert.clinic_id,
                    alert.severity.value,
                    recorded or utc(now),
                    steps,
                    0,
                )
        return [alert for alert, _ in claimed]

    async def relay(self, alerts: Sequence[Alert]) -> int:
        """Show new alerts on this process's SSE hub only; returns how many were shown.

        For a process that serves consoles but does not notify (`remsguard api` follows the
        alerts topic, the notifier notifies and escalates): the alerts are stored first (an
        idempotent insert, so a console can acknowledge one before the notifier has stored
        it), then each one still open is published to the hub, once. Nothing is claimed,
        delivered elsewhere or watched for escalation."""
        fresh = self._fresh(alerts)
        if not fresh:
            return 0
        now = self.clock()
        statuses = await asyncio.to_thread(self._store, list(fresh.values()))
        shown = 0
        for alert_id, alert in fresh.items():
            self._remember(alert_id)
            if statuses.get(alert_id) != AlertStatus.OPEN.value:
                continue  # acknowledged or resolved already: a redelivery
            note = Notification("alert", _new_alert_dict(alert, None), now)
            self.hub.publish("alert", note.payload(), note.clinic_id, note.notification_id)
            shown += 1
        return shown

    async def withdraw(self, withdrawals: Sequence[Withdrawal]) -> int:
        """The engine took these alerts back: stop their escalation, never notify them from
        now on, and tell the channels (consoles always; the other channels only about alerts
        they were notified of). Returns how many were told. The compliance log closes the
        rows from the `alert.withdrawn` records, not from here."""
        fresh = {w.alert_id: w for w in withdrawals}
        if not fresh:
            return 0
        now = self.clock()
        for alert_id in fresh:
            self._remember(alert_id)  # an alert redelivered after this is not notified
            self._watch.pop(alert_id, None)
            self._exhausted.pop(alert_id, None)
        self._set_past_escalation()
        never_sent = self.groups.drop(set(fresh))  # waiting in a patient's group: not sent
        told = await asyncio.to_thread(self._withdrawn, list(fresh.values()))
        for withdrawal, body, notified in told:
            notified = notified and withdrawal.alert_id not in never_sent
            note = Notification(
                "withdrawn",
                body,
                now,
                extra={
                    "reason": withdrawal.reason.value,
                    "detail": withdrawal.detail,
                    "evidence": list(withdrawal.evidence),
                },
            )
            if notified:
                self._notify(note)
            else:  # never pushed anywhere: only the consoles, which may show it, drop it
                self.hub.publish("alert", note.payload(), note.clinic_id, note.notification_id)
        await self._recount_open(force=True)
        return len(told)

    def _withdrawn(
        self, withdrawals: list[Withdrawal]
    ) -> list[tuple[Withdrawal, dict[str, Any], bool]]:
        """In a worker thread: each withdrawal with the alert as the API shows it (status
        `withdrawn`, whether or not the log has closed the row yet) and whether it was
        notified (its `alert.notified` record exists)."""
        out: list[tuple[Withdrawal, dict[str, Any], bool]] = []
        for withdrawal in withdrawals:
            row = self.log.get_alert(withdrawal.alert_id)
            if row is not None and row.status == AlertStatus.RESOLVED.value:
                continue  # staff closed it first: nothing to take back
            body = alert_row_dict(row) if row is not None else _withdrawn_dict(withdrawal)
            body["status"] = AlertStatus.WITHDRAWN.value
            notified = records.KINDS_AVAILABLE and (
                self.log.get_record(records.record_id(records.NOTIFIED, withdrawal.alert_id))
                is not None
            )
            out.append((withdrawal, body, notified))
        return out

    def _store(self, alerts: list[Alert]) -> dict[str, str]:
        self.log.save_alerts(alerts)
        return self.log.alert_statuses([a.alert_id for a in alerts])

    def _claim(
        self, alerts: list[Alert], now: datetime, save: bool
    ) -> list[tuple[Alert, AlertRow | None]]:
        """In a worker thread: store (if asked), then claim each still-open alert not yet
        notified by writing its `alert.notified` record. Returns the claimed ones. Two
        reads for the whole batch (its rows, its claims already written), not two an alert."""
        if save:
            self.log.save_alerts(alerts)
        rows = self.log.alert_store.rows([a.alert_id for a in alerts])
        wanted: list[tuple[Alert, AlertRow | None, AuditRecord | None]] = []
        for alert in alerts:
            row = rows.get(alert.alert_id)
            if row is None or row.status == AlertStatus.OPEN.value:
                wanted.append((alert, row, self._notified_record(alert, now)))
        claimed_before = self.log.audit.stored_ids([r.record_id for *_, r in wanted if r])
        out: list[tuple[Alert, AlertRow | None]] = []
        claims: list[AuditRecord] = []
        for alert, row, rec in wanted:
            if rec is not None:
                if rec.record_id in claimed_before:
                    continue
                claims.append(rec)
            out.append((alert, row))
        if claims:
            self.log.append_audit(claims)
        return out

    def _notified_record(self, alert: Alert, now: datetime) -> AuditRecord | None:
        return records.record(
            records.NOTIFIED,
            id_parts=(alert.alert_id,),
            subject_id=alert.alert_id,
            session_id=alert.session_id,
            clinic_id=alert.clinic_id,
            occurred_at=now,
            detail={
                "rule": alert.rule,
                "alert_severity": alert.severity.value,
                "channels": [c.name for c in self.channels],
            },
        )

    # -- delivery ----------------------------------------------------------------------------

    def _notify(self, notification: Notification) -> None:
        """Consoles (the SSE hub) hear everything at once; the channels that interrupt
        people get a new alert's notification through its patient's group (`grouping.py`)."""
        external = [c for c in self.channels if not isinstance(c, SseHub)]
        for channel in self.channels:
            if isinstance(channel, SseHub):  # in-process: deliver now, in order
                channel.publish(
                    "alert",
                    notification.payload(),
                    notification.clinic_id,
                    notification.notification_id,
                )
                if self.telemetry is not None:
                    self.telemetry.notified("sse")
                    if not external and notification.kind in _PUSHED:
                        self.telemetry.pushed(notification.clinic_id, notification.kind)
        if not external:
            return
        if notification.kind == "alert":
            self._send(self.groups.offer(notification, utc(self.clock())))
        else:
            self._send([notification])

    def _send(self, messages: list[Notification]) -> None:
        """To every channel but the consoles."""
        for message in messages:
            if self.telemetry is not None and message.kind in _PUSHED:
                self.telemetry.pushed(message.clinic_id, message.kind)
            for channel in self.channels:
                if isinstance(channel, SseHub):
                    continue
                task = asyncio.get_running_loop().create_task(channel.deliver(message))
                self._deliveries.add(task)
                task.add_done_callback(self._deliveries.discard)

    async def dead_letter(self, letter: DeadLetter) -> None:
        """Record a notification that could not be delivered (the webhook's last attempt)."""
        note = letter.notification
        rec = records.record(
            records.DEAD_LETTERED,
            id_parts=(note.notification_id, letter.channel),
            subject_id=note.notification_id,
            session_id=note.alert.get("session_id"),
            clinic_id=note.clinic_id,
            occurred_at=self.clock(),
            detail={
                "alert_id": note.alert_id,
                "notification_kind": note.kind,
                "target": note.target,
                "step": note.step,
                "channel": letter.channel,
                "url": letter.url,
                "attempts": letter.attempts,
                "error": letter.error,
            },
        )
        if rec is not None:
            await asyncio.to_thread(self.log.append_audit, [rec])
        if self.telemetry is not None:
            self.telemetry.notified(letter.channel, "dead_letter")

    async def drain(self, timeout: float = 30.0) -> None:
        """Wait for background deliveries (tests, benchmarks, shutdown)."""
        if self._deliveries:
            await asyncio.wait(set(self._deliveries), timeout=timeout)

    # -- escalation --------------------------------------------------------------------------

    async def restore(self) -> int:
        """Rebuild the watch list from the stored open alerts and their step records."""
        now = self.clock()
        watch, exhausted, unnotified = await asyncio.to_thread(self._load_open, now)
        self._watch = watch
        self._exhausted = exhausted
        self._set_past_escalation()
        if self.telemetry is not None:
            counts: dict[tuple[str, str], int] = {}
            for row in unnotified[1]:
                key = (row.clinic_id, row.severity)
                counts[key] = counts.get(key, 0) + 1
            self.telemetry.set_open_alerts(counts)
        if unnotified[0]:
            log.info("alerting.catchup", alerts=len(unnotified[0]))
            await self.process(unnotified[0])
        return len(watch)

    def _load_open(
        self, now: datetime
    ) -> tuple[dict[str, _Watch], dict[str, tuple[str, str]], tuple[list[Alert], list[AlertRow]]]:
        watch: dict[str, _Watch] = {}
        exhausted: dict[str, tuple[str, str]] = {}
        late: list[Alert] = []
        rows: list[AlertRow] = []
        cursor: str | None = None
        while True:
            page = self.log.alerts(
                AlertQuery(status=AlertStatus.OPEN.value, cursor=cursor, limit=_PAGE)
            )
            rows.extend(page.items)
            cursor = page.next_cursor
            if cursor is None:
                break
        horizon = utc(now) - self.catchup
        for row in rows:
            recorded = utc(row.recorded_at)
            if recorded >= horizon and records.KINDS_AVAILABLE:
                notified = records.record_id(records.NOTIFIED, row.alert_id)
                if self.log.get_record(notified) is None:
                    late.append(row.to_alert())
            steps = self.policies.steps(row.clinic_id, row.severity)
            if not steps:
                continue
            done = 0
            if records.KINDS_AVAILABLE:
                for index in range(len(steps)):
                    rid = records.record_id(records.ESCALATED, row.alert_id, str(index))
                    if self.log.get_record(rid) is None:
                        break
                    done = index + 1
            if done < len(steps):
                watch[row.alert_id] = _Watch(
                    row.alert_id, row.clinic_id, row.severity, recorded, steps, done
                )
            else:
                exhausted[row.alert_id] = (row.clinic_id, row.severity)
        return watch, exhausted, (late, rows)

    def pending(self) -> list[tuple[str, int, datetime]]:
        """(alert id, next step index, due at) of every escalation still to come."""
        out = []
        for w in self._watch.values():
            due = w.due_at()
            if due is not None:
                out.append((w.alert_id, w.next_step, due))
        return sorted(out, key=lambda item: item[2])

    async def tick(self, now: datetime | None = None) -> int:
        """Escalate every step due at `now` (default: the clock); returns steps taken."""
        now = utc(now or self.clock())
        due = [w for w in self._watch.values() if (at := w.due_at()) is not None and at <= now]
        taken = await self._escalate_due(due, now) if due else 0
        self._send(self.groups.due(now))
        await self._unshelve_due(now)
        await self._recheck_exhausted()
        await self._recount_open()
        return taken

    async def _recount_open(self, *, force: bool = False) -> None:
        """The open-alerts gauge from the log now and then: another process (the API's
        console) may have acknowledged or resolved alerts this one counted as open."""
        if self.telemetry is None:
            return
        if not force and time.monotonic() - self._counted_at < OPEN_COUNT_SECONDS:
            return
        self._counted_at = time.monotonic()
        self.telemetry.set_open_alerts(await asyncio.to_thread(self.log.open_alert_counts))

    async def _escalate_due(self, due: list[_Watch], now: datetime) -> int:
        taken = 0
        async with self._lock:
            results = await asyncio.to_thread(self._escalate, due, now)
        for watch, row, step_index in results:
            if row is None:
                continue
            step = watch.steps[step_index]
            self._notify(
                Notification(
                    "escalation",
                    alert_row_dict(row),
                    now,
                    target=step.target,
                    step=step_index,
                    extra={"after_seconds": step.after.total_seconds()},
                )
            )
            taken += 1
            if self.telemetry is not None:
                self.telemetry.escalated(watch.clinic_id, watch.severity)
        for watch in due:
            if watch.due_at() is None:
                self._watch.pop(watch.alert_id, None)
                if not watch.closed:  # still open after its last step
                    self._exhausted[watch.alert_id] = (watch.clinic_id, watch.severity)
        return taken

    async def _recheck_exhausted(self) -> None:
        """Drop alerts acknowledged or resolved meanwhile (by any process), then set the gauge."""
        if self._exhausted:
            ids = list(self._exhausted)
            statuses = await asyncio.to_thread(self.log.alert_statuses, ids)
            for alert_id in ids:
                if statuses.get(alert_id) != AlertStatus.OPEN.value:
                    self._exhausted.pop(alert_id, None)
        self._set_past_escalation()

    def _set_past_escalation(self) -> None:
        if self.telemetry is None:
            return
        counts: dict[tuple[str, str], int] = dict.fromkeys(self._past_keys, 0)
        for key in self._exhausted.values():
            counts[key] = counts.get(key, 0) + 1
        self._past_keys = set(counts)
        self.telemetry.set_open_past_escalation(counts)

    def _escalate(
        self, due: list[_Watch], now: datetime
    ) -> list[tuple[_Watch, AlertRow | None, int]]:
        out: list[tuple[_Watch, AlertRow | None, int]] = []
        for watch in due:
            row = self.log.get_alert(watch.alert_id)
            if row is None or row.status != AlertStatus.OPEN.value:
                watch.next_step = len(watch.steps)  # acknowledged elsewhere: stop watching
                watch.closed = True
                continue
            while (at := watch.due_at()) is not None and at <= now:
                index = watch.next_step
                step = watch.steps[index]
                rec = records.record(
                    records.ESCALATED,
                    id_parts=(watch.alert_id, str(index)),
                    subject_id=watch.alert_id,
                    session_id=row.session_id,
                    clinic_id=row.clinic_id,
                    occurred_at=now,
                    detail={
                        "step": index,
                        "target": step.target,
                        "after_seconds": step.after.total_seconds(),
                        "due_at": _iso(at),
                        "rule": row.rule,
                        "alert_severity": row.severity,
                    },
                )
                inserted = 1
                if rec is not None:
                    inserted = self.log.append_audit([rec]).inserted
                watch.next_step += 1
                out.append((watch, row if inserted else None, index))
        return out

    # -- shelving ----------------------------------------------------------------------------

    async def shelve(
        self,
        alert_id: str,
        by: str,
        by_name: str,
        minutes: int,
        reason: str,
        clinics: frozenset[str] | None = None,
    ) -> Transition:
        """Put a warning aside for `minutes` (at most `max_shelf`) with a reason: it leaves
        the open list and its escalation, and is notified again when the shelf expires.
        Critical alerts cannot be shelved (IEC 60601-1-8 lets only lower priorities pause)."""
        if not 0 < minutes <= self.max_shelf.total_seconds() / 60:
            raise NotShelvable(f"a shelf is 1 to {self.max_shelf} minutes")
        now = utc(self.clock())
        until = now + timedelta(minutes=minutes)
        row = await asyncio.to_thread(self.log.get_alert, alert_id)
        if row is None or (clinics is not None and row.clinic_id not in clinics):
            raise AlertNotFound(alert_id)
        if row.severity == "critical":
            raise NotShelvable("critical alerts cannot be shelved")
        if row.status == AlertStatus.SHELVED.value:
            return Transition(row, False)
        if row.status not in (AlertStatus.OPEN.value, AlertStatus.ACKNOWLEDGED.value):
            raise NotShelvable(f"the alert is {row.status}")
        after = await asyncio.to_thread(self.log.shelve_alert, alert_id, by, until, reason, now)
        assert after is not None
        changed = after.status == AlertStatus.SHELVED.value and after.shelved_by == by
        if changed:
            self._watch.pop(alert_id, None)
            extra = {"until": _iso(until), "reason": reason}
            note = Notification("shelved", alert_row_dict(after), now, by=by, by_name=by_name)
            self._notify(replace(note, extra=extra))
        return Transition(after, changed)

    async def _unshelve_due(self, now: datetime) -> None:
        """Shelves that expired: the alerts are notified again and escalate from the steps
        they had not reached. Only the shelves this process's timer ended (two notifiers
        finding one due: one notifies); other processes' consoles read the change from the
        log (the stream's snapshot)."""
        rows = await asyncio.to_thread(self.log.unshelve_due, now)
        for row in rows:
            self._notify(Notification("unshelved", alert_row_dict(row), now))
            if row.status == AlertStatus.OPEN.value:
                steps = self.policies.steps(row.clinic_id, row.severity)
                if steps:
                    self._watch[row.alert_id] = _Watch(
                        row.alert_id, row.clinic_id, row.severity, utc(now), steps, 0
                    )

    # -- staff actions -----------------------------------------------------------------------

    async def acknowledge(
        self, alert_id: str, by: str, by_name: str, clinics: frozenset[str] | None = None
    ) -> Transition:
        return await self._transition("acknowledged", alert_id, by, by_name, clinics)

    async def resolve(
        self, alert_id: str, by: str, by_name: str, clinics: frozenset[str] | None = None
    ) -> Transition:
        return await self._transition("resolved", alert_id, by, by_name, clinics)

    async def _transition(
        self,
        kind: NotificationKind,
        alert_id: str,
        by: str,
        by_name: str,
        clinics: frozenset[str] | None,
    ) -> Transition:
        now = utc(self.clock())
        result = await asyncio.to_thread(
            self._transition_now, kind, alert_id, by, by_name, clinics, now
        )
        if result.changed:
            row = result.row
            self._watch.pop(alert_id, None)
            if self._exhausted.pop(alert_id, None) is not None:
                self._set_past_escalation()
            if self.telemetry is not None:
                if kind == "acknowledged":
                    self.telemetry.alert_acknowledged(
                        row.clinic_id, row.severity, utc(row.recorded_at), now
                    )
                elif row.acknowledged_at is None:  # resolved straight from open
                    self.telemetry.alerts_open.labels(row.clinic_id, row.severity).dec()
            self._notify(Notification(kind, alert_row_dict(row), now, by=by, by_name=by_name))
            for follower in result.followers:  # the card acted for the alerts it carries
                note = Notification(kind, alert_row_dict(follower), now, by=by, by_name=by_name)
                self.hub.publish("alert", note.payload(), note.clinic_id, note.notification_id)
        return result

    def _transition_now(
        self,
        kind: NotificationKind,
        alert_id: str,
        by: str,
        by_name: str,
        clinics: frozenset[str] | None,
        now: datetime,
    ) -> Transition:
        before = self.log.get_alert(alert_id)
        if before is None or (clinics is not None and before.clinic_id not in clinics):
            raise AlertNotFound(alert_id)
        # The log chains the change (`by`, the time) with this detail, in one transaction.
        detail = {
            "by_name": by_name,
            "rule": before.rule,
            "alert_severity": before.severity,
            "seconds_since_raised": round((now - utc(before.recorded_at)).total_seconds(), 3),
        }
        after = self._step(kind, alert_id, by, now, detail)
        if kind == "acknowledged":
            changed = (
                after is not None
                and before.status == AlertStatus.OPEN.value
                and after.acknowledged_by == by
                and after.acknowledged_at is not None
                and utc(after.acknowledged_at) == now
            )
        else:
            changed = (
                after is not None
                and before.status != AlertStatus.RESOLVED.value
                and after.resolved_by == by
                and after.resolved_at is not None
                and utc(after.resolved_at) == now
            )
        assert after is not None
        followers = self._follow(kind, after, by, now, detail) if changed else []
        return Transition(after, changed, followers)

    def _follow(
        self,
        kind: NotificationKind,
        carrier: AlertRow,
        by: str,
        now: datetime,
        detail: dict[str, object],
    ) -> list[AlertRow]:
        """The alerts `carrier` inhibits take the same step (each with its own chained
        record, naming the carrier): one card, one click."""
        out: list[AlertRow] = []
        for row in self.log.inhibited_alerts(carrier.alert_id):
            step = {**detail, "rule": row.rule, "alert_severity": row.severity}
            step["with"] = carrier.alert_id
            after = self._step(kind, row.alert_id, by, now, step)
            if after is not None and after.status == carrier.status:
                out.append(after)
        return out

    def _step(
        self,
        kind: NotificationKind,
        alert_id: str,
        by: str,
        now: datetime,
        detail: dict[str, object],
    ) -> AlertRow | None:
        """The staff step `kind` (acknowledged, else resolved) on one alert, in the log."""
        alerts = self.log.alert_store
        if kind == "acknowledged":
            return alerts.acknowledge(alert_id, by, now, detail=detail)
        return alerts.resolve(alert_id, by, now, detail=detail)
