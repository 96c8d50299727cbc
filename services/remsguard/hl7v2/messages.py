"""An HL7 v2 message in, remsguard events (the JSON wire contract) out, or why not. Pure.

- `ORU^R01` (IHE PCD-01 vital signs) -> `vitals.recorded`: OBX-3 by the code table, OBX-5 the
  value, OBX-6 its unit (converted), OBX-11 `F`, `R` or `C` (others, e.g. `X` "could not
  measure", are skipped), time OBX-14 else OBR-7 else MSH-7. Containment OBXs (MDS, VMD,
  channel: no value) are skipped; readings of one OBR that share a time are one event.
- `RAS^O17` (medication administration) -> `dose.administered`: RXA-3 time, RXA-5 drug (by code
  list or text: esketamine and ketamine; other drugs are ignored), RXA-6/7 amount in mg, RXR-1
  route, RXA-15 lot.
- The session: PV1-19 (visit number), else the clinic's open session of the patient in PID-3.
  The clinic: MSH-4 through the facility map (or MSH-4 itself when no map is configured).
- Event ids derive from the sender (MSH-3, MSH-4), MSH-10 and the position in the message, so
  a re-sent message yields the same events (duplicates, answered as such).

A message it cannot use is a `Refusal`: `AR` (not allowed: wrong type, unknown facility, no
control id) or `AE` (content: with the segment, field and reason for the ERR segment). The
events themselves still go through the contract and the service's rules (times, tenancy) at
the door they are handed to.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import Any, Final, Literal

import hl7
from hl7.containers import Message, Segment

from remsguard.contract.events import wire_event
from remsguard.hl7v2.codes import Coded, CodeTable, VitalField

__all__ = ["Header", "Reader", "Refusal", "Translation", "translate"]

SUPPORTED: Final = frozenset({("ORU", "R01"), ("RAS", "O17")})
_VALID_STATUS: Final = frozenset({"F", "R", "C"})
_ADMINISTERED: Final = frozenset({"", "CP", "PA"})  # RXA-20: complete, partial, not given
# HL7 table 0357 (message error condition codes).
REQUIRED_MISSING: Final = "101^Required field missing^HL70357"
DATA_TYPE_ERROR: Final = "102^Data type error^HL70357"
TABLE_VALUE_NOT_FOUND: Final = "103^Table value not found^HL70357"
UNSUPPORTED_TYPE: Final = "200^Unsupported message type^HL70357"
APPLICATION_ERROR: Final = "207^Application internal error^HL70357"


@dataclass(frozen=True, slots=True)
class Header:
    """What the ACK answers to: the MSH of the message (empty when it has none)."""

    sending_application: str = ""
    sending_facility: str = ""
    control_id: str = ""
    message_type: str = ""
    version: str = "2.6"

    @property
    def sender(self) -> str:
        return f"{self.sending_application}|{self.sending_facility}"


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a message is not used: `AR` not allowed, `AE` an error in its content."""

    ack_code: Literal["AE", "AR"]
    reason: str  # a stable code, e.g. `unknown_facility`, also the metric's label
    text: str
    location: str = ""  # SEGMENT^sequence^field, e.g. `OBX^3^5`
    error: str = APPLICATION_ERROR


@dataclass(slots=True)
class Translation:
    header: Header
    clinic: str | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    ignored: Counter[str] = field(default_factory=Counter)  # what was skipped, by reason
    unknown_codes: Counter[str] = field(default_factory=Counter)
    refusal: Refusal | None = None


@dataclass(frozen=True, slots=True)
class Reader:
    """What translating needs from the service."""

    codes: CodeTable
    timezone: tzinfo  # for times without an offset
    facilities: Mapping[str, str] | None = None  # MSH-4 -> clinic; None: MSH-4 is the clinic
    open_session: Callable[[str, str], str | None] = lambda _clinic, _patient: None


class _Refused(Exception):
    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.text)
        self.refusal = refusal


def translate(text: str, reader: Reader) -> Translation:
    """Never raises: a message that cannot be read is a `Refusal`."""
    try:
        message = hl7.parse(text)
    except Exception as exc:  # the library's ParseException, or worse
        return Translation(Header(), refusal=Refusal("AR", "unreadable", f"not HL7 v2: {exc}"))
    header = _header(message)
    translation = Translation(header)
    try:
        _translate(message, header, reader, translation)
    except _Refused as refused:
        translation.events.clear()
        translation.refusal = refused.refusal
    except Exception as exc:  # a shape nobody foresaw: an error for this message only
        translation.events.clear()
        translation.refusal = Refusal("AE", "unreadable", f"{type(exc).__name__}: {exc}")
    return translation


