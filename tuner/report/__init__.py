"""The one-page tuning report: report.md and a self-contained report.html, with plots."""

from tuner.report._capacity import (
    capacity_text,
    first_failing,
    flat_warning,
    limiting_slo,
    load_unit,
)
from tuner.report._plots import plot_load_curves
from tuner.report._units import with_unit
from tuner.report._write import study_yaml, write_report

__all__ = [
    "capacity_text",
    "first_failing",
    "flat_warning",
    "limiting_slo",
    "load_unit",
    "plot_load_curves",
    "study_yaml",
    "with_unit",
    "write_report",
]
