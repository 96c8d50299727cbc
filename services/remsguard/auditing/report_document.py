"""The clinic compliance report drawn: charts rendered on the server with matplotlib (Agg), then
HTML (charts as `data:` PNGs, styles from `/v1/reports/report.css`: the CSP allows no inline
style) or PDF (reportlab, the same PNGs), so the PDF needs no browser. Colours, glyphs and
rule names come from ``legend``, as in the console's chart, the form and the dashboards.
matplotlib and reportlab are imported inside the functions that draw."""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass
from typing import Any, Final

from remsguard.auditing.legend import INK, MUTED, OK, SEVERITIES, severity
from remsguard.auditing.pdf_page import build_pdf, text_styles
from remsguard.auditing.report import ComplianceReport

__all__ = ["ReportCharts", "report_charts", "report_html", "report_pdf"]

HATCHES: Final = ("//", "..", "xx", "\\\\", "++", "oo", "--", "**", "||")
DPI: Final = 110


@dataclass(frozen=True, slots=True)
class ReportCharts:
    """PNG bytes of each chart, with the sentence that says what it shows (alt text)."""

    rules_by_week: bytes
    compliant_by_week: bytes
    forty_minute: bytes
    acknowledgement: bytes
    alt: dict[str, str]


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.1f}%"


def _minutes(value: float | None) -> str:
    return "n/a" if value is None else f"{value:g} min"


