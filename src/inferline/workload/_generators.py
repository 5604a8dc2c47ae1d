"""Synthetic arrival processes: Gamma renewal processes, piecewise rates and ramps.

**Burstiness convention.** ``cv`` here is the coefficient of variation of the
inter-arrival gaps, σ/μ. The InferLine paper's "CV" is the *squared* value
σ²/μ², so the paper's CV = 4 is ``cv=2`` here, and its CV = 1 (Poisson) is
``cv=1``.

All generators share one construction so that changes of rate or burstiness
never restart the process (a restart would add about (cv² - 1)/2 spurious
arrivals per boundary): a unit-rate Gamma renewal process runs in
"operational time" u, and arrivals are mapped to real time through the inverse
of the cumulative rate Λ(t) = ∫ rate. Each gap is drawn with the ``cv`` of the
segment in which the previous arrival lies.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from inferline.errors import TraceError
from inferline.workload._trace import Trace

__all__ = ["Segment", "gamma_trace", "piecewise_trace", "ramp_trace"]

_ARGUMENT = "<argument>"
# Upper bound on gaps drawn at once, to bound memory for very long segments.
_MAX_CHUNK = 1 << 22
_MIN_CV = 1e-6


def _check_number(value: float, name: str, *, minimum: float, strict: bool) -> float:
    """Reject non-finite values and values below ``minimum`` (or equal to it if strict)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TraceError(f"must be a number, got {value!r}", source=_ARGUMENT, field=name) from None
    below = number <= minimum if strict else number < minimum
    if not math.isfinite(number) or below:
        relation = ">" if strict else ">="
        raise TraceError(
            f"must be a finite number {relation} {minimum:g}, got {value!r}",
            source=_ARGUMENT,
            field=name,
        )
    return number


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise TraceError(
            f"must be a non-negative integer, got {seed!r}", source=_ARGUMENT, field="seed"
        )
    return int(seed)


@dataclass(frozen=True)
class Segment:
    """A stretch of traffic: ``duration_s`` at ``rate_qps`` with gap burstiness ``cv`` (σ/μ).

    With ``end_rate_qps`` the rate ramps linearly from ``rate_qps`` to
    ``end_rate_qps`` across the segment. ``cv`` is NOT the paper's squared CV:
    paper CV = 4 is ``cv=2``.
    """

    duration_s: float
    rate_qps: float
    cv: float = 1.0
    end_rate_qps: float | None = None

    def __post_init__(self) -> None:
        _check_number(self.duration_s, "Segment.duration_s", minimum=0.0, strict=True)
        _check_number(self.rate_qps, "Segment.rate_qps", minimum=0.0, strict=False)
        _check_number(self.cv, "Segment.cv", minimum=0.0, strict=False)
        if self.end_rate_qps is not None:
            _check_number(self.end_rate_qps, "Segment.end_rate_qps", minimum=0.0, strict=False)