def _translate(message: Message, header: Header, reader: Reader, out: Translation) -> None:
    kind = tuple(header.message_type.split("^")[:2])
    if kind not in SUPPORTED:
        raise _Refused(
            Refusal("AR", "unsupported_message_type",
                    f"message type {header.message_type or '(none)'} is not accepted "
                    "(ORU^R01, RAS^O17)", "MSH^1^9", UNSUPPORTED_TYPE)
        )  # fmt: skip
    if not header.control_id:
        raise _Refused(
            Refusal("AR", "no_control_id", "MSH-10 (message control id) is empty",
                    "MSH^1^10", REQUIRED_MISSING)
        )  # fmt: skip
    out.clinic = clinic = _clinic(header, reader)
    fields = _Fields(message)
    session_id = _session(fields, clinic, reader)
    if kind == ("ORU", "R01"):
        _vitals(fields, header, reader, out, session_id)
    else:
        _doses(fields, header, reader, out, session_id)


def _clinic(header: Header, reader: Reader) -> str:
    facility = header.sending_facility.split("^", 1)[0]
    if reader.facilities is None:
        if facility:
            return facility
        raise _Refused(
            Refusal("AR", "unknown_facility", "MSH-4 (sending facility) is empty",
                    "MSH^1^4", REQUIRED_MISSING)
        )  # fmt: skip
    clinic = reader.facilities.get(facility)
    if clinic is None:
        raise _Refused(
            Refusal("AR", "unknown_facility",
                    f"sending facility {facility!r} is not mapped to a clinic", "MSH^1^4",
                    TABLE_VALUE_NOT_FOUND)
        )  # fmt: skip
    return clinic


def _session(fields: _Fields, clinic: str, reader: Reader) -> str:
    visit = fields.get("PV1", 19)
    if visit:
        return visit
    patient = fields.get("PID", 3)
    session = reader.open_session(clinic, patient) if patient else None
    if session is None:
        raise _Refused(
            Refusal("AE", "no_session",
                    f"no PV1-19 visit number, and no open session of patient {patient!r} "
                    f"at clinic {clinic!r}", "PV1^1^19", REQUIRED_MISSING)
        )  # fmt: skip
    return session


@dataclass(slots=True)
class _Group:
    at: datetime
    device: str
    values: dict[VitalField, float] = field(default_factory=dict)


def _vitals(
    fields: _Fields, header: Header, reader: Reader, out: Translation, session_id: str
) -> None:
    groups: dict[tuple[int, datetime], _Group] = {}
    obr_index, obr_time, obx_index = 0, "", 0
    for segment in fields.message:
        name = str(segment[0])
        if name == "OBR":
            obr_index += 1
            obr_time = fields.of(segment, 7)
        elif name == "OBX":
            obx_index += 1
            _reading(fields, segment, obx_index, (obr_index, obr_time), reader, out, groups)
    for n, ((obr, _), group) in enumerate(groups.items()):
        data = _vitals_data(group.values)
        if not data:
            out.ignored["no_vital_used"] += 1
            continue
        event_id = _event_id(header, "OBR", str(obr), str(n))
        out.events.append(
            wire_event(
                "vitals.recorded", event_id, session_id, out.clinic, group.at, data, group.device
            )
        )


def _reading(
    fields: _Fields,
    obx: Segment,
    position: int,
    obr: tuple[int, str],
    reader: Reader,
    out: Translation,
    groups: dict[tuple[int, datetime], _Group],
) -> None:
    status = fields.of(obx, 11).upper()
    value = fields.of(obx, 5)
    if not value:
        out.ignored["no_value"] += 1  # containment (MDS, VMD, channel) or an empty reading
        return
    if status not in _VALID_STATUS:
        out.ignored[f"status_{status or 'empty'}"] += 1
        return
    coded = fields.coded(obx, 3)
    vital = reader.codes.observation(coded)
    if vital is None:
        out.unknown_codes[f"{coded.system.upper() or '-'}:{coded.code}"] += 1
        return
    where = f"OBX^{position}"
    number = _number(value, f"{where}^5")
    unit = reader.codes.unit(fields.coded(obx, 6))
    expected = reader.codes.field_units.get(vital)
    if unit is None or unit[0] != expected:
        shown = fields.of(obx, 6) or "(none)"
        raise _Refused(
            Refusal("AE", "unknown_unit", f"unit {shown!r} of {vital} is not {expected}",
                    f"{where}^6", TABLE_VALUE_NOT_FOUND)
        )  # fmt: skip
    when = fields.of(obx, 14) or obr[1] or fields.get("MSH", 7)
    at = _time(when, reader, f"{where}^14")
    device = fields.of(obx, 18) or fields.get("MSH", 3)
    group = groups.setdefault((obr[0], at), _Group(at, device))
    if vital in group.values:
        out.ignored[f"repeated_{vital}"] += 1  # a second channel of the same vital: first wins
        return
    group.values[vital] = number * unit[1]


def _vitals_data(values: Mapping[VitalField, float]) -> dict[str, float]:
    data: dict[str, float] = {
        k: round(v, 2) for k, v in values.items() if k not in ("mean", "pulse_rate")
    }
    if "heart_rate" not in data and "pulse_rate" in values:  # ECG first, else the oximeter
        data["heart_rate"] = round(values["pulse_rate"], 2)
    return data


