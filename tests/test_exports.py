"""The public names: those of DESIGN.md importable from where users import them, and each
package's ``__all__`` exactly its public names (an export added or lost is a decision)."""

from __future__ import annotations

import importlib

import pytest

CONTRACT = {
    "tuner": [
        "Request",
        "Workload",
        "ServingConfig",
        "SearchSpace",
        "SLO",
        "Objective",
        "Loop",
        "Trial",
        "TuningResult",
        "Measurement",
        "TunerError",
        "InfeasibleError",
        "Repeats",
    ],
    "tuner.backends": [
        "Backend",
        "SimulatorBackend",
        "CostModel",
        "SchedulerReplayBackend",
        "VLLMServerBackend",
    ],
    "tuner.search": ["Search", "GridSearch", "RandomSearch", "TPESearch", "SuccessiveHalving"],
}


@pytest.mark.parametrize("module", sorted(CONTRACT))
def test_public_names_are_exported(module: str) -> None:
    mod = importlib.import_module(module)
    for name in CONTRACT[module]:
        assert hasattr(mod, name), f"{module}.{name} is missing"
        assert name in mod.__all__, f"{module}.__all__ lacks {name}"


EXPORTS: dict[str, list[str]] = {
    "tuner": [
        "BackendError",
        "ConfigError",
        "ConfigRefused",
        "Empirical",
        "Exploration",
        "Fixed",
        "InfeasibleError",
        "LengthDistribution",
        "LogNormal",
        "Loop",
        "Measurement",
        "Objective",
        "Repeats",
        "Request",
        "SLO",
        "SLOError",
        "SearchError",
        "SearchSpace",
        "ServerStartError",
        "ServingConfig",
        "Trial",
        "TrialStatus",
        "TrialTimeout",
        "TunerError",
        "TuningResult",
        "Uniform",
        "Workload",
        "WorkloadError",
    ],
    "tuner.core": [
        "BackendError",
        "ClientHealth",
        "ConfigError",
        "ConfigRefused",
        "Empirical",
        "Fixed",
        "FrozenModel",
        "HARDWARE_KNOBS",
        "InfeasibleError",
        "KNOBS",
        "KNOB_FLAGS",
        "LengthDistribution",
        "LengthSpec",
        "LoadPoint",
        "LogNormal",
        "Measurement",
        "Request",
        "SLOError",
        "SLOResult",
        "SLOShortfall",
        "SearchError",
        "SearchSpace",
        "ServerStartError",
        "ServingConfig",
        "Settings",
        "Trial",
        "TrialStatus",
        "TrialTimeout",
        "TunerError",
        "Uniform",
        "VLLM_VERSION",
        "Workload",
        "WorkloadError",
        "WorkloadSummary",
        "parse_length",
        "summarize",
        "unknown_key_message",
    ],
    "tuner.objectives": [
        "AbortRule",
        "CAPACITY_METRICS",
        "CapacitySettings",
        "DEFAULT_OBJECTIVE",
        "DEFAULT_RESAMPLES",
        "Decision",
        "MetricRef",
        "Objective",
        "PartialRun",
        "RateLattice",
        "Rule",
        "SLO",
        "UserLattice",
        "best_trial",
        "binding_slo",
        "combined_interval",
        "constant_replicates",
        "cost_per_million_tokens",
        "decide",
        "hull",
        "infeasible_error",
        "is_flat",
        "judge",
        "judge_values",
        "knobs_changed",
        "load_lattice",
        "median_of",
        "metric_names",
        "metric_samples",
        "metric_value",
        "noise_interval",
        "objective_spread",
        "parse_slos",
        "percentile_of_runs",
        "pooled_log_sd",
        "rank",
        "rank_key",
        "relative_margin",
        "relative_shortfall",
        "repeat_interval",
        "run_replicates",
        "score_interval",
        "shortfalls",
        "statistic",
        "t_quantile",
        "throughput_per_gpu",
        "tied_with_best",
        "within_margin",
        "within_run_spread",
    ],
    "tuner.hardware": [
        "ASSUMED_GPU",
        "GPU",
        "LinearStepCoefficients",
        "MemoryBreakdown",
        "ModelSpec",
        "RooflineModel",
        "SchedulerDefaults",
        "Target",
        "UsageContext",
        "VLLM_DEFAULT_GPU_MEMORY_UTILIZATION",
        "activation_peak_bytes",
        "kv_bytes_per_token_per_layer",
        "kv_cache_tokens",
        "memory_breakdown",
        "roofline_step_time",
        "vllm_default_scheduler_limits",
        "weight_bytes_per_gpu",
    ],
    "tuner.backends": [
        "AttachedServerBackend",
        "Backend",
        "Calibration",
        "CostModel",
        "SchedulerReplayBackend",
        "SimulatorBackend",
        "VLLMServerBackend",
    ],
    "tuner.backends.simulator": [
        "Calibration",
        "CalibrationRun",
        "Deployment",
        "HeldOut",
        "RequestPath",
        "SimulatorBackend",
        "Timeline",
        "calibrate",
        "calibrated_backend",
        "check_held_out",
        "fit_cost_model",
        "fit_request_path",
    ],
    "tuner.backends.replay": [
        "SchedulerReplayBackend",
    ],
    "tuner.backends.live": [
        "AttachedServerBackend",
        "AttachedSettings",
        "BenchRun",
        "LiveTrial",
        "LoadResult",
        "LoadSettings",
        "RequestRecord",
        "ServerSettings",
        "StepLog",
        "StepRecord",
        "VLLMServerBackend",
        "build_tiny_model",
        "load_bench_run",
    ],
    "tuner.search": [
        "GridSearch",
        "HalvingSettings",
        "ListSearch",
        "Measured",
        "Proposal",
        "RandomSearch",
        "RandomSettings",
        "Search",
        "SharedSearch",
        "StudyStore",
        "SuccessiveHalving",
        "TPESearch",
        "TPESettings",
        "open_storage",
    ],
    "tuner.tuning": [
        "Budget",
        "Exploration",
        "HEADLINE_METRICS",
        "Loop",
        "NoisePool",
        "Repeats",
        "TrialLog",
        "TrialRecord",
        "TuningResult",
        "WorkloadAt",
        "capacity_trial",
        "fingerprint",
        "gpus_of",
        "offered_load",
    ],
    "tuner.fidelity": [
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
    ],
    "tuner.studies": [
        "Arrivals",
        "CapacityResult",
        "ClosedLoop",
        "Comparison",
        "SavedRun",
        "StudyOutcome",
        "StudySpec",
        "TwoTierResult",
        "build_backend",
        "build_deployment",
        "build_space",
        "build_spec",
        "build_workload",
        "find_capacity",
        "load_measurements",
        "load_study",
        "load_sweep",
        "planned_trials",
        "run_study",
        "save_measurement",
        "shortlist",
        "two_tier",
    ],
    "tuner.report": [
        "capacity_text",
        "first_failing",
        "flat_warning",
        "limiting_slo",
        "load_unit",
        "plot_load_curves",
        "study_yaml",
        "with_unit",
        "write_report",
    ],
}


