"""The Estimator: a pure function of (pipeline, profiles, configuration, trace, seed)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from inferline._bundle import check_config_for
from inferline.errors import ConfigError
from inferline.estimator._run import KernelRun, PreparedTrace, StageArrays
from inferline.pipeline import Pipeline, PipelineConfig
from inferline.profiles import (
    LatencyStat,
    MachinePool,
    Profiles,
    frontend_cpu_s_per_query,
)
from inferline.workload import Trace

__all__ = [
    "Estimator",
    "PreparedTrace",
    "QueuePolicy",
    "ServiceTime",
    "SimulationResult",
    "StageStats",
    "simulate",
]

QueuePolicy = Literal["edf", "fifo"]
PathMode = Literal["auto", "recorded", "sampled"]
ServiceTime = Literal["fixed", "lognormal", "exponential"]

# z-score of the 99th percentile of a standard normal: p99 = median · exp(_Z99 · σ) for a lognormal
_Z99 = 2.3263478740408408


@dataclass(frozen=True)
class StageStats:
    utilization: float
    mean_queue_s: float
    mean_batch_size: float
    visits: int
    batches: int

    def as_dict(self) -> dict[str, float | int]:
        return {
            "utilization": self.utilization,
            "mean_queue_s": self.mean_queue_s,
            "mean_batch_size": self.mean_batch_size,
            "visits": self.visits,
            "batches": self.batches,
        }


@dataclass(frozen=True)
class SimulationResult:
    """Per-query latencies plus per-stage statistics of one simulated run."""

    arrival_s: np.ndarray
    latency_s: np.ndarray  # NaN for queries not simulated (run stopped early)
    slo_s: float | None
    stages: dict[str, StageStats]
    cost_per_hour: float
    stopped_early: bool = False
    misses_counted: int = field(default=0)

    @property
    def queries(self) -> int:
        return int(self.latency_s.shape[0])

    def percentile_s(self, q: float) -> float:
        if self.stopped_early:
            return math.inf
        return float(np.percentile(self.latency_s, q))

    @property
    def p50_s(self) -> float:
        return self.percentile_s(50)

    @property
    def p95_s(self) -> float:
        return self.percentile_s(95)

    @property
    def p99_s(self) -> float:
        return self.percentile_s(99)

    @property
    def mean_s(self) -> float:
        return float(np.mean(self.latency_s)) if not self.stopped_early else math.inf

    @property
    def miss_rate(self) -> float:
        """Fraction of queries slower than the SLO (a lower bound if stopped early)."""
        if self.slo_s is None:
            return 0.0
        if self.stopped_early:
            return self.misses_counted / self.queries
        return float(np.mean(self.latency_s > self.slo_s))

    def summary(self) -> dict[str, Any]:
        return {
            "queries": self.queries,
            "p50_s": self.p50_s,
            "p95_s": self.p95_s,
            "p99_s": self.p99_s,
            "mean_s": self.mean_s,
            "slo_s": self.slo_s,
            "miss_rate": self.miss_rate,
            "cost_per_hour": self.cost_per_hour,
            "stopped_early": self.stopped_early,
            "stages": {name: s.as_dict() for name, s in self.stages.items()},
        }


class Estimator:
    """Prepares a trace once, then simulates many configurations of the same pipeline.

    Path choice: with ``paths="auto"`` a trace that carries recorded paths is
    replayed as recorded, otherwise each query's path is drawn from the edge
    probabilities with ``seed``. Prepared state is read-only, so ``run`` is pure.

    Service time: ``fixed`` (default) uses the profiled ``latency_stat`` of the
    actual batch size. ``lognormal`` draws each batch's time from a lognormal
    whose median and P99 are the profiled ones, modelling measured jitter.
    ``exponential`` multiplies the profiled latency by an Exp(1) draw (mean 1):
    with batch size 1 a stage is then exactly an M/M/c queue, which is how the
    simulator is checked against queueing theory. Draws are per (query, stage)
    from a stream separate from the path draws, so paths do not change.

    Engine overhead: when the profiles carry a measured :class:`EngineOverhead`
    (docs/profiler.md), its per-batch part is already inside every profiled batch
    latency and its per-query part is added once to every query's latency: drawn per
    query (seeded, own stream) from the distribution measured nearest the trace's mean
    rate, or its median.
    ``engine_overhead=False`` leaves both out (the pure model of the profiles).

    Shared cores: with ``machine`` the replicas of CPU hardware share its cores, less
    the front-end's share at the trace's mean rate (the CPU per query the Profiler
    measured, ``MachinePool.shared_cores_at``). A busy batch asks for its replica's
    threads; while the busy batches ask for more cores than there are, each runs
    proportionally slower (processor sharing, see ``_kernel``). Without ``machine``
    every replica is a dedicated unit, as in the paper. Profiles measured in isolation
    are the work a batch needs; profiles calibrated on a loaded machine already carry
    its contention, so estimate those without ``machine``.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        profiles: Profiles,
        trace: Trace,
        *,
        slo_s: float | None = None,
        seed: int = 0,
        queue_policy: QueuePolicy = "edf",
        latency_stat: LatencyStat = "median",
        paths: PathMode = "auto",
        service_time: ServiceTime = "fixed",
        engine_overhead: bool = True,
        machine: MachinePool | None = None,
    ) -> None:
        if queue_policy not in ("edf", "fifo"):
            raise ConfigError(
                f"queue policy {queue_policy!r} is not one of edf, fifo", field="queue_policy"
            )
        if latency_stat not in ("median", "p99"):
            raise ConfigError(
                f"latency statistic {latency_stat!r} is not one of median, p99",
                field="latency_stat",
            )
        if service_time not in ("fixed", "lognormal", "exponential"):
            raise ConfigError(
                f"service time model {service_time!r} is not one of fixed, lognormal, exponential",
                field="service_time",
            )
        if service_time == "lognormal" and latency_stat != "median":
            raise ConfigError(
                "the lognormal service time is fitted to the profiled median and P99; "
                "use it with latency_stat='median'",
                field="latency_stat",
            )
        if slo_s is not None and not slo_s > 0:
            raise ConfigError(f"the SLO must be positive seconds, got {slo_s}", field="slo_s")
        self.pipeline = pipeline
        self.profiles = profiles if engine_overhead else profiles.with_overhead(None)
        overhead = self.profiles.overhead
        self._extra_s = (
            overhead.per_query_draws(
                trace.n_queries, np.random.default_rng([seed, 2]), trace.mean_rate_qps
            )
            if overhead is not None
            else None
        )
        self._extra_min_s = overhead.per_query_min_s if overhead is not None else 0.0
        self.trace = trace
        self.machine = machine
        if machine is not None:
            cpu, _ = frontend_cpu_s_per_query(overhead)
            rate = float(trace.mean_rate_qps)  # inf for a trace of one instant: no rate
            self.shared_cores = machine.shared_cores_at(rate if math.isfinite(rate) else 0.0, cpu)
        else:
            self.shared_cores = math.inf
        self.slo_s = slo_s
        self.queue_policy = queue_policy
        self.latency_stat: LatencyStat = latency_stat
        names = pipeline.stage_names
        position = {n: i for i, n in enumerate(names)}

        use_recorded = paths == "recorded" or (paths == "auto" and trace.path_ids is not None)
        if use_recorded:
            if trace.path_ids is None:
                raise ConfigError(
                    "the trace has no recorded paths", source=trace.source, field="path"
                )
            table = pipeline.paths_to_masks(trace.path_table, source=trace.source)
            masks = table[trace.path_ids]
            visited = ((masks[:, None] >> np.arange(len(names))) & 1).astype(bool)
        else:
            visited = pipeline.sample_visited(trace.n_queries, np.random.default_rng(seed))
            masks = (visited.astype(np.int64) << np.arange(len(names), dtype=np.int64)).sum(axis=1)
        self._visit_mask = np.ascontiguousarray(masks, dtype=np.int64)
        pending = np.zeros((trace.n_queries, len(names)), dtype=np.int8)
        for name in names:
            for pred in pipeline.predecessors(name):
                pending[:, position[name]] += visited[:, position[pred]]
        pending[~visited] = 0
        self._pending = pending
        self._capacity = visited.sum(axis=0).astype(np.int64)
        succ_ptr = [0]
        succ_idx: list[int] = []
        for name in names:
            succ_idx.extend(position[s] for s in pipeline.successors(name))
            succ_ptr.append(len(succ_idx))
        self._succ_ptr = np.array(succ_ptr, dtype=np.int64)
        self._succ_idx = np.array(succ_idx or [0], dtype=np.int64)
        self._arrival = np.ascontiguousarray(trace.arrival_s, dtype=np.float64)
        self.service_time: ServiceTime = service_time
        noise = np.random.default_rng([seed, 1])
        shape = trace.n_queries * len(names)
        if service_time == "exponential":
            self._log_scale = np.log(noise.exponential(1.0, shape))
        elif service_time == "lognormal":
            self._log_scale = noise.standard_normal(shape)
        else:
            self._log_scale = np.zeros(0)

    @property
    def prepared(self) -> PreparedTrace:
        return PreparedTrace(
            arrival_s=self._arrival,
            visit_mask=self._visit_mask,
            pending=self._pending,
            succ_ptr=self._succ_ptr,
            succ_idx=self._succ_idx,
            stage_capacity=self._capacity,
            log_scale=self._log_scale,
            extra_s=self._extra_s,
        )

    @property
    def stage_visit_counts(self) -> dict[str, int]:
        """How many queries of the trace visit each stage (recorded or sampled paths)."""
        return {n: int(c) for n, c in zip(self.pipeline.stage_names, self._capacity, strict=True)}

    @property
    def stage_visits(self) -> int:
        """Total (query, stage) visits one run simulates."""
        return int(self._capacity.sum())

    def _stage_arrays(self, config: PipelineConfig, *, source: str = "<config>") -> StageArrays:
        """``config`` as the kernel sees it (checked against the pipeline and profiles)."""
        check_config_for(config, self.pipeline, self.profiles, source)
        names = self.pipeline.stage_names
        cfgs = [config.stages[n] for n in names]
        bmax = max(c.batch_size for c in cfgs)
        latency = np.zeros((len(names), bmax + 1))
        for i, (name, c) in enumerate(zip(names, cfgs, strict=True)):
            profile = self.profiles.get(name, c.hardware)
            latency[i, : c.batch_size + 1] = profile.latency_table(c.batch_size, self.latency_stat)
        sigma = np.ones_like(latency)
        if self.service_time == "lognormal":
            for i, (name, c) in enumerate(zip(names, cfgs, strict=True)):
                p99 = self.profiles.get(name, c.hardware).latency_table(c.batch_size, "p99")
                sigma[i, 1 : c.batch_size + 1] = (
                    np.log(p99[1:] / latency[i, 1 : c.batch_size + 1]) / _Z99
                )
        machine = self.machine
        demand = (
            None
            if machine is None
            else np.array([machine.cores_per_busy_replica(c.hardware) for c in cfgs])
        )
        return StageArrays(
            latency=latency,
            sigma=sigma,
            max_batch=np.array([c.batch_size for c in cfgs], dtype=np.int64),
            replicas=np.array([c.replicas for c in cfgs], dtype=np.int64),
            demand=demand,
            shared_cores=self.shared_cores,
            run_queues=_run_queues(machine, demand),
            balance_s=0.0 if machine is None else machine.idle_balance_s,
        )

    def _start(
        self,
        stages: StageArrays,
        *,
        slot_cap: np.ndarray | None = None,
        max_misses: int | None = None,
    ) -> KernelRun:
        """A simulation of the trace from ``stages``, ready to ``advance``.

        ``slot_cap``: replica slots per stage (default: exactly the starting replicas);
        ``max_misses``: stop once more queries than this missed the SLO.
        """
        return KernelRun(
            self.prepared,
            stages=stages,
            slot_cap=stages.replicas if slot_cap is None else slot_cap,
            fifo=self.queue_policy == "fifo",
            # a miss counted here is certain: every query gets at least the smallest overhead
            slo_s=math.inf if self.slo_s is None else float(self.slo_s) - self._extra_min_s,
            max_misses=-1 if max_misses is None or self.slo_s is None else int(max_misses),
        )

    def run(
        self, config: PipelineConfig, *, max_misses: int | None = None, source: str = "<config>"
    ) -> SimulationResult:
        """Simulate ``config``; stop early once more than ``max_misses`` queries miss the SLO."""
        names = self.pipeline.stage_names
        stages_in = self._stage_arrays(config, source=source)
        sim = self._start(stages_in, max_misses=max_misses)
        sim.advance(math.inf)
        finish, busy, wait = sim.finish, sim.busy_s, sim.wait_s
        visits, batches, stopped = sim.visits, sim.batches, sim.stopped
        replicas = stages_in.replicas
        latency_s = finish - self._arrival
        if self._extra_s is not None:
            latency_s += self._extra_s
        horizon = float(np.nanmax(finish) - self._arrival[0]) if not stopped else 0.0
        stages = {}
        for i, name in enumerate(names):
            span = horizon * replicas[i]
            stages[name] = StageStats(
                utilization=float(busy[i] / span) if span > 0 else 0.0,
                mean_queue_s=float(wait[i] / visits[i]) if visits[i] else 0.0,
                mean_batch_size=float(visits[i] / batches[i]) if batches[i] else 0.0,
                visits=int(visits[i]),
                batches=int(batches[i]),
            )
        return SimulationResult(
            arrival_s=self._arrival,
            latency_s=latency_s,
            slo_s=self.slo_s,
            stages=stages,
            cost_per_hour=config.cost_per_hour(self.profiles.hardware.price_per_hour),
            stopped_early=bool(stopped),
            misses_counted=sim.misses,
        )


