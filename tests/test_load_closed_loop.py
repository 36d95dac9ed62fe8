"""The live client in closed loop, against the fake server (no vLLM): each user waits for its
previous response (and a think time) before sending its next request."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from tests.test_load import fake_vllm
from tests.test_server import CONFIG, fake_backend, fake_exe  # noqa: F401 - a fixture
from tuner import Workload
from tuner.backends import AttachedServerBackend
from tuner.backends.live._load import replay


def test_each_user_sends_its_next_request_after_its_previous_one_finished() -> None:
    # Each request takes ~0.2 s (10 tokens, 20 ms steps): one user at a time in turn.
    w = Workload.closed_loop(2, 6, prompt_len=16, output_len=10, think_time=0.1)
    with fake_vllm(step_s=0.02) as fake:
        result = replay(fake.url, fake.model, w)
    assert all(r.ok for r in result.requests)
    reqs = result.requests
    for u in (0, 1):
        mine = [reqs[i] for i in range(6) if w.user[i] == u]  # type: ignore[index]
        for prev, nxt in itertools.pairwise(mine):
            # Never two requests of one user in flight; the think time after the last token.
            assert nxt.sent >= prev.token_times[-1] + 0.1 - 1e-3
            assert nxt.sent == pytest.approx(prev.token_times[-1] + 0.1, abs=0.05)
            assert nxt.scheduled == pytest.approx(nxt.sent, abs=0.05)
    assert reqs[0].sent == pytest.approx(0.0, abs=0.05) and reqs[1].sent < 0.05  # both start
    assert np.all(result.send_lag < 0.05)


def test_one_user_sends_sequentially() -> None:
    w = Workload.closed_loop(1, 3, prompt_len=8, output_len=5)
    with fake_vllm(step_s=0.02) as fake:
        result = replay(fake.url, fake.model, w)
    r = result.requests
    assert r[1].sent >= r[0].token_times[-1] and r[2].sent >= r[1].token_times[-1]


def test_the_measurement_holds_the_actual_send_times(fake_exe: str, tmp_path: Path) -> None:  # noqa: F811
    w = Workload.closed_loop(2, 6, prompt_len=40, output_len=6, think_time=0.05)
    with fake_backend(fake_exe, tmp_path / "study") as backend:
        m = backend.evaluate(CONFIG, w)
        load = backend.last_trial.load  # type: ignore[union-attr]
    sent = np.array([r.sent for r in load.requests]) + load.time_offset
    assert m.arrival.tolist() == sent.tolist()
    assert (m.arrival[2:] > w.arrival[2:]).all()  # later than the earliest: they waited
    ttft = np.array([r.ttft for r in load.requests])
    assert m.ttft.tolist() == ttft.tolist()  # from the actual send


def test_an_attached_server_is_loaded_closed_loop_too() -> None:
    w = Workload.closed_loop(3, 9, prompt_len=16, output_len=4)
    with fake_vllm() as fake:
        m = AttachedServerBackend(fake.url).evaluate(CONFIG, w)
    assert m.failed_requests == 0
    assert (np.diff(m.arrival.reshape(3, 3), axis=0) > 0).all()  # each user's requests in turn
