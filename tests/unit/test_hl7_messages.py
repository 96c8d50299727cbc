"""HL7 v2 messages to remsguard events (pure): the shapes vendors' PCD-01 messages take.

Where the shapes come from:
- `PCD01_VSP`: IHE PCD Technical Framework Vol. 2, PCD-01 "Communicate PCD Data": MDS / VMD /
  channel containment OBXs with no value (OBX-4 dotted MDS.VMD.CHAN.METRIC), numeric OBXs with
  MDC codes and MDC units, status `R`, OBX-18 equipment identifier (EUI-64), as in the public
  integration guides of vital-signs gateways.
- `SPOT_CHECK`: a spot-check monitor's message as published integration samples show it (HL7
  2.3.1, cuff codes MDC_PRESS_CUFF_*, units as plain strings, status `F`, OBX-14 per reading).
- Escapes (`\\F\\`, `\\S\\`), `X` status ("could not measure"), several OBRs per message and
  vendor codes outside the table come from the same guides' notes on what receivers must bear.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from remsguard.hl7v2.codes import CodeTable
from remsguard.hl7v2.messages import Reader, translate

CODES = CodeTable.load()
READER = Reader(CODES, UTC)

PCD01_VSP = "\r".join(
    [
        r"MSH|^~\&|VSP^080019FFFE134535^EUI-64|CLINIC-1|||20261206101500+0000||ORU^R01^ORU_R01|"
        r"MSG-0001|P|2.6|||NE|AL||UNICODE UTF-8|||"
        r"PCD_DEC_001^IHE PCD^1.3.6.1.4.1.19376.1.6.1.1.1^ISO",
        r"PID|||PAT-1^^^PID^MR||DOE^JANE",
        r"PV1||O|^^^CLINIC||||||||||||||||SESS-1",
        r"OBR|1|A1^VSP|B1^VSP|182777000^monitoring of patient^SCT|||20261206101500+0000",
        r"OBX|1||69965^MDC_DEV_MON_PHYSIO_MULTI_PARAM_MDS^MDC|1.0.0.0|||||||X",
        r"OBX|2||69798^MDC_DEV_PULS_OXIM_VMD^MDC|1.6.0.0|||||||X",
        r"OBX|3||69799^MDC_DEV_PULS_OXIM_CHAN^MDC|1.6.1.0|||||||X",
        r"OBX|4|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC|1.6.1.1|98|262688^MDC_DIM_PERCENT^MDC|||||R|||"
        r"||||080019FFFE134535^EUI-64",
        r"OBX|5|NM|149530^MDC_PULS_OXIM_PULS_RATE^MDC|1.6.1.2|76|264864^MDC_DIM_BEAT_PER_MIN^MDC|"
        r"||||R",
        r"OBX|6|NM|150021^MDC_PRESS_BLD_NONINV_SYS^MDC|1.1.1.1|142|266016^MDC_DIM_MMHG^MDC|||||R|"
        r"||20261206101200+0000",
        r"OBX|7|NM|150022^MDC_PRESS_BLD_NONINV_DIA^MDC|1.1.1.2|91|266016^MDC_DIM_MMHG^MDC|||||R|"
        r"||20261206101200+0000",
        r"OBX|8|NM|150023^MDC_PRESS_BLD_NONINV_MEAN^MDC|1.1.1.3|108|266016^MDC_DIM_MMHG^MDC|||||R|"
        r"||20261206101200+0000",
        r"OBX|9|NM|151562^MDC_RESP_RATE^MDC|1.2.1.1|0|264928^MDC_DIM_RESP_PER_MIN^MDC|||||X",
        r"OBX|10|NM|188736^MDC_MASS_BODY_ACTUAL^MDC|1.3.1.1|80|263875^MDC_DIM_KILO_G^MDC|||||R",
    ]
)

SPOT_CHECK = "\r".join(
    [
        r"MSH|^~\&|Monitor|VS8|GATEWAY|WARD|20261206093319||ORU^R01|1362|P|2.3.1",
        r"PID|||0001||EXPERT^VS",
        r"PV1||I|^^ICU&01||||||||||||||||SESS-2",
        r"OBR|1||||||20261206093319",
        r"OBX|1|NM|150301^MDC_PRESS_CUFF_SYS^MDC|1.1.9.150301|12.5|kPa|||||F|||20261206093319",
        r"OBX|2|NM|150302^MDC_PRESS_CUFF_DIA^MDC|1.1.9.150302|74|mmHg|||||F|||20261206093319",
        r"OBX|3|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC|1.3.1.150456|97|%|||||F|||20261206093319",
        r"OBX|4|NM|147842^MDC_ECG_HEART_RATE^MDC|1.0.0.147842|64|bpm|||||F|||20261206093319",
        r"OBX|5|NM|149530^MDC_PULS_OXIM_PULS_RATE^MDC|1.3.1.149530|66|bpm|||||F|||20261206093319",
        r"OBX|6|NM|393216^NIBP_SYS^EHC|1.1.9|120|mmHg|||||F|||20261206093319",
    ]
)


def _data(text: str, reader: Reader = READER) -> list[tuple[str, dict[str, object]]]:
    translation = translate(text, reader)
    assert translation.refusal is None, translation.refusal
    return [(e["occurred_at"], e["data"]) for e in translation.events]


def test_pcd01_containment_and_unmeasured_values_are_skipped_and_times_group_readings() -> None:
    translation = translate(PCD01_VSP, READER)
    assert translation.refusal is None
    assert [(e["occurred_at"], e["data"]) for e in translation.events] == [
        ("2026-12-06T10:15:00+00:00", {"spo2": 98.0, "heart_rate": 76.0}),  # OBR-7's time
        ("2026-12-06T10:12:00+00:00", {"systolic": 142.0, "diastolic": 91.0}),  # OBX-14's
    ]
    first = translation.events[0]
    assert (first["session_id"], first["clinic_id"], first["type"]) == (
        "SESS-1",
        "CLINIC-1",
        "vitals.recorded",
    )
    assert first["device_id"] == "080019FFFE134535"  # OBX-18
    assert translation.events[1]["device_id"] == "VSP"  # else MSH-3
    # Three containment OBXs (no value), and a value the monitor could not measure (X).
    assert translation.ignored == {"no_value": 3, "status_X": 1}
    assert translation.unknown_codes == {"MDC:188736": 1}  # body mass: not ours, not an error


def test_units_are_converted_and_ecg_heart_rate_wins_over_the_oximeters_pulse() -> None:
    (at, data), *rest = _data(SPOT_CHECK)
    assert at == "2026-12-06T09:33:19+00:00" and not rest
    assert data == {"systolic": 93.76, "diastolic": 74.0, "spo2": 97.0, "heart_rate": 64.0}
    assert translate(SPOT_CHECK, READER).unknown_codes == {"EHC:393216": 1}


def test_a_time_without_an_offset_is_taken_in_the_configured_zone() -> None:
    new_york = Reader(CODES, ZoneInfo("America/New_York"))
    ((at, _),) = _data(SPOT_CHECK, new_york)
    assert datetime.fromisoformat(at) == datetime(2026, 12, 6, 14, 33, 19, tzinfo=UTC)
    offset = SPOT_CHECK.replace("20261206093319", "20261206093319+0530")
    ((at, _),) = _data(offset, new_york)
    assert datetime.fromisoformat(at).utcoffset() == timedelta(hours=5, minutes=30)


def test_several_obrs_and_escape_sequences() -> None:
    text = "\r".join(
        [
            r"MSH|^~\&|Gate\F\way|CLINIC\T\1|||20261206100000+0000||ORU^R01|M-2|P|2.6",
            r"PV1||O|||||||||||||||||SESS-\S\3",
            r"OBR|1||||||20261206100000+0000",
            r"OBX|1|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC||91|%|||||F",
            r"OBR|2||||||20261206100000+0000",
            r"OBX|1|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC||93|%|||||C",
        ]
    )
    translation = translate(text + "\r", READER)
    assert [e["data"] for e in translation.events] == [{"spo2": 91.0}, {"spo2": 93.0}]
    assert {e["session_id"] for e in translation.events} == {"SESS-^3"}
    assert translation.clinic == "CLINIC&1"
    assert len({e["event_id"] for e in translation.events}) == 2


def test_event_ids_are_stable_across_resends_and_differ_by_control_id() -> None:
    once = [e["event_id"] for e in translate(PCD01_VSP, READER).events]
    again = [e["event_id"] for e in translate(PCD01_VSP, READER).events]
    other = [
        e["event_id"] for e in translate(PCD01_VSP.replace("MSG-0001", "MSG-2"), READER).events
    ]
    assert once == again and not set(once) & set(other)


def test_refusals_say_what_is_wrong() -> None:
    cases = {
        "garbage": ("AR", "unreadable"),
        PCD01_VSP.replace("ORU^R01^ORU_R01", "ADT^A01"): ("AR", "unsupported_message_type"),
        PCD01_VSP.replace("MSG-0001", ""): ("AR", "no_control_id"),
        PCD01_VSP.replace("|142|", "|high|"): ("AE", "not_a_number"),
        PCD01_VSP.replace("266016^MDC_DIM_MMHG^MDC|||||R|||20261206101200", "cmH2O|||||R|||2026"
                          "1206101200"): ("AE", "unknown_unit"),
        PCD01_VSP.replace("SESS-1", ""): ("AE", "no_session"),
    }  # fmt: skip
    for text, expected in cases.items():
        refusal = translate(text, READER).refusal
        assert refusal is not None and (refusal.ack_code, refusal.reason) == expected, text[:60]
    mapped = Reader(CODES, UTC, facilities={"CLINIC-1": "c-one"})
    assert translate(PCD01_VSP, mapped).clinic == "c-one"
    unknown = translate(PCD01_VSP.replace("CLINIC-1", "ELSEWHERE"), mapped).refusal
    assert unknown is not None and (unknown.ack_code, unknown.reason) == ("AR", "unknown_facility")


def test_without_pv1_19_the_patients_open_session_is_used() -> None:
    text = PCD01_VSP.replace("SESS-1", "")
    reader = Reader(CODES, UTC, open_session=lambda clinic, patient: f"{clinic}/{patient}/open")
    assert {e["session_id"] for e in translate(text, reader).events} == {"CLINIC-1/PAT-1/open"}


RAS = "\r".join(
    [
        r"MSH|^~\&|PYXIS|CLINIC-1|||20261206100500+0100||RAS^O17^RAS_O17|D-1|P|2.6",
        r"PID|||PAT-1",
        r"PV1||O|||||||||||||||||SESS-1",
        r"ORC|RE",
        r"RXA|0|1|20261206100000+0100||50458-028-02^SPRAVATO 56 MG DOSE KIT^NDC|56|mg^^UCUM"
        r"||||||||LOT-7|||||CP",
        r"RXR|NS^Nasal^HL70162",
        r"ORC|RE",
        r"RXA|0|1|20261206100000+0100||197591^lorazepam 1 MG oral tablet^RXNORM|1|mg"
        r"|||||||||||||CP",
        r"RXR|PO",
        r"ORC|RE",
        r"RXA|0|1|20261206110000+0100||123^Ketamine HCl 50 mg/mL^LOCAL|35|mg|||||||||||||RE",
        r"RXR|IV",
    ]
)


def test_ras_o17_gives_the_esketamine_dose_and_ignores_other_drugs_and_refusals() -> None:
    translation = translate(RAS, READER)
    assert translation.refusal is None
    (dose,) = translation.events
    assert dose["type"] == "dose.administered"
    assert dose["data"] == {
        "drug": "esketamine",
        "route": "intranasal",
        "dose_mg": 56.0,
        "lot_number": "LOT-7",
    }
    assert datetime.fromisoformat(dose["occurred_at"]) == datetime(
        2026, 12, 6, 10, 0, tzinfo=timezone(timedelta(hours=1))
    )
    assert translation.ignored == {"other_drug": 1, "not_administered": 1}
    by_text = translate(RAS.replace("|RE\r", "|CP\r", 1).replace("||RE", "||CP"), READER)
    assert [e["data"]["drug"] for e in by_text.events] == ["esketamine", "ketamine"]


def test_a_dose_without_a_route_or_in_other_units_is_an_error() -> None:
    no_route = translate(RAS.replace("RXR|NS^Nasal^HL70162", "RXR|XX"), READER).refusal
    assert no_route is not None and no_route.reason == "unknown_route"
    grams = translate(RAS.replace("|56|mg^^UCUM|", "|0.056|g|"), READER).refusal
    assert grams is not None and grams.reason == "unknown_unit"
