"""A FHIR request (one resource, or a transaction/batch Bundle) through a door, answered the
FHIR way: an `OperationOutcome` for a resource, a `transaction-response`/`batch-response`
Bundle with one `response` per entry for a Bundle.

- **Translation** is pure (`translate`); the Encounters of a Bundle are read first, so the
  other entries find their session's clinic in them.
- **A batch** answers each entry on its own. **A transaction** is all or nothing for what can
  be decided before writing (the FHIR model, our mapping, the contract, the token's clinics,
  the event-time bounds): any of those fails and nothing is written (4xx with every issue).
  What only the journal can decide (a session of another clinic, the same id with other
  content) is answered per entry, like a batch: events are journaled one by one, never
  rolled back.
- **Idempotent**: event ids derive from the clinic, the resource type and the resource id (or
  a digest of its content), so a re-sent resource is a duplicate and changes nothing.
- The events of one request are handed to the door in event-time order (entry order among
  equal times), as a device would have sent them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Literal

import orjson

from remsguard.doors import Answer, EventDoor
from remsguard.fhir.context import BundleIndex, Reader, Source
from remsguard.fhir.encounters import session_id_of
from remsguard.fhir.outcome import Issue, error, information, operation_outcome, warning
from remsguard.fhir.translate import TAKEN, translate
from remsguard.fhir.translated import Translated
from remsguard.identity import Principal

__all__ = ["Reply", "post_bundle", "post_resource"]

BundleType = Literal["transaction", "batch"]
STATUS_TEXT: Final = {
    200: "200 OK",
    201: "201 Created",
    400: "400 Bad Request",
    403: "403 Forbidden",
    409: "409 Conflict",
    413: "413 Payload Too Large",
    422: "422 Unprocessable Entity",
}
_INLINE_ENTRIES: Final = 16  # more entries are translated off the event loop
# Which status a refused request answers with, when entries disagree: the first in this order.
_PRECEDENCE: Final = (400, 413, 403, 409, 422)
# Door rejection reason -> (HTTP status, FHIR issue type).
_REJECTION: Final[dict[str, tuple[int, str]]] = {
    "clinic_not_permitted": (403, "forbidden"),
    "session_of_another_clinic": (409, "conflict"),
    "conflicting_duplicate": (409, "conflict"),
    "occurred_in_future": (422, "business-rule"),
    "too_old": (422, "business-rule"),
}
_EVENT_KINDS: Final = {
    "session.opened": "the session opened",
    "session.discharged": "the discharge",
    "dose.administered": "the dose",
    "vitals.recorded": "the reading",
    "assessment.recorded": "the assessment",
}


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: dict[str, Any]


@dataclass(slots=True)
class _Entry:
    """One resource of the request and what became of it."""

    translated: Translated
    where: str  # the resource's FHIRPath in the request, for issues of its events
    request_issues: list[Issue] = field(default_factory=list)
    answers: list[Answer] = field(default_factory=list)
    taken: bool = True  # a type we map (others are answered 200 and not used)


async def post_resource(
    raw: Mapping[str, Any],
    resource_type: str,
    door: EventDoor,
    reader: Reader,
    principal: Principal,
    *,
    path_id: str | None = None,
) -> Reply:
    """`POST /{type}` (or `PUT /Encounter/{id}`): an OperationOutcome and the entry's status."""
    kind = raw.get("resourceType")
    if kind != resource_type:
        issue = error(
            "invalid", f"the body must be a {resource_type}, not {kind!r}", "resourceType"
        )
        return Reply(400, operation_outcome([issue]))
    if path_id is not None and raw.get("id") != path_id:
        issue = error(
            "invalid", f"the resource's id must be {path_id!r}, as in the URL", f"{kind}.id"
        )
        return Reply(400, operation_outcome([issue]))
    entry = _Entry(translate(raw, Source(), reader), resource_type)
    await _submit([entry], door, principal, "batch")
    status, issues = _answer(entry)
    return Reply(status, operation_outcome(issues))


