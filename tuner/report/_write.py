"""Writing a study's report files (report.md, report.html and their PNGs)."""

from __future__ import annotations

from pathlib import Path

from tuner.report._content import blocks, study_yaml
from tuner.report._document import to_html, to_markdown
from tuner.studies import StudyOutcome

__all__ = ["study_yaml", "write_report"]


def write_report(outcome: StudyOutcome) -> tuple[Path, Path]:
    """Write report.md, report.html and their PNGs into the study's folder."""
    doc = blocks(outcome)
    md = outcome.folder / "report.md"
    md.write_text(to_markdown(doc, outcome.folder), encoding="utf-8")
    page = outcome.folder / "report.html"
    page.write_text(to_html(doc, f"tuner: {outcome.spec.name}"), encoding="utf-8")
    return md, page