def simulate(
    pipeline: Pipeline,
    profiles: Profiles,
    config: PipelineConfig,
    trace: Trace,
    *,
    slo_s: float | None = None,
    seed: int = 0,
    queue_policy: QueuePolicy = "edf",
    latency_stat: LatencyStat = "median",
    service_time: ServiceTime = "fixed",
    engine_overhead: bool = True,
    machine: MachinePool | None = None,
) -> SimulationResult:
    """Estimate the latency of every query in ``trace`` under ``config`` (SPEC §2.5)."""
    estimator = Estimator(
        pipeline,
        profiles,
        trace,
        slo_s=slo_s,
        seed=seed,
        queue_policy=queue_policy,
        latency_stat=latency_stat,
        service_time=service_time,
        engine_overhead=engine_overhead,
        machine=machine,
    )
    return estimator.run(config)


def _run_queues(machine: MachinePool | None, demand: np.ndarray | None) -> int:
    """Run queues the kernel keeps for the shared cores: one per core under ``per-core``
    sharing when every replica sharing them has one thread (a replica of several threads
    spreads over several cores, which one queue per batch cannot show), else one."""
    if machine is None or demand is None or machine.core_sharing != "per-core":
        return 1
    shared = demand[demand > 0]
    return machine.cores if shared.size and bool((shared <= 1.0).all()) else 1
