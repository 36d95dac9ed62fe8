"""The workload generators, as class methods of :class:`~tuner.Workload` (a mixin).

Arrivals and lengths are defined in :mod:`tuner.core._arrivals` (``vllm bench serve``'s), the
shared-prefix and multi-turn prompts in :mod:`tuner.core._prefix_workloads`.
"""

from __future__ import annotations

from typing_extensions import Self

from tuner.core import _closed_loop, _prefix_workloads, _traces
from tuner.core._arrivals import LengthSpec, sample_workload_arrays
from tuner.core._errors import WorkloadError
from tuner.core._workload_base import WorkloadMixin

__all__ = ["WorkloadGenerators"]


class WorkloadGenerators(WorkloadMixin):
    """``Workload.poisson``, ``gamma``, ``shared_prefix``, ``multi_turn`` and ``closed_loop``."""

    __slots__ = ()

    @classmethod
    def poisson(
        cls,
        rate: float,
        n: int,
        prompt_len: LengthSpec,
        output_len: LengthSpec,
        seed: int = 0,
    ) -> Self:
        """``n`` requests arriving as a Poisson process, like ``vllm bench serve --request-rate``.

        Same as :meth:`gamma` with ``burstiness=1``: exponential gaps of mean ``1 / rate``
        seconds; the first request arrives after the first gap and the times are rescaled so the
        last one arrives at exactly ``n / rate`` (as vLLM 0.32's ``get_request`` does).

        Args:
            rate: Requests per second, > 0; ``float("inf")`` puts every arrival at 0.
            n: The number of requests, >= 1.
            prompt_len: An int (fixed) or a length distribution (``Fixed``, ``Uniform``,
                ``LogNormal``, ``Empirical``).
            output_len: Likewise, for the output lengths.
            seed: Seeds every draw; the same seed gives the same workload.

        Raises:
            WorkloadError: naming the bad parameter, its value and what is allowed.

        Example:
            >>> from tuner import Workload
            >>> from tuner.core._arrivals import Uniform
            >>> w = Workload.poisson(4.0, 100, prompt_len=Uniform(512, 0.5), output_len=64)
            >>> len(w), float(w.arrival.max())
            (100, 25.0)
        """
        a, p, o = sample_workload_arrays(
            "Workload.poisson", rate, n, prompt_len, output_len, 1.0, seed
        )
        return cls.from_arrays(a, p, o)

    @classmethod
    def gamma(
        cls,
        rate: float,
        n: int,
        prompt_len: LengthSpec,
        output_len: LengthSpec,
        burstiness: float,
        seed: int = 0,
    ) -> Self:
        """``n`` requests with gamma gaps, like ``vllm bench serve --request-rate --burstiness``.

        Gaps have shape ``burstiness`` and scale ``1 / (rate * burstiness)``: mean ``1 / rate``,
        coefficient of variation ``1 / sqrt(burstiness)`` (1 = Poisson, < 1 burstier, > 1 more
        regular, ``inf`` evenly spaced). See :meth:`poisson` for the first arrival and the
        rescaling, and :func:`tuner.core._arrivals.arrival_times` for the definition.

        Example:
            >>> from tuner import Workload
            >>> w = Workload.gamma(2.0, 8, 128, 16, burstiness=float("inf"))
            >>> w.arrival.tolist()
            [0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0]
        """
        a, p, o = sample_workload_arrays(
            "Workload.gamma", rate, n, prompt_len, output_len, burstiness, seed
        )
        return cls.from_arrays(a, p, o)

    @classmethod
    def shared_prefix(
        cls,
        rate: float,
        n: int,
        prompt_len: LengthSpec,
        output_len: LengthSpec,
        prefix_tokens: int,
        *,
        fraction: float = 1.0,
        num_prefixes: int = 1,
        burstiness: float = 1.0,
        seed: int = 0,
        hash_chunk_size: int = _traces.CHUNK_SIZE,
    ) -> Self:
        """Like :meth:`gamma` (Poisson by default), with a shared system prompt: a ``fraction``
        of the requests (drawn at random) start with one of ``num_prefixes`` system prompts of
        ``prefix_tokens`` tokens, followed by their own ``prompt_len`` tokens. Prompts are
        expressed as hash ids, so the system prompt is shared up to its last whole chunk of
        ``hash_chunk_size`` tokens; the rest of every prompt is its own.

        Raises:
            WorkloadError: naming the bad parameter, its value and what is allowed.

        Example:
            >>> from tuner import Workload
            >>> w = Workload.shared_prefix(2.0, 4, prompt_len=40, output_len=8, prefix_tokens=64)
            >>> w.prompt_tokens.tolist(), [ids[:4] for ids in w.hash_ids] == [(0, 1, 2, 3)] * 4
            ([104, 104, 104, 104], True)
        """
        a, p, o, h = _prefix_workloads.shared_prefix_arrays(
            rate,
            n,
            prompt_len,
            output_len,
            prefix_tokens,
            fraction=fraction,
            num_prefixes=num_prefixes,
            burstiness=burstiness,
            seed=seed,
            chunk_size=hash_chunk_size,
        )
        return cls.from_arrays(a, p, o, h, hash_chunk_size=hash_chunk_size)

    @classmethod
    def multi_turn(
        cls,
        conversations: int,
        turns: int,
        rate: float,
        user_len: LengthSpec,
        answer_len: LengthSpec,
        *,
        think_time: float = 0.0,
        system_prompt_tokens: int = 0,
        seed: int = 0,
        hash_chunk_size: int = _traces.CHUNK_SIZE,
    ) -> Self:
        """``conversations`` chats of ``turns`` turns each: conversations start as a Poisson
        process of ``rate`` per second; each turn's prompt is the previous turn's prompt, its
        answer (``answer_len`` tokens, the turn's output) and new user text (``user_len``
        tokens), after an exponential think time of mean ``think_time`` from the previous turn's
        arrival (a trace fixes every arrival in advance: include the expected answer time). All
        conversations may start with the same system prompt of ``system_prompt_tokens``.

        A turn can hit the prefix cache on the previous turn's prompt (its whole chunks of
        ``hash_chunk_size`` tokens), not on the answer: a replayed trace's answers are the
        model's own tokens, which the next prompt, built from hash ids, does not repeat.

        Raises:
            WorkloadError: naming the bad parameter, its value and what is allowed.

        Example:
            >>> from tuner import Workload
            >>> w = Workload.multi_turn(1, 3, 1.0, user_len=20, answer_len=12, think_time=5)
            >>> w.prompt_tokens.tolist(), w.hash_ids[1][:1] == w.hash_ids[0][:1]
            ([20, 52, 84], True)
        """
        a, p, o, h = _prefix_workloads.multi_turn_arrays(
            conversations,
            turns,
            rate,
            user_len,
            answer_len,
            think_time=think_time,
            system_prompt_tokens=system_prompt_tokens,
            seed=seed,
            chunk_size=hash_chunk_size,
        )
        return cls.from_arrays(a, p, o, h, hash_chunk_size=hash_chunk_size)

    @classmethod
    def closed_loop(
        cls,
        users: int,
        requests: int,
        prompt_len: LengthSpec,
        output_len: LengthSpec,
        *,
        think_time: float = 0.0,
        ramp: float = 0.0,
        seed: int = 0,
    ) -> Self:
        """``requests`` requests sent closed loop by ``users`` concurrent users, as ``vllm bench
        serve --max-concurrency``, AIPerf's ``--concurrency`` and GuideLLM's concurrent profile
        load a server: request ``i`` is sent by user ``i % users``; each user sends its next
        request ``think_time`` after its previous one's last token. Every user sends its first
        request at 0, or, with ``ramp``, user ``u`` at ``u * ramp / users``.

        The lengths are those of :meth:`poisson` with the same seed (the same requests at every
        number of users; see :meth:`~tuner.Workload.at_concurrency`). :attr:`arrival` holds
        the earliest possible send times; backends report the actual ones
        (:attr:`Measurement.arrival`).

        Raises:
            WorkloadError: naming the bad parameter, its value and what is allowed.

        Example:
            >>> from tuner import Workload
            >>> w = Workload.closed_loop(2, 5, prompt_len=64, output_len=8, think_time=1.5)
            >>> w.users, w.user.tolist(), w.arrival.tolist()
            (2, [0, 1, 0, 1, 0], [0.0, 0.0, 1.5, 1.5, 3.0])
        """
        where = "Workload.closed_loop"
        users = _closed_loop.check_user_count(where, users)
        think = _closed_loop.check_think(where, think_time)
        ramp = _closed_loop.check_think(where, ramp, "ramp")
        if isinstance(requests, bool) or not isinstance(requests, int) or requests < 1:
            raise WorkloadError(
                f"{where}(requests={requests!r}): must be an integer >= 1 (the request count)"
            )
        inf = float("inf")  # no arrivals to draw: only the lengths
        _, p, o = sample_workload_arrays(where, inf, requests, prompt_len, output_len, 1.0, seed)
        user = _closed_loop.round_robin(len(p), users)
        starts = _closed_loop.user_starts(users, ramp)[user]
        return cls.from_arrays(starts, p, o, user=user, think_time=think)
