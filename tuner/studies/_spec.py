"""Study files: a whole tuning study in one validated YAML document.

    name: chat
    workload:
      poisson: {rate: 12, requests: 2000, prompt_len: uniform:768:0.5, output_len: 192, seed: 0}
    space:
      base: {max_model_len: 4096}
      knobs: {max_num_batched_tokens: [512, 2048], max_num_seqs: [16, 64]}
    objective: {maximize: output_throughput, tie_break: ttft.p99}
    slos: ["ttft.p99 <= 1s", "tpot.p90 <= 50ms"]
    backend: {simulator: {step_cost: {fixed: 0.006, per_prefill_token: 3.0e-5}}}
    search: {tpe: {n_trials: 40, seed: 0}}
    budget: {max_trials: 40}
    output: runs/chat

Errors name the key path and the line of the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tuner.core._errors import ConfigError
from tuner.studies._yaml import line_of, load_with_lines

Knob = Literal[
    "max_num_batched_tokens", "max_num_seqs", "long_prefill_token_threshold",
    "enable_chunked_prefill", "num_kv_blocks", "block_size", "max_model_len", "async_scheduling",
]  # fmt: skip


class _Spec(BaseModel):
    """Base of every study-file section: frozen, unknown keys are errors. (Plain pydantic, so
    that :func:`load_study` sees the path of every nested error and can give its line.)"""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Arrivals(_Spec):
    """A synthetic workload with vllm bench serve's arrivals and lengths."""

    rate: float = Field(gt=0)
    """Requests per second (per step on the unit clock); .inf sends all at once."""
    requests: int = Field(ge=1, le=10_000_000)
    """How many requests."""
    prompt_len: int | str = 512
    """N, 'uniform:MEAN:RANGE_RATIO' or 'lognormal:MEAN:SIGMA[:MAX]'."""
    output_len: int | str = 128
    """As prompt_len."""
    seed: int = 0
    """Seed of arrivals and lengths."""
    burstiness: float = Field(default=1.0, gt=0)
    """1 = Poisson; < 1 burstier; > 1 more regular (gamma-distributed gaps)."""


class WorkloadSpec(_Spec):
    """Exactly one of ``poisson`` or ``trace``."""

    poisson: Arrivals | None = None
    """Generated arrivals (gamma when burstiness != 1)."""
    trace: str | None = None
    """A trace file: timed_trace JSONL (.jsonl) or CSV (.csv), relative to the study file."""
    head: float = Field(default=1.0, gt=0, le=1)
    """Use only this fraction of the requests (by arrival)."""

    @model_validator(mode="after")
    def _one(self) -> WorkloadSpec:
        if (self.poisson is None) == (self.trace is None):
            raise ValueError("give exactly one of 'poisson' or 'trace'")
        return self


class SpaceSpec(_Spec):
    """The knobs to search and the configuration they vary."""

    knobs: dict[Knob, list[Any]] = Field(min_length=1)
    """Knob -> candidate values."""
    base: dict[Knob, Any] = Field(default_factory=dict)
    """Knob values shared by every candidate (vLLM's defaults otherwise)."""
    skip_invalid: bool = False
    """Drop combinations vLLM refuses instead of failing."""


class ObjectiveSpec(_Spec):
    """Exactly one of ``maximize`` or ``minimize``."""

    maximize: str | None = None
    minimize: str | None = None
    tie_break: str | None = None
    tie_break_direction: Literal["maximize", "minimize"] = "minimize"
    tie_tolerance: float = Field(default=0.0, ge=0, le=1)
    """Relative difference under which two objective values count as a tie."""

    @model_validator(mode="after")
    def _one(self) -> ObjectiveSpec:
        if (self.maximize is None) == (self.minimize is None):
            raise ValueError("give exactly one of 'maximize' or 'minimize'")
        return self


class StepCost(_Spec):
    """Seconds per step (see CostModel)."""

    fixed: float = Field(default=0.0, ge=0)
    per_prefill_token: float = Field(default=0.0, ge=0)
    per_decode_token: float = Field(default=0.0, ge=0)
    per_sequence: float = Field(default=0.0, ge=0)


class SimulatorSpec(_Spec):
    """The step simulator; without step_cost or calibration, the unit step clock."""

    step_cost: StepCost | None = None
    calibration: str | None = None
    """A calibration JSON written by a two-tier study (relative to the study file)."""


