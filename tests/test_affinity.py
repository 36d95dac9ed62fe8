"""CPU pinning around a server that bound its own worker (vLLM's CPU build): the worker keeps
its cores alone, the rest of the server and the client share what is left, and everything
moved gets its cores back afterwards."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tuner.backends.live._affinity import pin, split

CPUS = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
needs_two = pytest.mark.skipif(len(CPUS) < 2, reason="needs 2 usable cores and Linux affinity")


def test_the_split_keeps_off_the_cores_a_server_bound_itself() -> None:
    assert split("on", [0, 1], bound=[0]) == ([1], [1])
    assert split("auto", range(8), bound=range(7)) == ([7], [7])  # vLLM reserved one core
    assert split("auto", range(8), bound=range(6)) == ([7], [6])
    assert split("off", [0, 1], bound=[0]) is None
    assert split("auto", [0, 1], bound=[0]) is None  # 2 cores: a trade, so only when asked
    assert split("auto", range(4), bound=range(4)) == ([3], [0, 1, 2])  # bound everywhere


@pytest.fixture
def server() -> Iterator[tuple[int, int]]:
    """Two sleeping processes: a "worker" that bound itself to the first core, and an unbound
    "API server"."""
    code = "import os, sys, time\nif sys.argv[1] == 'bind': "
    code += f"os.sched_setaffinity(0, {{{CPUS[0]}}})\n"
    code += "print('ready', flush=True)\ntime.sleep(60)\n"
    procs = [
        subprocess.Popen([sys.executable, "-c", code, how], stdout=subprocess.PIPE, text=True)
        for how in ("bind", "free")
    ]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        yield procs[0].pid, procs[1].pid
    finally:
        for p in procs:
            p.kill()
            p.wait()


@needs_two
def test_pin_leaves_a_bound_worker_alone_and_gives_back_what_it_moved(
    server: tuple[int, int],
) -> None:
    worker, api = server
    mine = os.sched_getaffinity(0)
    said, restore = pin("on", [worker, api])
    try:
        rest = set(CPUS[1:][-1:])
        assert os.sched_getaffinity(worker) == {CPUS[0]}
        assert os.sched_getaffinity(api) == rest and os.sched_getaffinity(0) == rest
        assert said.endswith(f"its worker on cpu {CPUS[0]} alone")
    finally:
        restore()
    assert os.sched_getaffinity(0) == mine
    assert os.sched_getaffinity(api) == set(CPUS)
    assert os.sched_getaffinity(worker) == {CPUS[0]}