async def post_bundle(
    raw: Mapping[str, Any], door: EventDoor, reader: Reader, principal: Principal, max_entries: int
) -> Reply:
    """A transaction or batch Bundle: its response Bundle, or one OperationOutcome refusing
    the whole request."""
    refused = _envelope(raw, max_entries)
    if refused is not None:
        return refused
    kind: BundleType = raw["type"]
    listed: list[Any] = raw.get("entry") or []
    index = BundleIndex.of(
        (e.get("fullUrl"), e["resource"])
        for e in listed
        if isinstance(e, dict)
        and isinstance(e.get("resource"), dict)
        and isinstance(e.get("fullUrl"), str)
    )
    if len(listed) > _INLINE_ENTRIES:  # the FHIR models' validation is CPU work
        done = await asyncio.to_thread(_entries, listed, index, reader)
    else:
        done = _entries(listed, index, reader)
    if kind == "transaction":
        failed = _refuse_transaction(done, door, principal)
        if failed is not None:
            return failed
    await _submit(done, door, principal, kind)
    return Reply(200, _response_bundle(kind, done))


def _entries(listed: Sequence[Any], index: BundleIndex, reader: Reader) -> list[_Entry]:
    """Each entry translated, Encounters first: the others find their session's clinic in
    them."""
    entries: list[_Entry | None] = [None] * len(listed)
    for first in (True, False):
        for n, item in enumerate(listed):
            resource = item.get("resource") if isinstance(item, dict) else None
            encounter = isinstance(resource, dict) and resource.get("resourceType") == "Encounter"
            if encounter is first:
                entry = entries[n] = _entry(item, n, index, reader)
                if first:
                    _note_clinic(entry, index)
    return [e for e in entries if e is not None]


def _envelope(raw: Mapping[str, Any], max_entries: int) -> Reply | None:
    if raw.get("resourceType") != "Bundle":
        issue = error("invalid", "the body must be a Bundle", "resourceType")
        return Reply(400, operation_outcome([issue]))
    if raw.get("type") not in ("transaction", "batch"):
        shown = raw.get("type")
        issue = error(
            "not-supported",
            f"Bundle.type {shown!r}: only transaction and batch are processed",
            "Bundle.type",
        )
        return Reply(422, operation_outcome([issue]))
    listed = raw.get("entry", [])
    if not isinstance(listed, list):
        return Reply(
            400, operation_outcome([error("structure", "entry must be a list", "Bundle.entry")])
        )
    if len(listed) > max_entries:
        issue = error(
            "too-costly",
            f"the Bundle has more than {max_entries} entries; send at "
            f"most {max_entries} per request",
            "Bundle.entry",
        )
        return Reply(413, operation_outcome([issue]))
    return None


def _entry(item: object, n: int, index: BundleIndex, reader: Reader) -> _Entry:
    where = f"Bundle.entry[{n}]"
    if not isinstance(item, dict) or not isinstance(item.get("resource"), dict):
        out = Translated("(none)", malformed=True)
        out.issues.append(error("required", "an entry needs a resource", f"{where}.resource"))
        return _Entry(out, where)
    resource: dict[str, Any] = item["resource"]
    full_url = item.get("fullUrl") if isinstance(item.get("fullUrl"), str) else None
    kind = resource.get("resourceType")
    request_issues = _request(item.get("request"), resource, full_url, where)
    if not isinstance(kind, str) or kind not in TAKEN:
        out = Translated(str(kind))
        if not request_issues:
            out.issues.append(
                information(
                    f"{kind}: not used by remsguard (it takes {', '.join(TAKEN)})",
                    f"{where}.resource",
                )
            )
        return _Entry(out, f"{where}.resource", request_issues, taken=False)
    source = Source(full_url, f"{where}.resource")
    return _Entry(translate(resource, source, reader, index), source.prefix, request_issues)


def _request(
    request: object, resource: Mapping[str, Any], full_url: str | None, where: str
) -> list[Issue]:
    """What is wrong with an entry's `request` (POST `Type`, or PUT `Encounter/id`)."""
    kind = resource.get("resourceType")
    if not isinstance(request, dict):
        return [
            error(
                "required", "an entry of a transaction or batch needs a request", f"{where}.request"
            )
        ]
    method, url = request.get("method"), request.get("url")
    if not isinstance(url, str):
        return [error("required", "request.url is required", f"{where}.request.url")]
    if method == "POST" and url.split("?", 1)[0] == kind:
        return []
    if method == "PUT" and kind == "Encounter":
        own = session_id_of(resource, Source(full_url))
        if url == f"Encounter/{own}":
            return []
        return [
            error(
                "invalid",
                f"PUT {url!r} must name the Encounter's id ({own!r})",
                f"{where}.request.url",
            )
        ]
    return [
        error(
            "not-supported",
            f"{method} {url} is not taken (POST {kind}, or PUT Encounter/id)",
            f"{where}.request",
        )
    ]


