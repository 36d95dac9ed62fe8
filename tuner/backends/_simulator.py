"""A step-level simulator of vLLM 0.32's v1 scheduler (sync and async scheduling, FCFS).

It mirrors ``Scheduler.schedule()`` of vLLM 0.32 token for token (see ``VLLM_SCHEDULER.md``)
and is checked against the real scheduler by the fidelity suite (``tuner fidelity``):

* RUNNING pass first, oldest admission first, while the global token budget lasts: a decode
  takes 1 token, a partial prefill the rest of its prompt, capped per request by
  ``long_prefill_token_threshold`` -- which vLLM 0.32 skips when only one request is eligible
  (running + waiting == 1; the seed lab capped a lone request, vLLM does not).
* When the KV cache cannot hold a running request's new tokens, the most recently admitted
  running request is preempted (recompute: all its blocks freed, back to the FRONT of waiting).
* WAITING pass only in a step that preempted nothing: admit in FCFS order while the budget
  lasts and fewer than ``max_num_seqs`` run; with chunked prefill off, a prompt that does not fit
  the remaining budget stops all admissions (head-of-line block); a request is admitted only if
  the KV cache can hold its whole current sequence.
* A request samples one token in the step that completes its prompt (the first token) and one
  per decode step after; it finishes with exactly its output length (``ignore_eos``).
* Clock: a step starts when the previous one ends; a request arriving at ``t`` is first seen by
  the first step starting at or after ``t``; an idle engine jumps to the next arrival.

Stretches of identical steps (the same running requests each getting the same tokens -- one
per decode, a fixed chunk per prefill -- with no admission possible, no arrival, no prompt
completed, no request finished and enough KV blocks) are not simulated step by step: the engine
jumps to the next event and records the whole stretch at once.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from tuner.backends._base import Backend
from tuner.backends._cost import CostModel
from tuner.backends._timeline import Timeline
from tuner.core._config import VLLM_VERSION, ServingConfig
from tuner.core._errors import BackendError, ConfigError
from tuner.core._measurement import Measurement
from tuner.core._workload import Workload

SUPPORTED_VLLM_VERSIONS = ("0.32",)


class SimulatorBackend(Backend):
    """A fast step-level model of vLLM's scheduler: no GPU, microseconds per step.

    Args:
        cost_model: Turns each step's contents into a duration. Default: the unit step clock
            (every step lasts 1 and times are counted in steps).
        vllm_version: The vLLM release whose scheduling semantics to mirror (only "0.32").
        fast_forward: Jump over stretches of identical decode-only steps (default). Turning it
            off simulates every step one by one: same result, slower; for checking.

    Example:
        >>> from tuner import Request, ServingConfig, Workload
        >>> w = Workload([Request(arrival=0, prompt_tokens=100, output_tokens=3)])
        >>> m = SimulatorBackend().evaluate(ServingConfig(max_num_batched_tokens=64,
        ...                                               max_num_seqs=4), w)
        >>> m.step_tokens.tolist(), int(m.ttft_steps[0])
        ([64, 36, 1, 1], 1)
    """

    name = "simulator"

    def __init__(
        self,
        cost_model: CostModel | None = None,
        vllm_version: str = VLLM_VERSION,
        *,
        fast_forward: bool = True,
    ) -> None:
        if vllm_version not in SUPPORTED_VLLM_VERSIONS:
            raise ConfigError(
                f"SimulatorBackend.vllm_version = {vllm_version!r}: supported versions are "
                f"{', '.join(SUPPORTED_VLLM_VERSIONS)}"
            )
        if cost_model is not None and not isinstance(cost_model, CostModel):
            raise ConfigError(
                f"SimulatorBackend.cost_model: expected a CostModel, got {cost_model!r}"
            )
        self.cost_model = cost_model or CostModel()
        self.vllm_version = vllm_version
        self.fast_forward = fast_forward

    def evaluate(self, config: ServingConfig, workload: Workload) -> Measurement:
        check_workload_fits(config, workload)
        timeline = Timeline(workload, self.cost_model, f"simulator(vllm {self.vllm_version})")
        _Engine(config, workload, timeline, self.fast_forward).run()
        return timeline.build()


def check_workload_fits(config: ServingConfig, workload: Workload) -> None:
    """Raise :class:`ConfigError` if a request exceeds ``max_model_len`` (vLLM rejects it)."""
    total = workload.prompt_tokens + workload.output_tokens
    bad = np.flatnonzero(total > config.max_model_len)
    if len(bad):
        i = int(bad[0])
        raise ConfigError(
            f"request {i}: prompt_tokens ({workload.prompt_tokens[i]}) + output_tokens "
            f"({workload.output_tokens[i]}) = {total[i]} exceeds max_model_len "
            f"({config.max_model_len}); {len(bad)} request(s) do not fit"
        )


class _Req:
    """Scheduler-side state of one request."""

    __slots__ = ("blocks", "computed", "emitted", "id", "length", "output", "prompt")

    def __init__(self, rid: int, prompt: int, output: int) -> None:
        self.id = rid
        self.prompt = prompt
        self.output = output
        self.computed = 0  # tokens whose KV is computed (vLLM's num_computed_tokens)
        self.emitted = 0  # output tokens sampled so far
        self.length = prompt  # prompt + tokens sampled so far (vLLM's num_tokens)
        self.blocks = 0  # KV blocks held


class _Engine:
    def __init__(
        self, config: ServingConfig, workload: Workload, timeline: Timeline, fast_forward: bool
    ) -> None:
        self.cfg = config
        self.fast_forward = fast_forward
        self.tl = timeline
        prompts = workload.prompt_tokens.tolist()
        outputs = workload.output_tokens.tolist()
        self.reqs = [_Req(i, p, o) for i, (p, o) in enumerate(zip(prompts, outputs, strict=True))]
        self.order: list[int] = workload.schedule_order.tolist()
        self.arrival: list[float] = workload.arrival.tolist()
        self.running: list[_Req] = []
        self.waiting: deque[_Req] = deque()
        self.finishing: list[_Req] = []  # async scheduling: finished, slot/blocks freed next step
        self.bs = config.block_size
        cap = config.num_kv_blocks
        self.kv_limited = cap is not None
        self.free_blocks = 0 if cap is None else cap - 1  # block 0 is reserved

    def _free(self, r: _Req) -> None:
        self.free_blocks += r.blocks
        r.blocks = 0

    # --- the engine loop -----------------------------------------------------------------------
    def run(self) -> None:
        pending = 0
        n = len(self.order)
        order, arrival = self.order, self.arrival
        now = arrival[order[0]]
        done = 0
        while done < n:
            while pending < n and arrival[order[pending]] <= now:
                self.waiting.append(self.reqs[order[pending]])
                pending += 1
            if not self.running and not self.waiting and not self.finishing:
                now = arrival[order[pending]]
                continue
            plan = self._plan() if self.fast_forward else None
            if plan is not None:
                jumped = self._jump(now, plan, arrival[order[pending]] if pending < n else None)
                if jumped is not None:
                    now = jumped
                    continue
            now, finished = self._step(now)
            done += finished

    def _step(self, now: float) -> tuple[float, int]:
        """One ``schedule()`` + model step + ``update_from_output()``.

        Returns the new time and how many requests finished.
        """
        cfg = self.cfg
        running, waiting, finishing = self.running, self.waiting, self.finishing
        kv = self.kv_limited
        bs = self.bs
        budget = cfg.max_num_batched_tokens
        eligible = len(running) + len(finishing) + len(waiting)
        thr = cfg.long_prefill_token_threshold if eligible > 1 else 0
        scheduled: list[tuple[_Req, int]] = []
        preempted = False

        # RUNNING pass, oldest admission first.
        i = 0
        while i < len(running) and budget > 0:
            r = running[i]
            n = r.length - r.computed
            if 0 < thr < n:
                n = thr
            if n > budget:
                n = budget
            if kv:
                need = -(-(r.computed + n) // bs) - r.blocks
                placed = True
                while need > self.free_blocks:
                    victim = running.pop()
                    self._free(victim)
                    victim.computed = 0
                    waiting.appendleft(victim)
                    self.tl.preempted(victim.id)
                    preempted = True
                    if victim is r:
                        placed = False
                        break
                if not placed:
                    break
                self.free_blocks -= need
                r.blocks += need
            scheduled.append((r, n))
            budget -= n
            i += 1

        # WAITING pass, only in a step that preempted nothing.
        if not preempted:
            while budget > 0 and waiting:
                if len(running) + len(finishing) >= cfg.max_num_seqs:
                    break
                r = waiting[0]
                n = r.length - r.computed
                if 0 < thr < n:
                    n = thr
                if not cfg.enable_chunked_prefill and n > budget:
                    break
                if n > budget:
                    n = budget
                if kv:
                    if -(-r.length // bs) > self.free_blocks:
                        break
                    need = -(-(r.computed + n) // bs)
                    self.free_blocks -= need
                    r.blocks += need
                waiting.popleft()
                running.append(r)
                scheduled.append((r, n))
                budget -= n

        released = bool(finishing)
        if released:  # async scheduling: last step's finished requests leave only now
            for r in finishing:
                self._free(r)
            finishing.clear()

        if not scheduled:
            if released:  # the freed slots and blocks are usable by the next schedule()
                return now, 0
            raise BackendError(
                "simulator stalled: a step scheduled no token while requests wait "
                f"(running={len(running)}, waiting={len(waiting)})"
            )

        prefill = decode = 0
        emitted: list[int] = []
        finished: list[_Req] = []
        for r, n in scheduled:
            if r.emitted and r.computed == r.length - 1:
                decode += n
            else:
                prefill += n
            r.computed += n
            if r.computed == r.length:
                r.emitted += 1
                r.length += 1
                emitted.append(r.id)
                if r.emitted == r.output:
                    finished.append(r)
        end = self.tl.step(now, prefill, decode, len(scheduled), emitted)

        if finished:
            self.running = [r for r in running if r.emitted < r.output]
            for r in finished:
                if cfg.async_scheduling:
                    finishing.append(r)
                else:
                    self._free(r)
        return end, len(finished)

    def _plan(self) -> list[int] | None:
        """The tokens each running request gets in the next step, if that step is *regular*:
        it serves every running request, completes no prompt, finishes no request, admits and
        preempts nothing -- so that the steps after it are identical until an event. None
        otherwise (the next step is simulated normally)."""
        running = self.running
        if self.finishing or not running:
            return None
        cfg = self.cfg
        waiting = self.waiting
        thr = cfg.long_prefill_token_threshold if len(running) + len(waiting) > 1 else 0
        budget = cfg.max_num_batched_tokens
        plan: list[int] = []
        for r in running:
            if budget <= 0:
                return None  # a starved request: not worth the bookkeeping
            n = r.length - r.computed
            if n == 1 and r.emitted:
                plan.append(1)
                budget -= 1
                continue
            if 0 < thr < n:
                n = thr
            if n > budget:
                n = budget
            if r.computed + n >= r.length:
                return None  # this step completes the prompt: the first token is an event
            plan.append(n)
            budget -= n
        if self.kv_limited:
            bs = self.bs
            grow = sum(
                -(-(r.computed + n) // bs) - r.blocks for r, n in zip(running, plan, strict=True)
            )
            if grow > self.free_blocks:
                return None  # a preemption is coming
        if not waiting or budget == 0 or len(running) >= cfg.max_num_seqs:
            return plan
        # Would the head of the queue be admitted? (Admission only gets harder while the
        # stretch lasts: the budget left is constant and free KV blocks only shrink.)
        head = waiting[0]
        n = head.length - head.computed
        if 0 < thr < n:
            n = thr
        if not cfg.enable_chunked_prefill and n > budget:
            return plan
        if self.kv_limited and -(-head.length // self.bs) > self.free_blocks - grow:
            return plan
        return None

    def _jump(self, now: float, plan: list[int], next_arrival: float | None) -> float | None:
        """Record the identical steps of ``plan`` from ``now`` up to (not including) the next
        event: an arrival, a prompt's last chunk, a request's last token, or a KV shortfall.
        Returns the new time, or None when not even one step can be skipped."""
        run = self.running
        k = 1 << 62
        decoders: list[int] = []
        prefill = 0
        for r, n in zip(run, plan, strict=True):
            if r.emitted and r.computed == r.length - 1:
                decoders.append(r.id)
                k = min(k, r.output - r.emitted - 1)  # its last token is an event
            else:
                prefill += n
                k = min(k, -(-(r.length - r.computed) // n) - 1)  # its last chunk is an event
        if k < 1:
            return None
        if self.kv_limited:
            k = self._kv_steps(plan, k)
            if k < 1:
                return None
        decode = len(decoders)
        dur = self.tl.cost_model.step_time(prefill, decode, len(run))
        if next_arrival is not None:
            # Step start times exactly as a step-by-step run would add them.
            starts = np.cumsum(np.concatenate(([now], np.full(k, dur))))
            k = min(k, int(np.searchsorted(starts, next_arrival, side="left")))
            if k < 1:
                return None
        end = self.tl.run(now, k, prefill, decode, len(run), decoders)
        bs = self.bs
        for r, n in zip(run, plan, strict=True):
            if r.emitted and r.computed == r.length - 1:
                r.emitted += k
                r.length += k
            r.computed += n * k
            if self.kv_limited:
                nb = -(-r.computed // bs)
                self.free_blocks -= nb - r.blocks
                r.blocks = nb
        return end

    def _kv_steps(self, plan: list[int], k: int) -> int:
        """The most planned steps (<= k) the free KV blocks allow without a preemption."""
        run = self.running
        bs = self.bs
        computed = np.fromiter((r.computed for r in run), dtype=np.int64, count=len(run))
        rate = np.array(plan, dtype=np.int64)
        total = self.free_blocks + sum(r.blocks for r in run)

        def fits(j: int) -> bool:
            return int(((computed + rate * j + bs - 1) // bs).sum()) <= total

        if fits(k):
            return k
        lo, hi = 0, k  # fits(lo) holds (the current state), fits(hi) does not
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if fits(mid):
                lo = mid
            else:
                hi = mid
        return lo
