"""The Planner's output: a configuration plus what the Estimator said about it and why."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inferline.pipeline import PipelineConfig, save_config

__all__ = ["Plan"]


@dataclass(frozen=True)
class Plan:
    """One planner's answer for a pipeline, an SLO and a planning trace.

    ``feasible`` is the Estimator's verdict on the planning trace (estimated P99
    ≤ SLO·(1 − margin)); the baselines may return infeasible plans (CG-Mean often
    does), the InferLine planner raises :class:`~inferline.errors.InfeasibleError`
    instead. ``log`` explains every accepted step.
    """

    config: PipelineConfig
    feasible: bool
    cost_per_hour: float
    estimated_p50_s: float
    estimated_p99_s: float
    planner: str
    planning_time_s: float
    estimator_calls: int
    log: tuple[str, ...] = ()
    slo_s: float | None = None
    margin: float = 0.0
    estimated_miss_rate: float | None = None
    #: Exhaustive search only: False when it stopped at its time budget.
    exhaustive_complete: bool | None = None

    def stages(self) -> dict[str, dict[str, Any]]:
        return {
            name: {"hardware": c.hardware, "batch_size": c.batch_size, "replicas": c.replicas}
            for name, c in self.config.stages.items()
        }

    def summary(self) -> dict[str, Any]:
        """The ``--json`` form: verdict, cost, latency estimate, effort and per-stage settings."""
        out: dict[str, Any] = {
            "planner": self.planner,
            "feasible": self.feasible,
            "slo_s": self.slo_s,
            "margin": self.margin,
            "cost_per_hour": self.cost_per_hour,
            "estimated_p50_s": self.estimated_p50_s,
            "estimated_p99_s": self.estimated_p99_s,
            "estimated_miss_rate": self.estimated_miss_rate,
            "planning_time_s": self.planning_time_s,
            "estimator_calls": self.estimator_calls,
            "stages": self.stages(),
            "log": list(self.log),
        }
        if self.exhaustive_complete is not None:
            out["exhaustive_complete"] = self.exhaustive_complete
        return out

    def save(self, path: str | Path) -> None:
        """Write a plan file; ``inferline.pipeline.load_config`` (and ``simulate``) reads it."""
        extra: dict[str, Any] = {
            "planner": self.planner,
            "slo_s": self.slo_s,
            "margin": self.margin,
            "feasible": self.feasible,
            "cost_per_hour": self.cost_per_hour,
            "estimated": {
                "p50_s": self.estimated_p50_s,
                "p99_s": self.estimated_p99_s,
                "miss_rate": self.estimated_miss_rate,
            },
            "planning_time_s": self.planning_time_s,
            "estimator_calls": self.estimator_calls,
        }
        if self.exhaustive_complete is not None:
            extra["exhaustive_complete"] = self.exhaustive_complete
        extra["log"] = list(self.log)
        save_config(self.config, path, extra=extra)
