"""`GET /v1/sessions/{id}/monitoring-form.pdf`, read back with pdfminer: every field's value of a
known session as the JSON form has it, "missing" (and why) for a session without a 40-minute
BP, the records the form rests on and the signed head's Merkle root; clinic scope; the page
rendered to PNG with poppler's pdftoppm for the docs (when installed)."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from remsguard.auditing.form_document import label_of, value_text
from remsguard.domain.events import (
    AssessmentRecorded,
    DoseAdministered,
    Event,
    SessionDischarged,
    SessionOpened,
    VitalsRecorded,
)

from .conftest import World, _env, at, seed

ROOT = Path(__file__).resolve().parents[2]
NO_CHECK = "a-s9"


def _without_40_minute_bp() -> list[Event]:
    """Dosed and discharged after 125 minutes, but no BP between 30 and 50 minutes."""
    e = lambda n, m: _env(NO_CHECK, "clinic-a", n, m)  # noqa: E731
    return [
        SessionOpened(**e(1, -20), patient_ref="patient-9"),  # type: ignore[arg-type]
        VitalsRecorded(**e(2, -10), systolic=126, diastolic=80, spo2=98),  # type: ignore[arg-type]
        DoseAdministered(
            **e(3, 0), drug="esketamine", route="intranasal", dose_mg=84, lot_number="LOT-9"
        ),  # type: ignore[arg-type]
        *[
            VitalsRecorded(**e(4 + i, m), systolic=130, diastolic=82, spo2=97)  # type: ignore[arg-type]
            for i, m in enumerate((10, 20, 60, 75, 90, 105, 118))
        ],
        AssessmentRecorded(**e(20, 115), sedation_moaas=5, dissociation=False),  # type: ignore[arg-type]
        SessionDischarged(**e(21, 125), staff_id="nurse-3", clinically_stable=True),  # type: ignore[arg-type]
    ]


@pytest.fixture(scope="module")
def seeded(world: World) -> World:
    seed(world.log, _without_40_minute_bp(), until=at(10 * 60))
    world.log.sign_head(world.signer)
    return world


def _text(pdf: bytes) -> str:
    from pdfminer.high_level import extract_text

    return " ".join(extract_text(io.BytesIO(pdf)).split())


def _pdf(world: World, session: str, who: str = "admin") -> bytes:
    r = world.client.get(f"/v1/sessions/{session}/monitoring-form.pdf", headers=world.auth(who))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/pdf"
    assert r.content.startswith(b"%PDF")
    return r.content


def test_every_field_value_of_a_known_session_is_printed(seeded: World) -> None:
    pdf = _pdf(seeded, "a-s1", "auditor-a")
    text = _text(pdf)
    form = seeded.client.get("/v1/sessions/a-s1/form", headers=seeded.auth("admin")).json()
    assert form["complete"]
    for name, item in form["fields"].items():
        assert " ".join(label_of(name).split()) in text, name
        assert value_text(item["value"]) in text, (name, item["value"])
        for ident in item["evidence"]:
            assert ident in text, (name, ident)
    # spot checks against the scripted session (conftest.compliant_session)
    for expected in (
        "2026-11-23",
        "esketamine",
        "LOT-7",
        "intranasal",
        "benzodiazepine",
        "128/82 mmHg at 2026-11-23 08:50 UTC",
        "125",
    ):
        assert expected in text, expected
    assert "patient-1" in text and "clinic-a" in text
    head = seeded.log.latest_head()
    assert head is not None
    assert f"Merkle inclusion proof root: {head.root_hash}" in text
    assert "records proven included" in text
    records, _ = seeded.log.session_timeline("a-s1")
    accepted = {r.subject_id: r.record_id for r in records if r.kind == "event.accepted"}
    for ident in form["fields"]["bp_at_40_minutes"]["evidence"]:
        assert accepted[ident] in text
    # What the REMS gate relied on (nothing is on record for this clinic): marked missing.
    assert form["rems"]["certification"] == "missing"
    assert "REMS certification of the setting" in text
    assert "REMS enrollment of the patient" in text
    assert text.count("missing: none on record") == 2  # (columns are read apart)


def test_a_session_without_a_40_minute_bp_says_missing(seeded: World) -> None:
    pdf = _pdf(seeded, NO_CHECK)
    text = _text(pdf)
    label = label_of("bp_at_40_minutes")
    after = text[text.index(label) + len(label) :]
    assert after.lstrip().startswith("▲ missing: no blood pressure reading 30-50 min after")
    assert "no: 2 missing" in text  # the 40-minute BP, and respiratory depression unreported
    assert "LOT-9" in text and "84" in text
    if os.environ.get("REMSGUARD_UPDATE_DOCS_SCREENSHOT") == "1":
        _png(pdf, ROOT / "docs" / "monitoring-form.png")


def test_pdf_is_clinic_scoped_and_audited(seeded: World) -> None:
    r = seeded.client.get("/v1/sessions/b-s1/monitoring-form.pdf", headers=seeded.auth("staff-a"))
    assert r.status_code == 404
    assert seeded.client.get("/v1/sessions/b-s1/monitoring-form.pdf").status_code == 401
    _pdf(seeded, "b-s1", "staff-b")
    page = seeded.client.get(
        "/v1/audit/records",
        params={"kind": "api.query", "limit": 500},
        headers=seeded.auth("admin"),
    ).json()["records"]
    formats = {(r["detail"]["endpoint"], r["detail"]["format"], r["detail"]["rows"]) for r in page}
    assert ("/v1/sessions/b-s1/monitoring-form.pdf", "pdf", 1) in formats
    assert ("/v1/sessions/b-s1/monitoring-form.pdf", "pdf", 0) in formats


def test_a_csv_timeline_query_that_finds_nothing_is_recorded_as_csv(seeded: World) -> None:
    """A refused session query is audited in the format asked for (the timeline recorded
    "json" for a CSV request that found nothing)."""
    url = "/v1/sessions/b-s1/timeline"
    refused = seeded.client.get(url, params={"format": "csv"}, headers=seeded.auth("staff-a"))
    assert refused.status_code == 404
    page = seeded.client.get(
        "/v1/audit/records",
        params={"kind": "api.query", "limit": 500},
        headers=seeded.auth("admin"),
    ).json()["records"]
    found = [
        (r["detail"]["format"], r["detail"]["rows"]) for r in page if r["detail"]["endpoint"] == url
    ]
    assert found == [("csv", 0)]


def _png(pdf: bytes, out: Path) -> None:
    """Page 1 as PNG with Debian's poppler-utils (deploy/poppler/install.sh)."""
    pdftoppm = shutil.which("pdftoppm")
    if pdftoppm is None:
        pytest.skip("pdftoppm missing: run deploy/poppler/install.sh")
    source = out.with_suffix(".pdf")
    source.write_bytes(pdf)
    try:
        subprocess.run(
            [pdftoppm, "-png", "-r", "110", "-f", "1", "-l", "1", "-singlefile", str(source),
             str(out.with_suffix(""))],
            check=True,
            timeout=60,
        )  # fmt: skip
    finally:
        source.unlink()


def test_forms_export_writes_one_pdf_per_session_of_the_clinic(
    seeded: World, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from remsguard.entrypoints.cli import app

    out = tmp_path / "forms"
    args = ["forms", "export", "--clinic", "clinic-a", "--from", "2026-11-23"]
    result = CliRunner().invoke(
        app, [*args, "--to", "2026-11-23", "--out", str(out), "--db", seeded.url]
    )
    assert result.exit_code == 0, result.output
    written = sorted(p.name for p in out.iterdir())
    assert written == [f"monitoring-form-{s}.pdf" for s in ("a-s1", "a-s2", NO_CHECK)]
    assert "a-s9" in _text((out / f"monitoring-form-{NO_CHECK}.pdf").read_bytes())
    again = CliRunner().invoke(app, [*args, "--to", "2026-11-22", "--out", str(out)])
    assert again.exit_code == 2 and "--to is before --from" in again.output
