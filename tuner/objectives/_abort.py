"""Early abort: is an SLO already lost, whatever the rest of a run does?

A load client that watches a run as it goes (a live server) can stop a configuration that is
certain to fail: :class:`AbortRule` looks at what has been observed by time ``now``
(:class:`PartialRun`) and says which SLO is provably lost, and why. It only ever uses bounds
that the rest of the run cannot undo, so it never calls an SLO lost that the completed run
would meet (``tests/test_abort.py`` checks this with hypothesis):

- a request still waiting for its first token at ``now`` has ``ttft >= now - arrival``;
  one still streaming has ``e2e >= now - arrival`` and ``tpot >= (now - first) / (n - 1)``;
- a percentile ``pNN`` is above the limit once so many requests are certain to exceed it that
  the order statistic numpy's percentile starts from is among them (for 1000 requests and
  p99: 11, i.e. more than 1 %); ``max`` once one is, ``min`` once all are, ``mean`` once the
  lower bounds' mean is;
- ``max_step_tokens`` once a step scheduled more, ``total_steps`` once more steps ran,
  ``duration`` once the run has lasted longer with requests unfinished,
  ``output_throughput``/``request_throughput`` once even an instant finish would be too slow,
  ``failed_requests`` once more requests failed.

SLOs on other figures (ITL, std, goodput, preemptions, ``ttft_steps``) are never called lost.
One assumption: requests not yet failed will not fail (a failed request is left out of the
statistics, as in :class:`~tuner.core.Measurement`; a request that fails later shrinks the
population the percentile is taken over).

Example:
    >>> import numpy as np
    >>> rule = AbortRule(["ttft.p99 <= 2s"])
    >>> run = PartialRun(now=5.0, arrival=np.zeros(1000), output_tokens=np.full(1000, 8),
    ...                  first_token=np.r_[np.full(987, 0.1), np.full(13, np.nan)])
    >>> rule.lost(run)
    'ttft.p99 <= 2s lost (13 of 1000 requests already over 2s, 13 still without a first token; p99 allows at most 10)'
"""  # noqa: E501

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from tuner.core import SLOError
from tuner.objectives._slo import SLO, parse_slos
from tuner.objectives._stats import parse_percentile

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class PartialRun:
    """What a load client has observed of a run by time ``now``: one entry per request of the
    workload (also those not sent yet), in workload order, every time on the clock of
    ``arrival`` (the run's start is 0; seconds for a live server).

    Attributes:
        now: The time of the observation.
        arrival: When each request arrives (is, or will be, sent).
        output_tokens: How many tokens each request will receive (the workload's).
        first_token: When each request's first token came; NaN if it has not come yet.
        last_token: When each request's latest token came (NaN: none yet); default: none.
        tokens: Tokens received so far per request; default: 1 where a first token came.
        failed: Requests that errored (left out of the statistics); default: none.
        step_tokens: Tokens scheduled in each executed step so far (the engine's step log), if
            known.
    """

    now: float
    arrival: npt.ArrayLike
    output_tokens: npt.ArrayLike
    first_token: npt.ArrayLike
    last_token: npt.ArrayLike | None = None
    tokens: npt.ArrayLike | None = None
    failed: npt.ArrayLike | None = None
    step_tokens: npt.ArrayLike | None = None
    _arrays: dict[str, FloatArray] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        a = np.asarray(self.arrival, dtype=np.float64)
        n = len(a)
        first = np.asarray(self.first_token, dtype=np.float64)
        out = np.asarray(self.output_tokens, dtype=np.float64)
        last = (
            np.full(n, np.nan)
            if self.last_token is None
            else np.asarray(self.last_token, dtype=np.float64)
        )
        tokens = (
            np.where(np.isnan(first), 0.0, 1.0)
            if self.tokens is None
            else np.asarray(self.tokens, dtype=np.float64)
        )
        failed = np.zeros(n) if self.failed is None else np.asarray(self.failed, dtype=np.float64)
        for name, arr in (("output_tokens", out), ("first_token", first), ("last_token", last)):
            if len(arr) != n:
                raise ValueError(f"PartialRun.{name}: {len(arr)} entries, expected {n}")
        if len(tokens) != n or len(failed) != n:
            raise ValueError(f"PartialRun.tokens and .failed need {n} entries")
        self._arrays.update(
            arrival=a, first=first, out=out, last=last, tokens=tokens, failed=failed
        )

    def _get(self, name: str) -> FloatArray:
        return self._arrays[name]


