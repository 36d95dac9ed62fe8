"""The same study with any of the four optimizers: only the `search=` line changes.

Run: python examples/swap_optimizer.py [grid|random|tpe|halving]
"""

import sys

from tuner import Loop, Objective, SearchSpace, ServingConfig, Uniform, Workload
from tuner.backends import CostModel, SimulatorBackend
from tuner.search import GridSearch, RandomSearch, SuccessiveHalving, TPESearch

SEARCHES = {
    "grid": lambda: GridSearch(),
    "random": lambda: RandomSearch(seed=0, max_trials=20),
    "tpe": lambda: TPESearch(seed=0, n_trials=20, n_startup_trials=6),
    "halving": lambda: SuccessiveHalving(n_configs=27, min_fidelity=1 / 9, eta=3, seed=0),
}

workload = Workload.poisson(10, 1500, Uniform(900, 0.5), Uniform(180, 0.5), seed=0)
space = SearchSpace(
    {
        "max_num_batched_tokens": [256, 512, 1024, 2048, 4096],
        "max_num_seqs": [32, 64, 128],
        "long_prefill_token_threshold": [0, 256, 1024],
    },
    base=ServingConfig(max_model_len=4096),
)
loop = Loop(
    SimulatorBackend(
        CostModel(fixed=0.006, per_prefill_token=3e-5, per_decode_token=1.5e-4, time_unit="s")
    ),
    search=SEARCHES[sys.argv[1] if len(sys.argv) > 1 else "tpe"](),  # <- the one line to change
    objective=Objective.maximize("output_throughput", tie_break="ttft.p99", tie_tolerance=0.005),
    slos=["ttft.p99 <= 1s", "itl.p99 <= 40ms"],
)
result = loop.run(space, workload)
best, cost = result.best, sum(t.cost for t in result.trials)
print(f"{len(result.trials)} trials ({result.stop_reason}); cost {cost:.0f} steps")
print(
    f"best: {best.config.describe(space.base)}: {best.values['output_throughput']:.0f} tok/s, "
    f"p99 TTFT {best.values['ttft.p99']:.3f}s"
)
