"""The Patient Monitoring Form as a printable PDF, checkable against the compliance log.

Every field of the form (``MonitoringFormDoc.to_json()``, in its order, so fields added to
the form later are printed too) with its value, or **missing** and the reason, never a guess;
the evidence ids and the protocol thresholds behind it; then the compliance log records the
form rests on (the ``event.accepted`` record of each evidence event, the ``alert.raised``
record of each evidence alert) and the signed tree head whose Merkle root every one of them
is proven included under (each inclusion proof checked here, as `audit check-proof` does).

reportlab is imported inside ``form_pdf`` (the CLI's start-up does not pay for it); fonts and
page from ``pdf_page``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from remsguard.adapters.storage import AuditRow, ComplianceLog
from remsguard.adapters.storage.models import utc
from remsguard.auditing.forms import MonitoringFormDoc
from remsguard.auditing.legend import MUTED, OK, SEVERITIES
from remsguard.auditing.pdf_page import build_pdf, text_styles
from remsguard.domain import merkle
from remsguard.domain.decisions import AuditKind

__all__ = ["FormEvidence", "form_evidence", "form_pdf", "label_of", "value_text"]

# The REMS form's wording for the fields remsguard fills; a field not named here is printed
# under its own name ("serious_adverse_events" -> "Serious adverse events").
LABELS: Final = {
    "treatment_date": "Treatment date",
    "drug": "Drug administered",
    "dose_mg": "Dose administered (mg)",
    "lot_number": "Lot number",
    "route": "Route",
    "concomitant_medications": "Concomitant medications",
    "total_monitoring_minutes": (
        "Total time (minutes) from the first administration to the completion of monitoring"
    ),
    "bp_before_administration": "Blood pressure before administration",
    "bp_at_40_minutes": "Blood pressure about 40 minutes after administration",
    "bp_before_completion": "Blood pressure before completion of monitoring",
    "vitals_in_range_before_administration": (
        "Vital signs in an acceptable range before administration"
    ),
    "vitals_in_range_before_completion": "Vital signs in an acceptable range before completion",
    "sedation_occurred": "Did the patient experience sedation?",
    "dissociation_occurred": "Did the patient experience dissociation?",
    "respiratory_depression_occurred": "Did the patient experience respiratory depression?",
}
MISSING: Final = "missing"
_PROVEN_KINDS: Final = (AuditKind.EVENT_ACCEPTED.value, AuditKind.ALERT_RAISED.value)


@dataclass(frozen=True, slots=True)
class FormEvidence:
    """The records a form rests on and what the log's signed head says about them."""

    records: tuple[AuditRow, ...]
    not_in_log: tuple[str, ...]  # evidence ids without a record (never expected)
    tree_size: int | None = None  # the latest signed tree head, if any
    root_hash: str | None = None
    signed_at: datetime | None = None
    key_id: str | None = None
    proven: tuple[str, ...] = ()  # record ids whose inclusion proof leads to root_hash
    unproven: tuple[str, ...] = ()  # not yet under a signed head, or a proof that fails


def _evidence_ids(doc: MonitoringFormDoc) -> list[str]:
    seen: list[str] = []
    for item in doc.to_json()["fields"].values():
        for ident in item.get("evidence") or []:
            if ident not in seen:
                seen.append(ident)
    return seen


def form_evidence(log: ComplianceLog, doc: MonitoringFormDoc) -> FormEvidence:
    """The ``event.accepted`` / ``alert.raised`` records behind the form's evidence ids, each
    proven included under the latest signed tree head (checked with ``merkle``)."""
    wanted = _evidence_ids(doc)
    records, _ = log.session_timeline(doc.session_id)
    by_subject: dict[str, AuditRow] = {}
    for row in records:
        if row.kind in _PROVEN_KINDS and row.subject_id in wanted:
            by_subject.setdefault(row.subject_id, row)
    found = tuple(by_subject[i] for i in wanted if i in by_subject)
    missing = tuple(i for i in wanted if i not in by_subject)
    head = log.latest_head()
    if head is None:
        return FormEvidence(found, missing, unproven=tuple(r.record_id for r in found))
    proven: list[str] = []
    unproven: list[str] = []
    root = bytes.fromhex(head.root_hash)
    for row in found:
        proof = log.inclusion_proof(row.record_id, head.tree_size)
        ok = proof is not None and merkle.verify_inclusion(
            merkle.leaf_hash(bytes.fromhex(proof.record_hash)),
            proof.leaf_index,
            proof.tree_size,
            [bytes.fromhex(p) for p in proof.path],
            root,
        )
        (proven if ok else unproven).append(row.record_id)
    return FormEvidence(
        found,
        missing,
        tree_size=head.tree_size,
        root_hash=head.root_hash,
        signed_at=utc(head.signed_at),
        key_id=head.key_id,
        proven=tuple(proven),
        unproven=tuple(unproven),
    )


