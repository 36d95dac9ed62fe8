"""Simulator speed: against vLLM's own scheduler on the same trace, and scaling with size.

Run: ``make bench`` or ``.venv/bin/python benchmarks/bench_simulator.py`` (the replay rows need
vLLM: ``TUNER_WITH_VLLM=1 bash scripts/venv.sh`` prints a venv that has it).

Prints two tables:
1. simulator vs SchedulerReplayBackend on one 10,000-request Poisson trace with mixed lengths:
   wall time (the simulator's median of ``--repeats`` runs and their range, min-max), CPU time
   of the process (``time.process_time``, steadier than wall time on a shared machine), steps,
   and whether the schedules are identical; then both speed ratios;
2. the simulator alone over 1k / 10k / 100k requests of the same shape: wall time (median),
   steps, microseconds per request (flat = linear cost).

The simulator runs its compiled engines when ``make native`` built them, else the pure-Python
ones (``TUNER_PURE_PYTHON=1`` forces those); the first line says which.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time

from tuner import LogNormal, Measurement, ServingConfig, Workload
from tuner.backends import Backend, SimulatorBackend
from tuner.backends.simulator import _native
from tuner.cli._table import format_table
from tuner.fidelity import schedule_differences

CONFIG = ServingConfig(
    max_num_batched_tokens=512,
    max_num_seqs=64,
    long_prefill_token_threshold=128,
    num_kv_blocks=4096,
    block_size=16,
    max_model_len=4096,
)


def chat_trace(n: int, seed: int = 0, rate: float = 0.08) -> Workload:
    """Poisson arrivals (``rate`` requests per step on the unit clock, vllm bench's definition)
    and chat-like lognormal lengths: prompts averaging 500 tokens (at most 3000), outputs
    averaging 200 (at most 1000)."""
    return Workload.poisson(
        rate,
        n,
        LogNormal(mean=500, sigma=0.8, max_len=3000),
        LogNormal(mean=200, sigma=0.9, max_len=1000),
        seed=seed,
    )


class Timing:
    """Wall and CPU seconds of repeated evaluations of one backend on one workload."""

    def __init__(self, wall: list[float], cpu: list[float]) -> None:
        self.wall, self.cpu = wall, cpu

    @property
    def median(self) -> float:
        return statistics.median(self.wall)

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu)

    def wall_range(self) -> str:
        return f"{min(self.wall):.3f}-{max(self.wall):.3f}"

    def cpu_range(self) -> str:
        return f"{min(self.cpu):.3f}-{max(self.cpu):.3f}"


def timed(backend: Backend, workload: Workload, repeats: int = 1) -> tuple[Timing, Measurement]:
    """Wall and CPU times of ``repeats`` evaluations (a short run is at the mercy of a busy
    moment on a shared machine: report the median and the range), and the measurement."""
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        m = backend.evaluate(CONFIG, workload)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return Timing(wall, cpu), m


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=10_000, help="size of the comparison trace")
    ap.add_argument("--sizes", default="1000,10000,100000", help="scaling sizes")
    ap.add_argument("--repeats", type=int, default=5, help="simulator runs per timing (median)")
    ap.add_argument("--no-replay", action="store_true", help="skip the vLLM comparison")
    args = ap.parse_args()

    engines = "compiled (make native)" if _native.COMPILED else "pure Python"
    print(f"config: {CONFIG.describe(ServingConfig())}\nsimulator engines: {engines}\n")
    if not args.no_replay and importlib.util.find_spec("vllm") is not None:
        from tuner.backends import SchedulerReplayBackend

        w = chat_trace(args.requests)
        sim, sim_m = timed(SimulatorBackend(), w, args.repeats)
        with SchedulerReplayBackend() as replay:
            rep, rep_m = timed(replay, w)  # one run: it takes a minute, noise averages out
        same = schedule_differences(sim_m, rep_m) == []
        rows = []
        for name, t, m in (
            (f"SimulatorBackend ({args.repeats} runs)", sim, sim_m),
            ("SchedulerReplayBackend (1 run)", rep, rep_m),
        ):
            rows.append(
                [
                    name,
                    len(w),
                    m.total_steps,
                    round(t.median, 3),
                    t.wall_range(),
                    round(t.cpu_median, 3),
                    t.cpu_range(),
                    same,
                ]
            )
        headers = ["backend", "requests", "steps", "wall s (median)", "wall range"]
        headers += ["cpu s (median)", "cpu range", "identical schedule"]
        print(format_table(headers, rows))
        print(
            f"\nsimulator is {rep.median / sim.median:.0f}x faster than vLLM's scheduler on this "
            f"trace in wall time (median; {rep.median / max(sim.wall):.0f}x-"
            f"{rep.median / min(sim.wall):.0f}x over the simulator's range), "
            f"{rep.cpu_median / sim.cpu_median:.0f}x in CPU time\n"
        )
    else:
        print("(vLLM not installed or --no-replay: skipping the replay comparison)\n")

    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        w = chat_trace(n)
        t, m = timed(SimulatorBackend(), w, max(1, min(args.repeats, 300_000 // n)))
        rows.append([n, m.total_steps, round(t.median, 3), round(t.median / n * 1e6, 1)])
    print(format_table(["requests", "steps", "wall s (median)", "us per request"], rows))


if __name__ == "__main__":
    main()
