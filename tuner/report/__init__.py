"""The one-page tuning report: report.md and a self-contained report.html, with plots."""

from __future__ import annotations

from pathlib import Path

import yaml

from tuner.report._document import to_html, to_markdown
from tuner.studies._run import StudyOutcome
from tuner.studies._spec import StudySpec


def study_yaml(spec: StudySpec) -> str:
    """The study's spec as YAML (defaults filled in)."""
    data = spec.model_dump(mode="json", exclude_none=True)
    return str(yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=100))


def write_report(outcome: StudyOutcome) -> tuple[Path, Path]:
    """Write report.md, report.html and their PNGs into the study's folder."""
    from tuner.report._content import blocks

    doc = blocks(outcome)
    md = outcome.folder / "report.md"
    md.write_text(to_markdown(doc, outcome.folder), encoding="utf-8")
    page = outcome.folder / "report.html"
    page.write_text(to_html(doc, f"tuner: {outcome.spec.name}"), encoding="utf-8")
    return md, page


__all__ = ["study_yaml", "write_report"]
