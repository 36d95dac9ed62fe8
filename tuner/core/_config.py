"""The serving configuration: vLLM's scheduler knobs, with vLLM's names, defaults and checks."""

from __future__ import annotations

from collections.abc import Iterable
from contextvars import ContextVar
from typing import Any, Literal

from pydantic import Field, model_validator

from tuner.core._errors import ConfigError
from tuner.core._model import FrozenModel

VLLM_VERSION = "0.32"
"""The vLLM release whose scheduler semantics and defaults this package mirrors."""

_FIELDS_ONLY: ContextVar[bool] = ContextVar("tuner_config_fields_only", default=False)
"""Set by :meth:`ServingConfig.convert`: check each field, skip the cross-field rules."""


#: Each knob's ``vllm serve`` option (without the leading dashes).
KNOB_FLAGS: dict[str, str] = {
    "max_num_batched_tokens": "max-num-batched-tokens",
    "max_num_seqs": "max-num-seqs",
    "long_prefill_token_threshold": "long-prefill-token-threshold",
    "enable_chunked_prefill": "enable-chunked-prefill",
    "block_size": "block-size",
    "max_model_len": "max-model-len",
    "async_scheduling": "async-scheduling",
    "enable_prefix_caching": "enable-prefix-caching",
    "num_kv_blocks": "num-gpu-blocks-override",
    "gpu_memory_utilization": "gpu-memory-utilization",
    "tensor_parallel_size": "tensor-parallel-size",
    "kv_cache_dtype": "kv-cache-dtype",
    "quantization": "quantization",
    "enforce_eager": "enforce-eager",
}

#: The knobs that size a deployment rather than schedule it: what vLLM's memory profiling
#: turns into KV cache blocks (and TP into GPUs per replica). A simulator needs a model and a
#: GPU to give them meaning (``tuner.hardware``); at their defaults nothing changes.
HARDWARE_KNOBS: tuple[str, ...] = (
    "gpu_memory_utilization",
    "tensor_parallel_size",
    "kv_cache_dtype",
    "quantization",
    "enforce_eager",
)

KVCacheDtype = Literal["auto", "fp8", "fp8_e4m3", "fp8_e5m2"]
"""``--kv-cache-dtype`` values the memory model sizes (``auto`` = the model's dtype)."""

Quantization = Literal["fp8", "awq", "gptq", "bitsandbytes", "mxfp4"]
"""``--quantization`` methods the memory model sizes (None = the checkpoint's own)."""


