"""Arrival processes and length distributions: the definitions of ``vllm bench serve``."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tuner import Workload, WorkloadError
from tuner.core._arrivals import (
    MAX_TOKENS,
    Empirical,
    Fixed,
    LengthDistribution,
    LogNormal,
    Uniform,
    arrival_times,
)

N = 20_000


def gaps(w: Workload) -> np.ndarray:
    return np.diff(np.concatenate([[0.0], w.arrival]))


def cv_tolerance(shape: float, n: int) -> float:
    """Five standard errors of a sample CV of ``n`` gamma(shape) gaps, relative to the CV.

    The sample SD's relative standard error is sqrt((kurtosis - 1) / (4n)) with kurtosis
    3 + 6/shape; the sample mean adds CV / sqrt(n).
    """
    return 5 * math.sqrt((2 + 6 / shape) / (4 * n) + 1 / (shape * n))


# --- arrivals -------------------------------------------------------------------------------


def test_poisson_gaps_have_mean_one_over_rate_and_cv_one() -> None:
    rate = 5.0
    g = gaps(Workload.poisson(rate, N, 16, 4, seed=1))
    half = g[: N // 2]  # the rescaling pins the overall mean, so check a half on its own
    assert abs(half.mean() * rate - 1) < 5 / math.sqrt(len(half))
    assert abs(g.std() / g.mean() - 1) < cv_tolerance(1.0, N)


@pytest.mark.parametrize("burstiness", [0.25, 0.5, 2.0, 4.0])
def test_gamma_gaps_have_cv_one_over_sqrt_burstiness(burstiness: float) -> None:
    rate = 2.0
    g = gaps(Workload.gamma(rate, N, 16, 4, burstiness=burstiness, seed=2))
    half = g[: N // 2]
    cv = 1 / math.sqrt(burstiness)
    assert abs(half.mean() * rate - 1) < 5 * cv / math.sqrt(len(half))
    assert abs((g.std() / g.mean()) / cv - 1) < cv_tolerance(burstiness, N)


@given(
    rate=st.floats(0.01, 1000),
    n=st.integers(1, 200),
    burstiness=st.sampled_from([0.1, 0.5, 1.0, 3.0, math.inf]),
    seed=st.integers(0, 2**32),
)
def test_first_request_waits_one_gap_and_last_arrives_at_n_over_rate(
    rate: float, n: int, burstiness: float, seed: int
) -> None:
    # vLLM's get_request: cumulative gaps (the first included), rescaled to end at n / rate.
    a = Workload.gamma(rate, n, 8, 2, burstiness=burstiness, seed=seed).arrival
    assert a[0] > 0
    assert np.all(np.diff(a) >= 0)
    assert a[-1] == pytest.approx(n / rate, rel=1e-12)


def test_infinite_burstiness_spaces_requests_evenly() -> None:
    w = Workload.gamma(4.0, 5, 8, 2, burstiness=math.inf)
    assert w.arrival.tolist() == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.25])


@pytest.mark.parametrize("burstiness", [0.3, 1.0, math.inf])
def test_infinite_rate_puts_every_arrival_at_zero(burstiness: float) -> None:
    w = Workload.gamma(math.inf, 50, 8, 2, burstiness=burstiness, seed=3)
    assert w.arrival.tolist() == [0.0] * 50
    assert Workload.poisson(math.inf, 7, 8, 2).arrival.tolist() == [0.0] * 7


def test_arrival_times_follow_vllm_get_request_for_its_gamma_draws() -> None:
    # Values of vllm.benchmarks.serve.get_request (0.32) after np.random.seed(3), captured from
    # its sleeps; fed the same legacy RandomState draws, arrival_times must agree exactly.
    vllm = {
        (4.0, 6, 1.0): [
            0.1581332965709033,
            0.4014753952476084,
            0.4694023634121999,
            0.6106920914216811,
            1.0522086314663108,
            1.5,
        ],
        (2.0, 5, 0.5): [
            0.37850172650135966,
            0.4830286397712838,
            2.477247508182059,
            2.496728193034542,
            2.5,
        ],
    }
    for (rate, n, b), expected in vllm.items():
        rng: Any = np.random.RandomState(3)
        assert arrival_times(rate, n, b, rng).tolist() == expected


@settings(max_examples=30)
@given(seed=st.integers(0, 2**32), b=st.sampled_from([0.5, 1.0, 2.0]))
def test_same_seed_same_workload_other_seed_other_workload(seed: int, b: float) -> None:
    def make(s: int) -> Workload:
        return Workload.gamma(3.0, 40, Uniform(200, 0.5), LogNormal(50, 1.0), b, seed=s)

    w = make(seed)
    assert w == make(seed)
    other = make(seed + 1)
    assert not np.array_equal(w.arrival, other.arrival)
    assert not np.array_equal(w.prompt_tokens, other.prompt_tokens)
    assert not np.array_equal(w.output_tokens, other.output_tokens)


def test_int_lengths_are_fixed() -> None:
    w = Workload.poisson(1.0, 30, 128, 7, seed=5)
    assert set(w.prompt_tokens.tolist()) == {128}
    assert set(w.output_tokens.tolist()) == {7}
    assert Workload.poisson(1.0, 30, Fixed(128), Fixed(7), seed=5) == w


# --- lengths --------------------------------------------------------------------------------

# Bounds vLLM 0.32's get_sampling_params gives an output length (mean, range_ratio) -> [lo, hi],
# captured from vLLM itself: note the float rounding of 7 * 0.7 and the clamp to 1.
VLLM_BOUNDS = {
    (10, 0.3): (7, 13),
    (7, 0.3): (4, 10),
    (100, 0.5): (50, 150),
    (1, 0.9): (1, 2),
    (3, 0.99): (1, 6),
    (1024, 0.1): (921, 1127),
    (33, 0.7): (9, 57),
}


@pytest.mark.parametrize(("mean", "ratio"), list(VLLM_BOUNDS))
def test_uniform_bounds_are_vllm_bench_random_bounds(mean: int, ratio: float) -> None:
    u = Uniform(mean, ratio)
    assert (u.low, u.high) == VLLM_BOUNDS[mean, ratio]
    x = u.sample(20 * (u.high - u.low + 1) + 200, np.random.default_rng(0))
    assert (int(x.min()), int(x.max())) == (u.low, u.high)  # stays inside and hits both ends


@given(mean=st.integers(1, 100_000), ratio=st.floats(0, 0.999), seed=st.integers(0, 2**32))
def test_uniform_lengths_stay_in_floor_ceil_bounds(mean: int, ratio: float, seed: int) -> None:
    x = Uniform(mean, ratio).sample(100, np.random.default_rng(seed))
    assert x.min() >= max(1, math.floor(mean * (1 - ratio)))
    assert x.max() <= math.ceil(mean * (1 + ratio))


def test_uniform_lengths_are_the_lengths_vllm_bench_draws_for_the_same_seed() -> None:
    # get_sampling_params(np.random.default_rng(7), 10, 0.5, 100, 20, tokenizer without special
    # tokens) in vLLM 0.32: prompts are drawn first, then outputs.
    w = Workload.poisson(1.0, 10, Uniform(100, 0.5), Uniform(20, 0.5), seed=7)
    assert w.prompt_tokens.tolist() == [145, 113, 119, 140, 108, 128, 134, 72, 55, 80]
    assert w.output_tokens.tolist() == [15, 28, 29, 10, 20, 27, 12, 26, 12, 19]


@given(
    mean=st.floats(1, 1e5),
    sigma=st.floats(0, 4),
    max_len=st.one_of(st.none(), st.integers(1, 10_000)),
    seed=st.integers(0, 2**32),
)
def test_lognormal_stays_at_least_one_and_at_most_max(
    mean: float, sigma: float, max_len: int | None, seed: int
) -> None:
    x = LogNormal(mean, sigma, max_len=max_len).sample(200, np.random.default_rng(seed))
    assert x.dtype == np.int64
    assert x.min() >= 1
    assert x.max() <= (MAX_TOKENS if max_len is None else max_len)


def test_lognormal_mean_is_the_given_mean() -> None:
    sigma = 0.5
    x = LogNormal(800, sigma).sample(N, np.random.default_rng(4))
    rel_se = math.sqrt(math.exp(sigma**2) - 1) / math.sqrt(N)
    assert abs(x.mean() / 800 - 1) < 5 * rel_se + 1e-3  # + rounding
    assert LogNormal(37.4, 0).sample(3, np.random.default_rng(0)).tolist() == [37, 37, 37]


@given(
    values=st.lists(st.integers(1, MAX_TOKENS), min_size=1, max_size=20),
    seed=st.integers(0, 2**32),
)
def test_empirical_only_yields_given_values(values: list[int], seed: int) -> None:
    x = Empirical(values).sample(300, np.random.default_rng(seed))
    assert set(x.tolist()) <= set(values)


def test_empirical_samples_every_value_with_replacement() -> None:
    x = Empirical([3, 5, 9]).sample(300, np.random.default_rng(0))
    assert set(x.tolist()) == {3, 5, 9}


def test_empirical_from_workload_takes_its_prompt_or_output_lengths() -> None:
    src = Workload.poisson(2.0, 50, Uniform(300, 0.9), LogNormal(40, 1.0), seed=9)
    prompts = Empirical.from_workload(src, "prompt_tokens")
    outputs = Empirical.from_workload(src, "output_tokens")
    assert prompts.values == tuple(src.prompt_tokens.tolist())
    assert outputs.values == tuple(src.output_tokens.tolist())
    w = Workload.poisson(1.0, 200, prompts, outputs, seed=1)
    assert set(w.prompt_tokens.tolist()) <= set(prompts.values)
    with pytest.raises(WorkloadError, match="field must be 'prompt_tokens' or 'output_tokens'"):
        Empirical.from_workload(src, "arrival")  # type: ignore[arg-type]


def test_distributions_are_frozen_and_reject_unknown_fields() -> None:
    u = Uniform(100, 0.5)
    with pytest.raises(Exception, match="frozen"):
        u.mean = 3  # type: ignore[misc]
    with pytest.raises(WorkloadError, match=r"Uniform\.ratio"):
        Uniform(100, ratio=0.5)
    assert Uniform(mean=100, range_ratio=0.5) == u
    assert isinstance(Fixed(np.int64(3)), LengthDistribution)


# --- bad parameters -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"rate": 0}, r"Workload\.gamma\(rate=0\): rate must be a number > 0"),
        ({"rate": -1.5}, r"rate=-1\.5\): rate must be a number > 0"),
        ({"rate": math.nan}, r"rate=nan\): rate must be a number > 0"),
        ({"rate": "5"}, r"rate='5'\): rate must be a number > 0"),
        ({"n": 0}, r"n=0\): n must be an integer >= 1"),
        ({"n": 2.0}, r"n=2\.0\): n must be an integer >= 1"),
        ({"n": True}, r"n=True\): n must be an integer >= 1"),
        ({"burstiness": 0}, r"burstiness=0\): burstiness must be a number > 0"),
        ({"burstiness": -2.0}, r"burstiness=-2\.0\): burstiness must be a number > 0"),
        ({"burstiness": math.nan}, r"burstiness=nan\): burstiness must be a number > 0"),
        ({"seed": -1}, r"seed=-1\): seed must be an integer >= 0"),
        ({"prompt_len": 0}, r"prompt_len\) = 0: must be an integer in \[1, 10000000\]"),
        ({"output_len": 2.5}, r"output_len\) = 2\.5: must be an int .* or a length distrib"),
    ],
)
def test_bad_generator_parameters_name_parameter_value_and_allowed(
    kwargs: dict[str, Any], pattern: str
) -> None:
    args: dict[str, Any] = {
        "rate": 1.0,
        "n": 10,
        "prompt_len": 8,
        "output_len": 2,
        "burstiness": 0.5,
        "seed": 0,
    }
    args.update(kwargs)
    with pytest.raises(WorkloadError, match=pattern):
        Workload.gamma(**args)


def test_poisson_errors_name_poisson() -> None:
    with pytest.raises(WorkloadError, match=r"Workload\.poisson\(rate=0\)"):
        Workload.poisson(0, 10, 8, 2)
    with pytest.raises(ValueError, match=r"Workload\.poisson\(n=-3\)"):  # also a ValueError
        Workload.poisson(1.0, -3, 8, 2)


@pytest.mark.parametrize(
    ("make", "pattern"),
    [
        (lambda: Uniform(100, 1.0), r"Uniform\.range_ratio = 1\.0: Input should be less than 1"),
        (lambda: Uniform(100, -0.1), r"Uniform\.range_ratio = -0\.1: .*greater than or equal to 0"),
        (lambda: Uniform(0), r"Uniform\.mean = 0: Input should be greater than or equal to 1"),
        (lambda: Fixed(0), r"Fixed\.n = 0: Input should be greater than or equal to 1"),
        (lambda: Fixed(True), r"Fixed\.n = True: must be an integer, not a bool"),
        (lambda: LogNormal(100, -1), r"LogNormal\.sigma = -1: .*greater than or equal to 0"),
        (lambda: LogNormal(100, 1, max_len=0), r"LogNormal\.max_len = 0: .*greater than or eq"),
        (lambda: LogNormal(math.nan, 1), r"LogNormal\.mean = nan: Input should be a finite"),
        (lambda: Empirical([]), r"Empirical\.values = \(\): .*at least 1 item"),
        (lambda: Empirical([4, 0]), r"Empirical\.values\.1 = 0: .*greater than or equal to 1"),
    ],
)
def test_bad_distribution_parameters_name_field_value_and_allowed(make: Any, pattern: str) -> None:
    with pytest.raises(WorkloadError, match=pattern):
        make()


@pytest.mark.vllm
@settings(max_examples=25, deadline=None)
@given(
    rate=st.floats(0.1, 100),
    n=st.integers(1, 40),
    burstiness=st.sampled_from([0.2, 1.0, 2.5, math.inf]),
    seed=st.integers(0, 2**32 - 1),
)
def test_arrival_times_match_vllm_get_request(
    rate: float, n: int, burstiness: float, seed: int
) -> None:
    import asyncio

    import vllm.benchmarks.serve as serve

    async def send_times() -> list[float]:
        slept: list[float] = []

        async def record(seconds: float) -> None:
            slept.append(seconds)

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(serve.asyncio, "sleep", record)
            mp.setattr(serve.time, "time", lambda: 0.0)  # each sleep = the send time
            async for _ in serve.get_request(list(range(n)), rate, burstiness):
                pass
        return slept

    np.random.seed(seed)  # vLLM draws gaps from the global legacy generator
    expected = asyncio.run(send_times())
    rng: Any = np.random.RandomState(seed)
    assert arrival_times(rate, n, burstiness, rng).tolist() == expected
