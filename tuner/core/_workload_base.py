"""What the Workload mixins (generators, trace files, closed-loop views) may use of the
Workload they are mixed into: its constructor from arrays and its private arrays. Declared
once, for the type checker; the definitions are :class:`~tuner.Workload`'s."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
from typing_extensions import Self

from tuner.core import _traces

__all__ = ["WorkloadMixin"]


class WorkloadMixin:
    """Base of the Workload mixins."""

    __slots__ = ()

    if TYPE_CHECKING:  # defined by Workload
        _arrival: npt.NDArray[np.float64]
        _prompt: npt.NDArray[np.int64]
        _output: npt.NDArray[np.int64]
        _hash: tuple[tuple[int, ...], ...] | None
        _chunk: int

        @classmethod
        def from_arrays(
            cls,
            arrival: npt.ArrayLike,
            prompt_tokens: npt.ArrayLike,
            output_tokens: npt.ArrayLike,
            hash_ids: Sequence[Sequence[int]] | None = None,
            *,
            hash_chunk_size: int = _traces.CHUNK_SIZE,
            user: npt.ArrayLike | None = None,
            think_time: npt.ArrayLike | None = None,
        ) -> Self: ...

        def _open_loop_only(self, what: str) -> None: ...
