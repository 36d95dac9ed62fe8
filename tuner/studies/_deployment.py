"""A study's deployment: the model and GPU its target names, and what they change.

With ``target: {gpu: h100, model: meta-llama/Llama-3.1-8B-Instruct}`` the simulator sizes each
configuration's KV cache as vLLM 0.32 would (so ``gpu_memory_utilization``,
``tensor_parallel_size``, ``kv_cache_dtype``, ``quantization`` and ``enforce_eager`` become
searchable) and, without ``step_cost`` or ``calibration``, times steps with the roofline prior.
A configuration vLLM would refuse to start is a failed trial with vLLM's reason
(:class:`~tuner.core.ConfigRefused`), not a hole in the space: the space cannot know the model.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from tuner.backends.simulator import Deployment
from tuner.core import HARDWARE_KNOBS, ServingConfig
from tuner.hardware import Target


class _Backend(Protocol):
    """A study's backend section (``BackendSpec``), as far as this module reads it."""

    @property
    def simulator(self) -> Any: ...
    @property
    def replay(self) -> Any: ...
    @property
    def live(self) -> Any: ...


def deployment_problem(
    knobs: Mapping[str, Any],
    base: ServingConfig,
    searching: _Backend | None,
    target: Target | None,
) -> str | None:
    """Why a study's deployment knobs cannot be simulated (None when they can): a simulated
    backend (``searching``: the study's backend or its cheap tier) searching them (or given
    them away from vLLM's defaults) needs a model and a GPU, and only the simulator sizes
    memory (the replay takes ``num_kv_blocks`` as given)."""
    fields = ServingConfig.model_fields
    used = [k for k in HARDWARE_KNOBS if k in knobs]
    used += [k for k in HARDWARE_KNOBS if k not in used and getattr(base, k) != fields[k].default]
    if not used:
        return None
    if searching is None or searching.live is not None:
        return None  # a live server sizes its memory itself
    names = ", ".join(used)
    if searching.replay is not None:
        return (
            f"{names}: the replay backend does not size the KV cache from memory; use the "
            "simulator with target: {gpu: ..., model: ...}, or set num_kv_blocks"
        )
    if target is None or target.model is None:
        return (
            f"{names}: deployment knobs need a model and a GPU to size them with (nothing "
            "else says how much KV cache they buy); add target: {gpu: h100, model: "
            "meta-llama/Llama-3.1-8B-Instruct} (a shipped name or a path to config.json), or "
            "search num_kv_blocks instead"
        )
    return None


def build_deployment(target: Target | None, root: Path) -> Deployment | None:
    """The simulator's deployment (None when the target names no model)."""
    model = target.model_spec(root) if target is not None else None
    if target is None or model is None:
        return None
    device = target.device_spec()
    if device == "cpu":  # pragma: no cover - Target requires a GPU with a model
        return None
    return Deployment(model, device, target.usage_context)


def simulated_cost_given(backend: _Backend) -> bool:
    """Whether a simulator section gives its own step times (``step_cost`` or
    ``calibration``), which then replace the roofline prior."""
    sim = backend.simulator
    return sim is not None and (sim.step_cost is not None or sim.calibration is not None)


def compares_replicas_of_different_size(knobs: Mapping[str, Any], metric: str) -> bool:
    """Whether a study searches TP sizes and ranks per GPU: then one configuration's capacity
    (per replica) says nothing about whether another can beat it per GPU, so the capacity
    search's incumbent shortcut is off."""
    return len(knobs.get("tensor_parallel_size", [])) > 1 and metric != "capacity"


def estimates_note(searching: _Backend | None, target: Target | None) -> str | None:
    """Which of a study's numbers are estimates rather than measurements (None: none are,
    or the study names no model)."""
    if target is None or target.model is None or searching is None:
        return None
    if searching.simulator is None:
        return None
    kv = (
        "KV cache sizes are vLLM 0.32's memory arithmetic over modelled terms (activation "
        "peak, CUDA graphs, non-torch memory; within ~10 % of the sizes vLLM printed in public "
        "logs)"
    )
    if simulated_cost_given(searching):
        return f"Estimates: {kv}; step times come from the study's step_cost or calibration."
    return (
        f"Estimates: {kv}; step times are the roofline prior (datasheet peaks at 60 % of "
        "FLOP/s and 80 % of bandwidth: decode steps within 16 %, a 2k-token prefill +82 % on "
        "the published points in docs/hardware.md), so capacity, tokens/s per GPU and $ per 1M "
        "tokens are estimates too. Confirm on a live server (two_tier, or tuner live) before "
        "buying GPUs."
    )
