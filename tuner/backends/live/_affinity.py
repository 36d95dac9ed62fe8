"""CPU pinning: the load client on cores of its own, apart from the server it measures.

On a small machine the client, vLLM's API server, its engine core and its worker compete for
the CPU, and part of a latency tail is the client's own delay. Where there are enough cores
(``auto``: at least 4 usable), :func:`pin` gives the client's thread the last usable core and
every thread of the server's processes the others (``os.sched_setaffinity`` per thread, since
on Linux an affinity set on a process only binds its one thread). ``on`` splits even 2 cores
(one each: to measure whether it helps); ``off`` leaves the scheduler alone. Linux only; where
``sched_setaffinity`` is missing or refused, nothing is pinned and the split says so.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from typing import Literal

Pinning = Literal["auto", "on", "off"]
AUTO_MIN_CORES = 4


def usable_cpus() -> list[int]:
    """The cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def _span(cpus: Sequence[int]) -> str:
    cpus = sorted(cpus)
    if len(cpus) > 1 and cpus[-1] - cpus[0] == len(cpus) - 1:
        return f"cpus {cpus[0]}-{cpus[-1]}"
    return ("cpu " if len(cpus) == 1 else "cpus ") + ",".join(map(str, cpus))


def split(mode: Pinning, cpus: Sequence[int]) -> tuple[list[int], list[int]] | None:
    """(client cores, server cores) for ``mode`` on ``cpus``; None: do not pin.

    Example:
        >>> split("auto", [0, 1, 2, 3]), split("auto", [0, 1]), split("on", [0, 1])
        (([3], [0, 1, 2]), None, ([1], [0]))
    """
    cpus = sorted(cpus)
    if mode == "off" or len(cpus) < 2 or (mode == "auto" and len(cpus) < AUTO_MIN_CORES):
        return None
    return cpus[-1:], cpus[:-1]


def _threads(pid: int) -> list[int]:
    try:
        return [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return [pid]


def pin(mode: Pinning, server_pids: Sequence[int]) -> tuple[str, Callable[[], None]]:
    """Pin the calling thread (the load client) and every thread of ``server_pids`` apart.

    Returns what was done, for the record (``"client on cpu 3, server on cpus 0-2"``, or why
    nothing was pinned), and a function that gives the calling thread its cores back.
    """
    cpus = usable_cpus()
    plan = split(mode, cpus)
    if plan is None:
        why = "off" if mode == "off" else f"auto: {len(cpus)} cores, fewer than {AUTO_MIN_CORES}"
        return f"not pinned ({why})", lambda: None
    if not hasattr(os, "sched_setaffinity") or not server_pids:
        return "not pinned (no CPU affinity here, or no server process of ours)", lambda: None
    client, server = plan
    before = os.sched_getaffinity(0)
    missed = 0
    for pid in server_pids:
        for tid in _threads(pid):
            try:
                os.sched_setaffinity(tid, server)
            except OSError:  # a thread that just ended, or one we may not move
                missed += 1
    try:
        os.sched_setaffinity(0, client)
    except OSError as e:
        return f"not pinned (the client could not be: {e})", lambda: None

    def restore() -> None:
        with contextlib.suppress(OSError):  # giving back cores we had
            os.sched_setaffinity(0, before)

    note = f" ({missed} server threads could not be moved)" if missed else ""
    return f"client on {_span(client)}, server on {_span(server)}{note}", restore
