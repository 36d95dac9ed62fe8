"""The cost model: how long one engine step takes, from what it scheduled."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, overload

import numpy as np
import numpy.typing as npt
from pydantic import Field, model_validator

from tuner.core import FrozenModel

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
StepTimer = Callable[..., Any]


class CostModel(FrozenModel):
    """Step time = fixed + per_prefill_token*prefill + per_decode_token*decode + per_sequence*seqs
    (+ per_decode_context_token*decode_context + per_prefill_context_pair*prefill_pairs).

    The two attention terms price what grows with context length: every decoding sequence reads
    the K/V of its whole context (``decode_context`` = the sum over the step's decoding
    sequences of the tokens each new token attends to: those computed before it, plus itself),
    and a prefill chunk of ``n`` tokens after ``c`` computed ones computes ``n*c + n*(n+1)/2``
    (query, key) pairs (``prefill_pairs``, summed over the step's chunks). They default to 0,
    and a model without them times a step exactly as before.

    The default is the **unit step clock**: every step lasts exactly 1 and times are counted in
    steps (``time_unit="step"``), the seed lab's clock. A seconds-based model sets
    ``time_unit="s"``; its coefficients are usually fitted from a live server's step log.

    Example:
        >>> CostModel().step_time(prefill_tokens=100, decode_tokens=3, num_seqs=4)
        1.0
        >>> gpu = CostModel(fixed=0.004, per_prefill_token=2e-5, per_decode_token=1e-4,
        ...                 time_unit="s")
        >>> round(gpu.step_time(prefill_tokens=100, decode_tokens=3, num_seqs=4), 6)
        0.0063
    """

    fixed: float = Field(default=1.0, ge=0.0, allow_inf_nan=False)
    """Time of a step regardless of its contents (launch and scheduling overhead)."""
    per_prefill_token: float = Field(default=0.0, ge=0.0, allow_inf_nan=False)
    """Time per prompt token computed in the step (prefill chunks, recomputation)."""
    per_decode_token: float = Field(default=0.0, ge=0.0, allow_inf_nan=False)
    """Time per decode token in the step."""
    per_sequence: float = Field(default=0.0, ge=0.0, allow_inf_nan=False)
    """Time per request scheduled in the step."""
    per_decode_context_token: float = Field(default=0.0, ge=0.0, allow_inf_nan=False)
    """Time per context token a decoding sequence attends to (decode attention's K/V reads)."""
    per_prefill_context_pair: float = Field(default=0.0, ge=0.0, allow_inf_nan=False)
    """Time per (query, key) pair of prefill attention (causal: quadratic in the chunk)."""
    time_unit: Literal["step", "s"] = "step"
    """Unit of the resulting times: ``"step"`` (the unit step clock) or seconds."""

    @model_validator(mode="after")
    def _some_time(self) -> CostModel:
        if (
            self.fixed
            + self.per_prefill_token
            + self.per_decode_token
            + self.per_sequence
            + self.per_decode_context_token
            + self.per_prefill_context_pair
            <= 0
        ):
            raise ValueError(
                "every coefficient is 0, so steps would take no time; "
                "set fixed > 0 (the unit step clock is fixed=1)"
            )
        return self

    @property
    def is_unit_clock(self) -> bool:
        """Whether every step lasts exactly 1 regardless of its contents."""
        return (
            self.fixed == 1.0
            and self.per_prefill_token == 0
            and self.per_decode_token == 0
            and self.per_sequence == 0
            and not self.uses_context
        )

    @property
    def uses_context(self) -> bool:
        """Whether a step's time depends on the context lengths of what it runs (an attention
        term is set), not only on its token and sequence counts."""
        return self.per_decode_context_token > 0 or self.per_prefill_context_pair > 0

    @overload
    def step_time(
        self,
        prefill_tokens: int,
        decode_tokens: int,
        num_seqs: int,
        decode_context: int = 0,
        prefill_pairs: int = 0,
    ) -> float: ...
    @overload
    def step_time(
        self,
        prefill_tokens: IntArray,
        decode_tokens: IntArray,
        num_seqs: IntArray,
        decode_context: IntArray | int = 0,
        prefill_pairs: IntArray | int = 0,
    ) -> FloatArray: ...
    def step_time(
        self,
        prefill_tokens: Any,
        decode_tokens: Any,
        num_seqs: Any,
        decode_context: Any = 0,
        prefill_pairs: Any = 0,
    ) -> Any:
        """Duration of one step that scheduled the given work (elementwise over arrays, with
        the same float operations, so a step's time is the same bits either way)."""
        return self.timer()(prefill_tokens, decode_tokens, num_seqs, decode_context, prefill_pairs)

    def timer(self) -> StepTimer:
        """:meth:`step_time` as a plain function, for loops that call it once per step (it
        reads no model attribute per call; same operations, same bits). Without attention
        terms it ignores the context arguments (the four-term sum, as before)."""
        fixed, prefill, decode, seq = (
            self.fixed,
            self.per_prefill_token,
            self.per_decode_token,
            self.per_sequence,
        )
        dctx, pctx = self.per_decode_context_token, self.per_prefill_context_pair
        if not self.uses_context:

            def step_time(
                prefill_tokens: Any,
                decode_tokens: Any,
                num_seqs: Any,
                decode_context: Any = 0,
                prefill_pairs: Any = 0,
            ) -> Any:
                return fixed + prefill * prefill_tokens + decode * decode_tokens + seq * num_seqs

            return step_time

        def context_step_time(
            prefill_tokens: Any,
            decode_tokens: Any,
            num_seqs: Any,
            decode_context: Any = 0,
            prefill_pairs: Any = 0,
        ) -> Any:
            return (
                fixed
                + prefill * prefill_tokens
                + decode * decode_tokens
                + seq * num_seqs
                + dctx * decode_context
                + pctx * prefill_pairs
            )

        return context_step_time


def prefill_pairs(computed: int, chunk: int) -> int:
    """The (query, key) pairs causal attention computes for a prefill chunk of ``chunk`` tokens
    after ``computed`` ones: each new token attends to everything before it and itself.

    Example:
        >>> prefill_pairs(0, 3), prefill_pairs(10, 2)
        (6, 23)
    """
    return chunk * computed + chunk * (chunk + 1) // 2
