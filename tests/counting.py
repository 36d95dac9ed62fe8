"""A backend that records each evaluation in a file (for worker tests: importable by the
spawned worker processes)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from tuner import Measurement, ServingConfig, Workload
from tuner.backends import SimulatorBackend


class CountingBackend(SimulatorBackend):
    """The simulator, appending ``<pid> <config json>`` to ``path`` for every evaluation
    (one short write per line, so concurrent workers never interleave within a line).

    With ``peers`` above one, a process's first evaluation waits until that many processes
    have each begun one: a worker that starts first (imports are slow on a busy machine)
    cannot finish the whole space before the others join, so a test of sharing is not left
    to the start-up race. The wait gives up after ``patience`` seconds."""

    def __init__(
        self, path: str | Path, delay: float = 0.0, peers: int = 1, patience: float = 120.0
    ) -> None:
        super().__init__()
        self.path = str(path)
        self.delay = delay
        self.peers = peers
        self.patience = patience
        self._waited = False

    def evaluate(self, config: ServingConfig, workload: Workload) -> Measurement:
        line = f"{os.getpid()} {config.model_dump_json()}\n".encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
        if not self._waited:
            self._waited = True
            self._wait_for_peers()
        if self.delay:
            time.sleep(self.delay)
        return super().evaluate(config, workload)

    def _wait_for_peers(self) -> None:
        deadline = time.monotonic() + self.patience
        while time.monotonic() < deadline:
            if len({pid for pid, _ in self.evaluations()}) >= self.peers:
                return
            time.sleep(0.02)

    def evaluations(self) -> list[tuple[int, str]]:
        """Every evaluation so far, as (pid, config json)."""
        p = Path(self.path)
        if not p.exists():
            return []
        return [(int(a), b) for a, b in (ln.split(" ", 1) for ln in p.read_text().splitlines())]