def report_charts(report: ComplianceReport) -> ReportCharts:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    plt.rcParams.update(
        {
            "font.family": "DejaVu Sans",
            "font.size": 9,
            "axes.edgecolor": MUTED,
            "axes.labelcolor": INK,
            "xtick.color": INK,
            "ytick.color": INK,
            "axes.spines.top": False,
            "axes.spines.right": False,
        }
    )

    def png(fig: Any) -> bytes:
        out = io.BytesIO()
        fig.savefig(out, format="png", dpi=DPI, bbox_inches="tight")
        plt.close(fig)
        return out.getvalue()

    weeks = [w.start.strftime("%d %b") for w in report.weeks]
    rules = sorted(report.violations_by_rule, key=lambda r: (-report.violations_by_rule[r], r))

    fig, ax = plt.subplots(figsize=(7.2, 2.8))
    bottom = [0] * len(report.weeks)
    handles = []
    for index, rule in enumerate(rules):
        sev = severity(report.rule_severity.get(rule))
        counts = [w.violations_by_rule.get(rule, 0) for w in report.weeks]
        ax.bar(
            weeks,
            counts,
            bottom=bottom,
            color=sev.colour,
            alpha=0.85,
            hatch=HATCHES[index % len(HATCHES)],
            edgecolor="white",
            linewidth=0.6,
        )
        bottom = [b + c for b, c in zip(bottom, counts, strict=True)]
        handles.append(
            Patch(
                facecolor=sev.colour,
                hatch=HATCHES[index % len(HATCHES)],
                edgecolor="white",
                label=f"{sev.glyph} {rule} ({report.violations_by_rule[rule]})",
            )
        )
    ax.set_ylabel("sessions")
    ax.set_xlabel("week starting")
    ax.set_title("Sessions with each violation, by week", loc="left", fontweight="bold")
    if handles:
        ax.legend(
            handles=handles,
            fontsize=7.5,
            frameon=False,
            loc="upper left",
            bbox_to_anchor=(1.0, 1.0),
        )
    else:
        ax.text(0.5, 0.5, "no violations this month", transform=ax.transAxes, ha="center")
    rules_png = png(fig)

    fig, ax = plt.subplots(figsize=(7.2, 2.2))
    shares = [
        None if not w.sessions else (w.sessions - w.sessions_with_violations) / w.sessions
        for w in report.weeks
    ]
    bars = ax.bar(weeks, [s or 0 for s in shares], color=OK, hatch="..", edgecolor="white")
    for bar, share, week in zip(bars, shares, report.weeks, strict=True):
        text = "no sessions" if share is None else f"{share * 100:.0f}% of {week.sessions}"
        ax.annotate(
            text,
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=8,
            color=INK,
        )
    ax.set_ylim(0, 1.15)
    ax.yaxis.set_major_formatter(lambda v, _: f"{v * 100:.0f}%")
    ax.set_title("Sessions fully compliant, by week", loc="left", fontweight="bold")
    compliant_png = png(fig)

    fig, ax = plt.subplots(figsize=(7.2, 2.6))
    check_colour = SEVERITIES["info"].colour
    names = sorted({c.protocol for c in report.checks})
    for index, name in enumerate(names):
        mine = [c for c in report.checks if c.protocol == name]
        window = next((c.window for c in mine if c.window is not None), None)
        hatch = HATCHES[index % len(HATCHES)]
        if window is not None:
            ax.axvspan(
                *window,
                facecolor="none",
                hatch=hatch,
                edgecolor=MUTED,
                alpha=0.45,
                label=f"{name}: POST_DOSE_BP_MISSED window {window[0]:g}-{window[1]:g} min",
            )
        ax.hist(
            [c.minutes for c in mine if c.minutes is not None],
            bins=range(0, 95, 5),
            color=check_colour,
            alpha=0.9 - 0.35 * index,
            hatch=hatch,
            edgecolor="white",
            label=f"{name}: {sum(1 for c in mine if c.in_window)} of {len(mine)} in window",
        )
    ax.set_xlim(0, 90)
    ax.set_xlabel("minutes from the first dose to the post-dose BP reading")
    ax.set_ylabel("sessions")
    ax.set_title(
        f"40-minute BP check: {report.checks_in_window} of {len(report.checks)} in the "
        f"protocol's window, {report.checks_missing} without a BP reading by 90 min",
        loc="left",
        fontweight="bold",
    )
    ax.legend(fontsize=7.5, frameon=False, loc="upper right")
    forty_png = png(fig)

    fig, ax = plt.subplots(figsize=(7.2, 2.4))
    crit = SEVERITIES["critical"]
    if report.ack_minutes:
        ax.hist(report.ack_minutes, bins=20, color=crit.colour, alpha=0.8, edgecolor="white")
        for value, style, name in (
            (report.ack_median, "-", "median"),
            (report.ack_p90, "--", "p90"),
        ):
            if value is not None:
                ax.axvline(
                    value, color=INK, linestyle=style, linewidth=1.5, label=f"{name} {value:g} min"
                )
        ax.legend(fontsize=8, frameon=False)
    else:
        ax.text(
            0.5,
            0.5,
            "no critical alert acknowledged this month",
            transform=ax.transAxes,
            ha="center",
        )
    ax.set_xlabel("minutes from the alert to its acknowledgement")
    ax.set_ylabel("alerts")
    ax.set_title(
        f"{crit.glyph} Time to acknowledge critical alerts ({len(report.ack_minutes)} of "
        f"{report.critical_alerts} acknowledged)",
        loc="left",
        fontweight="bold",
    )
    ack_png = png(fig)

    alt = {
        "rules_by_week": "Stacked bars: sessions with each rule's violation per week; "
        + (", ".join(f"{r} {report.violations_by_rule[r]}" for r in rules) or "none"),
        "compliant_by_week": "Bars: share of sessions fully compliant per week: "
        + ", ".join(f"{w} {_percent(s)}" for w, s in zip(weeks, shares, strict=True)),
        "forty_minute": f"Histogram of minutes from dose to the 40-minute BP; "
        f"{report.checks_in_window} of {len(report.checks)} in the protocol's window",
        "acknowledgement": f"Histogram of minutes to acknowledge critical alerts; median "
        f"{_minutes(report.ack_median)}, p90 {_minutes(report.ack_p90)}",
    }
    return ReportCharts(rules_png, compliant_png, forty_png, ack_png, alt)