class AbortRule:
    """Built from the SLOs: says whether a partial run has provably lost one of them.

    Args:
        slos: The SLOs (objects or text like ``"ttft.p99 <= 2s"``); limits in the run's time
            unit (seconds for a live server).
        margins: Per SLO (by its text), a factor ``m >= 1`` by which a run must provably be
            past the limit before it is called lost -- over ``limit * m`` for an upper limit,
            under ``limit / m`` for a lower one; ``inf``: never called lost. The Loop sets it
            from the run-to-run noise (:func:`tuner.tuning._futility.abort_margin`), so that
            a run is stopped only when no repeat could bring its SLO back: a run that is over
            by less than the noise explains is measured in full and the repeat policy decides.
            Latency, duration and throughput SLOs take it; counts (``max_step_tokens``,
            ``total_steps``, ``failed_requests``) are exact and take none. Default: 1 for all.

    Example:
        >>> rule = AbortRule(["ttft.max <= 2s"], margins={"ttft.max <= 2s": 1.5})
        >>> run = PartialRun(now=2.5, arrival=[0.0], output_tokens=[8], first_token=[np.nan])
        >>> rule.lost(run) is None  # 2.5 s over 2 s, but not over 2 s * 1.5 = 3 s
        True
        >>> rule.lost(PartialRun(now=3.5, arrival=[0.0], output_tokens=[8],
        ...                      first_token=[np.nan]))  # doctest: +ELLIPSIS
        'ttft.max <= 2s lost (1 of 1 requests already over 3s, ...; noise margin x1.5)'
    """

    def __init__(
        self,
        slos: Sequence[SLO | str] | SLO | str,
        margins: Mapping[str, float] | None = None,
    ) -> None:
        self.slos = parse_slos(slos)
        self.margins: dict[str, float] = {}
        texts = [s.text for s in self.slos]
        for text, m in (margins or {}).items():
            if text not in texts:
                raise SLOError(
                    f"AbortRule.margins[{text!r}]: not one of the rule's SLOs ({', '.join(texts)})"
                )
            if not (isinstance(m, (int, float)) and m >= 1.0):
                raise SLOError(
                    f"AbortRule.margins[{text!r}] = {m!r}: must be a number >= 1 (or inf)"
                )
            self.margins[text] = float(m)
        # what lost() checks, built once (it runs every few milliseconds during a load): each
        # SLO with a checker and a finite margin, its limit widened, and the margin for the note
        self._checks: list[tuple[SLO, SLO, Callable[[SLO, PartialRun], str | None], float]] = []
        for slo in self.slos:
            check = _checker(slo)
            m = self.margins.get(slo.text, 1.0) if slo.ref.name not in _EXACT else 1.0
            if check is not None and not math.isinf(m):
                self._checks.append((slo, slo if m == 1.0 else _wider(slo, m), check, m))

    def widened(self, margins: Mapping[str, float]) -> AbortRule:
        """This rule with noise ``margins`` (see the class); the SLOs and their texts stay."""
        return AbortRule(self.slos, margins)

    @property
    def can_abort(self) -> bool:
        """Whether any SLO is of a kind this rule can prove lost (else checking is pointless)."""
        return any(_checker(s) is not None for s in self.slos)

    def lost(self, run: PartialRun) -> str | None:
        """The first SLO the run has provably lost, as ``"<slo> lost (<why>)"``; None when
        every SLO may still hold."""
        for slo, judged, check, m in self._checks:
            why = check(judged, run)
            if why is not None:
                return f"{slo.text} lost ({why}{f'; noise margin x{m:.3g}' if m > 1 else ''})"
        return None

    def lost_slo(self, reason: str) -> SLO | None:
        """The SLO a reason given by :meth:`lost` names (for the Loop's record); the reason may
        be prefixed as a live backend words it (``"aborted at 41.2 s: <reason>"``)."""
        if reason.startswith("aborted at "):
            reason = reason.partition(": ")[2]
        return next((s for s in self.slos if reason.startswith(f"{s.text} lost")), None)


#: Figures that are counts, exact in every run: an abort on them takes no noise margin.
_EXACT = ("max_step_tokens", "total_steps", "failed_requests")


def _wider(slo: SLO, m: float) -> SLO:
    """``slo`` with its limit moved ``m`` times further out (a run must pass that to lose)."""
    limit = slo.limit * m if slo.op in ("<=", "<") else slo.limit / m
    return slo.model_copy(update={"limit": limit})


def _limit_text(slo: SLO) -> str:
    return slo.text.split(slo.op, 1)[1].strip()


def _over(values: FloatArray, slo: SLO) -> npt.NDArray[np.bool_]:
    """Which lower bounds already break an upper limit."""
    return values >= slo.limit if slo.op == "<" else values > slo.limit


