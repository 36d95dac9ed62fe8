"""The public names of DESIGN.md are importable from where users import them."""

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


@pytest.mark.parametrize("module", sorted(CONTRACT))
def test_all_lists_only_real_names(module: str) -> None:
    mod = importlib.import_module(module)
    for name in mod.__all__:
        assert getattr(mod, name) is not None


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
