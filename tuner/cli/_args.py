"""Argument parsers shared by the commands: configs, cost models and lengths from text."""

from __future__ import annotations

import argparse
from typing import Any

from tuner.backends import CostModel
from tuner.core import KNOBS, ConfigError, ServingConfig, parse_length

_COST_KEYS = {
    "fixed": "fixed",
    "prefill": "per_prefill_token",
    "decode": "per_decode_token",
    "seq": "per_sequence",
}


def _pairs(text: str, what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep:
            raise ConfigError(f"{what} {text!r}: expected key=value pairs separated by commas")
        out[key.strip()] = value.strip()
    return out


def _value(v: str) -> Any:
    low = v.lower()
    if low in ("true", "false"):
        return low == "true"
    if low == "none":
        return None
    try:
        return int(v)
    except ValueError:
        return float(v)


def serving_config(text: str, base: ServingConfig | None = None) -> ServingConfig:
    """``"max_num_batched_tokens=512,max_num_seqs=32"`` over ``base`` (or vLLM's defaults)."""
    values = _pairs(text, "--config")
    unknown = sorted(set(values) - set(KNOBS))
    if unknown:
        raise ConfigError(f"--config: unknown knob(s) {unknown}; allowed: {', '.join(KNOBS)}")
    try:
        changes = {k: _value(v) for k, v in values.items()}
    except ValueError as e:
        raise ConfigError(f"--config {text!r}: {e}") from None
    return (base or ServingConfig()).replace(**changes)


def cost_model(text: str | None) -> CostModel:
    """``"fixed=0.01,prefill=1e-4,decode=2e-4,seq=0"`` (seconds) or None for the unit clock."""
    if not text:
        return CostModel()
    values = _pairs(text, "--step-cost")
    unknown = sorted(set(values) - set(_COST_KEYS))
    if unknown:
        raise ConfigError(
            f"--step-cost: unknown term(s) {unknown}; allowed: {', '.join(_COST_KEYS)}"
        )
    try:
        kw = {_COST_KEYS[k]: float(v) for k, v in values.items()}
    except ValueError as e:
        raise ConfigError(f"--step-cost {text!r}: {e}") from None
    kw.setdefault("fixed", 0.0)
    return CostModel(**kw, time_unit="s")


def add_workload_args(p: argparse.ArgumentParser, requests: int = 500) -> None:
    """The synthetic-workload flags (vllm bench serve's random dataset and arrivals)."""
    p.add_argument("--requests", type=int, default=requests, help=f"requests (default {requests})")
    p.add_argument(
        "--prompt-len",
        type=parse_length,
        default=parse_length("uniform:512:0.5"),
        help="N, uniform:MEAN:RATIO or lognormal:MEAN:SIGMA[:MAX] (default uniform:512:0.5)",
    )
    p.add_argument(
        "--output-len",
        type=parse_length,
        default=parse_length("uniform:128:0.5"),
        help="as --prompt-len (default uniform:128:0.5)",
    )
    p.add_argument(
        "--burstiness",
        type=float,
        default=1.0,
        help="1 = Poisson arrivals, < 1 burstier, > 1 more regular (default 1)",
    )
    p.add_argument("--seed", type=int, default=0, help="workload seed (default 0)")
    p.add_argument(
        "--step-cost",
        metavar="TERMS",
        help="seconds per step: fixed=..,prefill=..,decode=..,seq=.. "
        "(per prefill token, decode token, scheduled sequence); default: the "
        "unit step clock, times in steps",
    )
