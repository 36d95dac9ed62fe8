"""Fidelity: does a cheap backend schedule exactly like a reference one, step for step?

Above the backends (it runs any two of them) and below the CLI: random cases of the kinds that
stress different scheduler paths, the step-by-step comparison of two schedules, and the report.
Nothing in :mod:`tuner.backends` imports it.
"""

from tuner.fidelity._compare import (
    ASYNC_CASE_KINDS,
    CACHE_CASE_KINDS,
    CASE_KINDS,
    CLOSED_CASE_KINDS,
    FidelityCase,
    FidelityReport,
    cases,
    random_case,
    run_fidelity,
    schedule_differences,
)

__all__ = [
    "ASYNC_CASE_KINDS",
    "CACHE_CASE_KINDS",
    "CASE_KINDS",
    "CLOSED_CASE_KINDS",
    "FidelityCase",
    "FidelityReport",
    "cases",
    "random_case",
    "run_fidelity",
    "schedule_differences",
]
