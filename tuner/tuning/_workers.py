"""Scale-out: a Loop's study in Optuna storage, run by one process or ``workers`` of them.

Trials are independent, so workers need no coordinator of tuner's own: they share one Optuna
study (:class:`~tuner.search.StudyStore`) and claim evaluations through its storage. With
``Loop(..., workers=N)`` the parent enqueues the search's plan, starts N processes
(multiprocessing's ``spawn``), each running a copy of the Loop over the shared study with its
own seed (``Search.as_worker``), shows each trial as it lands in the study, and gathers every
trial of the study into one result. On many hosts each host runs the same study with the same
storage (``tuner worker study.yaml --storage postgresql://...``); what one host measured, the
others never measure again.

With a storage the study is the record of the run (no JSON-lines trial log is written): a
rerun reads it back and continues, a killed worker's claim is given back on the next run.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import multiprocessing
import os
import pickle
import queue
import signal
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

from tuner.backends import Backend
from tuner.core import ConfigError, SearchSpace, Trial, TunerError, Workload
from tuner.objectives import SLO, Objective, best_trial, infeasible_error
from tuner.search import Search, SharedSearch, StudyStore
from tuner.tuning._log import fingerprint
from tuner.tuning._result import Exploration


class Loop(Protocol):
    """What this module reads of a :class:`~tuner.tuning.Loop` (which imports this module)."""

    backend: Backend
    search: Search
    objective: Objective
    slos: tuple[SLO, ...]
    trial_log: Path | None
    on_trial: Callable[[Trial], None] | None
    workers: int
    storage: Any
    study_name: str | None

    def explore(self, space: SearchSpace, workload: Workload) -> Exploration: ...


#: The journal file a multi-worker run keeps next to its trial log when given no storage.
JOURNAL_NAME = "optuna.journal"


def study_name_for(study: dict[str, Any]) -> str:
    """The default study name: from the study's fingerprint, so a rerun finds it again."""
    digest = hashlib.sha1(json.dumps(study, sort_keys=True).encode()).hexdigest()
    return f"tuner-{digest[:12]}"


def explore_shared(loop: Loop, space: SearchSpace, workload: Workload) -> Exploration:
    """:meth:`Loop.explore` on the Loop's storage, by ``loop.workers`` processes.

    Raises:
        ConfigError: workers > 1 without a storage to share (nor a trial log beside which to
            keep a journal), with a storage object rather than a URL or path, or with a search
            that cannot be split (successive halving waits for every trial of a rung).
    """
    storage = loop.storage
    if storage is None:
        if loop.trial_log is None:
            raise ConfigError(
                f"Loop.workers = {loop.workers}: the workers need a storage to share; give "
                "storage= (a journal file path or an RDB URL such as postgresql://...)"
            )
        storage = loop.trial_log.parent / JOURNAL_NAME
    if loop.workers > 1 and not isinstance(storage, (str, Path)):
        raise ConfigError(
            f"Loop.workers = {loop.workers}: storage must be a journal file path or an RDB URL "
            f"(each worker process opens it), not {storage!r}"
        )
    study = fingerprint(
        workload, space, loop.objective.text, [s.text for s in loop.slos], loop.backend.describe()
    )
    name = loop.study_name or study_name_for(study)
    store = StudyStore(storage, name, loop.objective, study)
    if loop.workers == 1:
        return _in_process(loop, space, workload, store)
    planner = SharedSearch(copy.deepcopy(loop.search), store)
    planner.start(space, loop.objective)  # the plan enqueued once, before any worker starts
    if planner.mode == "claimed":
        raise ConfigError(
            f"Loop.workers = {loop.workers}: {type(loop.search).__name__} cannot be split "
            "between workers (each step waits for the results of the last); run it with "
            "workers=1, or split a grid, random, list or TPE search"
        )
    return _spawned(loop, space, workload, str(storage), name, store)


def _plain(loop: Loop) -> Loop:
    """A copy of the Loop that runs in this process without storage (a worker's Loop)."""
    plain = copy.copy(loop)
    plain.workers, plain.storage, plain.trial_log = 1, None, None
    return plain


def _in_process(
    loop: Loop, space: SearchSpace, workload: Workload, store: StudyStore
) -> Exploration:
    plain = _plain(loop)
    shared = SharedSearch(loop.search, store)
    plain.search = shared
    try:
        run = plain.explore(space, workload)
    finally:
        with contextlib.suppress(Exception):  # the storage may be gone with the interrupt
            shared.release()
    return _gathered(loop, store, run.stop_reason)


