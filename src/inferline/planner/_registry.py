"""Planners by name, for the command line and the sweeps."""

from __future__ import annotations

from typing import Protocol

from inferline.errors import ConfigError
from inferline.pipeline import Pipeline
from inferline.planner._baselines import plan_cg_mean, plan_cg_peak
from inferline.planner._exhaustive import plan_exhaustive
from inferline.planner._inferline import plan_inferline
from inferline.planner._result import Plan
from inferline.profiles import LatencyStat, Profiles
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
) -> Plan:
    """Run the planner called ``name``; ``max_seconds`` bounds the exhaustive search only."""
    if name not in PLANNERS:
        raise ConfigError(
            f"unknown planner {name!r}; valid planners: {', '.join(PLANNERS)}",
            source="<argument>",
            field="planner",
        )
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
        )
    return PLANNERS[name](
        pipeline, profiles, trace, slo_s, seed=seed, margin=margin, latency_stat=latency_stat
    )
