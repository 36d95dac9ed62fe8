"""A study folder's ``measurements/``: the whole measurement of every trial a live server ran
(each request's send, first-token and last-token times on the client, the engine's steps from
its log, on one clock), written as each trial is recorded, so that a calibration can be fitted
from the study afterwards (``tuner calibrate --study``) without running anything again.

Only live measurements are kept (those with a load client and a timed step log): a simulated
trial can be simulated again, and its steps would make the folder large for nothing. A file
holds the trial's number and configuration and its :class:`~tuner.core.Measurement` as JSON;
the requests' prefixes are not in it (only their lengths), so a calibration read back predicts
no prefix-cache hits.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tuner.core import ConfigError, Measurement, ServingConfig, Trial, TunerError, Workload

FOLDER = "measurements"
_FORMAT = "tuner-measurement/1"


@dataclass(frozen=True)
class SavedRun:
    """One live trial read back from a study folder.

    Attributes:
        trial: The trial's number in the study.
        config: The configuration the server ran.
        workload: The requests as sent (lengths and send times; no prefixes).
        measurement: The client's times and the engine's steps.
        path: The file it was read from.
    """

    trial: int
    config: ServingConfig
    workload: Workload
    measurement: Measurement
    path: Path

    @property
    def unusable(self) -> str | None:
        """Why this run cannot be fitted on (None when it can)."""
        m = self.measurement
        if m.aborted is not None:
            return f"aborted ({m.aborted})"
        if m.failed_requests:
            return f"{m.failed_requests} request(s) failed"
        return None


def is_live(m: Measurement) -> bool:
    """Whether ``m`` is a live server's, with what a calibration needs: a load client's
    per-request times and the engine's step times in seconds."""
    return m.client is not None and m.time_unit == "s" and m.step_start is not None


def save_measurement(folder: Path, trial: Trial) -> Path | None:
    """Write ``trial``'s measurement to ``folder/measurements/trial-NNN.json`` if it is a live
    one (see :func:`is_live`); the path written, or None."""
    m = trial.measurement
    if m is None or not is_live(m):
        return None
    out = folder / FOLDER / f"trial-{trial.number:03d}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "format": _FORMAT,
        "trial": trial.number,
        "config": trial.config.model_dump(mode="json"),
        "measurement": m.model_dump(mode="json"),
    }
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record) + "\n", encoding="utf-8")
    tmp.replace(out)  # a reader never sees half a file
    return out


def load_measurements(folder: str | Path) -> list[SavedRun]:
    """Every live trial's measurement saved in a study folder, by trial number.

    Raises:
        ConfigError: no such folder, no saved measurement in it, or a file that is not one
            (naming the file and, for bad JSON, the line).
    """
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise ConfigError(f"study folder {root}: no such folder")
    files = sorted((root / FOLDER).glob("trial-*.json"))
    if not files:
        raise ConfigError(
            f"study folder {root}: no {FOLDER}/trial-*.json; only studies with a live backend "
            "save their measurements (a simulated trial has nothing to calibrate on)"
        )
    return [_read(path) for path in files]


def _read(path: Path) -> SavedRun:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"{path}: cannot read it: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(data, dict) or data.get("format") != _FORMAT:
        raise ConfigError(f"{path}: not a measurement tuner saved (expected format {_FORMAT!r})")
    config, measurement = data.get("config"), data.get("measurement")
    if not isinstance(config, dict) or not isinstance(measurement, dict):
        raise ConfigError(f"{path}: fields 'config' and 'measurement' must be JSON objects")
    try:
        cfg = ServingConfig(**config)
        m = Measurement(**measurement)
        workload = Workload.from_arrays(m.arrival, m.prompt_tokens, m.output_tokens)
    except TunerError as e:
        raise ConfigError(f"{path}: {e}") from None
    return SavedRun(int(data.get("trial", 0)), cfg, workload, m, path)