def _steps(
    segments: Sequence[Segment], ramp_step_s: float
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Flatten segments into constant-rate steps: (duration_s, rate_qps, cv) arrays.

    A ramp becomes steps of ``ramp_step_s`` (the last may be shorter), each at
    the ramp's rate at the step's midpoint, so every step expects exactly as
    many arrivals as the linear ramp does over it.
    """
    durations: list[float] = []
    rates: list[float] = []
    cvs: list[float] = []
    for segment in segments:
        end_rate = segment.rate_qps if segment.end_rate_qps is None else segment.end_rate_qps
        if end_rate == segment.rate_qps:
            durations.append(segment.duration_s)
            rates.append(segment.rate_qps)
            cvs.append(segment.cv)
            continue
        n_steps = max(1, math.ceil(segment.duration_s / ramp_step_s - 1e-9))
        edges = np.minimum(np.arange(n_steps + 1) * ramp_step_s, segment.duration_s)
        edges[-1] = segment.duration_s
        mid_s = (edges[:-1] + edges[1:]) / 2.0
        slope = (end_rate - segment.rate_qps) / segment.duration_s
        durations.extend(np.diff(edges).tolist())
        rates.extend((segment.rate_qps + slope * mid_s).tolist())
        cvs.extend([segment.cv] * n_steps)
    return (
        np.asarray(durations, dtype=np.float64),
        np.asarray(rates, dtype=np.float64),
        np.asarray(cvs, dtype=np.float64),
    )


def _unit_gaps(rng: np.random.Generator, cv: float, count: int) -> npt.NDArray[np.float64]:
    """``count`` Gamma gaps with mean 1 and coefficient of variation ``cv``.

    Below ``_MIN_CV`` the gaps are constant: the variation is negligible and
    the Gamma shape ``1/cv**2`` would overflow.
    """
    if cv < _MIN_CV:
        return np.ones(count, dtype=np.float64)
    return rng.gamma(shape=1.0 / cv**2, scale=cv**2, size=count)


def _arrivals(
    duration_s: npt.NDArray[np.float64],
    rate_qps: npt.NDArray[np.float64],
    cv: npt.NDArray[np.float64],
    rng: np.random.Generator,
) -> npt.NDArray[np.float64]:
    """Arrival times in [0, total duration) of the piecewise-constant-rate process."""
    t_breaks = np.concatenate(([0.0], np.cumsum(duration_s)))
    u_breaks = np.concatenate(([0.0], np.cumsum(rate_qps * duration_s)))
    u_total = float(u_breaks[-1])
    chunks: list[npt.NDArray[np.float64]] = []
    u_last = 0.0  # operational time of the previous arrival (the start counts as one)
    while u_last < u_total:
        step = min(int(np.searchsorted(u_breaks, u_last, side="right")) - 1, rate_qps.size - 1)
        step_end_u = float(u_breaks[step + 1])
        remaining_u = step_end_u - u_last
        step_cv = float(cv[step])
        count = math.ceil(remaining_u + 5.0 * step_cv * math.sqrt(remaining_u) + 16.0)
        points = u_last + np.cumsum(_unit_gaps(rng, step_cv, min(count, _MAX_CHUNK)))
        crossing = int(np.searchsorted(points, step_end_u, side="left"))
        if crossing == points.size:
            chunks.append(points)
            u_last = float(points[-1])
            continue
        # The gap that crosses into the next step was drawn with this step's cv,
        # because the previous arrival lies in this step.
        chunks.append(points[: crossing + 1])
        u_last = float(points[crossing])
    if not chunks:
        return np.empty(0, dtype=np.float64)
    u = np.concatenate(chunks)
    u = u[u < u_total]
    return np.interp(u, u_breaks, t_breaks)


def piecewise_trace(segments: Sequence[Segment], seed: int, ramp_step_s: float = 1.0) -> Trace:
    """Concatenate segments of constant or linearly ramping rate into one trace.

    A change of burstiness at a constant rate is two segments with the same
    ``rate_qps`` and different ``cv`` (σ/μ of the gaps; the paper's CV is cv²).
    The process is continuous across segment boundaries (see the module docs).
    """
    seed = _check_seed(seed)
    step_s = _check_number(ramp_step_s, "ramp_step_s", minimum=0.0, strict=True)
    segments = list(segments)
    if not segments:
        raise TraceError("give at least one Segment", source=_ARGUMENT, field="segments")
    for k, segment in enumerate(segments):
        if not isinstance(segment, Segment):
            raise TraceError(
                f"expected a Segment, got {type(segment).__name__}",
                source=_ARGUMENT,
                field=f"segments[{k}]",
            )
    source = f"piecewise_trace({len(segments)} segments, seed={seed})"
    arrival_s = _arrivals(*_steps(segments, step_s), np.random.default_rng(seed))
    if arrival_s.size == 0:
        raise TraceError(
            "the segments produced no arrivals; raise the rates or the durations",
            source=source,
            field="segments",
        )
    return Trace(arrival_s, source=source)


def gamma_trace(rate_qps: float, cv: float, duration_s: float, seed: int) -> Trace:
    """Gamma renewal process over ``[0, duration_s)``: mean rate ``rate_qps``, gap σ/μ = ``cv``.

    Gaps have shape ``1/cv**2`` and scale ``cv**2/rate_qps``; ``cv=1`` is
    Poisson, ``cv=0`` evenly spaced. The first arrival comes after the first gap.

    .. warning:: ``cv`` is σ/μ. The InferLine paper's "CV" is the **squared**
       value σ²/μ²: the paper's CV = 4 is ``cv=2`` here, CV = 0.1 is ``cv≈0.32``.
    """
    seed = _check_seed(seed)
    rate = _check_number(rate_qps, "rate_qps", minimum=0.0, strict=True)
    burst = _check_number(cv, "cv", minimum=0.0, strict=False)
    duration = _check_number(duration_s, "duration_s", minimum=0.0, strict=True)
    source = f"gamma_trace(rate_qps={rate:g}, cv={burst:g}, duration_s={duration:g}, seed={seed})"
    arrival_s = _arrivals(
        np.array([duration]), np.array([rate]), np.array([burst]), np.random.default_rng(seed)
    )
    if arrival_s.size == 0:
        raise TraceError(
            "no arrival fell within duration_s; raise rate_qps or duration_s",
            source=source,
            field="duration_s",
        )
    return Trace(arrival_s, source=source)


def ramp_trace(
    start_rate_qps: float,
    end_rate_qps: float,
    transition_s: float,
    *,
    before_s: float,
    after_s: float,
    cv: float,
    seed: int,
    ramp_step_s: float = 1.0,
) -> Trace:
    """Flat at the start rate for ``before_s``, a linear ramp over ``transition_s``, then flat.

    The last part runs at ``end_rate_qps`` for ``after_s``. This is the paper's
    rate-change scenario (e.g. 150 → 250 qps); ``transition_s=0`` gives a step
    change. ``cv`` is σ/μ of the gaps (paper CV = cv²).
    """
    _check_number(start_rate_qps, "start_rate_qps", minimum=0.0, strict=False)
    _check_number(end_rate_qps, "end_rate_qps", minimum=0.0, strict=False)
    before = _check_number(before_s, "before_s", minimum=0.0, strict=False)
    after = _check_number(after_s, "after_s", minimum=0.0, strict=False)
    transition = _check_number(transition_s, "transition_s", minimum=0.0, strict=False)
    if before + after + transition <= 0.0:
        raise TraceError(
            "before_s + transition_s + after_s must be > 0", source=_ARGUMENT, field="transition_s"
        )
    segments = []
    if before > 0.0:
        segments.append(Segment(before, start_rate_qps, cv))
    if transition > 0.0:
        segments.append(Segment(transition, start_rate_qps, cv, end_rate_qps=end_rate_qps))
    if after > 0.0:
        segments.append(Segment(after, end_rate_qps, cv))
    trace = piecewise_trace(segments, seed, ramp_step_s)
    source = (
        f"ramp_trace({start_rate_qps:g} -> {end_rate_qps:g} qps over {transition:g} s, "
        f"before_s={before:g}, after_s={after:g}, cv={cv:g}, seed={seed})"
    )
    return Trace(trace.arrival_s, source=source)
