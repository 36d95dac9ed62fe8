"""Reading and writing trace files, as methods of :class:`~tuner.Workload` (a mixin): the
``timed_trace`` JSONL of ``vllm bench serve`` and CSV, with their hash ids and time units.
The parsing itself is :mod:`tuner.core._traces`'s."""

from __future__ import annotations

import os

import numpy as np
import numpy.typing as npt
from typing_extensions import Self

from tuner.core import _traces
from tuner.core._errors import WorkloadError
from tuner.core._workload_base import WorkloadMixin

__all__ = ["TraceFiles"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
HashIds = tuple[int, ...]


class TraceFiles(WorkloadMixin):
    """``Workload.from_jsonl``, ``to_jsonl``, ``from_csv`` and ``to_csv``."""

    __slots__ = ()

    @classmethod
    def from_jsonl(
        cls,
        path: str | os.PathLike[str],
        *,
        sec_multiplier: float = 1.0,
        label_timestamp: str = "timestamp",
        label_input_length: str = "input_length",
        label_output_length: str = "output_length",
        label_hash_ids: str = "hash_ids",
        time_unit: _traces.TimeUnit = "s",
        hash_chunk_size: int = _traces.CHUNK_SIZE,
    ) -> Self:
        """Read a ``vllm bench serve --dataset-name timed_trace`` JSONL file (ids in file order).

        Lines are ``{"timestamp": s, "input_length": n, "output_length": m, "hash_ids": [...]}``
        (``hash_ids`` optional; other keys are ignored). The keyword arguments are vLLM's
        ``--timed-trace-sec-multiplier``, ``--timed-trace-label-*`` and
        ``--timed-trace-chunk-hash-size`` options, and ``time_unit`` the timestamps' unit ("s",
        "ms" or "us"): a Mooncake / AIPerf trace (millisecond ``timestamp``, 512-token chunks)
        reads with ``time_unit="ms", hash_chunk_size=512``; a warning says when second
        timestamps look like milliseconds. Timestamps need not be sorted here, but vllm bench
        sends lines in file order, so a line earlier than the one before it is sent late there.

        Raises:
            WorkloadError: for an unreadable or empty file, or a malformed line (naming the
                file, the line number and the field).

        Example:
            >>> import pathlib, tempfile
            >>> p = pathlib.Path(tempfile.mkdtemp()) / "trace.jsonl"
            >>> Workload.poisson(1.0, 3, 100, 10).to_jsonl(p)
            >>> Workload.from_jsonl(p).prompt_tokens.tolist()
            [100, 100, 100]
        """
        a, p, o, h = _traces.read_jsonl(
            path,
            sec_multiplier=sec_multiplier,
            label_timestamp=label_timestamp,
            label_input_length=label_input_length,
            label_output_length=label_output_length,
            label_hash_ids=label_hash_ids,
            time_unit=time_unit,
        )
        return cls._from_trace(path, a, p, o, h, hash_chunk_size)

    @classmethod
    def _from_trace(
        cls,
        path: str | os.PathLike[str],
        a: FloatArray,
        p: IntArray,
        o: IntArray,
        h: list[HashIds] | None,
        hash_chunk_size: int,
    ) -> Self:
        try:
            return cls.from_arrays(a, p, o, h, hash_chunk_size=hash_chunk_size)
        except WorkloadError as e:
            raise WorkloadError(f"{os.fspath(path)}: {e}") from None

    def to_jsonl(self, path: str | os.PathLike[str], *, chunk_size: int | None = None) -> None:
        """Write this workload as a ``timed_trace`` JSONL file, one line per request in id order.

        Each line carries at least ``ceil(input_length / chunk_size)`` hash ids: the request's
        own (so shared prefixes stay shared), completed with fresh ids distinct across requests,
        so ``vllm bench serve`` builds full-length prompts that share exactly what this
        workload's prompts share. ``chunk_size`` (default: :attr:`hash_chunk_size`) must equal
        ``--timed-trace-chunk-hash-size`` (vllm bench's default is 16). vllm bench sends lines in
        file order, waiting for each timestamp; pass ``--num-prompts`` >= the number of requests
        (its default is 1000).

        Raises:
            WorkloadError: ``chunk_size`` differs from the chunk size of this workload's hash ids.

        Example:
            >>> import pathlib, tempfile
            >>> p = pathlib.Path(tempfile.mkdtemp()) / "trace.jsonl"
            >>> Workload.from_arrays([0.0], [40], [8]).to_jsonl(p)
            >>> p.read_text()
            '{"timestamp": 0.0, "input_length": 40, "output_length": 8, "hash_ids": [0, 1, 2]}\\n'
        """
        self._open_loop_only("to_jsonl")
        size = self._chunk if chunk_size is None else chunk_size
        if self._hash is not None and size != self._chunk:
            raise WorkloadError(
                f"to_jsonl(chunk_size={chunk_size!r}): this workload's hash ids name chunks of "
                f"{self._chunk} tokens; write it with chunk_size={self._chunk}"
            )
        _traces.write_jsonl(
            path, self._arrival, self._prompt, self._output, chunk_size=size, hash_ids=self._hash
        )

    @classmethod
    def from_csv(
        cls,
        path: str | os.PathLike[str],
        *,
        time_unit: _traces.TimeUnit = "s",
        hash_chunk_size: int = _traces.CHUNK_SIZE,
    ) -> Self:
        """Read a CSV with header ``arrival,prompt_tokens,output_tokens`` (ids in file order),
        optionally with a fourth column ``hash_ids`` (space-separated); ``time_unit`` and
        ``hash_chunk_size`` as in :meth:`from_jsonl`.

        Raises:
            WorkloadError: for an unreadable or empty file, a wrong header or a malformed row
                (naming the file, the line number and the field).

        Example:
            >>> import pathlib, tempfile
            >>> p = pathlib.Path(tempfile.mkdtemp()) / "w.csv"
            >>> _ = p.write_text("arrival,prompt_tokens,output_tokens\\n0.5,64,8\\n")
            >>> Workload.from_csv(p)[0]
            Request(arrival=0.5, prompt_tokens=64, output_tokens=8)
        """
        a, p, o, h = _traces.read_csv(path, time_unit=time_unit)
        return cls._from_trace(path, a, p, o, h, hash_chunk_size)

    def to_csv(self, path: str | os.PathLike[str]) -> None:
        """Write this workload as a CSV with header ``arrival,prompt_tokens,output_tokens`` (and
        ``hash_ids`` when it has some), in id order; arrivals are written with ``repr``
        precision, so :meth:`from_csv` reads it back exactly.

        Example:
            >>> import pathlib, tempfile
            >>> p = pathlib.Path(tempfile.mkdtemp()) / "w.csv"
            >>> Workload.from_arrays([0.1], [64], [8]).to_csv(p)
            >>> p.read_text()
            'arrival,prompt_tokens,output_tokens\\n0.1,64,8\\n'
        """
        self._open_loop_only("to_csv")
        _traces.write_csv(path, self._arrival, self._prompt, self._output, self._hash)
