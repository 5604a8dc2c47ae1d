"""A fixed CPU workload timed before and after profiling: did the machine's speed change?

Stage latencies are only as steady as the machine. On a shared or virtual machine the
same computation can run tens of per cent faster or slower a minute later (this
project's 2-core VM: a pure-Python loop took 11.0, 19.1 and 11.0 ms in three probes a
minute apart, with nothing else running). Rounds spread each stage's repetitions over
its measurement, but a drift between stages, or between two profiling runs, stays in
the figures. The probe makes it visible: the Profiler reports both timings and warns
when they differ by more than :data:`DRIFT_WARNING`.
"""

from __future__ import annotations

import statistics
import time

__all__ = ["DRIFT_WARNING", "machine_speed_probe", "speed_drift"]

#: Relative change of the probe between start and end of a profile that earns a warning.
DRIFT_WARNING = 0.10
_LOOP = 100_000
_REPEATS = 9


def _loop_once() -> float:
    started = time.perf_counter()
    total = 0
    for i in range(_LOOP):
        total += i * i
    return time.perf_counter() - started


def machine_speed_probe() -> float:
    """Median seconds of a fixed pure-Python loop (~5 ms each, 9 times, ~50 ms in all).

    Pure Python and one thread, like the interpreter-bound part of any stage, and free of
    thread-pool settings that differ between the profiler and its replicas.
    """
    _loop_once()  # warm the interpreter's caches
    return statistics.median(_loop_once() for _ in range(_REPEATS))


def speed_drift(before_s: float, after_s: float) -> float:
    """after / before − 1: positive when the machine got slower during profiling."""
    return after_s / before_s - 1.0
