"""Raw JSON in, a domain event or a `Rejection` out. Never raises; on the replay hot path.

The happy path is one `validate_json` call on the raw bytes: pydantic-core parses the JSON,
dispatches on `type`, parses the timestamp and builds the frozen domain dataclass, all in Rust,
with no intermediate pydantic model and no per-event Python code (except the vitals
cross-field check). The validators are *derived* from the wire models in `contract.events`
(same field schemas, same `data` model with its extra-key ban and validators), so the contract
has one definition; `tests/unit/test_contract.py` checks it against `EventCreate.to_domain()`.
The happy path's validator does not validate `data` a second time through its model (see
`_accepting_schema`); whatever it refuses goes through the full one. Everything else —
classifying errors, recovering ids for the rejection — happens only for rejected input.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from enum import StrEnum
from typing import Annotated, Any, Final, get_args

import orjson
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import CoreConfig, CoreSchema, SchemaValidator, core_schema

from remsguard.contract.events import EventBase, EventCreate
from remsguard.domain import admission
from remsguard.domain.decisions import Rejection
from remsguard.domain.events import EVENT_CLASSES_BY_TYPE, Event

__all__ = ["MAX_EVENT_BYTES", "RejectionReason", "decode_event", "decode_events"]

MAX_EVENT_BYTES: Final = 64 * 1024
"""Raw events longer than this (in UTF-8 bytes) are rejected as `too_large` before parsing."""


class RejectionReason(StrEnum):
    """The closed set of reasons an event can be rejected for, in precedence order."""

    TOO_LARGE = "too_large"
    INVALID_JSON = "invalid_json"
    NOT_AN_OBJECT = "not_an_object"
    UNKNOWN_TYPE = "unknown_type"
    MISSING_FIELD = "missing_field"
    INVALID_TIME = "invalid_time"
    INVALID_VALUE = "invalid_value"
    OUT_OF_RANGE = "out_of_range"
    # Decided after the contract, by the receiver (`domain.admission`) or the engine.
    OCCURRED_IN_FUTURE = admission.OCCURRED_IN_FUTURE
    TOO_OLD = admission.TOO_OLD
    CLINIC_NOT_PERMITTED = admission.CLINIC_NOT_PERMITTED
    SESSION_OF_ANOTHER_CLINIC = admission.SESSION_OF_ANOTHER_CLINIC
    CONFLICTING_DUPLICATE = admission.CONFLICTING_DUPLICATE
    UNKNOWN_PROTOCOL = admission.UNKNOWN_PROTOCOL
    PROCESSING_ERROR = admission.PROCESSING_ERROR
    NO_KEY = admission.NO_KEY
    KEY_MISMATCH = admission.KEY_MISMATCH
    WRONG_PARTITION = admission.WRONG_PARTITION
    MESSAGE_TOO_LARGE = admission.MESSAGE_TOO_LARGE


def _event_tag(wire: type[EventBase]) -> str:
    (tag,) = get_args(wire.model_fields["type"].annotation)
    return str(tag)


# Each member of `EventCreate` and the domain event of its `type`.
_WIRE_TO_DOMAIN: Final[tuple[tuple[type[EventBase], type[Event]], ...]] = tuple(
    (wire, EVENT_CLASSES_BY_TYPE[_event_tag(wire)]) for wire in get_args(get_args(EventCreate)[0])
)
_FIELD_CONFIG: Final = ConfigDict(strict=True, allow_inf_nan=False)
# Field strictness is applied when the validator is built, from the enclosing schema's config;
# this must match `EventBase.model_config`.
_CORE_CONFIG: Final = CoreConfig(strict=True, allow_inf_nan=False, extra_fields_behavior="ignore")


def _field_schema(info: FieldInfo) -> CoreSchema:
    annotated: Any = Annotated[info.annotation, info]
    return TypeAdapter(annotated, config=_FIELD_CONFIG).core_schema


def _alias(*path: str | int) -> list[str | int]:
    return list(path)


def _data_model(wire: type[EventBase]) -> type[BaseModel]:
    data_model = wire.model_fields["data"].annotation
    assert isinstance(data_model, type) and issubclass(data_model, BaseModel)
    return data_model


def _domain_schema(
    wire: type[EventBase], domain: type[Event], data_schema: CoreSchema | None = None
) -> CoreSchema:
    """Validate one wire event straight into its domain dataclass.

    Envelope fields map 1:1; each `data` field is read through the alias path
    `data.<name>`; the whole `data` object is also validated as an init-only (discarded)
    field, by default by its wire model, which enforces the extra-key ban and cross-field
    checks.
    """
    fields = [
        core_schema.dataclass_field(name, _field_schema(info), kw_only=True)
        for name, info in EventBase.model_fields.items()
    ]
    data_model = _data_model(wire)
    fields += [
        core_schema.dataclass_field(
            name, _field_schema(info), kw_only=True, validation_alias=_alias("data", name)
        )
        for name, info in data_model.model_fields.items()
    ]
    if data_schema is None:
        data_schema = data_model.__pydantic_core_schema__
    fields.append(core_schema.dataclass_field("data", data_schema, kw_only=True, init_only=True))
    return core_schema.dataclass_schema(
        domain,
        core_schema.dataclass_args_schema(domain.__name__, fields, collect_init_only=False),
        [f["name"] for f in fields if not f.get("init_only")],
        slots=True,
        frozen=True,
        post_init=hasattr(domain, "__post_init__"),
        config=_CORE_CONFIG,
    )


# Model config the accept path reproduces: field strictness as in `_FIELD_CONFIG`, extra keys
# refused; the rest does not affect validation.
_REPRODUCED_CONFIG: Final = {"strict": True, "allow_inf_nan": False, "extra": "forbid"}
_INERT_CONFIG_KEYS: Final = frozenset({"frozen", "json_schema_extra", "title"})


def _after_checks(data_model: type[BaseModel]) -> list[Callable[[Any], Any]] | None:
    """The data model's cross-field checks, or None if it has more than the accept path knows."""
    decorators = data_model.__pydantic_decorators__
    checks = [
        decorator.func
        for decorator in decorators.model_validators.values()
        if decorator.info.mode == "after" and len(inspect.signature(decorator.func).parameters) == 1
    ]
    config = data_model.model_config
    reproduced = all(config.get(key) == value for key, value in _REPRODUCED_CONFIG.items())
    if (
        len(checks) != len(decorators.model_validators)
        or decorators.field_validators
        or not reproduced
        or not set(config) <= _INERT_CONFIG_KEYS | set(_REPRODUCED_CONFIG)
    ):
        return None
    return checks


