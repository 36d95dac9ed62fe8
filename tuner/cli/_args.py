"""Argument parsers shared by the commands: knob values and step costs from ``key=value`` text,
with the keys of the models they fill (``ServingConfig``'s knobs, ``CostModel``'s terms)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from tuner.core import KNOBS, ConfigError, unknown_key_message

#: CostModel's terms, the keys of ``--step-cost`` (the study file's ``step_cost`` keys too).
COST_TERMS = (
    "fixed",
    "per_prefill_token",
    "per_decode_token",
    "per_sequence",
    "per_decode_context_token",
    "per_prefill_context_pair",
)


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


def as_argument_type(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """``parse`` for argparse's ``type=``: its ConfigError becomes argparse's usage error with
    the same message (exit status 2, the message kept)."""

    def wrapped(text: str) -> Any:
        try:
            return parse(text)
        except ConfigError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    wrapped.__name__ = parse.__name__
    return wrapped


def knob_values(text: str) -> dict[str, Any]:
    """``"max_num_batched_tokens=512,max_num_seqs=32"`` as knob -> value."""
    values = _pairs(text, "--config")
    for key in values:
        if key not in KNOBS:
            raise ConfigError(f"--config {text!r}: {unknown_key_message(key, list(KNOBS))}")
    try:
        return {k: _value(v) for k, v in values.items()}
    except ValueError as e:
        raise ConfigError(f"--config {text!r}: {e}") from None


def step_cost(text: str) -> dict[str, float]:
    """``"fixed=0.01,per_prefill_token=1e-4"``: seconds per step, CostModel's terms."""
    values = _pairs(text, "--step-cost")
    for key in values:
        if key not in COST_TERMS:
            raise ConfigError(f"--step-cost {text!r}: {unknown_key_message(key, list(COST_TERMS))}")
    try:
        return {k: float(v) for k, v in values.items()}
    except ValueError as e:
        raise ConfigError(f"--step-cost {text!r}: {e}") from None


__all__ = ["COST_TERMS", "as_argument_type", "knob_values", "step_cost"]
