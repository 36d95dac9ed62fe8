"""How tuner trials look in Optuna: attribute names, parameters over real knob values, the
objective's value, storages by URL or path, and when a claim is abandoned."""

from __future__ import annotations

import datetime
import json
import math
import os
import random
import socket
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna
from optuna.storages.journal import JournalFileBackend

from tuner.core import SearchError, SearchSpace, ServingConfig, Trial, TunerError
from tuner.objectives import Objective

TRIAL_ATTR = "tuner_trial"
"""User attribute of a finished trial: its tuner record (``Trial.record()``)."""
KEY_ATTR = "tuner_key"
"""User attribute: the evaluation's identity (the whole configuration and the fidelity)."""
ORDER_ATTR = "tuner_order"
"""User attribute of a planned trial: its position in the search's plan."""
WORKER_ATTR = "tuner_worker"
"""User attribute of a claimed trial: the host and process measuring it."""
STUDY_ATTR = "tuner_study"
"""Study user attribute: the fingerprint of the study (workload, space, objective, ...)."""
PLAN_ATTR = "tuner_plan"
"""Study user attribute: which search enqueued the plan, its size and digest."""

#: Stands for "infinitely bad" where Optuna needs a finite number.
WORST = 1e300

#: Seconds after which another host's unfinished trial counts as abandoned.
STALE_AFTER = 6 * 3600.0

_RUNNING = optuna.trial.TrialState.RUNNING


def open_storage(storage: str | Path | optuna.storages.BaseStorage) -> optuna.storages.BaseStorage:
    """An Optuna storage: an RDB URL (``sqlite:///x.db``, ``postgresql://user@host/db``), a
    journal file path (anything without ``://``), or a storage object as it is.

    Raises:
        SearchError: the storage cannot be opened (naming it, and the driver to install).
    """
    if isinstance(storage, optuna.storages.BaseStorage):
        return storage
    text = str(storage)
    try:
        if "://" not in text:
            path = Path(text).expanduser()
            path.parent.mkdir(parents=True, exist_ok=True)
            backend = JournalFileBackend(str(path))
            return optuna.storages.JournalStorage(backend)
        kwargs: dict[str, Any] = {}
        if text.startswith("sqlite"):  # workers wait for SQLite's write lock instead of failing
            kwargs = {"engine_kwargs": {"connect_args": {"timeout": 60}}}
        attempts = 0
        while True:  # hosts starting at once race to create the schema: try again
            try:
                return optuna.storages.RDBStorage(text, **kwargs)
            except ImportError:
                raise
            except Exception:
                attempts += 1
                if attempts == 3:
                    raise
                time.sleep(0.5 + random.random())
    except ImportError as e:
        raise SearchError(
            f"storage {text!r}: its database driver is missing ({e}); for PostgreSQL install "
            "the extra: pip install 'vllm-slo-tuner[postgres]'"
        ) from None
    except Exception as e:  # a driver's own errors (sqlalchemy, psycopg2) included
        raise SearchError(f"storage {text!r}: cannot open it: {e}") from None


def knob_distributions(
    space: SearchSpace, extra: Sequence[ServingConfig] = ()
) -> dict[str, optuna.distributions.CategoricalDistribution]:
    """One categorical distribution per knob over its actual values (and those of ``extra``
    configurations, e.g. a list search's), so dashboards show ``max_num_seqs=64``."""
    out = {}
    for knob, values in space.dimensions.items():
        choices = list(dict.fromkeys([*values, *(getattr(c, knob) for c in extra)]))
        for v in choices:
            if v is not None and not isinstance(v, (bool, int, float, str)):
                raise SearchError(f"knob {knob}: value {v!r} cannot be an Optuna parameter")
        out[knob] = optuna.distributions.CategoricalDistribution(choices)
    return out


def evaluation_key(config: ServingConfig, fidelity: float) -> str:
    """The identity of one evaluation in a study (the whole configuration and the fidelity)."""
    return json.dumps([config.model_dump(mode="json"), fidelity], sort_keys=True)


def worker_identity() -> dict[str, Any]:
    """Who is measuring a claimed trial (for telling abandoned claims from live ones)."""
    return {"host": socket.gethostname(), "pid": os.getpid()}


def abandoned(t: optuna.trial.FrozenTrial, stale_after: float = STALE_AFTER) -> bool:
    """Whether a RUNNING trial's worker is gone: a process of this host that no longer runs,
    or a claim older than ``stale_after`` seconds. A trial of this very process is never
    abandoned (it may be another search object's claim)."""
    if t.state != _RUNNING or TRIAL_ATTR in t.user_attrs:
        return False
    who = t.user_attrs.get(WORKER_ATTR)
    if isinstance(who, dict) and who.get("host") == socket.gethostname():
        pid = who.get("pid")
        if pid == os.getpid():
            return False
        if isinstance(pid, int) and not _alive(pid):
            return True
    started = t.datetime_start
    if started is None:
        return False
    now = datetime.datetime.now(started.tzinfo)
    return (now - started).total_seconds() > stale_after


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def trial_of(t: optuna.trial.FrozenTrial) -> Trial | None:
    """The tuner trial an Optuna trial holds (None when it holds none)."""
    record = t.user_attrs.get(TRIAL_ATTR)
    if not isinstance(record, dict):
        return None
    record = {k: v for k, v in record.items() if k != "feasible"}
    try:
        return Trial(**record)
    except (TunerError, TypeError, ValueError) as e:
        warnings.warn(f"study trial {t.number}: unreadable tuner record ({e})", stacklevel=2)
        return None


def objective_value(trial: Trial, objective: Objective) -> float:
    """What Optuna is told for a measured trial: the objective's metric itself (the study has
    the objective's direction), NaN when it is not a finite number."""
    value = trial.values.get(objective.metric, math.nan)
    return value if math.isfinite(value) else math.nan


def worst(objective: Objective) -> float:
    """The finite "infinitely bad" value in the objective's direction."""
    return WORST if objective.direction == "minimize" else -WORST


@contextmanager
def quiet_optuna() -> Iterator[None]:
    """Optuna's INFO lines off for the duration; the old verbosity restored."""
    old = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(old)