class ServingConfig(FrozenModel):
    """One vLLM serving configuration (the knobs the tuner searches over).

    Field names and defaults are vLLM 0.32's (``vllm/config/scheduler.py``, ``vllm serve``);
    cross-field checks reject what vLLM itself rejects at start-up.

    Example:
        >>> cfg = ServingConfig(max_num_batched_tokens=512, long_prefill_token_threshold=64)
        >>> cfg.to_vllm_args()[:4]
        ['--max-num-batched-tokens', '512', '--max-num-seqs', '128']
    """

    max_num_batched_tokens: int = Field(default=2048, ge=1, le=10_000_000)
    """Global token budget of one scheduler step (prefill chunks + decodes), all requests."""
    max_num_seqs: int = Field(default=128, ge=1, le=100_000)
    """Most requests running at once; checked only when admitting from the waiting queue."""
    long_prefill_token_threshold: int = Field(default=0, ge=0, le=10_000_000)
    """Per-request cap on prefill tokens in one step (0 = off). vLLM 0.32 does not apply it
    when only one request is eligible (running + waiting == 1)."""
    enable_chunked_prefill: bool = True
    """Split prompts across steps to fit the budget. Off: a prompt that does not fit the
    remaining budget blocks every admission behind it in that step."""
    num_kv_blocks: int | None = Field(default=None, ge=2, le=100_000_000)
    """KV cache capacity in blocks (``--num-gpu-blocks-override``), block 0 reserved by vLLM;
    None = unlimited (no KV pressure is modelled)."""
    block_size: int = Field(default=16, ge=1, le=4096)
    """Tokens per KV block (``--block-size``). The CPU platform defaults to 128."""
    max_model_len: int = Field(default=8192, ge=2, le=10_000_000)
    """Longest prompt + output a request may have (``--max-model-len``)."""
    async_scheduling: bool = False
    """Overlap scheduling with the model step: a finished request frees its slot and blocks one
    step later (GPU default in vLLM; the CPU platform forces it off)."""
    enable_prefix_caching: bool = True
    """Reuse the KV blocks of a prompt prefix computed before (``--[no-]enable-prefix-caching``,
    on by default in vLLM): full blocks are hashed in a chain, a new (or preempted) request
    starts from the longest cached run of its blocks (never its last prompt token), and freed
    blocks stay cached until evicted, least recently used first. It changes the schedule only
    when prompts share prefixes (hash ids) or a preempted request finds its own blocks again."""
    gpu_memory_utilization: float = Field(default=0.92, gt=0, le=1, allow_inf_nan=False)
    """Fraction of each GPU's memory vLLM may use (weights, activations, CUDA graphs, KV cache);
    what is left after the rest is the KV cache. vLLM 0.32's default is 0.92."""
    tensor_parallel_size: int = Field(default=1, ge=1, le=64)
    """GPUs one replica is split over. vLLM requires it to divide the attention heads (and
    replicates KV heads beyond their count); a replica then costs this many GPUs."""
    kv_cache_dtype: KVCacheDtype = "auto"
    """KV cache element type: ``auto`` (the model's dtype) or FP8 (half the bytes per token,
    twice the tokens; a small accuracy cost)."""
    quantization: Quantization | None = None
    """Weight quantization method (``--quantization``; None = what the checkpoint says)."""
    enforce_eager: bool = False
    """Run without CUDA graphs: frees their memory for the KV cache, slows every step."""

    @model_validator(mode="after")
    def _check_like_vllm(self) -> ServingConfig:
        if _FIELDS_ONLY.get():
            return self
        problems = self.problems()
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def convert(self, knob: str, value: Any) -> Any:
        """``value`` as this knob holds it (``8.0`` -> ``8``), checked on its own: the field's
        type and bounds, not the cross-field rules of :meth:`problems`.

        Raises:
            ConfigError: naming the knob, the value and what is allowed.

        Example:
            >>> ServingConfig().convert("max_num_seqs", 8.0)
            8
        """
        if knob not in type(self).model_fields:
            raise ConfigError(f"ServingConfig: unknown knob {knob!r}; allowed: {', '.join(KNOBS)}")
        token = _FIELDS_ONLY.set(True)
        try:
            checked = type(self)(**{**self.model_dump(), knob: value})
        finally:
            _FIELDS_ONLY.reset(token)
        return getattr(checked, knob)

    def problems(self) -> list[str]:
        """Cross-field problems vLLM would refuse at start-up (empty when the config is valid)."""
        out = []
        if not self.enable_chunked_prefill and self.max_num_batched_tokens < self.max_model_len:
            out.append(
                f"enable_chunked_prefill=False needs max_num_batched_tokens "
                f"({self.max_num_batched_tokens}) >= max_model_len ({self.max_model_len}); "
                "raise the budget, lower max_model_len or enable chunked prefill"
            )
        if self.max_num_batched_tokens < self.max_num_seqs:
            out.append(
                f"max_num_batched_tokens ({self.max_num_batched_tokens}) must be >= "
                f"max_num_seqs ({self.max_num_seqs})"
            )
        if self.long_prefill_token_threshold > self.max_model_len:
            out.append(
                f"long_prefill_token_threshold ({self.long_prefill_token_threshold}) must be "
                f"<= max_model_len ({self.max_model_len})"
            )
        if self.num_kv_blocks is not None:
            usable = (self.num_kv_blocks - 1) * self.block_size
            if usable < self.max_model_len:
                out.append(
                    f"num_kv_blocks ({self.num_kv_blocks}) x block_size ({self.block_size}) "
                    f"holds {usable} tokens (block 0 is reserved), fewer than max_model_len "
                    f"({self.max_model_len}): one full-length request could never run"
                )
        return out

    @property
    def kv_capacity_tokens(self) -> int | None:
        """Usable KV cache capacity in tokens (None = unlimited)."""
        if self.num_kv_blocks is None:
            return None
        return (self.num_kv_blocks - 1) * self.block_size

    def to_vllm_args(self, knobs: Iterable[str] | None = None) -> list[str]:
        """The ``vllm serve`` flags that set this configuration: every knob (what a live
        backend starts a server with), or only ``knobs``, in declaration order.

        Example:
            >>> ServingConfig(max_num_seqs=32).to_vllm_args(["max_num_seqs"])
            ['--max-num-seqs', '32']
        """
        chosen = set(KNOB_FLAGS) if knobs is None else set(knobs)
        unknown = chosen - set(KNOB_FLAGS)
        if unknown:
            raise ConfigError(f"to_vllm_args: unknown knob(s) {sorted(unknown)}")
        return [a for k in KNOB_FLAGS if k in chosen for a in self.knob_args(k)]

    def knob_args(self, knob: str) -> list[str]:
        """The ``vllm serve`` flags that set one knob (``[]`` for an unlimited KV cache)."""
        value = getattr(self, knob)
        flag = KNOB_FLAGS[knob]
        if isinstance(value, bool):
            return [f"--{flag}" if value else f"--no-{flag}"]
        if value is None:
            return []
        return [f"--{flag}", str(value)]

    def to_vllm_config(self, knobs: Iterable[str] | None = None) -> dict[str, Any]:
        """The same knobs as :meth:`to_vllm_args`, as ``vllm serve --config`` YAML keys (vLLM's
        flat config file: option names without dashes in front, booleans as true/false)."""
        chosen = set(KNOB_FLAGS) if knobs is None else set(knobs)
        out: dict[str, Any] = {}
        for k, flag in KNOB_FLAGS.items():
            if k in chosen and getattr(self, k) is not None:
                out[flag] = getattr(self, k)
        return out

    def describe(self, base: ServingConfig | None = None) -> str:
        """A short one-line description; with ``base``, only the knobs that differ from it."""
        ref = base.model_dump() if base is not None else None
        parts = [f"{k}={v}" for k, v in self.model_dump().items() if ref is None or ref[k] != v]
        return "ServingConfig(" + ", ".join(parts) + ")"


KNOBS: tuple[str, ...] = tuple(ServingConfig.model_fields)
"""Every searchable knob name, in declaration order."""
