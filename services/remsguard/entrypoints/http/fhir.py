"""FHIR R4 ingest: `/fhir/r4/...`, `application/fhir+json`, answered the FHIR way.

- `POST /fhir/r4` and `POST /fhir/r4/Bundle`: a transaction or batch Bundle (per-entry
  answers in the response Bundle); `POST /fhir/r4/Observation`, `/MedicationAdministration`,
  `/Encounter` and `PUT /fhir/r4/Encounter/{id}`: one resource, answered with an
  OperationOutcome (201 when something new was recorded, 200 when nothing changed).
- Every write needs a device or admin token; the events it gives meet the rules of
  `POST /v1/events` (contract, times, the token's clinics, tenancy, duplicates). Embedded
  mode journals them (2xx: durable on disk); `remsguard api` publishes them to Kafka (2xx:
  acknowledged by the broker).
- `GET /fhir/r4/metadata` (the CapabilityStatement) is open, as FHIR clients expect: it says
  what the server takes, nothing about any clinic.
- Errors are OperationOutcomes too: 400 (not JSON, not the resource, the FHIR model refuses
  it), 401/403 (token), 404 (no ingest here), 413 (bytes, entries), 415 (media type), 422
  (our rules: a date without a time, an unknown unit, ...), 503 (not taking events now).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Final

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from remsguard.doors import DoorUnavailable, EventDoor
from remsguard.entrypoints.http.auth import UNAUTHENTICATED, current_principal
from remsguard.entrypoints.http.bodies import bounded_body, decoded
from remsguard.entrypoints.http.capabilities import ServedProcess
from remsguard.entrypoints.http.errors import ApiError
from remsguard.fhir.capability import capability_statement
from remsguard.fhir.context import Reader
from remsguard.fhir.ingest import Reply, post_bundle, post_resource
from remsguard.fhir.outcome import error, operation_outcome
from remsguard.fhir.setup import FhirConfigError, tables_of
from remsguard.identity import Principal, Role

__all__ = ["router"]

FHIR_JSON: Final = "application/fhir+json"
_ACCEPTED_TYPES: Final = frozenset({FHIR_JSON, "application/json", "application/json+fhir"})
_OFFLOAD_BYTES: Final = 64 * 1024  # read bigger requests off the event loop
_WRITERS: Final = frozenset({Role.DEVICE, Role.ADMIN})

router = APIRouter(prefix="/fhir/r4", tags=["fhir"], default_response_class=Response)

_OUTCOMES: Final = {
    200: "Nothing new recorded (ignored, or already received); an OperationOutcome.",
    201: "Recorded (durable); an OperationOutcome naming the events.",
    400: "Not JSON, not the resource, or refused by the FHIR model.",
    401: UNAUTHENTICATED,
    403: "The token may not post (role, or the clinic).",
    404: "This service does not ingest.",
    409: "A session of another clinic, or the same id with other content.",
    413: "Too many bytes or entries.",
    415: "Not application/fhir+json.",
    422: "Breaks a rule of ours (a date without a time, a unit, a bound).",
    503: "Not taking events now; retry.",
}
_FHIR_CONTENT: Final = {FHIR_JSON: {"schema": {"type": "object"}}}
_RESPONSES: Final[dict[int | str, dict[str, Any]]] = {
    status: {"description": text, "content": _FHIR_CONTENT} for status, text in _OUTCOMES.items()
}


def _body_schema(resource_type: str) -> dict[str, Any]:
    """The OpenAPI request body: a FHIR resource of `resource_type` (the FHIR model library
    validates it; this says enough for clients and generated tests)."""
    properties: dict[str, Any] = {"resourceType": {"type": "string", "enum": [resource_type]}}
    if resource_type == "Bundle":
        properties["type"] = {"type": "string", "enum": ["transaction", "batch"]}
        properties["entry"] = {"type": "array", "items": {"type": "object"}}
    else:
        properties["id"] = {"type": "string"}
        properties["status"] = {"type": "string"}
    schema = {"type": "object", "required": ["resourceType"], "properties": properties}
    return {"requestBody": {"required": True, "content": {FHIR_JSON: {"schema": schema}}}}


def _fhir(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status, headers=headers, media_type=FHIR_JSON)


def _problem(status: int, code: str, text: str, headers: dict[str, str] | None = None) -> Response:
    return _fhir(status, operation_outcome([error(code, text)]), headers)


class _Refusal(Exception):
    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


@router.get(
    "/metadata",
    summary="The CapabilityStatement (open)",
    responses={200: {"description": "What is accepted", "content": _FHIR_CONTENT}},
)
async def metadata(request: Request) -> Response:
    settings = request.app.state.container.settings
    return _fhir(200, capability_statement(settings.fhir_max_entries, settings.fhir_max_body_bytes))


def _post(resource_type: str, path_id: bool = False) -> Callable[..., Awaitable[Response]]:
    """The route for one resource type (a Bundle: a transaction or batch)."""
    if path_id:

        async def put_resource(request: Request, encounter_id: str) -> Response:
            return await _handle(request, resource_type, encounter_id)

        return put_resource

    async def post_resource(request: Request) -> Response:
        return await _handle(request, resource_type)

    return post_resource


# (path, method, resource type, summary, route name: the OpenAPI operation id's stem)
_ROUTES: Final = (
    ("", "POST", "Bundle", "A transaction or batch Bundle", "post_base"),
    ("/Bundle", "POST", "Bundle", "A transaction or batch Bundle", "post_bundle_route"),
    ("/Observation", "POST", "Observation", "One Observation", "post_observation"),
    (
        "/MedicationAdministration",
        "POST",
        "MedicationAdministration",
        "One MedicationAdministration",
        "post_medication_administration",
    ),
    ("/Encounter", "POST", "Encounter", "One Encounter", "post_encounter"),
    (
        "/Encounter/{encounter_id}",
        "PUT",
        "Encounter",
        "An Encounter's status change",
        "put_encounter",
    ),
)
for _path, _method, _type, _summary, _name in _ROUTES:
    router.add_api_route(
        _path,
        _post(_type, path_id="{" in _path),
        methods=[_method],
        name=_name,
        summary=_summary,
        responses=_RESPONSES,
        openapi_extra=_body_schema(_type),
    )
    if _path == "":
        router.add_api_route(
            "/", _post(_type), methods=["POST"], name=_name, include_in_schema=False
        )


async def _handle(request: Request, resource_type: str, path_id: str | None = None) -> Response:
    try:
        principal = await asyncio.to_thread(_writer, request)
        door = _door(request)
        settings = request.app.state.container.settings
        raw = await _body(request, settings.fhir_max_body_bytes)
        tables = tables_of(settings)
    except _Refusal as refusal:
        return refusal.response
    except FhirConfigError as exc:
        return _problem(503, "exception", f"the FHIR tables cannot be read: {exc}")
    clinics = sorted(principal.clinics)
    reader = Reader(
        tables.codes,
        tables.organizations,
        door.session_clinic,
        clinics[0] if len(clinics) == 1 else None,
    )
    try:
        if resource_type == "Bundle":
            reply = await post_bundle(raw, door, reader, principal, settings.fhir_max_entries)
        else:
            reply = await post_resource(
                raw, resource_type, door, reader, principal, path_id=path_id
            )
    except DoorUnavailable as exc:
        return _problem(503, "transient", str(exc), {"Retry-After": "1"})
    return _reply(reply)


def _reply(reply: Reply) -> Response:
    return _fhir(reply.status, reply.body)


def _writer(request: Request) -> Principal:
    """The caller, when it may write; else the refusal as an OperationOutcome."""
    try:
        principal = current_principal(request)
    except ApiError as exc:
        raise _Refusal(_problem(exc.status, "login", exc.message, exc.headers)) from None
    if principal.role not in _WRITERS:
        text = f"role {principal.role.value!r} may not post (needs device or admin)"
        raise _Refusal(_problem(403, "forbidden", text))
    return principal


def _door(request: Request) -> EventDoor:
    process: ServedProcess = request.app.state.container
    door = process.event_door  # embedded: the journal; `remsguard api`: Kafka
    if door is not None:
        return door
    raise _Refusal(_problem(404, "not-supported", "this service does not ingest FHIR"))


async def _body(request: Request, limit: int) -> dict[str, Any]:
    media = (request.headers.get("content-type") or "").split(";", 1)[0].strip().lower()
    if media not in _ACCEPTED_TYPES:
        text = f"content type {media or '(none)'!r} is not taken; use {FHIR_JSON}"
        raise _Refusal(_problem(415, "not-supported", text))
    too_large = _Refusal(_problem(413, "too-costly", f"the body is larger than {limit} bytes"))
    raw = await bounded_body(request, limit, too_large)
    try:
        doc = await decoded(raw, orjson.loads, _OFFLOAD_BYTES)
    except orjson.JSONDecodeError as exc:
        raise _Refusal(_problem(400, "structure", f"the body is not JSON: {exc}")) from None
    if not isinstance(doc, dict):
        raise _Refusal(_problem(400, "structure", "the body must be a JSON object (a resource)"))
    return doc
