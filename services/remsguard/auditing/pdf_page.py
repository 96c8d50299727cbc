"""What the form and the report PDFs share: fonts, text styles and the page (US Letter).
reportlab is imported inside each function (callers pay for it only when they draw).
Fonts: DejaVu Sans from Debian's fonts-dejavu-core, else matplotlib's bundled copy (a
dependency), so glyphs such as ▲ ◆ ≥ ₂ always print."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Final, NamedTuple

from remsguard.auditing.legend import INK, MUTED

__all__ = ["TextStyles", "build_pdf", "pdf_fonts", "text_styles"]

_FONT_DIRS: Final = (Path("/usr/share/fonts/truetype/dejavu"),)


def pdf_fonts() -> tuple[str, str]:
    """Register DejaVu Sans (regular, bold) with reportlab; returns their names."""
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    if "RgSans" in pdfmetrics.getRegisteredFontNames():
        return "RgSans", "RgSans-Bold"
    import matplotlib

    dirs = [*_FONT_DIRS, Path(matplotlib.get_data_path()) / "fonts" / "ttf"]
    folder = next(d for d in dirs if (d / "DejaVuSans.ttf").is_file())
    pdfmetrics.registerFont(TTFont("RgSans", str(folder / "DejaVuSans.ttf")))
    pdfmetrics.registerFont(TTFont("RgSans-Bold", str(folder / "DejaVuSans-Bold.ttf")))
    return "RgSans", "RgSans-Bold"


class TextStyles(NamedTuple):
    """The paragraph styles of every PDF, in the order the documents unpack them."""

    body: Any
    small: Any
    head: Any
    sub: Any
    strong: Any
    bold_font: str


def text_styles() -> TextStyles:
    from reportlab.lib.styles import ParagraphStyle

    regular, bold = pdf_fonts()
    body = ParagraphStyle("body", fontName=regular, fontSize=9, leading=11.5, textColor=INK)
    return TextStyles(
        body=body,
        small=ParagraphStyle("small", parent=body, fontSize=7.5, leading=9.5, textColor=MUTED),
        head=ParagraphStyle("head", parent=body, fontName=bold, fontSize=15, leading=19),
        sub=ParagraphStyle("sub", parent=body, fontName=bold, fontSize=11, leading=14),
        strong=ParagraphStyle("strong", parent=body, fontName=bold),
        bold_font=bold,
    )


def build_pdf(story: list[Any], *, title: str, subject: str = "") -> bytes:
    from reportlab.lib.pagesizes import letter
    from reportlab.lib.units import mm
    from reportlab.platypus import SimpleDocTemplate

    out = io.BytesIO()
    SimpleDocTemplate(
        out,
        pagesize=letter,
        leftMargin=16 * mm,
        rightMargin=16 * mm,
        topMargin=14 * mm,
        bottomMargin=14 * mm,
        title=title,
        author="remsguard",
        subject=subject,
    ).build(story)
    return out.getvalue()
