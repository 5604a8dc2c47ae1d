"""Planners by name, for the command line and the sweeps."""

from __future__ import annotations

import dataclasses
import math
from typing import Protocol

from inferline.errors import ConfigError, MachineInfeasibleError
from inferline.pipeline import Pipeline
from inferline.planner._baselines import plan_cg_mean, plan_cg_peak
from inferline.planner._bias import biased_margin
from inferline.planner._exhaustive import plan_exhaustive
from inferline.planner._inferline import plan_inferline, with_batch_headroom
from inferline.planner._result import Plan
from inferline.profiles import LatencyStat, MachinePool, Profiles
from inferline.workload import Trace

__all__ = ["PLANNERS", "Planner", "plan"]


class Planner(Protocol):
    def __call__(
        self,
        pipeline: Pipeline,
        profiles: Profiles,
        trace: Trace,
        slo_s: float,
        *,
        seed: int = ...,
        margin: float = ...,
        latency_stat: LatencyStat = ...,
        machine: MachinePool | None = ...,
    ) -> Plan: ...


PLANNERS: dict[str, Planner] = {
    "inferline": plan_inferline,
    "cg-mean": plan_cg_mean,
    "cg-peak": plan_cg_peak,
    "exhaustive": plan_exhaustive,
}


def plan(
    name: str,
    pipeline: Pipeline,
    profiles: Profiles,
    trace: Trace,
    slo_s: float,
    *,
    seed: int = 0,
    margin: float = 0.0,
    latency_stat: LatencyStat = "median",
    max_seconds: float | None = None,
    machine: MachinePool | None = None,
    tail_bias: float = 1.0,
    batch_headroom: bool = False,
) -> Plan:
    """Run the planner called ``name``; ``max_seconds`` bounds the exhaustive search only;
    ``machine``: plan for that machine (docs/planner.md, "Planning for a machine");
    ``tail_bias``: plan for estimate × ``tail_bias`` ≤ SLO × (1 − ``margin``), for an
    Estimator measured to run that much low on this machine (:func:`tail_bias`; below 1
    counts as 1); ``batch_headroom``: then raise its batch sizes at no cost for the Tuner
    (:func:`with_batch_headroom`). Arguments are checked first (ConfigError naming the
    field)."""
    if name not in PLANNERS:
        raise ConfigError(
            f"unknown planner {name!r}; valid planners: {', '.join(PLANNERS)}", field="planner"
        )
    if not slo_s > 0:
        raise ConfigError(f"must be positive, got {slo_s}", field="slo_s")
    if not 0.0 <= margin < 1.0:
        raise ConfigError(f"must be a fraction in [0, 1), got {margin}", field="margin")
    if latency_stat not in ("median", "p99"):
        raise ConfigError(f"{latency_stat!r} is not one of median, p99", field="latency_stat")
    if max_seconds is not None and not max_seconds > 0:
        raise ConfigError(f"must be positive, got {max_seconds}", field="max_seconds")
    if not (math.isfinite(tail_bias) and tail_bias > 0):
        raise ConfigError(f"must be a positive ratio, got {tail_bias}", field="tail_bias")
    bias = max(tail_bias, 1.0)
    try:
        result = _run(name, pipeline, profiles, trace, slo_s, seed, latency_stat,
                      max_seconds, machine, biased_margin(margin, bias))  # fmt: skip
    except MachineInfeasibleError as exc:
        if isinstance(exc.unbounded, Plan):
            exc.unbounded = dataclasses.replace(exc.unbounded, margin=margin, tail_bias=bias)
        raise
    # the margin asked for, beside the bias it was applied with (the search itself ran
    # with the two combined)
    result = dataclasses.replace(result, margin=margin, tail_bias=bias)
    if batch_headroom:
        result = with_batch_headroom(
            result, pipeline, profiles, trace, seed=seed, latency_stat=latency_stat
        )
    return result


def _run(
    name: str,
    pipeline: Pipeline,
    profiles: Profiles,
    trace: Trace,
    slo_s: float,
    seed: int,
    latency_stat: LatencyStat,
    max_seconds: float | None,
    machine: MachinePool | None,
    margin: float,
) -> Plan:
    if name == "exhaustive" and max_seconds is not None:
        return plan_exhaustive(
            pipeline,
            profiles,
            trace,
            slo_s,
            seed=seed,
            margin=margin,
            latency_stat=latency_stat,
            max_seconds=max_seconds,
            machine=machine,
        )
    return PLANNERS[name](
        pipeline,
        profiles,
        trace,
        slo_s,
        seed=seed,
        margin=margin,
        latency_stat=latency_stat,
        machine=machine,
    )
