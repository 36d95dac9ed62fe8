"""The replay tier: vLLM's own v1 ``Scheduler`` driven without a model or a GPU.

Exact scheduling decisions (the ground truth the simulator is checked against), priced with the
same :class:`~tuner.backends.CostModel` and recorded on the same shared ``Timeline``.
"""

from tuner.backends.replay._replay import SchedulerReplayBackend

__all__ = ["SchedulerReplayBackend"]
