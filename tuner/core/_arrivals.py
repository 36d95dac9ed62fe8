"""Arrival processes and request-length distributions, defined as ``vllm bench serve`` defines them.

Arrivals follow ``get_request`` in ``vllm/benchmarks/serve.py`` (vLLM 0.32), ``--request-rate`` and
``--burstiness``; :class:`Uniform` follows ``get_sampling_params`` in
``vllm/benchmarks/datasets/utils.py`` (the ``random`` dataset's ``--random-range-ratio``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated, Any, ClassVar, Literal, Protocol

import numpy as np
import numpy.typing as npt
from pydantic import ConfigDict, Field

from tuner.core._errors import TunerError, WorkloadError
from tuner.core._model import FrozenModel

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

MAX_TOKENS = 10_000_000
"""The longest prompt or output a distribution may produce (the bound of ``Request``)."""
MAX_REQUESTS = 10_000_000
"""The most requests a generator makes in one workload."""

__all__ = [
    "Empirical",
    "Fixed",
    "LengthDistribution",
    "LengthSpec",
    "LogNormal",
    "Uniform",
    "arrival_times",
    "as_length_distribution",
    "parse_length",
    "sample_workload_arrays",
]


class HasLengths(Protocol):
    """Anything with per-request prompt and output lengths (a Workload)."""

    @property
    def prompt_tokens(self) -> npt.NDArray[np.int64]: ...

    @property
    def output_tokens(self) -> npt.NDArray[np.int64]: ...


def _plain(value: Any) -> Any:
    """Numpy scalars and arrays as plain Python values, so strict validation accepts them."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


class LengthDistribution(FrozenModel):
    """A distribution of token counts (a prompt or an output length), sampled as int64 >= 1."""

    model_config = ConfigDict(strict=True, allow_inf_nan=False)
    _error_class: ClassVar[type[TunerError]] = WorkloadError

    def __init__(self, /, **data: Any) -> None:
        super().__init__(**data)

    def sample(self, n: int, rng: np.random.Generator) -> IntArray:
        """Draw ``n`` lengths, each in ``[1, MAX_TOKENS]``, from ``rng``."""
        raise NotImplementedError


class Fixed(LengthDistribution):
    """Every request has the same length (an ``int`` given as a length means this).

    Example:
        >>> Fixed(128).sample(3, np.random.default_rng(0)).tolist()
        [128, 128, 128]
    """

    n: int = Field(ge=1, le=MAX_TOKENS)
    """The length in tokens."""

    def __init__(self, n: int, **data: Any) -> None:
        super().__init__(n=_plain(n), **data)

    def sample(self, n: int, rng: np.random.Generator) -> IntArray:
        return np.full(n, self.n, dtype=np.int64)


