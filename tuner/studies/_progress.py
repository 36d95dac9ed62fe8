"""Progress of a running study on stderr: trial k of n, its configuration, its value or why it
failed, the best so far and an estimate of the time left (a tqdm bar on a terminal, one plain
line per trial otherwise, so logs stay readable)."""

from __future__ import annotations

import math
import sys
import time
from typing import TextIO

from tqdm import tqdm

from tuner.core import ServingConfig, Trial
from tuner.objectives import Objective, best_trial


class Progress:
    """Called with each trial as the Loop records it (``Loop(on_trial=...)``).

    Example:
        >>> import io
        >>> p = Progress("demo", 2, Objective.minimize("total_steps"), ServingConfig(),
        ...              stream=io.StringIO())
        >>> p.close()
    """

    def __init__(
        self,
        label: str,
        total: int | None,
        objective: Objective,
        base: ServingConfig,
        *,
        stream: TextIO | None = None,
    ) -> None:
        self.label, self.total, self.objective, self.base = label, total, objective, base
        self.stream = stream or sys.stderr
        self.trials: list[Trial] = []
        self.t0 = time.monotonic()
        tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.bar = tqdm(
            total=total,
            desc=label,
            unit="trial",
            file=self.stream,
            leave=False,
            disable=not tty,
            dynamic_ncols=True,
        )

    def say(self, line: str) -> None:
        """One line of context above the progress (the workload summary)."""
        if self.bar.disable:
            self.stream.write(f"{self.label}: {line}\n")
            self.stream.flush()
        else:
            self.bar.write(f"{self.label}: {line}", file=self.stream)

    def __call__(self, trial: Trial) -> None:
        self.trials.append(trial)
        self.bar.update(1)
        line = self.line(trial)
        if self.bar.disable:
            self.stream.write(line + "\n")
            self.stream.flush()
        else:
            self.bar.write(line, file=self.stream)

    def line(self, trial: Trial) -> str:
        """``chat 3/12 trial 2: max_num_seqs=64: output_throughput 2283 | best 2290 (trial 1)
        | 14s, ~42s left``."""
        n = len(self.trials)
        of = f"{n}/{self.total}" if self.total else f"{n}"
        config = trial.config.describe(self.base).removeprefix("ServingConfig(").rstrip(")")
        metric = self.objective.metric
        if not trial.ok:
            first = (trial.error or "").splitlines()[:1]
            what = "FAILED: " + first[0][:120] if first else "FAILED"
        else:
            value = trial.values.get(metric, math.nan)
            verdict = (
                "feasible"
                if trial.feasible
                else "misses " + ", ".join(r.slo for r in trial.violations)
            )
            what = f"{metric} {value:.4g} ({verdict})"
            if trial.capacity_note and not math.isfinite(value):
                what = f"{metric}: {trial.capacity_note}"
        best = best_trial(self.trials, self.objective)
        best_text = (
            f"best {best.values[metric]:.4g} (trial {best.number})"
            if best is not None
            else "no feasible trial yet"
        )
        elapsed = time.monotonic() - self.t0
        eta = ""
        if self.total and n < self.total:
            eta = f", ~{elapsed / n * (self.total - n):.0f}s left"
        return (
            f"{self.label} {of} trial {trial.number}: {config or 'the base config'}: {what} "
            f"| {best_text} | {elapsed:.0f}s{eta}"
        )

    def close(self) -> None:
        self.bar.close()