def _headline(report: ComplianceReport) -> list[tuple[str, str]]:
    return [
        ("Sessions monitored", str(report.sessions)),
        (
            "Fully compliant",
            f"{_percent(report.fully_compliant_share)} "
            f"({report.sessions - report.sessions_with_violations} of {report.sessions})",
        ),
        ("Sessions with a violation", str(report.sessions_with_violations)),
        ("40-minute BP in the window", f"{report.checks_in_window} of {len(report.checks)}"),
        (
            "Critical alerts",
            f"{report.critical_alerts} ({report.critical_unacknowledged} never acknowledged)",
        ),
        (
            "Time to acknowledge (median / p90)",
            f"{_minutes(report.ack_median)} / {_minutes(report.ack_p90)}",
        ),
        ("Forms submitted within 7 days", f"{report.forms_on_time} of {report.forms_due}"),
        ("Forms submitted / overdue", f"{report.forms_submitted} / {report.forms_overdue}"),
        ("Open items to fix", str(report.open_items_total)),
    ]


def _title(report: ComplianceReport) -> str:
    return f"Compliance report · {report.clinic_id} · {report.month.strftime('%B %Y')}"


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def report_html(report: ComplianceReport, charts: ReportCharts) -> str:
    e = html.escape
    rows = "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in _headline(report))
    rules = "".join(
        f'<tr class="sev-{e(severity(report.rule_severity.get(r)).name)}"><td>'
        f"{e(severity(report.rule_severity.get(r)).glyph)} {e(r)}</td>"
        f"<td>{e(severity(report.rule_severity.get(r)).name)}</td><td>{n}</td>"
        + "".join(f"<td>{w.violations_by_rule.get(r, 0)}</td>" for w in report.weeks)
        + "</tr>"
        for r, n in sorted(report.violations_by_rule.items(), key=lambda x: (-x[1], x[0]))
    )
    week_heads = "".join(f"<th>{w.start.strftime('%d %b')}</th>" for w in report.weeks)
    items = "".join(
        f'<tr class="sev-{e(i.severity)}"><td>{e(severity(i.severity).glyph)} {e(i.what)}</td>'
        f"<td>{e(i.session_id)}</td><td>{e(i.patient_ref or '')}</td>"
        f"<td>{i.since.strftime('%Y-%m-%d %H:%M UTC')}</td><td>{e(i.status)}</td></tr>"
        for i in report.open_items
    )
    more = report.open_items_total - len(report.open_items)

    def figure(key: str, png: bytes) -> str:
        return f'<figure><img src="{_data_uri(png)}" alt="{e(charts.alt[key])}"></figure>'

    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(_title(report))}</title>