def _accepting_schema(wire: type[EventBase], domain: type[Event]) -> CoreSchema:
    """The accept path: `data` is only checked for unknown keys, not validated a second time.

    Its fields are already validated through their alias paths, and the data model's own
    checks (`mode="after"` model validators, which read only field values) run on the domain
    event, which has the same field names. It must never accept what the full schema rejects,
    so a data model with anything else keeps the full `data` validation.
    """
    data_model = _data_model(wire)
    checks = _after_checks(data_model)
    if checks is None:
        return _domain_schema(wire, domain)
    known_keys = core_schema.dict_schema(
        keys_schema=core_schema.literal_schema(list(data_model.model_fields)),
        values_schema=core_schema.any_schema(),
        strict=True,
    )
    schema = _domain_schema(wire, domain, known_keys)
    for check in checks:
        schema = core_schema.no_info_after_validator_function(check, schema)
    return schema


def _validator(member: Callable[[type[EventBase], type[Event]], CoreSchema]) -> SchemaValidator:
    return SchemaValidator(
        core_schema.tagged_union_schema(
            {_event_tag(wire): member(wire, domain) for wire, domain in _WIRE_TO_DOMAIN},
            discriminator="type",
        )
    )


# Valid events take the accept path, about a quarter cheaper; anything it refuses is validated
# again in full, so a rejection always carries the full contract's errors.
_accept_json: Final = _validator(_accepting_schema).validate_json
_validate_json: Final = _validator(_domain_schema).validate_json

# pydantic error type -> reason; anything not listed is INVALID_VALUE.
_REASON_BY_ERROR_TYPE: Final[dict[str, RejectionReason]] = {
    "json_invalid": RejectionReason.INVALID_JSON,
    "json_type": RejectionReason.INVALID_JSON,
    "string_unicode": RejectionReason.INVALID_JSON,
    "union_tag_invalid": RejectionReason.UNKNOWN_TYPE,
    "union_tag_not_found": RejectionReason.MISSING_FIELD,
    "missing": RejectionReason.MISSING_FIELD,
    "bp_incomplete": RejectionReason.MISSING_FIELD,
    "vitals_empty": RejectionReason.MISSING_FIELD,
    "datetime_type": RejectionReason.INVALID_TIME,
    "datetime_parsing": RejectionReason.INVALID_TIME,
    "datetime_from_date_parsing": RejectionReason.INVALID_TIME,
    "datetime_object_invalid": RejectionReason.INVALID_TIME,
    "timezone_aware": RejectionReason.INVALID_TIME,
    "greater_than": RejectionReason.OUT_OF_RANGE,
    "greater_than_equal": RejectionReason.OUT_OF_RANGE,
    "less_than": RejectionReason.OUT_OF_RANGE,
    "less_than_equal": RejectionReason.OUT_OF_RANGE,
}
# Errors at the root that mean "the document is not a JSON object".
_NOT_AN_OBJECT_TYPES: Final = frozenset({"dict_type", "model_type", "model_attributes_type"})
_PRECEDENCE: Final[dict[RejectionReason, int]] = {r: i for i, r in enumerate(RejectionReason)}
_MAX_DETAIL: Final = 200


