"""The top-level entry points that have no single home package: :func:`plan`, :func:`replay`
and :func:`calibrate` (``inferline plan``, ``replay`` and ``calibrate`` in Python)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from inferline.engine import ReplayResult, fetch_calibration
from inferline.engine import replay as replay_arrivals
from inferline.pipeline import Pipeline
from inferline.planner import Plan
from inferline.planner import plan as run_planner
from inferline.profiles import LatencyStat, MachinePool, Profiles
from inferline.workload import Trace, load_trace

__all__ = ["calibrate", "plan", "replay"]


def calibrate(url: str, *, cpu_work: bool = False, timeout_s: float = 10.0) -> Profiles:
    """The profiles a running engine (``inferline serve`` of a bundle with profiles) has
    calibrated on the ``predict`` times it measured (with ``cpu_work``, on each batch's
    CPU work), as ``inferline calibrate`` writes them: plan again from them
    (``il.plan``) to plan for what the machine really does."""
    return fetch_calibration(url, timeout_s).chosen_profiles(cpu_work)


def plan(
    pipeline: Pipeline,
    profiles: Profiles,
    trace: Trace,
    slo_s: float,
    *,
    planner: str = "inferline",
    seed: int = 0,
    margin: float = 0.0,
    latency_stat: LatencyStat = "median",
    max_seconds: float | None = None,
    machine: MachinePool | None = None,
    tail_bias: float = 1.0,
    batch_headroom: bool = False,
) -> Plan:
    """The cheapest configuration meeting the P99 ``slo_s`` on ``trace``, as ``inferline plan``
    computes it. ``planner``: ``inferline`` (the greedy search), ``cg-mean``, ``cg-peak`` or
    ``exhaustive`` (bounded by ``max_seconds``); ``margin``: plan for a P99 of
    ``slo_s × (1 − margin)``; ``machine``: plan for that machine (``il.parse_machine("local")``,
    ``il.MachinePool(cores=8, memory_bytes=None)``; MachineInfeasibleError when nothing fits);
    ``tail_bias``: plan for the estimate × it (``--tail-bias``, what ``il.calibrate``'s engine
    measured; docs/planner.md, "The Estimator's tail bias on this machine");
    ``batch_headroom``: raise its batch sizes at no cost for a plan served with the Tuner
    (``--batch-headroom``). Save it with :meth:`Plan.save`; ``Plan.config`` is the plan."""
    return run_planner(
        planner,
        pipeline,
        profiles,
        trace,
        slo_s,
        seed=seed,
        margin=margin,
        latency_stat=latency_stat,
        max_seconds=max_seconds,
        machine=machine,
        tail_bias=tail_bias,
        batch_headroom=batch_headroom,
    )


def replay(
    url: str,
    trace: Trace | str | Path | npt.NDArray[np.float64],
    *,
    slo_s: float,
    bodies: Sequence[bytes] = (),
    model: str | None = None,
    timeout_s: float = 30.0,
) -> ReplayResult:
    """Send ``trace``'s queries open-loop to the engine at ``url`` (as ``inferline replay``):
    query ``i`` at its arrival time from now, each body from ``bodies`` in turn (default: one
    FP32 number). ``inferline.replay_summary`` reduces the result to P50/P99, misses, errors."""
    if isinstance(trace, Trace):
        arrivals = trace.arrival_s
    elif isinstance(trace, str | Path):
        arrivals = load_trace(trace).arrival_s
    else:
        arrivals = np.asarray(trace, dtype=np.float64)
    return replay_arrivals(url, arrivals, bodies, slo_s=slo_s, model=model, timeout_s=timeout_s)