def _time(value: datetime | str) -> str:
    at = datetime.fromisoformat(value.replace("Z", "+00:00")) if isinstance(value, str) else value
    return utc(at).strftime("%Y-%m-%d %H:%M UTC")


def value_text(value: Any) -> str:
    """A field's value as printed: BP as "128/82 mmHg at ...", yes/no, lists joined."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        return _time(value)
    if isinstance(value, Mapping) and "systolic" in value:
        text = f"{value['systolic']:g}/{value['diastolic']:g} mmHg"
        return f"{text} at {_time(value['at'])}" if value.get("at") else text
    if isinstance(value, Mapping):
        return "; ".join(f"{k}: {value_text(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(value_text(v) for v in value) or "none"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def label_of(name: str) -> str:
    return LABELS.get(name, name.replace("_", " ").capitalize())


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _rems_rows(rems: dict[str, Any] | None) -> list[tuple[str, str]]:
    """What the REMS gate relied on: the setting's certification and the patient's
    enrollment as recorded, and whether each covered the first dose's date."""
    if rems is None:
        return []
    if not rems.get("required"):
        return [("REMS gate", "not required by this protocol")]

    def covered(item: Any, what: str) -> str:
        if not isinstance(item, dict):
            return f"{MISSING}: none on record"
        cover = item.get("covers_dose_date")
        verdict = {True: "covers", False: "does NOT cover", None: "no dose yet for"}[cover]
        return f"{what} ({verdict} the dose date {rems.get('dose_date') or '?'})"

    cert, enrollment = rems.get("certification"), rems.get("enrollment")
    cert_text = (
        f"{cert['certification_id']}, valid {cert['valid_from']} to {cert['valid_to'] or 'open'}"
        if isinstance(cert, dict)
        else ""
    )
    enrolled = f"enrolled {enrollment['enrolled_on']}" if isinstance(enrollment, dict) else ""
    return [
        ("REMS certification of the setting", covered(cert, cert_text)),
        ("REMS enrollment of the patient", covered(enrollment, enrolled)),
    ]


