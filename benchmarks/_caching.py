"""The benchmarks' shared cache: a Backend wrapper that measures each (configuration,
workload) once, for benchmarks that run many searches over one deterministic simulator.

Imported by the scripts beside it (``bench_capacity.py``, ``bench_search.py``), which put
this folder on ``sys.path`` first so that they also load by file path (as the tests do)."""

from __future__ import annotations

import hashlib

import numpy as np

from tuner import Measurement, ServingConfig, Workload
from tuner.backends import Backend


def fingerprint(workload: Workload) -> str:
    """A digest of the requests (arrivals, prompt and output lengths)."""
    h = hashlib.blake2b(digest_size=16)
    for a in (workload.arrival, workload.prompt_tokens, workload.output_tokens):
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def slim(m: Measurement) -> Measurement:
    """The measurement with equal inter-token gaps merged into one run each (percentiles are
    unchanged) and only the per-step token counts kept of the step arrays (``max_step_tokens``
    and ``total_steps`` unchanged): thousands of cached probes fit in memory."""
    values, inverse = np.unique(m.itl_values, return_inverse=True)
    counts = np.bincount(inverse, weights=m.itl_counts, minlength=len(values)).astype(np.int64)
    return m.model_copy(
        update={
            "itl_values": values,
            "itl_counts": counts,
            "step_prefill_tokens": None,
            "step_seqs": None,
            "step_start": None,
            "step_end": None,
        }
    )


class CachingBackend(Backend):
    """Measures each (configuration, workload) once; repeats get the stored Measurement.

    With ``slim_measurements`` every measurement is :func:`slim`-med, the first time too, so a
    cached answer and a fresh one are the same object. The Loop still charges every
    evaluation its cost. Valid only over a deterministic backend (it says it is one).
    """

    name = "cached"
    deterministic = True

    def __init__(self, inner: Backend, *, slim_measurements: bool = False) -> None:
        self.inner = inner
        self.slim_measurements = slim_measurements
        self._cache: dict[tuple[ServingConfig, str], Measurement] = {}
        self.hits = 0
        self.misses = 0

    @property
    def time_unit(self) -> str:
        return self.inner.time_unit

    def describe(self) -> str:
        return f"cached({self.inner.describe()})"

    def evaluate(self, config: ServingConfig, workload: Workload) -> Measurement:
        key = (config, fingerprint(workload))
        m = self._cache.get(key)
        if m is None:
            self.misses += 1
            m = self.inner.evaluate(config, workload)
            self._cache[key] = m = slim(m) if self.slim_measurements else m
        else:
            self.hits += 1
        return m
