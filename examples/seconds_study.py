"""A seconds-based study on the simulator: chat traffic at 12 req/s, p99 TTFT and p90 TPOT SLOs.

The cost model's coefficients describe the GPU you deploy on; fit them from a live server's
step log (two-tier tuning calibrates them) -- the ones below are an assumed example.
Run: python examples/seconds_study.py
"""

from tuner import InfeasibleError, Loop, Objective, SearchSpace, ServingConfig, Uniform, Workload
from tuner.backends import CostModel, SimulatorBackend
from tuner.cli._table import trial_table
from tuner.hardware import Target
from tuner.search import GridSearch

workload = Workload.poisson(
    rate=12, n=2000, prompt_len=Uniform(768, 0.5), output_len=Uniform(192, 0.5), seed=0
)
step_cost = CostModel(  # seconds: a step's fixed cost, plus per prefill token / decode token
    fixed=0.006, per_prefill_token=3e-5, per_decode_token=1.5e-4, time_unit="s"
)
space = SearchSpace(
    {
        "max_num_batched_tokens": [256, 512, 1024, 2048],
        "max_num_seqs": [16, 64],
        "long_prefill_token_threshold": [0, 256],
    },
    base=ServingConfig(max_model_len=4096),
)
loop = Loop(
    SimulatorBackend(step_cost),
    GridSearch(),  # RandomSearch(...), TPESearch(...) or SuccessiveHalving(...) work the same
    objective=Objective.maximize("output_throughput", tie_break="ttft.p99"),
    slos=["ttft.p99 <= 1s", "tpot.p90 <= 50ms"],
)
try:
    result = loop.run(space, workload)
except InfeasibleError as e:
    raise SystemExit(f"INFEASIBLE: {e}") from None
print(trial_table(result.trials, space, ["output_throughput", "ttft.p99", "tpot.p90"]))
print(f"\nbest: {result.best.config.describe(space.base)}")
# Only what the study tuned or set on purpose: vLLM picks the rest for the device.
knobs = Target().recommended_knobs(result.best.config, space.dimensions, space.base)
print("vllm serve <model> " + " ".join(result.best.config.to_vllm_args(knobs)))
