"""The simulator backend: vLLM 0.32's scheduler, step by step, with no GPU and no model.

The scheduling semantics live in :mod:`tuner.backends.simulator._engine` (the reference
engine, every step simulated) and :mod:`tuner.backends.simulator._fast_engine` (the same
schedule at a cost proportional to the number of events). With prefix caching, when it can
change the schedule (prompts that share prefixes, or a preemption after which a request may find
its own blocks again), both give way to :mod:`tuner.backends.simulator._prefix_engine`, which
keeps the KV cache block for block (step by step: the fast engine's implicit decoders do not
track blocks). The fidelity suite (``tuner fidelity``, ``tests/test_fidelity.py``) checks them
against vLLM's own ``Scheduler`` token for token.

With a :class:`~tuner.backends.simulator.Deployment` (a model on a GPU) each configuration
first gets the KV cache vLLM 0.32 would allocate for it (``gpu_memory_utilization``, TP, dtypes,
eager) unless it sets ``num_kv_blocks``; a configuration vLLM would refuse to start raises
:class:`~tuner.core.ConfigRefused` (a failed trial, in vLLM's words). Without a cost model the
deployment's roofline prior times the steps (an estimate; a calibration replaces it).
"""

from __future__ import annotations

from tuner.backends._base import Backend, check_fits
from tuner.backends._cost import CostModel
from tuner.backends._request_path import RequestPath
from tuner.backends._timeline import Timeline
from tuner.backends.simulator._deployment import Deployment
from tuner.backends.simulator._engine import Engine
from tuner.backends.simulator._fast_engine import FastEngine
from tuner.backends.simulator._prefix_engine import PrefixEngine
from tuner.core import VLLM_VERSION, ConfigError, Measurement, ServingConfig, Workload

SUPPORTED_VLLM_VERSIONS = ("0.32",)


class SimulatorBackend(Backend):
    """A fast step-level model of vLLM's scheduler: no GPU, microseconds per step.

    Args:
        cost_model: Turns each step's contents into a duration. Default: the unit step clock
            (every step lasts 1 and times are counted in steps).
        vllm_version: The vLLM release whose scheduling semantics to mirror (only "0.32").
        fast_forward: Jump over stretches of identical decode-only steps (default). Turning it
            off simulates every step one by one: same result, slower; for checking.
        deployment: The model and GPU to size each configuration's KV cache for (and, without
            ``cost_model``, to time its steps with the roofline prior). None: the config's
            ``num_kv_blocks`` as given, and the deployment knobs change nothing.
        request_path: Delays outside the engine (a request's way in, each token's way out),
            usually a calibration's. None: latencies are the engine's own.

    Example:
        >>> from tuner import Request, ServingConfig, Workload
        >>> w = Workload([Request(arrival=0, prompt_tokens=100, output_tokens=3)])
        >>> m = SimulatorBackend().evaluate(ServingConfig(max_num_batched_tokens=64,
        ...                                               max_num_seqs=4), w)
        >>> m.step_tokens.tolist(), int(m.ttft_steps[0])
        ([64, 36, 1, 1], 1)
    """

    name = "simulator"
    deterministic = True

    def __init__(
        self,
        cost_model: CostModel | None = None,
        vllm_version: str = VLLM_VERSION,
        *,
        fast_forward: bool = True,
        deployment: Deployment | None = None,
        request_path: RequestPath | None = None,
    ) -> None:
        if vllm_version not in SUPPORTED_VLLM_VERSIONS:
            raise ConfigError(
                f"SimulatorBackend.vllm_version = {vllm_version!r}: supported versions are "
                f"{', '.join(SUPPORTED_VLLM_VERSIONS)}"
            )
        if cost_model is not None and not isinstance(cost_model, CostModel):
            raise ConfigError(
                f"SimulatorBackend.cost_model: expected a CostModel, got {cost_model!r}"
            )
        self.cost_model = cost_model or CostModel()
        self.vllm_version = vllm_version
        self.fast_forward = fast_forward
        self.deployment = deployment
        self.request_path = request_path or RequestPath()
        #: Whether the roofline prior times the steps (a deployment and no cost model given).
        self.roofline = deployment is not None and cost_model is None

    @property
    def time_unit(self) -> str:
        """``"s"`` with the roofline prior or a seconds cost model, else ``"step"``."""
        return "s" if self.roofline else self.cost_model.time_unit

    def describe(self) -> str:
        path = "" if self.request_path.is_zero else f", {self.request_path!r}"
        if self.deployment is None:
            return f"simulator(vllm {self.vllm_version}, {self.cost_model!r}{path})"
        cost = "roofline prior" if self.roofline else repr(self.cost_model)
        return f"simulator(vllm {self.vllm_version}, {self.deployment.describe()}, {cost}{path})"

    def evaluate(self, config: ServingConfig, workload: Workload) -> Measurement:
        check_fits(config, workload)
        if self.request_path.is_zero:
            return self._engine(config, workload)
        engine_side = self._engine(config, self.request_path.engine_workload(workload))
        return self.request_path.client_view(engine_side, workload)

    def _engine(self, config: ServingConfig, workload: Workload) -> Measurement:
        """The measurement on the engine's side: requests seen on arrival, tokens at the end
        of their step."""
        cost = self.cost_model
        if self.deployment is not None:
            config = self.deployment.sized(config)
            if self.roofline:
                cost = self.deployment.cost_model(config, workload)
        source = f"simulator(vllm {self.vllm_version})"
        timeline = Timeline(workload, cost, source)
        caching = config.enable_prefix_caching
        if caching and workload.shares_prefixes:
            PrefixEngine(config, workload, timeline).run()
            return timeline.build()
        engine = FastEngine if self.fast_forward else Engine
        engine(config, workload, timeline).run()
        if caching and timeline.any_preempted:
            # A preempted request can find its own blocks in the prefix cache when readmitted:
            # the block-level engine decides (without preemption no prompt can hit, and both
            # engines agree).
            timeline = Timeline(workload, cost, source)
            PrefixEngine(config, workload, timeline).run()
        return timeline.build()
