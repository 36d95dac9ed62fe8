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
StepTimer = Callable[[Any, Any, Any], Any]


class CostModel(FrozenModel):
    """Step time = fixed + per_prefill_token*prefill + per_decode_token*decode + per_sequence*seqs.

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
    time_unit: Literal["step", "s"] = "step"
    """Unit of the resulting times: ``"step"`` (the unit step clock) or seconds."""

    @model_validator(mode="after")
    def _some_time(self) -> CostModel:
        if self.fixed + self.per_prefill_token + self.per_decode_token + self.per_sequence <= 0:
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
        )

    @overload
    def step_time(self, prefill_tokens: int, decode_tokens: int, num_seqs: int) -> float: ...
    @overload
    def step_time(
        self, prefill_tokens: IntArray, decode_tokens: IntArray, num_seqs: IntArray
    ) -> FloatArray: ...
    def step_time(self, prefill_tokens: Any, decode_tokens: Any, num_seqs: Any) -> Any:
        """Duration of one step that scheduled the given work (elementwise over arrays, with
        the same float operations, so a step's time is the same bits either way)."""
        return self.timer()(prefill_tokens, decode_tokens, num_seqs)

    def timer(self) -> StepTimer:
        """:meth:`step_time` as a plain function, for loops that call it once per step (it
        reads no model attribute per call; same operations, same bits)."""
        fixed, prefill, decode, seq = (
            self.fixed,
            self.per_prefill_token,
            self.per_decode_token,
            self.per_sequence,
        )

        def step_time(prefill_tokens: Any, decode_tokens: Any, num_seqs: Any) -> Any:
            return fixed + prefill * prefill_tokens + decode * decode_tokens + seq * num_seqs

        return step_time