class LiveSpec(_Spec):
    """A real `vllm serve` per configuration (VLLMServerBackend)."""

    model: str | None = None
    """Model path or name served."""
    tiny_model: str | None = None
    """Build the tiny random Llama into this folder and serve it (CPU testing)."""
    server_args: list[str] = Field(default_factory=list)
    """More `vllm serve` flags, e.g. ["--dtype", "bfloat16", "--enforce-eager"]."""
    env: dict[str, str] = Field(default_factory=dict)
    """Environment of the server, e.g. {VLLM_CPU_KVCACHE_SPACE: "1"} on CPU."""
    startup_timeout: float = Field(default=600, gt=0)
    request_timeout: float = Field(default=300, gt=0)
    attach_url: str | None = None

    @model_validator(mode="after")
    def _model(self) -> LiveSpec:
        if self.attach_url is None and (self.model is None) == (self.tiny_model is None):
            raise ValueError("give exactly one of 'model' or 'tiny_model' (or attach_url)")
        return self


class BackendSpec(_Spec):
    """Exactly one backend."""

    simulator: SimulatorSpec | None = None
    replay: dict[str, Any] | None = None
    live: LiveSpec | None = None

    @model_validator(mode="after")
    def _one(self) -> BackendSpec:
        given = [k for k in ("simulator", "replay", "live") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of simulator, replay, live (got {given or 'none'})")
        return self


class TwoTierSpec(_Spec):
    """A cheap backend searches, an expensive one confirms the shortlist."""

    cheap: BackendSpec
    expensive: BackendSpec
    top_k: int = Field(default=3, ge=1)
    margin: float = Field(default=0.15, ge=0, lt=10)
    calibrate: bool = True


class SearchSpec(_Spec):
    """Exactly one search strategy with its arguments."""

    grid: dict[str, Any] | None = None
    random: dict[str, Any] | None = None
    tpe: dict[str, Any] | None = None
    halving: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one(self) -> SearchSpec:
        given = [k for k in ("grid", "random", "tpe", "halving") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                f"give exactly one of grid, random, tpe, halving (got {given or 'none'})"
            )
        return self


class BudgetSpec(_Spec):
    max_trials: int | None = Field(default=None, ge=1)
    max_cost: float | None = Field(default=None, gt=0)
    timeout: float | None = Field(default=None, gt=0)


class StudySpec(_Spec):
    """A whole study: what to run, what to search, what must hold, where results go."""

    name: str = Field(min_length=1, pattern=r"^[\w.-]+$")
    description: str = ""
    workload: WorkloadSpec
    space: SpaceSpec
    objective: ObjectiveSpec = Field(
        default_factory=lambda: ObjectiveSpec(maximize="output_throughput")
    )
    slos: list[str] = Field(default_factory=list)
    backend: BackendSpec | None = None
    two_tier: TwoTierSpec | None = None
    search: SearchSpec = Field(default_factory=lambda: SearchSpec(grid={}))
    budget: BudgetSpec = Field(default_factory=BudgetSpec)
    output: str = "runs/{name}"
    """Output folder (relative to the current directory); {name} is the study's name."""
    storage: str | None = None
    """An Optuna storage URL for TPE (e.g. sqlite:///runs/chat/optuna.db)."""

    @model_validator(mode="after")
    def _backend(self) -> StudySpec:
        if (self.backend is None) == (self.two_tier is None):
            raise ValueError("give exactly one of 'backend' or 'two_tier'")
        return self


def load_study(path: str | Path) -> tuple[StudySpec, Path]:
    """Read and validate a study file. Returns the spec and the file's folder.

    Raises:
        ConfigError: naming the file, the line and the key path of each problem.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"study file {p}: cannot read it: {e.strerror}") from None
    data, lines = load_with_lines(text, str(p))
    if not isinstance(data, dict):
        raise ConfigError(f"{p}:1: a study file is a mapping of sections (name, workload, ...)")
    try:
        return StudySpec.model_validate(data), p.parent
    except ValidationError as e:
        problems = []
        for err in e.errors():
            loc = tuple(err["loc"])
            line = line_of(lines, loc)
            key = ".".join(str(x) for x in loc) or "(top level)"
            msg = str(err["msg"]).removeprefix("Value error, ")
            scalar = isinstance(err["input"], (str, int, float, bool)) or err["input"] is None
            got = f" (got {err['input']!r})" if scalar and err["type"] != "missing" else ""
            problems.append(f"{p}:{line or '?'}: {key}: {msg}{got}")
        raise ConfigError("invalid study file:\n  " + "\n  ".join(problems)) from None
