"""The deployment target: the device a recommendation is for, vLLM's defaults there, and the
flags safe to paste (only what the study tuned, or what differs from those defaults).

vLLM 0.32 picks several knobs by device (``EngineArgs``): the step budget and the sequence cap
by memory class, async scheduling on GPUs, the block size (16 on GPUs, 128 on CPU). A pasted
``vllm serve`` line that repeats tuner's own assumptions (``--no-async-scheduling``, an untuned
``--block-size``, ``--max-model-len 8192``, a simulated ``--num-gpu-blocks-override``) can make
a GPU deployment worse, so :func:`recommended_knobs` leaves them out.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from tuner.core import KNOBS, ServingConfig, Settings
from tuner.hardware._defaults import SchedulerDefaults, UsageContext, vllm_default_scheduler_limits
from tuner.hardware._gpu import GPU
from tuner.hardware._model_spec import ModelSpec

#: The GPU assumed when a study names none: an 80 GB H100-class card (vLLM's largest default
#: class below 160 GiB). Said in every report that uses it.
ASSUMED_GPU = "h100"

#: Knobs that are modelling assumptions of the simulator, never pasted into ``vllm serve``:
#: on a real server the KV cache follows from memory (``gpu_memory_utilization``).
SIMULATED = frozenset({"num_kv_blocks"})


class Target(Settings):
    """Where the recommended configuration will run.

    Example:
        >>> Target(gpu="NVIDIA H100 80GB HBM3").defaults().max_num_batched_tokens
        8192
        >>> Target(device="cpu").defaults().async_scheduling
        False
    """

    _owner = "target"

    device: Literal["gpu", "cpu"] = "gpu"
    """The device kind; ``gpu`` without a ``gpu`` name assumes an 80 GB H100-class card."""
    gpu: str | None = Field(default=None, min_length=1)
    """A GPU by the name ``nvidia-smi`` prints or a short name (``h100``, ``a100-40gb``,
    ``l4``); implies ``device: gpu``."""
    usage_context: UsageContext = "openai_server"
    """How vLLM is started: ``openai_server`` (``vllm serve``) or ``llm_class`` (``LLM(...)``);
    vLLM's defaults differ between the two."""
    model: str | None = Field(default=None, min_length=1)
    """The model served: a shipped Hugging Face id or short name
    (``meta-llama/Llama-3.1-8B-Instruct``, ``llama-3.1-8b``) or a path to a Hugging Face
    ``config.json`` (or its folder, relative to the study file). With ``gpu`` it sizes the KV
    cache as vLLM would and gives the simulator a roofline step-time prior."""

    @model_validator(mode="after")
    def _gpu_on_gpu(self) -> Target:
        if self.gpu is not None and self.device != "gpu":
            raise ValueError(f"gpu {self.gpu!r} given with device {self.device!r}")
        if self.gpu is not None:
            GPU.named(self.gpu)  # an unknown name: the closest known ones
        if self.model is not None:
            if self.gpu is None:
                raise ValueError(
                    f"model {self.model!r} needs a gpu (e.g. gpu: h100): the GPU's memory sizes "
                    "the KV cache and its peaks time the steps"
                )
            if not _looks_like_path(self.model):
                ModelSpec.named(self.model)  # an unknown name: the closest known ones
        return self

    def model_spec(self, root: Path | None = None) -> ModelSpec | None:
        """The model's architecture (None when the target names no model); a path is read
        relative to ``root`` (the study file's folder)."""
        if self.model is None:
            return None
        if _looks_like_path(self.model) or (root is not None and (root / self.model).exists()):
            path = Path(self.model).expanduser()
            if not path.is_absolute() and root is not None:
                path = root / path
            return ModelSpec.from_hf_config(path)
        return ModelSpec.named(self.model)

    @property
    def assumed(self) -> bool:
        """Whether the GPU is assumed (the study named none)."""
        return self.device == "gpu" and self.gpu is None

    def device_spec(self) -> GPU | Literal["cpu"]:
        """The device as the hardware model knows it."""
        if self.device == "cpu":
            return "cpu"
        return GPU.named(self.gpu or ASSUMED_GPU)

    def describe(self) -> str:
        """``"NVIDIA H100 80GB HBM3 (assumed)"``, ``"CPU"``; with a model, ``"<model> on
        <GPU>"``."""
        dev = self.device_spec()
        if dev == "cpu":
            return "CPU"
        where = dev.name + (" (assumed: the study names no GPU)" if self.assumed else "")
        return f"{self.model} on {where}" if self.model is not None else where

    def defaults(self, max_model_len: int | None = None) -> SchedulerDefaults:
        """vLLM 0.32's scheduler defaults on this target."""
        return vllm_default_scheduler_limits(
            self.device_spec(), self.usage_context, max_model_len=max_model_len
        )

    def device_defaults(self, max_model_len: int | None = None) -> dict[str, Any]:
        """The knobs vLLM picks by device, as ServingConfig field -> value."""
        d = self.defaults(max_model_len)
        return {
            "max_num_batched_tokens": d.max_num_batched_tokens,
            "max_num_seqs": d.max_num_seqs,
            "async_scheduling": d.async_scheduling,
            "block_size": d.block_size,
        }

    def vllm_defaults(self, base: ServingConfig, knobs: Iterable[str] = KNOBS) -> ServingConfig:
        """``base`` with ``knobs`` at what vLLM picks on this target when they are not set:
        the baseline a study compares its winner against."""
        target = self.device_defaults(base.max_model_len)
        fields = ServingConfig.model_fields
        changes = {k: target.get(k, fields[k].default) for k in knobs if k not in SIMULATED}
        return base.replace(**changes)

    def recommended_knobs(
        self, config: ServingConfig, tuned: Iterable[str], base: ServingConfig | None = None
    ) -> list[str]:
        """The knobs a pasted ``vllm serve`` line should set: those the study tuned, and those
        the study set on purpose (in ``base``) to a value other than vLLM's default on this
        target. Never a knob the study left at tuner's own assumption (an unset
        ``async_scheduling``, ``block_size`` or ``max_model_len``), and never a simulator
        assumption (``num_kv_blocks``).

        Example:
            >>> cfg = ServingConfig(max_num_batched_tokens=512)
            >>> Target().recommended_knobs(cfg, ["max_num_batched_tokens"])
            ['max_num_batched_tokens']
        """
        tuned = set(tuned)
        device = self.device_defaults(config.max_model_len)
        fields = ServingConfig.model_fields
        given = set(base.model_fields_set) if base is not None else set()
        out = []
        for k in KNOBS:
            if k in SIMULATED:
                continue
            on_purpose = k in given and getattr(config, k) != device.get(k, fields[k].default)
            if k in tuned or on_purpose or (k == "max_model_len" and k in given):
                out.append(k)
        return out


def _looks_like_path(model: str) -> bool:
    """A ``config.json`` (or a folder holding one) rather than a shipped model's name."""
    p = Path(model).expanduser()
    return p.suffix == ".json" or model.startswith((".", "/", "~")) or p.is_dir()