def _spawned(
    loop: Loop,
    space: SearchSpace,
    workload: Workload,
    storage: str,
    name: str,
    store: StudyStore,
) -> Exploration:
    context = multiprocessing.get_context("spawn")
    results: Any = context.Queue()
    job = _plain(loop)
    job.on_trial = None
    procs = [
        context.Process(
            target=_work,
            args=(job, space, workload, storage, name, i, results),
            name=f"tuner-worker-{i}",
        )
        for i in range(loop.workers)
    ]
    for p in procs:
        p.start()
    shown: set[tuple[str, float]] = {
        (t.config.model_dump_json(), t.fidelity) for t in store.trials()
    }
    reports: dict[int, tuple[str, Any]] = {}
    interrupted = False
    try:
        while any(p.is_alive() for p in procs):
            _drain(results, reports)
            _show(loop, store, shown)
            time.sleep(0.25)
    except KeyboardInterrupt:
        interrupted = True
        for p in procs:
            if p.is_alive() and p.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGTERM)  # stops its Loop like Ctrl-C
    for p in procs:
        p.join()
    _drain(results, reports, wait=0.5)
    _show(loop, store, shown)
    for i, p in enumerate(procs):
        kind, payload = reports.get(i, ("error", f"worker {i} exited with status {p.exitcode}"))
        if kind == "error" and not interrupted:
            if isinstance(payload, BaseException):
                raise payload
            raise TunerError(str(payload))
    reasons = [str(r[1]) for r in reports.values() if r[0] == "done"]
    stop = "interrupted" if interrupted or "interrupted" in reasons else _reason(reasons)
    return _gathered(loop, store, stop)


def _reason(reasons: list[str]) -> str:
    other = [r for r in reasons if r != "search exhausted"]
    return other[0] if other else "search exhausted"


def _drain(results: Any, reports: dict[int, tuple[str, Any]], wait: float = 0.0) -> None:
    while True:
        try:
            i, kind, payload = results.get(timeout=wait) if wait else results.get_nowait()
        except queue.Empty:
            return
        reports[i] = (kind, payload)


def _show(loop: Loop, store: StudyStore, shown: set[tuple[str, float]]) -> None:
    """Call the Loop's ``on_trial`` with each trial that landed in the study since last time."""
    if loop.on_trial is None:
        return
    for t in store.trials():
        key = (t.config.model_dump_json(), t.fidelity)
        if key not in shown:
            shown.add(key)
            loop.on_trial(t)


def _settled(store: StudyStore, stop_reason: str, poll: float = 1.0) -> str:
    """Wait for the evaluations other live workers (other hosts) still hold, so that this
    run reports the whole study rather than the part finished when its own share was done
    (and never calls a study infeasible while its feasible trials are still running). Not
    after an interrupt or a timeout: those report the study as it stands. Returns the stop
    reason (``"interrupted"`` when Ctrl-C ends the wait)."""
    if stop_reason == "interrupted" or stop_reason.startswith("timeout"):
        return stop_reason
    try:
        store.wait_for_others(poll)
    except KeyboardInterrupt:
        return "interrupted"
    return stop_reason


def _gathered(loop: Loop, store: StudyStore, stop_reason: str) -> Exploration:
    """Every trial of the study as one run's record, judged like :meth:`Loop.explore`, once
    the evaluations other workers hold have landed (:func:`_settled`)."""
    stop_reason = _settled(store, stop_reason)
    trials: tuple[Trial, ...] = store.trials()
    best = best_trial(trials, loop.objective)
    return Exploration(
        trials=trials,
        best=best,
        objective=loop.objective.text,
        slos=tuple(s.text for s in loop.slos),
        stop_reason=stop_reason,
        infeasible=infeasible_error(trials, loop.slos) if best is None else None,
    )


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _work(
    loop: Loop,
    space: SearchSpace,
    workload: Workload,
    storage: str,
    name: str,
    worker: int,
    results: Any,
) -> None:
    """One worker process: the Loop over the shared study, its outcome sent to the parent."""
    signal.signal(signal.SIGTERM, _interrupt)
    shared: SharedSearch | None = None
    try:
        store = StudyStore(storage, name, loop.objective)
        shared = SharedSearch(loop.search.as_worker(worker), store)
        loop.search = shared
        run = loop.explore(space, workload)
        results.put((worker, "done", run.stop_reason))
    except BaseException as e:
        try:
            pickle.loads(pickle.dumps(e))
            payload: Any = e
        except Exception:
            payload = f"worker {worker}: {type(e).__name__}: {e}"
        results.put((worker, "error", payload))
    finally:
        if shared is not None:
            with contextlib.suppress(Exception):
                shared.release()