def form_pdf(doc: MonitoringFormDoc, evidence: FormEvidence, printed_at: datetime) -> bytes:
    """The form as a one- or two-page PDF (US Letter)."""
    from reportlab.lib import colors
    from reportlab.lib.units import mm
    from reportlab.platypus import Paragraph, Spacer, Table, TableStyle

    body, small, head, sub, strong, bold = text_styles()
    crit = SEVERITIES["critical"]
    data = doc.to_json()
    submission = data.get("submission") or {}

    def p(text: str, style: Any = body) -> Paragraph:
        return Paragraph(text, style)

    story: list[Any] = [
        p("Patient Monitoring Form", head),
        p(
            "SPRAVATO® REMS-style treatment session record, filled by remsguard from the "
            "compliance log's vouched events. Values are never invented: a field the "
            f"evidence cannot fill is marked <b>{MISSING}</b> with the reason.",
            small,
        ),
        Spacer(1, 3 * mm),
    ]
    meta = [
        ("Session", doc.session_id),
        ("Healthcare setting (clinic)", doc.clinic_id),
        ("Patient", doc.patient_ref or MISSING),
        ("Protocol", doc.protocol or MISSING),
        ("Form complete", "yes" if not doc.missing else f"no: {len(doc.missing)} {MISSING}"),
        ("Due", value_text(submission.get("due_at")) or "not yet (session not ended)"),
        (
            "Submitted",
            (
                f"{value_text(submission.get('submitted_at'))} by "
                f"{submission.get('submitted_by') or '?'}"
            )
            if submission.get("submitted_at")
            else ("not submitted, OVERDUE" if submission.get("overdue") else "not submitted"),
        ),
    ]
    meta += _rems_rows(data.get("rems"))
    table = Table(
        [[p(k, strong), p(_esc(v))] for k, v in meta], colWidths=[55 * mm, 125 * mm], hAlign="LEFT"
    )
    table.setStyle(
        TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), ("BOTTOMPADDING", (0, 0), (-1, -1), 1)])
    )
    story += [table, Spacer(1, 4 * mm), p("Form fields", sub)]

    rows: list[list[Any]] = [[p("Field", strong), p("Value", strong), p("Evidence", strong)]]
    styles: list[tuple[Any, ...]] = []
    for index, (name, item) in enumerate(data["fields"].items(), start=1):
        if item.get("missing"):
            partial = value_text(item.get("value"))
            text = (
                f'<font color="{crit.colour}" name="{bold}">{crit.glyph} {MISSING}</font>: '
                f"{_esc(item.get('reason') or 'no evidence')}"
                + (f" (recorded: {_esc(partial)})" if partial else "")
            )
            styles.append(("BACKGROUND", (0, index), (-1, index), colors.HexColor("#fbeceb")))
        else:
            text = _esc(value_text(item.get("value")))
        basis = item.get("basis")
        if basis:
            text += f'<br/><font size="7.5" color="{MUTED}">judged by: {_esc(basis)}</font>'
        ids = ", ".join(item.get("evidence") or []) or "none"
        rows.append([p(_esc(label_of(name))), p(text), p(_esc(ids), small)])
    fields = Table(rows, colWidths=[58 * mm, 78 * mm, 44 * mm], repeatRows=1, hAlign="LEFT")
    fields.setStyle(
        TableStyle(
            [
                ("GRID", (0, 0), (-1, -1), 0.4, colors.HexColor("#d9dde3")),
                ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#e8edf3")),
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                *styles,
            ]
        )
    )
    story += [fields, Spacer(1, 4 * mm), p("Records this form rests on", sub)]

    if evidence.records:
        recs = [[p(h, strong) for h in ("Log index", "Record id", "Kind", "Event / alert id")]]
        recs += [
            [
                p(str(r.log_index), small),
                p(r.record_id, small),
                p(r.kind, small),
                p(_esc(r.subject_id), small),
            ]
            for r in evidence.records
        ]
        rtable = Table(
            recs, colWidths=[18 * mm, 72 * mm, 28 * mm, 62 * mm], repeatRows=1, hAlign="LEFT"
        )
        rtable.setStyle(
            TableStyle(
                [
                    ("GRID", (0, 0), (-1, -1), 0.3, colors.HexColor("#d9dde3")),
                    ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ]
            )
        )
        story.append(rtable)
    else:
        story.append(p(f"No evidence records ({MISSING}): the form has no filled field."))
    if evidence.not_in_log:
        story.append(
            p(f"Evidence ids without a log record: {_esc(', '.join(evidence.not_in_log))}")
        )
    story.append(Spacer(1, 3 * mm))
    if evidence.root_hash is None:
        proof = (
            f'<font color="{crit.colour}">{crit.glyph} No signed tree head yet</font>: the '
            "records cannot be proven included (sign one with `remsguard audit sign-head`)."
        )
    else:
        verdict = (
            f'<font color="{OK}">✔ all {len(evidence.proven)} records proven included</font>'
            if not evidence.unproven
            else f'<font color="{crit.colour}">{crit.glyph} {len(evidence.unproven)} record(s) '
            f"not proven: {_esc(', '.join(evidence.unproven))}</font>"
        )
        assert evidence.signed_at is not None
        proof = (
            f"Merkle inclusion proof root: <b>{evidence.root_hash}</b><br/>"
            f"signed tree head of size {evidence.tree_size}, signed "
            f"{_time(evidence.signed_at)}, key {_esc(evidence.key_id or '?')}. {verdict}. "
            "Check any record with <i>remsguard audit proof RECORD_ID</i> and "
            "<i>remsguard audit check-proof</i>."
        )
    story += [p(proof), Spacer(1, 3 * mm)]
    unvouched = data.get("unvouched_events") or []
    if unvouched:
        story.append(
            p(
                "Stored events the hash chain does not vouch for, left out: "
                + _esc(", ".join(unvouched))
            )
        )
    story.append(p(f"Printed {_time(printed_at.astimezone(UTC))} by remsguard.", small))

    return build_pdf(
        story, title=f"Patient Monitoring Form {doc.session_id}", subject=f"clinic {doc.clinic_id}"
    )
