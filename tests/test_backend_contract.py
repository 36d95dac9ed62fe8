"""The Backend contract, run over every backend."""

from __future__ import annotations

import pytest

from tests.contracts import BackendContract
from tuner.backends import Backend, CostModel, SimulatorBackend


class TestSimulatorContract(BackendContract):
    def make_backend(self) -> Backend:
        return SimulatorBackend()


class TestSimulatorSecondsContract(BackendContract):
    def make_backend(self) -> Backend:
        return SimulatorBackend(CostModel(fixed=0.004, per_prefill_token=1e-5, time_unit="s"))


@pytest.mark.vllm
class TestSchedulerReplayContract(BackendContract):
    def make_backend(self) -> Backend:
        from tuner.backends import SchedulerReplayBackend

        return SchedulerReplayBackend()