<link rel="stylesheet" href="/v1/reports/report.css">
</head><body><main>
<h1>{e(_title(report))}</h1>
<p class="muted">From the compliance log; counts as in <code>GET /v1/compliance/summary</code>
for the month's days. Generated {report.generated_at.strftime("%Y-%m-%d %H:%M UTC")}.</p>
<table class="headline">{rows}</table>
{figure("compliant_by_week", charts.compliant_by_week)}
<h2>Violations by rule</h2>
{figure("rules_by_week", charts.rules_by_week)}
<table class="rules"><thead><tr><th>Rule</th><th>Severity</th><th>Sessions</th>{week_heads}</tr>
</thead><tbody>{rules or '<tr><td colspan="3">No violations.</td></tr>'}</tbody></table>
<h2>The 40-minute blood-pressure check</h2>
{figure("forty_minute", charts.forty_minute)}
<h2>Acknowledging critical alerts</h2>
{figure("acknowledgement", charts.acknowledgement)}
<h2>Open items to fix ({report.open_items_total})</h2>
<table class="items"><thead><tr><th>What</th><th>Session</th><th>Patient</th><th>Since</th>
<th>Status</th></tr></thead><tbody>{items or '<tr><td colspan="5">Nothing open.</td></tr>'}
</tbody></table>{f'<p class="muted">and {more} more</p>' if more > 0 else ""}
</main></body></html>
"""


REPORT_CSS: Final = f"""body {{ margin: 0; font-family: system-ui, "DejaVu Sans", sans-serif; color: {INK};
  background: #fff; font-size: 16px; }}
main {{ max-width: 980px; margin: 0 auto; padding: 16px; }}
h1 {{ font-size: 24px; margin: 6px 0; color: #12355b; }} h2 {{ font-size: 19px; margin: 22px 0 6px; }}
.muted {{ color: {MUTED}; font-size: 14px; }}
table {{ border-collapse: collapse; margin: 8px 0; }}
th, td {{ text-align: left; padding: 4px 10px; border-bottom: 1px solid #d9dde3; }}
.headline th {{ font-weight: 600; }} .headline td {{ font-size: 18px; font-weight: 700; }}
figure {{ margin: 10px 0; }} img {{ max-width: 100%; height: auto; }}
.sev-critical td:first-child {{ color: {SEVERITIES["critical"].colour}; font-weight: 600; }}
.sev-warning td:first-child {{ color: {SEVERITIES["warning"].colour}; font-weight: 600; }}
"""  # noqa: E501


def report_pdf(report: ComplianceReport, charts: ReportCharts) -> bytes:
    from reportlab.lib import colors
    from reportlab.lib.units import mm
    from reportlab.platypus import Image, Paragraph, Spacer, Table, TableStyle

    body, small, head, sub, strong, _bold = text_styles()
    grid = TableStyle(
        [
            ("GRID", (0, 0), (-1, -1), 0.3, colors.HexColor("#d9dde3")),
            ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ]
    )
    width = 180 * mm

    def image(png: bytes) -> Image:
        img = Image(io.BytesIO(png))
        scale = width / img.drawWidth
        img.drawWidth, img.drawHeight = width, img.drawHeight * scale
        return img

    def p(text: str, style: Any = body) -> Paragraph:
        return Paragraph(html.escape(text), style)

    story: list[Any] = [
        p(_title(report), head),
        p(
            "From the compliance log; counts as in GET /v1/compliance/summary for the month's "
            f"days. Generated {report.generated_at.strftime('%Y-%m-%d %H:%M UTC')}.",
            small,
        ),
        Spacer(1, 3 * mm),
    ]
    headline = Table(
        [[p(k, strong), p(v)] for k, v in _headline(report)],
        colWidths=[70 * mm, 110 * mm],
        hAlign="LEFT",
    )
    headline.setStyle(grid)
    story += [headline, Spacer(1, 3 * mm), image(charts.compliant_by_week)]
    story += [p("Violations by rule", sub), image(charts.rules_by_week)]
    rule_rows = [[p(h, strong) for h in ("Rule", "Severity", "Sessions")]] + [
        [
            p(f"{severity(report.rule_severity.get(r)).glyph} {r}"),
            p(severity(report.rule_severity.get(r)).name),
            p(str(n)),
        ]
        for r, n in sorted(report.violations_by_rule.items(), key=lambda x: (-x[1], x[0]))
    ]
    rules = Table(rule_rows, colWidths=[80 * mm, 40 * mm, 30 * mm], hAlign="LEFT")
    rules.setStyle(grid)
    story += [rules, p("The 40-minute blood-pressure check", sub), image(charts.forty_minute)]
    story += [p("Acknowledging critical alerts", sub), image(charts.acknowledgement)]
    story.append(p(f"Open items to fix ({report.open_items_total})", sub))
    if report.open_items:
        item_rows = [[p(h, strong) for h in ("What", "Session", "Patient", "Since", "Status")]]
        item_rows += [
            [
                p(f"{severity(i.severity).glyph} {i.what}"),
                p(i.session_id, small),
                p(i.patient_ref or "", small),
                p(i.since.strftime("%Y-%m-%d %H:%M"), small),
                p(i.status, small),
            ]
            for i in report.open_items
        ]
        items = Table(
            item_rows,
            colWidths=[55 * mm, 45 * mm, 30 * mm, 30 * mm, 20 * mm],
            repeatRows=1,
            hAlign="LEFT",
        )
        items.setStyle(grid)
        story.append(items)
        more = report.open_items_total - len(report.open_items)
        if more > 0:
            story.append(p(f"and {more} more", small))
    else:
        story.append(p("Nothing open."))
    return build_pdf(story, title=_title(report))
