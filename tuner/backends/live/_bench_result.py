"""A run measured by someone else: a server's iteration log plus the detailed result of
``vllm bench serve`` against it, as the configuration, workload and Measurement tuner fits a
calibration on.

The result file is what ``vllm bench serve --save-result --save-detailed`` writes (vLLM 0.32,
``vllm/benchmarks/serve.py``): per request ``input_lens``, ``output_lens``, ``ttfts``,
``latencies``, ``itls`` and ``start_times`` (seconds of ``time.perf_counter`` in the client),
and ``errors`` (empty for a success). The log is the server's output with
``--enable-logging-iteration-details``, every line starting with its Unix time (a logging
config whose format begins with ``%(created).6f``, as :class:`~tuner.backends.
VLLMServerBackend` writes): vLLM's default format has only whole seconds, too coarse to place
milliseconds-long steps. The server's configuration comes from its ``non-default args`` line.

The two clocks are lined up at the first request: its send is put at the start of the first
step of the benchmark (the steps that follow, as many as the benchmark's tokens need, counted
back from the end of the log). So the first request's time to reach the engine counts as 0,
and only the sum of the inbound and delivery delays is known from such a run.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tuner.backends.live._steplog import StepLog, parse_step_line, step_times
from tuner.core import ConfigError, Measurement, ServingConfig, Workload

_ARGS = re.compile(r"non-default args: (?P<args>\{.*\})\s*$")
#: The result fields read, each a list with one entry per request.
FIELDS = ("input_lens", "output_lens", "ttfts", "latencies", "itls", "start_times")
_KNOBS = (
    "max_num_batched_tokens",
    "max_num_seqs",
    "long_prefill_token_threshold",
    "enable_chunked_prefill",
    "block_size",
    "max_model_len",
    "enable_prefix_caching",
    "async_scheduling",
)


@dataclass(frozen=True)
class BenchRun:
    """One benchmark run as tuner sees it.

    Attributes:
        config: The server's scheduler configuration (from its log, overridden as asked).
        workload: The requests as sent (arrivals: send times, from 0).
        measurement: The client's latencies and the engine's steps, on the workload's clock.
    """

    config: ServingConfig
    workload: Workload
    measurement: Measurement


def _read_result(path: Path) -> dict[str, list[Any]]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the benchmark result: {e.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object (a vllm bench serve result)")
    n = None
    for name in FIELDS:
        value = data.get(name)
        if not isinstance(value, list):
            raise ConfigError(
                f"{path}: field {name!r} is missing or not a list: write the result with "
                "`vllm bench serve --save-result --save-detailed`"
            )
        if n is not None and len(value) != n:
            raise ConfigError(f"{path}: field {name!r} has {len(value)} entries, expected {n}")
        n = len(value)
    errors = data.get("errors") or [""] * (n or 0)
    out = {k: data[k] for k in FIELDS}
    out["errors"] = errors
    return out


def _read_log(path: Path) -> tuple[StepLog, dict[str, Any]]:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the server log: {e.strerror}") from None
    steps = []
    args: dict[str, Any] = {}
    for number, line in enumerate(lines, start=1):
        m = _ARGS.search(line)
        if m:
            try:
                parsed = ast.literal_eval(m.group("args"))
            except (ValueError, SyntaxError):
                raise ConfigError(
                    f"{path}:{number}: cannot read the server's non-default args"
                ) from None
            if isinstance(parsed, dict):
                args = parsed
        record = parse_step_line(line)
        if record is None:
            continue
        if record.logged_at is None:
            raise ConfigError(
                f"{path}:{number}: a step line without a leading Unix time; log with a format "
                "that starts with %(created).6f (VLLM_LOGGING_CONFIG_PATH)"
            )
        steps.append(record)
    if not steps:
        raise ConfigError(
            f"{path}: no engine step lines; start the server with "
            "--enable-logging-iteration-details"
        )
    return StepLog(tuple(steps)), args


def _config(args: dict[str, Any], overrides: dict[str, Any], log: Path) -> ServingConfig:
    known = {k: args[k] for k in _KNOBS if args.get(k) is not None}
    try:
        return ServingConfig(**{**known, **overrides})
    except ConfigError as e:
        raise ConfigError(f"{log}: the server's configuration: {e}") from None


def load_bench_run(
    log: str | Path, result: str | Path, overrides: dict[str, Any] | None = None
) -> BenchRun:
    """Read a server log and a ``vllm bench serve`` detailed result into a :class:`BenchRun`.

    Args:
        log: The server's log (iteration details, timestamped lines).
        result: The benchmark's result JSON (``--save-result --save-detailed``).
        overrides: Scheduler settings to use instead of (or missing from) the log's
            ``non-default args`` (vLLM's defaults otherwise).

    Raises:
        ConfigError: a file is missing or garbled, a field is absent, the log has no
            timestamped step lines or fewer tokens than the benchmark scheduled (naming the
            file, and the line or field).
    """
    log, result = Path(log), Path(result)
    res = _read_result(result)
    steps, args = _read_log(log)
    config = _config(args, overrides or {}, log)
    ok = np.array([not e for e in res["errors"]], dtype=bool)
    ok &= np.array([bool(o) and o > 0 for o in res["output_lens"]], dtype=bool)
    if not ok.any():
        raise ConfigError(f"{result}: no request succeeded")
    prompt = np.array(res["input_lens"], dtype=np.int64)[ok]
    output = np.array(res["output_lens"], dtype=np.int64)[ok]
    sent = np.array(res["start_times"], dtype=np.float64)[ok]
    ttft = np.array(res["ttfts"], dtype=np.float64)[ok]
    e2e = np.array(res["latencies"], dtype=np.float64)[ok]
    itls = [g for keep, gaps in zip(ok, res["itls"], strict=True) if keep for g in (gaps or [])]
    need = int(prompt.sum() + output.sum() - len(prompt))  # the last token is never fed back
    tokens = steps.tokens
    suffix = np.cumsum(tokens[::-1])
    if suffix[-1] < need:
        raise ConfigError(
            f"{log}: its steps scheduled {int(suffix[-1])} tokens, the benchmark in {result} "
            f"needs {need}: is it the log of the server benchmarked?"
        )
    first = len(tokens) - 1 - int(np.searchsorted(suffix, need))
    logged = np.array([s.logged_at for s in steps.steps[first:]], dtype=np.float64)
    start, end = step_times(logged, steps.elapsed[first:])
    origin = start[0]
    arrival = sent - sent.min()
    workload = Workload.from_arrays(arrival, prompt, output)
    m = Measurement(
        source=f"vllm bench serve ({result.name}) on {log.name}",
        time_unit="s",
        arrival=arrival,
        prompt_tokens=prompt,
        output_tokens=output,
        ttft=ttft,
        e2e=e2e,
        itl_values=np.array(itls, dtype=np.float64),
        itl_counts=np.ones(len(itls), dtype=np.int64),
        step_tokens=tokens[first:],
        step_prefill_tokens=steps.prefill_tokens[first:],
        step_seqs=steps.seqs[first:],
        step_start=start - origin,
        step_end=end - origin,
        duration=float((arrival + e2e).max()),
    )
    return BenchRun(config, workload, m)