class Uniform(LengthDistribution):
    """Uniform integers around a mean, as ``vllm bench serve --dataset-name random`` draws them.

    With ``L = mean`` and ``r = range_ratio`` the lengths are uniform integers in
    ``[max(1, floor(L * (1 - r))), ceil(L * (1 + r))]``, both ends included: the bounds, the
    rounding and the draw (``rng.integers(low, high + 1, size=n)``) are those of
    ``get_sampling_params`` in ``vllm/benchmarks/datasets/utils.py``. vLLM clamps the lower
    bound to 1 for outputs and refuses a prompt bound below 1; here both are clamped. vLLM also
    subtracts the tokenizer's special tokens from ``--random-input-len`` first: pass the
    already-reduced length as ``mean`` to match a tokenizer that adds any.

    Example:
        >>> u = Uniform(100, 0.5)
        >>> (u.low, u.high)
        (50, 150)
        >>> u.sample(4, np.random.default_rng(0)).tolist()
        [135, 114, 101, 77]
    """

    mean: int = Field(ge=1, le=MAX_TOKENS // 2)
    """The centre of the range in tokens (vLLM's ``--random-input-len`` / ``-output-len``)."""
    range_ratio: float = Field(default=0.0, ge=0.0, lt=1.0)
    """Half-width of the range relative to ``mean``, in [0, 1) (``--random-range-ratio``)."""

    def __init__(self, mean: int, range_ratio: float = 0.0, **data: Any) -> None:
        super().__init__(mean=_plain(mean), range_ratio=_plain(range_ratio), **data)

    @property
    def low(self) -> int:
        """The smallest length drawn: ``max(1, floor(mean * (1 - range_ratio)))``."""
        return max(math.floor(self.mean * (1 - self.range_ratio)), 1)

    @property
    def high(self) -> int:
        """The largest length drawn: ``ceil(mean * (1 + range_ratio))``."""
        return math.ceil(self.mean * (1 + self.range_ratio))

    def sample(self, n: int, rng: np.random.Generator) -> IntArray:
        return rng.integers(self.low, self.high + 1, size=n, dtype=np.int64)


class LogNormal(LengthDistribution):
    """Log-normal lengths with a given mean, rounded to integers and clipped to ``[1, max_len]``.

    ``mean`` is the mean of the continuous distribution (the underlying normal has
    ``mu = ln(mean) - sigma**2 / 2``); rounding and clipping move the sample mean slightly.

    Example:
        >>> d = LogNormal(1000, 0.5, max_len=1500)
        >>> x = d.sample(1000, np.random.default_rng(0))
        >>> bool(x.min() >= 1 and x.max() <= 1500)
        True
    """

    mean: float = Field(ge=1.0, le=MAX_TOKENS)
    """The mean length in tokens before rounding and clipping."""
    sigma: float = Field(ge=0.0, le=4.0)
    """The standard deviation of the log of the length (0 gives ``round(mean)`` every time)."""
    max_len: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    """Lengths above this are clipped to it (``None``: clipped to ``MAX_TOKENS`` only)."""

    def __init__(self, mean: float, sigma: float, max_len: int | None = None, **data: Any) -> None:
        super().__init__(mean=_plain(mean), sigma=_plain(sigma), max_len=_plain(max_len), **data)

    def sample(self, n: int, rng: np.random.Generator) -> IntArray:
        mu = math.log(self.mean) - self.sigma**2 / 2
        x = np.rint(rng.lognormal(mu, self.sigma, size=n))
        top = MAX_TOKENS if self.max_len is None else self.max_len
        return np.clip(x, 1, top).astype(np.int64)


class Empirical(LengthDistribution):
    """Lengths drawn with replacement, uniformly, from a list of observed values.

    Example:
        >>> Empirical([16, 512]).sample(4, np.random.default_rng(0)).tolist()
        [512, 512, 512, 16]
        >>> from tuner import Workload
        >>> w = Workload.from_arrays([0.0, 1.0], [30, 70], [5, 9])
        >>> Empirical.from_workload(w, "prompt_tokens").values
        (30, 70)
    """

    values: tuple[Annotated[int, Field(ge=1, le=MAX_TOKENS)], ...] = Field(
        min_length=1, max_length=MAX_REQUESTS
    )
    """The observed lengths in tokens (repeats weight a value)."""

    def __init__(self, values: Sequence[int] | npt.NDArray[np.integer[Any]], **data: Any) -> None:
        v = _plain(values)
        if isinstance(v, (list, tuple)):
            v = tuple(_plain(x) for x in v)
        super().__init__(values=v, **data)

    @classmethod
    def from_workload(
        cls, workload: HasLengths, field: Literal["prompt_tokens", "output_tokens"]
    ) -> Empirical:
        """The prompt or output lengths of a workload (for example one read from a trace).

        Raises:
            WorkloadError: if ``field`` is not ``"prompt_tokens"`` or ``"output_tokens"``.
        """
        if field == "prompt_tokens":
            return cls(workload.prompt_tokens)
        if field == "output_tokens":
            return cls(workload.output_tokens)
        raise WorkloadError(
            f"Empirical.from_workload(field={field!r}): field must be 'prompt_tokens' or "
            "'output_tokens'"
        )

    def sample(self, n: int, rng: np.random.Generator) -> IntArray:
        return rng.choice(np.asarray(self.values, dtype=np.int64), size=n, replace=True)


LengthSpec = int | LengthDistribution
"""A length as a generator takes it: an int (a fixed length) or a :class:`LengthDistribution`."""


def parse_length(text: str) -> LengthSpec:
    """A length from text: ``"512"``, ``"uniform:512:0.5"`` or ``"lognormal:500:0.8[:max]"``
    (the study file's and the CLI's spelling).

    Example:
        >>> parse_length("uniform:512:0.5")
        Uniform(mean=512, range_ratio=0.5)
    """
    kind, _, rest = text.partition(":")
    try:
        if not rest:
            return int(kind)
        args = rest.split(":")
        if kind == "uniform":
            return Uniform(int(args[0]), float(args[1]) if len(args) > 1 else 0.0)
        if kind == "lognormal":
            return LogNormal(
                float(args[0]), float(args[1]), int(args[2]) if len(args) > 2 else None
            )
    except (ValueError, IndexError) as e:
        raise WorkloadError(f"length {text!r}: {e}") from None
    raise WorkloadError(
        f"length {text!r}: expected N, uniform:MEAN:RANGE_RATIO or lognormal:MEAN:SIGMA[:MAX]"
    )


def as_length_distribution(spec: LengthSpec, name: str) -> LengthDistribution:
    """``spec`` as a distribution; ``name`` (e.g. ``"Workload.poisson(prompt_len)"``) for errors.

    Example:
        >>> as_length_distribution(64, "prompt_len")
        Fixed(n=64)
    """
    if isinstance(spec, LengthDistribution):
        return spec
    if isinstance(spec, (int, np.integer)) and not isinstance(spec, bool):
        if not 1 <= spec <= MAX_TOKENS:
            raise WorkloadError(f"{name} = {spec!r}: must be an integer in [1, {MAX_TOKENS}]")
        return Fixed(int(spec))
    raise WorkloadError(
        f"{name} = {spec!r}: must be an int (a fixed length) or a length distribution "
        "(Fixed, Uniform, LogNormal, Empirical)"
    )


def _is_number(x: object) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


def _check_params(where: str, rate: float, n: int, burstiness: float, seed: int) -> None:
    if not (_is_number(rate) and rate > 0):  # NaN fails the comparison
        raise WorkloadError(
            f"{where}(rate={rate!r}): rate must be a number > 0 (requests per second), "
            "or float('inf') to send every request at t=0"
        )
    if not (isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= 1):
        raise WorkloadError(f"{where}(n={n!r}): n must be an integer >= 1 (the request count)")
    if n > MAX_REQUESTS:
        raise WorkloadError(f"{where}(n={n!r}): n must be at most {MAX_REQUESTS}")
    if not (_is_number(burstiness) and burstiness > 0):
        raise WorkloadError(
            f"{where}(burstiness={burstiness!r}): burstiness must be a number > 0 "
            "(1 = Poisson, < 1 burstier, > 1 more regular, inf = evenly spaced)"
        )
    if not (isinstance(seed, (int, np.integer)) and not isinstance(seed, bool) and seed >= 0):
        raise WorkloadError(f"{where}(seed={seed!r}): seed must be an integer >= 0")


def arrival_times(rate: float, n: int, burstiness: float, rng: np.random.Generator) -> FloatArray:
    """Arrival times in seconds from the start of the run, as ``vllm bench serve`` sends requests.

    This is ``get_request`` in ``vllm/benchmarks/serve.py`` without ramp-up: each request's gap
    is drawn from a gamma distribution with shape ``burstiness`` and scale
    ``1 / (rate * burstiness)`` (mean ``1 / rate``; ``burstiness = 1`` is a Poisson process,
    ``inf`` constant gaps of ``1 / rate``), and the gaps are summed. The first request is sent
    after the first gap, not at t=0. vLLM then rescales all times so that the last request is
    sent at exactly ``n / rate``, which this does too (so the scale cancels out and only the
    shape shapes the gaps). ``rate = inf`` sends everything at t=0.
    Parameters are not validated here (see :func:`sample_workload_arrays`).

    Example:
        >>> arrival_times(2.0, 4, float("inf"), np.random.default_rng(0)).tolist()
        [0.5, 1.0, 1.5, 2.0]
    """
    if math.isinf(rate):
        return np.zeros(n, dtype=np.float64)
    if math.isinf(burstiness):
        gaps = np.full(n, 1.0 / rate, dtype=np.float64)
    else:
        gaps = rng.gamma(shape=burstiness, scale=1.0 / (rate * burstiness), size=n)
    times = np.cumsum(gaps, dtype=np.float64)
    if times[-1] != 0:
        times = times * ((n / rate) / times[-1])
    return times


def sample_workload_arrays(
    where: str,
    rate: float,
    n: int,
    prompt_len: LengthSpec,
    output_len: LengthSpec,
    burstiness: float,
    seed: int,
) -> tuple[FloatArray, IntArray, IntArray]:
    """Validated arrivals, prompt lengths and output lengths for ``Workload.poisson``/``gamma``.

    Lengths come from ``numpy.random.default_rng(seed)``, prompts first: a :class:`Uniform`
    prompt and output therefore get exactly the lengths ``vllm bench serve --dataset-name random
    --seed seed`` gives (with a tokenizer that adds no special tokens). Arrivals come from an
    independent stream of the same seed (``SeedSequence(seed, spawn_key=(0,))``).

    Raises:
        WorkloadError: naming the parameter, its value and what is allowed.
    """
    _check_params(where, rate, n, burstiness, seed)
    prompt = as_length_distribution(prompt_len, f"{where}(prompt_len)")
    output = as_length_distribution(output_len, f"{where}(output_len)")
    n = int(n)
    lengths_rng = np.random.default_rng(int(seed))
    prompts = prompt.sample(n, lengths_rng)
    outputs = output.sample(n, lengths_rng)
    arrival_rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(0,)))
    arrivals = arrival_times(float(rate), n, float(burstiness), arrival_rng)
    if not np.all(np.isfinite(arrivals)):
        raise WorkloadError(
            f"{where}(burstiness={burstiness!r}): burstiness is too small to sample "
            f"{n} finite arrival times; use a larger value"
        )
    return arrivals, prompts, outputs