def decode_event(raw: bytes | str) -> Event | Rejection:
    """Decode one raw JSON event into a domain event, or say why it breaks the contract."""
    try:
        if len(raw) > MAX_EVENT_BYTES // 4 and _byte_length(raw) > MAX_EVENT_BYTES:
            return Rejection(
                reason=RejectionReason.TOO_LARGE.value,
                detail=f"event is larger than {MAX_EVENT_BYTES} bytes",
            )
        try:
            accepted: Event = _accept_json(raw)
            return accepted
        except ValidationError:
            event: Event = _validate_json(raw)  # the full contract: it says why, or accepts
            return event
    except ValidationError as exc:
        return _rejection_from_error(raw, exc)
    except Exception as exc:  # defensive: decoding must never stop a stream
        return Rejection(
            reason=RejectionReason.INVALID_JSON.value, detail=_clip(type(exc).__name__)
        )


def decode_events(raws: Iterable[bytes | str]) -> list[Event | Rejection]:
    """`decode_event` of each, in order, in one call: replay's decode of a batch of lines.
    A line that is not short enough to be within the size limit whatever its characters,
    or that the accept path refuses, goes through `decode_event` (so gets the same
    answer); the others are one accept-path call each, without a Python call around it."""
    accept, short = _accept_json, MAX_EVENT_BYTES // 4
    decoded: list[Event | Rejection] = []
    for raw in raws:
        if len(raw) <= short:
            try:
                decoded.append(accept(raw))
                continue
            except Exception:  # refused (or worse): decode_event says why
                pass
        decoded.append(decode_event(raw))
    return decoded


def _byte_length(raw: bytes | str) -> int:
    if isinstance(raw, str):
        return len(raw.encode("utf-8", "surrogatepass"))
    return len(raw)


def _rejection_from_error(raw: bytes | str, exc: ValidationError) -> Rejection:
    errors = exc.errors(include_url=False, include_context=False, include_input=False)
    best: tuple[int, RejectionReason, str] | None = None
    for error in errors:
        loc = error["loc"]
        error_type = error["type"]
        if not loc and error_type in _NOT_AN_OBJECT_TYPES:
            reason = RejectionReason.NOT_AN_OBJECT
        elif loc[-1:] == ("occurred_at",) and error_type != "missing":
            reason = RejectionReason.INVALID_TIME  # unparseable, naive, or outside 2000-2099
        else:
            reason = _REASON_BY_ERROR_TYPE.get(error_type, RejectionReason.INVALID_VALUE)
        rank = _PRECEDENCE[reason]
        if best is None or rank < best[0]:
            # loc[0] is the union tag (the event type) for errors inside a member.
            path = ".".join(str(part) for part in loc[1:])
            message = error["msg"]
            if reason is RejectionReason.UNKNOWN_TYPE:
                message = "unknown event type"
            elif reason is RejectionReason.MISSING_FIELD and error_type == "union_tag_not_found":
                path, message = "type", "Field required"
            best = (rank, reason, f"{path}: {message}" if path else message)
    if best is None:  # pragma: no cover - pydantic always reports at least one error
        best = (0, RejectionReason.INVALID_VALUE, "invalid event")
    _, reason, detail = best
    event_id = session_id = clinic_id = None
    if reason not in (RejectionReason.INVALID_JSON, RejectionReason.NOT_AN_OBJECT):
        event_id, session_id, clinic_id = _read_ids(raw)
    return Rejection(
        reason=reason.value,
        detail=_clip(detail),
        event_id=event_id,
        session_id=session_id,
        clinic_id=clinic_id,
    )


def _read_ids(raw: bytes | str) -> tuple[str | None, str | None, str | None]:
    """Best effort: the envelope ids of a JSON object, when they are non-empty strings."""
    try:
        doc = orjson.loads(raw)
    except Exception:
        return None, None, None
    if not isinstance(doc, dict):
        return None, None, None
    return _id(doc.get("event_id")), _id(doc.get("session_id")), _id(doc.get("clinic_id"))


def _id(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 1] + "…"
