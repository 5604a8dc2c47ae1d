"""Reshaping real traces: rescale to a target rate, measure peaks, split for planning.

Rescaling multiplies every arrival time by one factor, so the *shape* of the
traffic (its bursts, lulls and order) is kept while its rate changes.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from inferline.errors import TraceError
from inferline.workload._trace import Trace

__all__ = ["peak_rate_qps", "rescale_to_mean_rate", "rescale_to_peak_rate", "split_trace"]

_ARGUMENT = "<argument>"


def _positive(value: float, name: str) -> float:
    number = float(value)
    if not math.isfinite(number) or number <= 0.0:
        raise TraceError(
            f"must be a finite number > 0, got {value!r}", source=_ARGUMENT, field=name
        )
    return number


def _scaled(trace: Trace, factor: float, what: str) -> Trace:
    """The same queries and paths with every time multiplied by ``factor``."""
    return Trace(
        trace.arrival_s * factor, trace.path_ids, trace.path_table, f"{trace.source} ({what})"
    )


def _require_spread(trace: Trace) -> None:
    if trace.duration_s <= 0.0:
        raise TraceError(
            f"cannot rescale: all {trace.n_queries} arrival(s) share one instant, so the trace "
            "has no rate; use a trace with at least two distinct arrival times",
            source=trace.source,
            field="arrival_s",
        )


def peak_rate_qps(trace: Trace, window_s: float) -> float:
    """Most arrivals in any half-open window ``[t, t + window_s)``, divided by ``window_s``.

    Sliding, not bucketed: the busiest window always starts at an arrival, so
    for each arrival we find the first one at or after ``t + window_s``. The
    keys are sorted, which numpy's binary search exploits, so this costs about
    O(n) and runs in C (a Python two-pointer loop is ~100× slower).
    """
    width_s = _positive(window_s, "window_s")
    arrival_s = trace.arrival_s
    ends = np.searchsorted(arrival_s, arrival_s + width_s, side="left")
    counts = ends - np.arange(arrival_s.size)
    return int(counts.max()) / width_s


def rescale_to_mean_rate(trace: Trace, rate_qps: float) -> Trace:
    """Scale time so ``mean_rate_qps`` (one over the mean gap) becomes ``rate_qps``."""
    target = _positive(rate_qps, "rate_qps")
    _require_spread(trace)
    return _scaled(trace, trace.mean_rate_qps / target, f"mean rescaled to {target:g} qps")


def _min_span_s(arrival_s: npt.NDArray[np.float64], count: int) -> float:
    """Shortest time covered by ``count`` consecutive arrivals (inf if there are fewer)."""
    n = arrival_s.size
    if count > n:
        return math.inf
    if count <= 1:
        return 0.0
    return float((arrival_s[count - 1 :] - arrival_s[: n - count + 1]).min())


def rescale_to_peak_rate(trace: Trace, peak_qps: float, window_s: float = 1.0) -> Trace:
    """Scale time so the busiest ``window_s`` window holds ``peak_qps * window_s`` arrivals.

    Counts are integers, so the result's :func:`peak_rate_qps` is exactly
    ``peak_qps`` when ``peak_qps * window_s`` is a whole number, and otherwise
    the nearest count the trace can reach (ties between simultaneous arrivals
    can make some counts unreachable). Use a longer window for low peaks.
    """
    target = _positive(peak_qps, "peak_qps")
    width_s = _positive(window_s, "window_s")
    _require_spread(trace)
    arrival_s = trace.arrival_s
    n = trace.n_queries
    wanted = target * width_s
    if round(wanted) > n:
        raise TraceError(
            f"the trace has only {n} arrivals, so no {width_s:g} s window can hold "
            f"{wanted:g} of them; ask for at most {n / width_s:g} qps or use a longer trace",
            source=trace.source,
            field="peak_qps",
        )
    spans: dict[int, float] = {}

    def span(count: int) -> float:
        if count not in spans:
            spans[count] = _min_span_s(arrival_s, count)
        return spans[count]

    # A window of length L holds at most m arrivals iff L <= span(m + 1), and at
    # least m iff L > span(m); so count m is reachable iff span(m) < span(m + 1).
    # Search outwards from the wanted count; m = n is always reachable.
    nearest = min(n, max(1, round(wanted)))
    best = n
    for distance in range(n):
        candidates = sorted({nearest - distance, nearest + distance}, key=lambda m: abs(m - wanted))
        found = [m for m in candidates if 1 <= m <= n and span(m) < span(m + 1)]
        if found:
            best = found[0]
            break
    lower, upper = span(best), span(best + 1)
    length_s = (lower + upper) / 2.0 if math.isfinite(upper) else 2.0 * lower
    return _scaled(trace, width_s / length_s, f"peak rescaled to {best / width_s:g} qps")


def split_trace(trace: Trace, planning_fraction: float = 0.25) -> tuple[Trace, Trace]:
    """Split by time into a planning part and an evaluation part that share no arrival.

    The planning part is the first ``planning_fraction`` of the trace's
    duration (times unchanged); the evaluation part is the rest, shifted so
    the cut is at 0. The InferLine paper plans on the first 25 %.
    """
    fraction = float(planning_fraction)
    if not 0.0 < fraction < 1.0:
        raise TraceError(
            f"must be strictly between 0 and 1, got {planning_fraction!r}",
            source=_ARGUMENT,
            field="planning_fraction",
        )
    arrival_s = trace.arrival_s
    cut_s = float(arrival_s[0]) + fraction * trace.duration_s
    split = int(np.searchsorted(arrival_s, cut_s, side="left"))
    if split == 0 or split == trace.n_queries:
        raise TraceError(
            f"cannot split {trace.n_queries} arrival(s) spanning {trace.duration_s:g} s at "
            f"{fraction:g} of the duration: one part would be empty; use a longer trace",
            source=trace.source,
            field="planning_fraction",
        )
    ids = trace.path_ids
    planning = Trace(
        arrival_s[:split],
        None if ids is None else ids[:split],
        trace.path_table,
        f"{trace.source} (planning: first {fraction:.0%})",
    )
    evaluation = Trace(
        arrival_s[split:] - cut_s,
        None if ids is None else ids[split:],
        trace.path_table,
        f"{trace.source} (evaluation: last {1.0 - fraction:.0%}, from {cut_s:g} s)",
    )
    return planning, evaluation
