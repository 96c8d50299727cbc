"""The JSON Schema files in `schemas/` are generated from the contract models and must not drift."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from remsguard.contract.events import EventBase
from remsguard.contract.schemas import SCHEMA_FILES, export_schemas, render_schemas
from remsguard.entrypoints.cli import app

SCHEMAS_DIR = Path(__file__).resolve().parents[2] / "schemas"


def test_schema_files_match_the_models() -> None:
    """Fails when a contract model changes without `remsguard schemas export`."""
    rendered = render_schemas()
    assert sorted(p.name for p in SCHEMAS_DIR.glob("*.schema.json")) == sorted(SCHEMA_FILES)
    for name, content in rendered.items():
        on_disk = (SCHEMAS_DIR / name).read_text(encoding="utf-8")
        assert on_disk == content, f"schemas/{name} is stale: run `remsguard schemas export`"


def test_export_is_deterministic(tmp_path: Path) -> None:
    export_schemas(tmp_path / "a")
    export_schemas(tmp_path / "b")
    for name in SCHEMA_FILES:
        text = (tmp_path / "a" / name).read_text(encoding="utf-8")
        assert text == (tmp_path / "b" / name).read_text(encoding="utf-8")
        assert text.endswith("}\n")
        document = json.loads(text)
        assert json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n" == text


def test_check_command_detects_drift(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["schemas", "export", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert runner.invoke(app, ["schemas", "check", str(tmp_path)]).exit_code == 0
    path = tmp_path / "alert.schema.json"
    path.write_text(path.read_text().replace('"rule"', '"rules"'))
    (tmp_path / "rejection.schema.json").unlink()
    result = runner.invoke(app, ["schemas", "check", str(tmp_path)])
    assert result.exit_code == 1
    assert "alert.schema.json: drifted" in result.output
    assert "rejection.schema.json: missing" in result.output


def _event_schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((SCHEMAS_DIR / "event.schema.json").read_text())
    return schema


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if ref is None:
        return node
    resolved: dict[str, Any] = schema["$defs"][ref.removeprefix("#/$defs/")]
    return resolved


def test_event_schema_is_a_union_discriminated_on_type() -> None:
    schema = _event_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["discriminator"]["propertyName"] == "type"
    mapping = schema["discriminator"]["mapping"]
    assert set(mapping) == {
        "session.opened",
        "vitals.recorded",
        "dose.administered",
        "assessment.recorded",
        "session.discharged",
    }
    assert len(schema["oneOf"]) == 5
    for tag, ref in mapping.items():
        member = _resolve(schema, {"$ref": ref})
        assert member["properties"]["type"]["const"] == tag
        required = set(member["required"])
        assert required == {"event_id", "type", "session_id", "clinic_id", "occurred_at", "data"}
        assert member["properties"]["occurred_at"]["format"] == "date-time"
        data = _resolve(schema, member["properties"]["data"])
        assert data["additionalProperties"] is False
    vitals = schema["$defs"]["VitalsRecordedData"]
    assert vitals["minProperties"] == 1
    assert vitals["dependentRequired"] == {"systolic": ["diastolic"], "diastolic": ["systolic"]}
    assert set(EventBase.model_fields) <= set(_resolve(schema, schema["oneOf"][0])["properties"])


def _check(schema: dict[str, Any], node: dict[str, Any], value: Any) -> bool:
    """A tiny JSON Schema checker covering the keywords the exported schemas use."""
    node = _resolve(schema, node)
    if "anyOf" in node:
        return any(_check(schema, n, value) for n in node["anyOf"])
    if "oneOf" in node:
        return sum(_check(schema, n, value) for n in node["oneOf"]) == 1
    if "const" in node and value != node["const"]:
        return False
    if "enum" in node and value not in node["enum"]:
        return False
    kind = node.get("type")
    types: dict[str, Any] = {
        "object": dict,
        "array": list,
        "string": str,
        "boolean": bool,
        "null": type(None),
        "integer": int,
        "number": (int, float),
    }
    if kind is not None:
        if not isinstance(value, types[kind]):
            return False
        if kind in ("integer", "number") and isinstance(value, bool):
            return False
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in node and value < node["minimum"]:
            return False
        if "maximum" in node and value > node["maximum"]:
            return False
        if "exclusiveMinimum" in node and value <= node["exclusiveMinimum"]:
            return False
    if isinstance(value, str) and len(value) < node.get("minLength", 0):
        return False
    if isinstance(value, list) and "items" in node:
        return all(_check(schema, node["items"], v) for v in value)
    if isinstance(value, dict):
        props = node.get("properties", {})
        if not set(node.get("required", [])) <= set(value):
            return False
        if node.get("additionalProperties") is False and not set(value) <= set(props):
            return False
        if len(value) < node.get("minProperties", 0):
            return False
        for key, deps in node.get("dependentRequired", {}).items():
            if key in value and not set(deps) <= set(value):
                return False
        return all(_check(schema, props[k], v) for k, v in value.items() if k in props)
    return True


def test_example_events_check_against_the_event_schema() -> None:
    schema = _event_schema()
    envelope = {
        "event_id": "e-1",
        "session_id": "s-1",
        "clinic_id": "c-1",
        "occurred_at": "2026-11-23T09:00:00Z",
    }
    good = [
        {**envelope, "type": "vitals.recorded", "data": {"systolic": 120, "diastolic": 80}},
        {
            **envelope,
            "type": "session.opened",
            "data": {"patient_ref": "p", "concomitant_medications": ["maoi"]},
        },
        {
            **envelope,
            "type": "dose.administered",
            "data": {"drug": "esketamine", "route": "intranasal", "dose_mg": 56},
        },
        {**envelope, "type": "assessment.recorded", "data": {"sedation_moaas": 5}},
        {
            **envelope,
            "type": "session.discharged",
            "data": {"staff_id": "n", "clinically_stable": True},
        },
    ]
    bad = [
        {**envelope, "type": "vitals.recorded", "data": {"systolic": 120}},
        {**envelope, "type": "vitals.recorded", "data": {}},
        {**envelope, "type": "vitals.recorded", "data": {"spo2": 101}},
        {**envelope, "type": "vitals.recorded", "data": {"spo2": 97, "temp": 37}},
        {
            **envelope,
            "type": "dose.administered",
            "data": {"drug": "x", "route": "iv", "dose_mg": 1},
        },
        {
            **envelope,
            "type": "dose.administered",
            "data": {"drug": "ketamine", "route": "iv", "dose_mg": 0},
        },
        {**envelope, "type": "assessment.recorded", "data": {"sedation_moaas": 6}},
        {**envelope, "type": "nope", "data": {}},
        {"type": "assessment.recorded", "data": {}},
    ]
    for doc in good:
        assert _check(schema, schema, doc), doc
    for doc in bad:
        assert not _check(schema, schema, doc), doc
