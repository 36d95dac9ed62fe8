"""Trial logs: every trial written as it finishes, so an interrupted study loses nothing.

A log is a JSON-lines file. Its first line names the study (a fingerprint of the workload, the
space, the objective, the SLOs and the backend); every other line is one trial. Rerunning the
same study on the same file continues where it stopped; a different study is refused rather
than mixed in.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any

from tuner.core._errors import ConfigError
from tuner.core._space import SearchSpace
from tuner.core._trial import Trial
from tuner.core._workload import Workload

FORMAT = "tuner-trial-log/1"


def fingerprint(
    workload: Workload, space: SearchSpace, objective: str, slos: list[str], backend: str
) -> dict[str, Any]:
    """What makes two runs the same study (their trials are interchangeable)."""
    digest = hashlib.sha1()
    for a in (workload.arrival, workload.prompt_tokens, workload.output_tokens):
        digest.update(a.tobytes())
    return {
        "format": FORMAT,
        "workload": f"{len(workload)} requests, sha1 {digest.hexdigest()[:16]}",
        "space": {k: list(v) for k, v in space.dimensions.items()},
        "base": space.base.model_dump(mode="json"),
        "objective": objective,
        "slos": slos,
        "backend": backend,
    }


class TrialLog:
    """Appends trials to a JSON-lines file and reads them back for a resumed run."""

    def __init__(self, path: str | Path, study: dict[str, Any]) -> None:
        self.path = Path(path)
        self.study = study

    def load(self) -> list[Trial]:
        """The trials already recorded for this study (none if the file does not exist).

        Raises:
            ConfigError: the file belongs to another study or is not a trial log.
        """
        if not self.path.exists() or self.path.stat().st_size == 0:
            return []
        lines = self.path.read_text(encoding="utf-8").splitlines()
        try:
            header = json.loads(lines[0])
        except json.JSONDecodeError:
            header = None
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise ConfigError(f"{self.path}: not a tuner trial log (line 1 is not its header)")
        if header != self.study:
            diff = sorted(k for k in self.study if header.get(k) != self.study[k])
            raise ConfigError(
                f"{self.path} holds trials of another study (its {', '.join(diff)} differ); "
                "use a new trial log, or delete this one to start over"
            )
        trials = []
        for n, line in enumerate(lines[1:], start=2):
            try:
                record = json.loads(line)
                record.pop("feasible", None)
                trials.append(Trial(**record))
            except (json.JSONDecodeError, TypeError, ValueError) as e:
                if n == len(lines):  # the run was killed while writing its last line
                    warnings.warn(
                        f"{self.path}:{n}: ignoring a truncated last line", stacklevel=2
                    )
                    break
                raise ConfigError(f"{self.path}:{n}: unreadable trial record: {e}") from None
        return trials

    def append(self, trial: Trial) -> None:
        """Write one trial (and the header first if the file is new), flushed to disk."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists() or self.path.stat().st_size == 0
        with self.path.open("a", encoding="utf-8") as f:
            if new:
                f.write(json.dumps(self.study) + "\n")
            f.write(json.dumps(trial.record(), allow_nan=True) + "\n")
            f.flush()
