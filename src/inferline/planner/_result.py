"""The Planner's output: a configuration plus what the Estimator said about it and why."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inferline.pipeline import PipelineConfig, save_config
from inferline.profiles import MachinePool

__all__ = ["MachineUse", "Plan"]


@dataclass(frozen=True)
class MachineUse:
    """The machine a plan was made for and how much of it the plan takes.

    ``pool`` is the machine as the Planner saw it (``MachinePool.for_planning``): its
    ``frontend_reserve_cores`` is the front-end's share at ``rate_qps`` (the planning
    trace's mean rate) × ``frontend_cpu_s_per_query`` (measured by the Profiler when
    ``cpu_measured``, else the default) plus a floor.
    """

    pool: MachinePool
    rate_qps: float
    frontend_cpu_s_per_query: float
    cpu_measured: bool
    replica_threads: int
    gpu_replicas: int
    #: Cores the replicas keep busy on the planning trace (None: not estimated).
    replica_busy_cores: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """The ``machine`` section of a plan file and of ``plan --json``."""
        pool = self.pool
        return {
            "label": pool.label,
            "cores": pool.cores,
            "memory_bytes": pool.memory_bytes,
            "gpus": pool.gpus,
            "frontend_share_cores": pool.frontend_reserve_cores,
            "frontend_cpu_s_per_query": self.frontend_cpu_s_per_query,
            "frontend_cpu_measured": self.cpu_measured,
            "rate_qps": round(self.rate_qps, 4),
            "threads_per_core": pool.max_threads_per_core,
            "replica_cores": round(pool.replica_cores, 4),
            "max_replica_threads": pool.max_threads,
            "max_threads_per_replica": pool.max_threads_per_replica,
            "replica_threads": self.replica_threads,
            "gpu_replicas": self.gpu_replicas,
            "fit": pool.fit,
            "max_busy_fraction": pool.max_busy_fraction,
            "busy_cores_allowed": round(pool.busy_cores_allowed, 4),
            "replica_busy_cores": (
                None if self.replica_busy_cores is None else round(self.replica_busy_cores, 4)
            ),
        }

    def describe(self) -> str:
        """One line: ``machine: 2 cores, front-end share 0.16 core, replicas use 1 of 1.84``."""
        pool = self.pool
        where = f" ({pool.label})" if pool.label and pool.label != f"{pool.cores} cores" else ""
        gpus = (
            f", {self.gpu_replicas} of {pool.gpus} GPU(s)" if pool.gpus or self.gpu_replicas else ""
        )
        if pool.bounds_busy_cores:
            busy = "?" if self.replica_busy_cores is None else f"{self.replica_busy_cores:.2f}"
            use = (
                f"replicas busy {busy} of {pool.busy_cores_allowed:.2f} cores (target "
                f"{pool.max_busy_fraction * 100:.0f} % of {pool.cores}, less the front-end's "
                "share), "
                f"{self.replica_threads} threads of {pool.max_threads}"
                + (", contention simulated on shared cores" if pool.shares_cores else "")
            )
        elif pool.max_threads_per_core == 1:
            use = f"replicas use {self.replica_threads} of {pool.replica_cores:.2f} cores"
        else:
            use = (
                f"replicas use {self.replica_threads} threads of {pool.max_threads} "
                f"({pool.replica_cores:.2f} cores × {pool.max_threads_per_core:g} threads/core)"
            )
        cpu = "measured" if self.cpu_measured else "default"
        return (
            f"machine{where}: {pool.cores} cores, front-end share "
            f"{pool.frontend_reserve_cores:.2f} core ({self.rate_qps:.0f} q/s × "
            f"{self.frontend_cpu_s_per_query * 1000:.2f} ms CPU/query, {cpu}, + floor), "
            f"{use}{gpus}"
        )


@dataclass(frozen=True)
class Plan:
    """One planner's answer for a pipeline, an SLO and a planning trace.

    ``feasible`` is the Estimator's verdict on the planning trace (estimated P99 ×
    ``tail_bias`` ≤ SLO·(1 − margin)); the baselines may return infeasible plans (CG-Mean often
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
    #: The factor the estimate was corrected by (``plan(tail_bias=)``), 1 for none.
    tail_bias: float = 1.0
    #: Exhaustive search only: False when it stopped at its time budget.
    exhaustive_complete: bool | None = None
    #: The machine planned for (``machine=``), None when planned without one.
    machine: MachineUse | None = None
    #: Per stage, the replicas' busy fraction on the planning trace (the Estimator's
    #: ``utilization``); None when the run that judged the plan stopped early.
    estimated_utilization: dict[str, float] | None = None

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
            "tail_bias": self.tail_bias,
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
        out["machine"] = self.machine.as_dict() if self.machine is not None else None
        return out

    def save(self, path: str | Path) -> None:
        """Write a plan file; ``inferline.pipeline.load_config`` (and ``simulate``) reads it."""
        extra: dict[str, Any] = {
            "planner": self.planner,
            "slo_s": self.slo_s,
            "margin": self.margin,
            "tail_bias": self.tail_bias,
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
        if self.machine is not None:
            extra["machine"] = self.machine.as_dict()
        extra["log"] = list(self.log)
        save_config(self.config, path, extra=extra)
