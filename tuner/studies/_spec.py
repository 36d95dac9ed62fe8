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
    repeats: {max: 5, rule: confident}
    output: runs/chat

Errors name the key path and the line of the file.
"""

from __future__ import annotations

import builtins
import re
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tuner.backends import CostModel
from tuner.backends.live import AttachedSettings, ServerSettings
from tuner.core import KNOBS, ConfigError, ServingConfig, unknown_key_message
from tuner.hardware import Target
from tuner.objectives import CAPACITY_METRICS, DEFAULT_OBJECTIVE, CapacitySettings, Objective
from tuner.search import HalvingSettings, RandomSettings, TPESettings
from tuner.studies._deployment import deployment_problem
from tuner.studies._two_tier import TwoTierSettings
from tuner.studies._workload_spec import (
    WorkloadSpec,
    _Spec,
)
from tuner.studies._yaml import Path_, line_of, load_with_lines
from tuner.tuning import Budget, Repeats

Knob = Literal[KNOBS]  # type: ignore[valid-type]

#: The placeholders an ``output`` pattern may use.
OUTPUT_PLACEHOLDERS = ("name",)


class SpaceSpec(_Spec):
    """The knobs to search and the configuration they vary."""

    knobs: dict[Knob, list[Any]] = Field(min_length=1)
    """Knob -> candidate values."""
    base: ServingConfig = Field(default_factory=ServingConfig)
    """Knob values shared by every candidate (vLLM's defaults otherwise)."""
    skip_invalid: bool = False
    """Drop combinations vLLM refuses instead of failing."""


class ObjectiveSpec(CapacitySettings):
    """Exactly one of ``maximize`` or ``minimize`` (a metric), with its tie-break; for a
    capacity objective (``maximize: capacity``, ``maximize: throughput_per_gpu``,
    ``minimize: cost_per_million_tokens``) also the load search's settings."""

    _owner = "objective"

    maximize: str | None = None
    """The metric to maximise, e.g. ``capacity`` or ``output_throughput``."""
    minimize: str | None = None
    """The metric to minimise, e.g. ``cost_per_million_tokens`` or ``total_steps``."""
    tie_break: str | None = None
    """The metric that decides between equally good configurations."""
    tie_break_direction: Literal["maximize", "minimize"] = "minimize"
    """Direction of the tie-break metric."""
    tie_tolerance: float = Field(default=0.0, ge=0, le=1)
    """Relative difference under which two objective values count as a tie."""

    @model_validator(mode="after")
    def _one(self) -> ObjectiveSpec:
        if (self.maximize is None) == (self.minimize is None):
            raise ValueError("give exactly one of 'maximize' or 'minimize'")
        load = self.model_dump(include=set(CapacitySettings.model_fields), exclude_unset=True)
        if load and self.metric not in CAPACITY_METRICS:
            raise ValueError(
                f"{', '.join(sorted(load))} only apply to a capacity objective "
                f"({', '.join(CAPACITY_METRICS)}), not to {self.metric!r}"
            )
        return self

    @property
    def metric(self) -> str:
        """The metric named."""
        return str(self.maximize if self.maximize is not None else self.minimize)

    def objective(self) -> Objective:
        """The :class:`Objective` this section describes."""
        load = None
        if self.metric in CAPACITY_METRICS:
            load = CapacitySettings(**self.model_dump(include=set(CapacitySettings.model_fields)))
        return Objective(
            metric=self.metric,
            direction="maximize" if self.maximize is not None else "minimize",
            tie_break=self.tie_break,
            tie_break_direction=self.tie_break_direction,
            tie_tolerance=self.tie_tolerance,
            load=load,
        )


def seconds_cost(value: Any) -> Any:
    """A study's (or the CLI's) ``step_cost``: :class:`CostModel`'s fields, in seconds, each
    term 0 unless given (``CostModel()`` alone is the unit step clock)."""
    if isinstance(value, dict):
        return {"fixed": 0.0, "time_unit": "s", **value}
    return value


class SimulatorSpec(_Spec):
    """The step simulator; without step_cost or calibration, the unit step clock."""

    step_cost: CostModel | None = None
    """Seconds per step: ``fixed``, ``per_prefill_token``, ``per_decode_token``,
    ``per_sequence`` (CostModel's terms; each 0 unless given)."""
    calibration: str | None = None
    """A calibration JSON written by a two-tier study (relative to the study file)."""

    _seconds = field_validator("step_cost", mode="before")(seconds_cost)


class ReplaySpec(_Spec):
    """vLLM's own scheduler replayed without a model (needs vLLM installed)."""

    step_cost: CostModel | None = None
    """As the simulator's."""

    _seconds = field_validator("step_cost", mode="before")(seconds_cost)


class LiveSpec(ServerSettings):
    """A real ``vllm serve`` per configuration (VLLMServerBackend), or one already running
    (``attach_url``: AttachedServerBackend, which uses only the load settings)."""

    model: str | None = None
    """Model path or name served."""
    tiny_model: str | None = None
    """Build the tiny random Llama into this folder and serve it (CPU testing)."""
    attach_url: str | None = None
    """Measure the server already running at this URL instead of starting servers (its flags
    must be the space's single configuration)."""

    @model_validator(mode="after")
    def _model(self) -> LiveSpec:
        if self.attach_url is None and (self.model is None) == (self.tiny_model is None):
            raise ValueError("give exactly one of 'model' or 'tiny_model' (or attach_url)")
        return self

    def server_settings(self) -> ServerSettings:
        """The fields :class:`VLLMServerBackend` takes."""
        return ServerSettings(**self.model_dump(include=set(ServerSettings.model_fields)))

    def load_settings(self) -> AttachedSettings:
        """The fields :class:`AttachedServerBackend` takes."""
        return AttachedSettings(**self.model_dump(include=set(AttachedSettings.model_fields)))


class BackendSpec(_Spec):
    """Exactly one backend."""

    simulator: SimulatorSpec | None = None
    replay: ReplaySpec | None = None
    live: LiveSpec | None = None

    @model_validator(mode="after")
    def _one(self) -> BackendSpec:
        given = [k for k in ("simulator", "replay", "live") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of simulator, replay, live (got {given or 'none'})")
        return self


class TwoTierSpec(TwoTierSettings):
    """A cheap backend searches, an expensive one confirms the shortlist."""

    model_config = ConfigDict(strict=False)

    cheap: BackendSpec
    """The backend that searches the whole space."""
    expensive: BackendSpec
    """The backend whose measurements decide."""


class GridSpec(_Spec):
    """Every configuration once, in grid order (no settings)."""


class InnerSearchSpec(_Spec):
    """Where successive halving draws its candidates: one of random or tpe."""

    random: RandomSettings | None = None
    tpe: TPESettings | None = None

    @model_validator(mode="after")
    def _one(self) -> InnerSearchSpec:
        given = [k for k in ("random", "tpe") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of random, tpe (got {given or 'none'})")
        return self


class HalvingSpec(HalvingSettings):
    """Successive halving, with its inner search."""

    model_config = ConfigDict(strict=False)

    inner: InnerSearchSpec | None = None
    """Where candidates come from (default: random with the halving's seed)."""


#: The search strategies a study file may name.
SEARCH_KINDS = ("grid", "random", "tpe", "halving", "list")


class SearchSpec(_Spec):
    """Exactly one search strategy with its settings."""

    grid: GridSpec | None = None
    random: RandomSettings | None = None
    tpe: TPESettings | None = None
    halving: HalvingSpec | None = None
    list: builtins.list[dict[Knob, Any]] | None = Field(default=None, min_length=1)
    """Exactly these configurations, in order, each as knob values over ``space.base``."""

    @model_validator(mode="after")
    def _one(self) -> SearchSpec:
        given = [k for k in SEARCH_KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                f"give exactly one of {', '.join(SEARCH_KINDS)} (got {given or 'none'})"
            )
        return self

    @property
    def kind(self) -> str:
        """The strategy's name."""
        return next(k for k in SEARCH_KINDS if getattr(self, k) is not None)


class StudySpec(_Spec):
    """A whole study: what to run, what to search, what must hold, where results go."""

    name: str = Field(min_length=1, pattern=r"^[\w.-]+$")
    description: str = ""
    workload: WorkloadSpec
    space: SpaceSpec
    objective: ObjectiveSpec = Field(
        default_factory=lambda: ObjectiveSpec(maximize=DEFAULT_OBJECTIVE.metric)
    )
    slos: list[str] = Field(default_factory=list)
    backend: BackendSpec | None = None
    two_tier: TwoTierSpec | None = None
    search: SearchSpec = Field(default_factory=lambda: SearchSpec(grid=GridSpec()))
    budget: Budget = Field(default_factory=Budget)
    repeats: Repeats = Field(default_factory=Repeats)
    """How often a configuration is measured on a noisy backend and how its SLOs are judged,
    e.g. ``{max: 5, rule: confident}`` (a deterministic backend measures once)."""
    output: str = Field(default="runs/{name}", min_length=1, max_length=1024)
    """Output folder (relative to the current directory; ``~`` is your home); ``{name}`` is
    the study's name, the only placeholder."""
    storage: str | None = Field(default=None, min_length=1)
    """The Optuna storage the study lives in, for every search: a journal file path (e.g.
    runs/chat/optuna.journal) or an RDB URL (sqlite:///runs/chat/optuna.db,
    postgresql://user@host/db). The study is then the record (no trials.jsonl); rerunning
    resumes it, and workers on many hosts join it (tuner worker)."""
    study_name: str | None = Field(default=None, min_length=1)
    """The study's name in the storage (default: the study's name)."""
    workers: int = Field(default=1, ge=1, le=256)
    """Worker processes on this machine sharing the study (default storage with more than
    one: a journal file in the output folder)."""
    target: Target | None = None
    """The device the recommendation is for (``{gpu: h100}``, ``{device: cpu}``). With a
    target, the knobs the study leaves unset start at vLLM's defaults there (step budget and
    sequences by memory class, async scheduling on GPUs, block size), and so does the
    baseline. Without one the pasted flags assume an 80 GB H100-class GPU. With a ``model``
    too (``{gpu: h100, model: meta-llama/Llama-3.1-8B-Instruct}``) the simulator sizes the KV
    cache from memory and times steps with the roofline prior."""

    @model_validator(mode="after")
    def _backend(self) -> StudySpec:
        if (self.backend is None) == (self.two_tier is None):
            raise ValueError("give exactly one of 'backend' or 'two_tier'")
        searching = self.backend or (self.two_tier.cheap if self.two_tier else None)
        problem = deployment_problem(self.space.knobs, self.space.base, searching, self.target)
        if problem is not None:
            raise ValueError(problem)
        closed = self.workload.closed_loop is not None
        capacity = self.objective.objective().is_capacity
        if closed and capacity and self.objective.mode != "concurrency":
            raise ValueError(
                "a closed_loop workload has no request rate to search: give the capacity "
                "objective mode: concurrency (the most concurrent users under the SLOs)"
            )
        return self

    @field_validator("output")
    @classmethod
    def _pattern(cls, v: str) -> str:
        for field in re.findall(r"\{([^{}]*)\}", v):
            if field not in OUTPUT_PLACEHOLDERS:
                raise ValueError(
                    f"unknown placeholder {{{field}}}; the only one is {{name}} (the study's name)"
                )
        if re.sub(r"\{name\}", "", v).count("{") or re.sub(r"\{name\}", "", v).count("}"):
            raise ValueError("unbalanced brace; write {name} for the study's name")
        return v

    @field_validator("storage")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and "://" in v and not re.match(r"^[a-z][a-z0-9+]*://", v):
            raise ValueError(
                "not an Optuna storage URL; expected e.g. sqlite:///runs/x/optuna.db, "
                "postgresql://user@host/db, or a journal file path"
            )
        return v

    @model_validator(mode="after")
    def _scale_out(self) -> StudySpec:
        if self.two_tier is not None and (self.storage is not None or self.workers > 1):
            raise ValueError(
                "storage and workers apply to a 'backend' study; a two_tier study runs its "
                "cheap search and its confirmations in one process"
            )
        return self

    def output_folder(self) -> Path:
        """The output folder, with ``{name}`` filled in and ``~`` expanded."""
        return Path(self.output.replace("{name}", self.name)).expanduser()


def load_study(path: str | Path) -> tuple[StudySpec, Path]:
    """Read and validate a study file. Returns the spec and the file's folder.

    Raises:
        ConfigError: naming the file, the line and the key path of each problem (and, for a
            misspelt key, the closest valid name).
    """
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise ConfigError(f"study file {p}: cannot read it: {e.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        at = raw[: e.start].count(b"\n") + 1
        raise ConfigError(f"{p}:{at}: not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    data, lines = load_with_lines(text, str(p))
    if not isinstance(data, dict):
        raise ConfigError(f"{p}:1: a study file is a mapping of sections (name, workload, ...)")
    spec = build_spec(data, str(p), lines)
    _check_knob_values(spec, lines, p)
    return spec, p.parent


def build_spec(
    data: dict[str, Any], source: str = "study", lines: dict[Path_, int] | None = None
) -> StudySpec:
    """Validate a study from a mapping (a parsed file, or what a command's flags describe).

    Raises:
        ConfigError: one line per problem, ``source:line: key.path: message``.
    """
    try:
        return StudySpec.model_validate(data)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            loc = tuple(err["loc"])
            if err["type"] == "extra_forbidden" or loc[-1:] == ("[key]",):
                if loc[-1] == "[key]":  # a dict key outside its Literal (a knob's name)
                    loc = loc[:-1]
                    allowed = list(get_args(Knob))
                else:
                    allowed = allowed_keys(loc[:-1])
                key = ".".join(str(x) for x in loc)
                msg = unknown_key_message(str(loc[-1]), allowed)
            else:
                key = ".".join(str(x) for x in loc) or "(top level)"
                msg = str(err["msg"]).removeprefix("Value error, ")
                scalar = isinstance(err["input"], (str, int, float, bool)) or err["input"] is None
                if scalar and err["type"] != "missing":
                    msg += f" (got {err['input']!r})"
            where = source if lines is None else f"{source}:{line_of(lines, loc) or '?'}"
            problems.append(f"{where}: {key}: {msg}")
        raise ConfigError("invalid study:\n  " + "\n  ".join(problems)) from None


def allowed_keys(loc: Path_) -> list[str]:
    """The keys a study file may hold at ``loc`` (for "did you mean")."""
    model: Any = StudySpec
    for part in loc:
        if isinstance(part, int) or model is None:
            continue
        field = getattr(model, "model_fields", {}).get(part)
        model = _model_in(field.annotation) if field is not None else None
    return list(getattr(model, "model_fields", {}))


def _model_in(annotation: Any) -> Any:
    """The pydantic model inside ``X | None``, ``list[X]`` or ``dict[str, X]`` (or None)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation) if get_origin(annotation) is not None else ():
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _check_knob_values(spec: StudySpec, lines: dict[Path_, int], p: Path) -> None:
    """Each searched value on its own over the base, so a bad one names its line."""
    problems = []
    for knob, values in spec.space.knobs.items():
        for i, v in enumerate(values):
            try:
                spec.space.base.replace(**{knob: v})
            except ConfigError as e:
                prefix = f"ServingConfig.{knob} = "
                clauses = [c for c in str(e).split("; ") if c.startswith(prefix)]
                if clauses:
                    why = clauses[0].split(": ", 1)[1]
                    where = line_of(lines, ("space", "knobs", knob, i))
                    problems.append(
                        f"{p}:{where or '?'}: space.knobs.{knob}[{i}]: {why} (got {v!r})"
                    )
    if problems:
        raise ConfigError("invalid study file:\n  " + "\n  ".join(problems))
