"""CPU pinning: the load client on cores of its own, apart from the server it measures.

On a small machine the client, vLLM's API server, its engine core and its worker compete for
the CPU, and part of a latency tail is the client's own delay. vLLM's CPU build binds its model
worker to cores of its own and leaves the rest (``VLLM_CPU_NUM_OF_RESERVED_CPU``, one core by
default) to the API server and the engine core's scheduler loop, but nothing keeps those two,
or the client, off the worker's cores: the OS puts them there, a step then waits for them, and
the same configuration ran its median step 1.2 ms on one server and 3.7 ms on the next.

:func:`pin` therefore first looks at how the server bound itself. Threads bound to fewer cores
than the machine has (the CPU worker) stay where they are; every other server thread and the
client go to the cores left over, so the worker has its cores alone. A server that bound
nothing (a GPU server) is split the plain way: the client's thread on the last usable core,
every thread of the server's processes on the others (``os.sched_setaffinity`` per thread,
since on Linux an affinity set on a process only binds its one thread).

``auto`` pins only with at least 4 usable cores. On 2 cores the worker-alone split is a trade
(measured with ``benchmarks/bench_latency_fidelity.py --pinning``): it steadied a model whose
steps bound throughput (12 layers: three servers' median E2E within 13 % instead of 25 %) and
starved one whose API server did (2 layers: the API server, the engine core and the client on
one core fell behind, E2E p50 2.7 s against 0.3-0.9 s unpinned), so there it is ``on`` only.
``off`` leaves the scheduler alone. Linux only; where ``sched_setaffinity`` is missing or
refused, nothing is pinned and the split says so.
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


def split(
    mode: Pinning, cpus: Sequence[int], bound: Sequence[int] = ()
) -> tuple[list[int], list[int]] | None:
    """(client cores, cores for the server's unbound threads) for ``mode`` on ``cpus``, when
    the server bound some of its threads to the cores ``bound`` itself; None: do not pin.

    Example:
        >>> split("auto", [0, 1, 2, 3]), split("auto", [0, 1]), split("on", [0, 1])
        (([3], [0, 1, 2]), None, ([1], [0]))
        >>> split("on", [0, 1], bound=[0])  # vLLM's CPU worker on core 0: keep off it
        ([1], [1])
    """
    cpus = sorted(cpus)
    if mode == "off" or len(cpus) < 2 or (mode == "auto" and len(cpus) < AUTO_MIN_CORES):
        return None
    taken = set(bound)
    rest = [c for c in cpus if c not in taken]
    if bound and rest:
        return rest[-1:], (rest[:-1] or rest)
    return cpus[-1:], cpus[:-1]


def _threads(pid: int) -> list[int]:
    try:
        return [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return [pid]


def pin(mode: Pinning, server_pids: Sequence[int]) -> tuple[str, Callable[[], None]]:
    """Pin the calling thread (the load client) and every thread of ``server_pids`` apart.

    Returns what was done, for the record (``"client on cpu 3, server on cpus 0-2"``, or why
    nothing was pinned), and a function that gives the calling thread and the server's moved
    threads their cores back.
    """
    cpus = usable_cpus()
    if mode == "off":
        return "not pinned (off)", lambda: None
    if not hasattr(os, "sched_setaffinity") or not server_pids:
        return "not pinned (no CPU affinity here, or no server process of ours)", lambda: None
    threads = [tid for pid in server_pids for tid in _threads(pid)]
    own = {tid: _affinity(tid) for tid in threads}
    # threads the server bound to fewer cores than the machine has (vLLM's CPU worker)
    every = set(cpus)
    kept = {tid for tid, a in own.items() if a and set(a) < every}
    bound = sorted({c for tid in kept for c in own[tid]})
    plan = split(mode, cpus, bound)
    if plan is None:
        return f"not pinned (auto: {len(cpus)} cores, fewer than {AUTO_MIN_CORES})", lambda: None
    client, server = plan
    before = os.sched_getaffinity(0)
    missed = 0
    moved: list[int] = []
    for tid in threads:
        if tid in kept:
            continue  # bound by the server itself: left where it is
        try:
            os.sched_setaffinity(tid, server)
            moved.append(tid)
        except OSError:  # a thread that just ended, or one we may not move
            missed += 1
    try:
        os.sched_setaffinity(0, client)
    except OSError as e:
        return f"not pinned (the client could not be: {e})", lambda: None

    def restore() -> None:
        with contextlib.suppress(OSError):  # giving back cores we had
            os.sched_setaffinity(0, before)
        for tid in moved:  # and the server's threads theirs (the next load looks again)
            with contextlib.suppress(OSError):
                os.sched_setaffinity(tid, own[tid] or cpus)

    note = f" ({missed} server threads could not be moved)" if missed else ""
    where = f"client on {_span(client)}, server on {_span(server)}"
    if bound:
        where = f"{where}, its worker on {_span(bound)} alone"
    return where + note, restore


def _affinity(tid: int) -> list[int]:
    """The cores a thread may run on ([] if it is gone)."""
    try:
        return sorted(os.sched_getaffinity(tid))
    except OSError:
        return []