def _allowed(stat: str, n: int) -> int | None:
    """How many of ``n`` samples may exceed the limit before the statistic must (None: the
    statistic is not an order statistic)."""
    if stat == "max":
        return 0
    if stat == "min":
        return n - 1
    if stat in ("mean", "std"):
        return None
    q = 50.0 if stat == "median" else parse_percentile(stat)
    lo = math.floor(q / 100.0 * (n - 1))
    return n - lo - 1


def _latency(slo: SLO, run: PartialRun) -> str | None:
    ref = slo.ref
    if ref.stat is None or slo.op not in ("<=", "<") or ref.stat == "std":
        return None
    a, first, last = run._get("arrival"), run._get("first"), run._get("last")
    out, tokens, failed = run._get("out"), run._get("tokens"), run._get("failed") > 0
    waited = np.maximum(run.now - a, 0.0)
    done = (tokens >= out) & ~np.isnan(last)
    pending_what = "without a first token"
    if ref.name == "ttft":
        bound = np.where(np.isnan(first), waited, first - a)
        pending = np.isnan(first)
        keep = ~failed
    elif ref.name == "e2e":
        bound = np.where(done, last - a, waited)
        pending = ~done
        keep = ~failed
        pending_what = "unfinished"
    else:  # tpot: requests with more than one token
        with np.errstate(invalid="ignore", divide="ignore"):
            final = (last - first) / (out - 1)
            running = np.maximum(run.now - first, 0.0) / (out - 1)
        bound = np.where(done, final, np.where(np.isnan(first), 0.0, running))
        pending = ~done
        keep = ~failed & (out > 1)
        pending_what = "unfinished"
    bound, pending = np.nan_to_num(bound[keep], nan=0.0), pending[keep]
    n = len(bound)
    if n == 0:
        return None
    allowed = _allowed(ref.stat, n)
    limit = _limit_text(slo)
    if allowed is None:  # mean
        lower = float(bound.mean())
        if (lower >= slo.limit) if slo.op == "<" else (lower > slo.limit):
            return f"the mean of {n} requests is already at least {lower:.4g}, over {limit}"
        return None
    over = _over(bound, slo)
    k = int(over.sum())
    if k <= allowed:
        return None
    still = int((over & pending).sum())
    return (
        f"{k} of {n} requests already over {limit}, {still} still {pending_what}; "
        f"{ref.stat} allows at most {allowed}"
    )


def _engine(slo: SLO, run: PartialRun) -> str | None:
    name, limit = slo.ref.name, _limit_text(slo)
    a, out, tokens = run._get("arrival"), run._get("out"), run._get("tokens")
    failed = run._get("failed") > 0
    unfinished = (tokens < out) & ~failed
    upper = slo.op in ("<=", "<")

    def breaks(v: float) -> bool:
        return bool(
            {"<=": v > slo.limit, "<": v >= slo.limit, ">=": v < slo.limit, ">": v <= slo.limit}[
                slo.op
            ]
        )

    if name in ("max_step_tokens", "total_steps") and upper and run.step_tokens is not None:
        steps = np.asarray(run.step_tokens, dtype=np.float64)
        steps = steps[steps > 0]
        v = float(steps.max(initial=0)) if name == "max_step_tokens" else float(len(steps))
        if breaks(v):
            what = "a step scheduled" if name == "max_step_tokens" else "the run took"
            unit = "tokens" if name == "max_step_tokens" else "steps"
            return f"{what} {v:g} {unit} already, over {limit}"
        return None
    if name == "failed_requests" and upper:
        v = float(failed.sum())
        return f"{v:g} requests failed already, over {limit}" if breaks(v) else None
    if not len(a) or not unfinished.any():
        return None
    elapsed = run.now - float(a.min())
    if name == "duration" and upper and breaks(elapsed):
        return f"the run has lasted {elapsed:.4g} with requests unfinished, over {limit}"
    if name in ("output_throughput", "request_throughput") and not upper and elapsed > 0:
        total = float(out[~failed].sum()) if name == "output_throughput" else float((~failed).sum())
        best = total / elapsed
        if breaks(best):
            return f"even if every request finished now it would be {best:.4g}, under {limit}"
    return None


_ENGINE = (
    "max_step_tokens",
    "total_steps",
    "failed_requests",
    "duration",
    "output_throughput",
    "request_throughput",
)


def _checker(slo: SLO) -> Callable[[SLO, PartialRun], str | None] | None:
    ref = slo.ref
    if ref.name in ("ttft", "e2e", "tpot") and slo.op in ("<=", "<") and ref.stat != "std":
        return _latency
    if ref.name in _ENGINE and ref.stat is None:
        return _engine
    return None


__all__ = ["AbortRule", "PartialRun"]