@pytest.mark.parametrize("module", sorted(EXPORTS))
def test_each_package_exports_exactly_its_public_names(module: str) -> None:
    mod = importlib.import_module(module)
    assert sorted(mod.__all__) == sorted(EXPORTS[module])
    for name in mod.__all__:
        assert getattr(mod, name) is not None, f"{module}.{name} is missing"


def test_every_package_is_listed() -> None:
    import pkgutil

    import tuner

    packages = {"tuner"} | {
        m.name for m in pkgutil.walk_packages(tuner.__path__, "tuner.") if m.ispkg
    }
    assert packages - {"tuner.cli"} == set(EXPORTS)


def test_every_error_is_a_tuner_error() -> None:
    import tuner

    for name in (
        "ConfigError",
        "WorkloadError",
        "SLOError",
        "BackendError",
        "SearchError",
        "ServerStartError",
        "TrialTimeout",
        "InfeasibleError",
    ):
        assert issubclass(getattr(tuner, name), tuner.TunerError), name


PUBLIC_BACKENDS = [
    "AttachedServerBackend",
    "Backend",
    "Calibration",
    "CostModel",
    "SchedulerReplayBackend",
    "SimulatorBackend",
    "VLLMServerBackend",
]
#: Names users import from each subpackage (tuner.backends no longer exports them).
SUBPACKAGES = {
    "tuner.backends.simulator": ["Calibration", "SimulatorBackend", "Timeline"],
    "tuner.backends.replay": ["SchedulerReplayBackend"],
    "tuner.backends.live": ["AttachedServerBackend", "LiveTrial", "build_tiny_model"],
    "tuner.fidelity": ["FidelityCase", "run_fidelity", "schedule_differences"],
}


def test_tuner_backends_exports_exactly_the_public_backends() -> None:
    import tuner.backends

    assert tuner.backends.__all__ == PUBLIC_BACKENDS


@pytest.mark.parametrize("module", sorted(SUBPACKAGES))
def test_each_subpackage_exports_its_public_names_sorted(module: str) -> None:
    mod = importlib.import_module(module)
    assert mod.__all__ == sorted(mod.__all__)
    assert set(SUBPACKAGES[module]) <= set(mod.__all__)
    assert not [name for name in mod.__all__ if name.startswith("_")]
    for name in mod.__all__:
        assert getattr(mod, name) is not None