def _note_clinic(entry: _Entry, index: BundleIndex) -> None:
    for wire in entry.translated.events:
        index.encounter_clinics.setdefault(wire["session_id"], wire["clinic_id"])


def _refuse_transaction(
    entries: Sequence[_Entry], door: EventDoor, principal: Principal
) -> Reply | None:
    """All or nothing: the transaction's issues, or None when every event may be written."""
    issues: list[Issue] = []
    statuses: list[int] = []
    for entry in entries:
        errors = [i for i in entry.translated.issues if i.severity == "error"]
        if entry.request_issues or errors:
            issues += entry.request_issues + errors
            statuses.append(400 if entry.translated.malformed or entry.request_issues else 422)
    pending = [(entry, wire) for entry in entries for wire in entry.translated.events]
    checked = door.check([encode(wire) for _, wire in pending], principal)
    for (entry, wire), refusal in zip(pending, checked, strict=True):
        if refusal is None:
            continue
        status, issue = _rejected(refusal, entry, wire)
        if issue.severity == "error":
            statuses.append(status)
            issues.append(issue)
    if not issues:
        return None
    return Reply(min(statuses, key=_PRECEDENCE.index), operation_outcome(issues))


async def _submit(
    entries: Sequence[_Entry], door: EventDoor, principal: Principal, kind: BundleType
) -> None:
    """Hand every event of the entries without errors to the door, in event-time order, and
    give each entry its events' answers (in its own order)."""
    pending: list[tuple[datetime, int, _Entry, int]] = []
    for entry in entries:
        if entry.request_issues or entry.translated.failed:
            continue
        for n, wire in enumerate(entry.translated.events):
            at = datetime.fromisoformat(wire["occurred_at"])
            pending.append((at, len(pending), entry, n))
        entry.answers = [Answer("rejected")] * len(entry.translated.events)
    if not pending:
        return
    pending.sort(key=lambda item: (item[0], item[1]))
    raws = [encode(entry.translated.events[n]) for _, _, entry, n in pending]
    answers = await door.submit(raws, principal)
    for (_, _, entry, n), answer in zip(pending, answers, strict=True):
        entry.answers[n] = answer


def _answer(entry: _Entry) -> tuple[int, list[Issue]]:
    """An entry's status and issues, from its translation and its events' answers."""
    translated = entry.translated
    issues = list(entry.request_issues) + list(translated.issues)
    if entry.request_issues or translated.failed:
        return (400 if translated.malformed or entry.request_issues else 422), issues
    statuses: list[int] = []
    created = False
    for wire, answer in zip(translated.events, entry.answers, strict=True):
        if answer.outcome == "accepted":
            created = True
            issues.append(
                information(
                    f"{_EVENT_KINDS[wire['type']]} recorded as event {wire['event_id']}",
                    entry.where,
                )
            )
        elif answer.outcome == "duplicate":
            issues.append(
                information(
                    f"{_EVENT_KINDS[wire['type']]} was already received "
                    f"(event {wire['event_id']}): nothing changed",
                    entry.where,
                )
            )
        else:
            status, issue = _rejected(answer, entry, wire)
            issues.append(issue)
            if issue.severity == "error":
                statuses.append(status)
    if statuses:
        return min(statuses, key=_PRECEDENCE.index), issues
    return (201 if created else 200), issues


def _rejected(answer: Answer, entry: _Entry, wire: Mapping[str, Any]) -> tuple[int, Issue]:
    """A door's rejection of one event as a status and an issue on the entry's resource."""
    reason = answer.reason or "rejected"
    what = _EVENT_KINDS.get(str(wire.get("type")), "the event")
    detail = f"{what} was refused ({reason}): {answer.detail or reason}"
    if reason == "conflicting_duplicate" and entry.translated.amendment:
        text = f"{what} already judged under this id stays as first received; not replaced"
        return 200, warning("business-rule", text, entry.where)
    status, code = _REJECTION.get(reason, (422, "value"))
    return status, error(code, detail, entry.where)


def _response_bundle(kind: BundleType, entries: Sequence[_Entry]) -> dict[str, Any]:
    listed = []
    for entry in entries:
        status, issues = _answer(entry)
        response = {"status": STATUS_TEXT[status], "outcome": operation_outcome(issues)}
        listed.append({"response": response})
    return {"resourceType": "Bundle", "type": f"{kind}-response", "entry": listed}


def encode(wire: Mapping[str, Any]) -> bytes:
    return orjson.dumps(wire)