def _doses(
    fields: _Fields, header: Header, reader: Reader, out: Translation, session_id: str
) -> None:
    segments = list(fields.message)
    occurrence = 0
    for position, rxa in enumerate(segments):
        if str(rxa[0]) != "RXA":
            continue
        occurrence += 1
        where = f"RXA^{occurrence}"
        if fields.of(rxa, 20).upper() not in _ADMINISTERED:
            out.ignored["not_administered"] += 1
            continue
        drug = reader.codes.drug(fields.coded(rxa, 5))
        if drug is None:
            out.ignored["other_drug"] += 1
            continue
        at = _time(fields.of(rxa, 3), reader, f"{where}^3")
        amount = _number(fields.of(rxa, 6), f"{where}^6")
        if fields.of(rxa, 7).lower() != "mg":
            raise _Refused(
                Refusal("AE", "unknown_unit", "RXA-7 (administered units) must be mg",
                        f"{where}^7", TABLE_VALUE_NOT_FOUND)
            )  # fmt: skip
        route = _route(fields, segments[position + 1 :], reader, where)
        data: dict[str, object] = {"drug": drug, "route": route, "dose_mg": amount}
        lot = fields.of(rxa, 15)
        if lot:
            data["lot_number"] = lot
        group = _Group(at, fields.get("MSH", 3))
        event_id = _event_id(header, "RXA", str(occurrence))
        out.events.append(
            wire_event(
                "dose.administered", event_id, session_id, out.clinic, group.at, data, group.device
            )
        )


def _route(fields: _Fields, after: list[Segment], reader: Reader, where: str) -> str:
    for segment in after:
        name = str(segment[0])
        if name == "RXA":
            break
        if name == "RXR":
            route = reader.codes.route(fields.coded(segment, 1))
            if route is not None:
                return route
            raise _Refused(
                Refusal("AE", "unknown_route", f"route {fields.of(segment, 1)!r} is not known",
                        "RXR^1^1", TABLE_VALUE_NOT_FOUND)
            )  # fmt: skip
    raise _Refused(
        Refusal("AE", "no_route", f"no RXR (route) after {where}", where, REQUIRED_MISSING)
    )


def _event_id(header: Header, *position: str) -> str:
    """Stable across re-sends: the sender, its control id and the position in the message."""
    key = "\x1f".join((header.sender, header.control_id, *position)).encode("utf-8", "replace")
    return "hl7-" + hashlib.blake2b(key, digest_size=12).hexdigest()


def _number(text: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if value != value or value in (float("inf"), float("-inf")):
        raise _Refused(
            Refusal("AE", "not_a_number", f"{text[:40]!r} is not a number", where,
                    DATA_TYPE_ERROR)
        )  # fmt: skip
    return value


def _time(text: str, reader: Reader, where: str) -> datetime:
    if not text:
        raise _Refused(Refusal("AE", "no_time", "no observation time", where, REQUIRED_MISSING))
    try:
        at: datetime | None = hl7.parse_datetime(text)
    except (ValueError, TypeError, OverflowError):
        at = None
    if at is None:
        raise _Refused(
            Refusal("AE", "invalid_time", f"{text[:40]!r} is not an HL7 time", where,
                    DATA_TYPE_ERROR)
        )  # fmt: skip
    return at if at.tzinfo is not None else at.replace(tzinfo=reader.timezone)


def _header(message: Message) -> Header:
    fields = _Fields(message)
    return Header(
        sending_application=fields.get("MSH", 3, whole=True),
        sending_facility=fields.get("MSH", 4, whole=True),
        control_id=fields.get("MSH", 10),
        message_type=fields.get("MSH", 9, whole=True),
        version=fields.get("MSH", 12) or "2.6",
    )


class _Fields:
    """Field access by HL7 position: first repetition, a component, unescaped; "" if absent."""

    def __init__(self, message: Message) -> None:
        self.message = message
        separators = message.separators
        self._repetition, self._component = separators[2], separators[3]

    def get(self, segment: str, index: int, *, whole: bool = False) -> str:
        for candidate in self.message:
            if str(candidate[0]) == segment:
                return self.of(candidate, index, whole=whole)
        return ""

    def of(self, segment: Segment, index: int, *, whole: bool = False, component: int = 0) -> str:
        if index >= len(segment):  # python-hl7 numbers MSH's fields as HL7 does, too
            return ""
        raw = str(segment[index]).split(self._repetition, 1)[0]
        if not whole:
            parts = raw.split(self._component)
            raw = parts[component] if component < len(parts) else ""
        return str(self.message.unescape(raw)).strip()

    def coded(self, segment: Segment, index: int) -> Coded:
        return Coded(*(self.of(segment, index, component=i) for i in range(3)))
