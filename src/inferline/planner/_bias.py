"""The Estimator's tail bias on a machine, and the margin that plans for it.

Calibrated on a served run, the Estimator (CPU work on the machine's cores simulated as
shared) still came 4–15 % under the measured P99 on the 2-core VM, at every level of
every pipeline (benchmarks/results/promise.md, runs S and A): time the model does not
see (wake-ups, the kernel, the client). Measured on one serve, the Planner plans for the
estimate × that ratio. It carries over to plans of the same shape; plans with other
thread counts or multi-thread replicas measured up to 20 % apart (run H; docs/planner.md,
"The Estimator's tail bias on this machine").
"""

from __future__ import annotations

import math

__all__ = ["MAX_TAIL_BIAS", "biased_margin", "tail_bias"]

#: The most a tail bias may say: above it the serve was most likely disturbed, and
#: planning that conservatively would cost more than it saves.
MAX_TAIL_BIAS = 1.5


def tail_bias(measured_p99_s: float | None, estimated_p99_s: float | None) -> float:
    """How far the calibrated Estimator's P99 falls short of the measured one on the
    serve it was calibrated on, as the factor plans are corrected by: the ratio, clamped
    to [1, :data:`MAX_TAIL_BIAS`] (1 when either is missing: an Estimator that runs high
    is safe as it is)."""
    if not measured_p99_s or not estimated_p99_s or not estimated_p99_s > 0:
        return 1.0
    ratio = measured_p99_s / estimated_p99_s
    return min(max(ratio, 1.0), MAX_TAIL_BIAS) if math.isfinite(ratio) else 1.0


def biased_margin(margin: float, bias: float) -> float:
    """The margin that makes ``bias`` × the estimated P99 ≤ SLO × (1 − ``margin``): the
    Planner's own margin, for an Estimator known to run ``bias``× low on this machine."""
    return 1.0 - (1.0 - margin) / max(bias, 1.0)
