"""``inferline bench estimator``: Estimator throughput and agreement with the SimPy model (SPEC §4).

Workload: a 4-stage pipeline with fan-out, a join and conditional edges::

    ingest ──> detect ───(p=0.3)──┐
       └─────> classify ─(p=0.5)──┴─> refine

``refine`` runs for a query when detect or classify asks for it (65 % of
queries) and then waits for both of them (join). Arrivals are Gamma with
cv = 2 (the paper's CV = 4); every stage batches (max batch 4–8) and detect
has 2 replicas, at roughly 50–80 % utilisation.

Figures: ``stage_visits_per_s`` is the (query, stage) visits simulated per
second of ``Estimator.run`` on a long trace (median of ``repeats`` timed runs
after an untimed warm-up, so JIT compilation is excluded); ``speedup_vs_simpy``
compares ``simulate_with_simpy`` with ``Estimator.run`` on the first
``simpy_queries`` queries of the same trace, and ``identical_to_simpy`` says
whether their per-query latencies are equal bit for bit.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np
from rich.table import Table

from inferline.bench.simpy_model import simulate_with_simpy
from inferline.estimator import Estimator
from inferline.pipeline import Edge, Pipeline, PipelineConfig, Stage, StageConfig
from inferline.profiles import BatchProfile, HardwareCatalogue, HardwareType, ProfilePoint, Profiles
from inferline.workload import Trace, gamma_trace

__all__ = ["benchmark_workload", "run_estimator_benchmark", "tables"]

_HARDWARE = "cpu-1"
_BATCH_SIZES = (1, 2, 4, 8, 16)
# stage: (fixed latency s, per-query latency s, max batch, replicas)
_STAGES: dict[str, tuple[float, float, int, int]] = {
    "ingest": (0.0010, 0.0002, 8, 1),
    "detect": (0.0020, 0.0010, 8, 2),
    "classify": (0.0010, 0.0005, 4, 1),
    "refine": (0.0015, 0.0008, 4, 1),
}


def benchmark_workload() -> tuple[Pipeline, Profiles, PipelineConfig]:
    """The benchmark's pipeline, linear-in-batch-size profiles and configuration."""
    pipeline = Pipeline(
        name="bench",
        stages=tuple(Stage(name) for name in _STAGES),
        edges=(
            Edge("ingest", "detect"),
            Edge("ingest", "classify"),
            Edge("detect", "refine", 0.3),
            Edge("classify", "refine", 0.5),
        ),
    )
    hardware = HardwareCatalogue((HardwareType(_HARDWARE, price_per_hour=0.05),))
    entries = {}
    for name, (fixed, per_query, _, _) in _STAGES.items():
        points = tuple(
            ProfilePoint(b, fixed + per_query * b, 1.2 * (fixed + per_query * b))
            for b in _BATCH_SIZES
        )
        entries[(name, _HARDWARE)] = BatchProfile(name, _HARDWARE, points, source="synthetic")
    profiles = Profiles(hardware=hardware, entries=entries)
    config = PipelineConfig(
        stages={
            name: StageConfig(hardware=_HARDWARE, batch_size=batch, replicas=replicas)
            for name, (_, _, batch, replicas) in _STAGES.items()
        }
    )
    return pipeline, profiles, config


def _time_runs(estimator: Estimator, config: PipelineConfig, repeats: int) -> list[float]:
    """Wall times of ``repeats`` runs, after one untimed warm-up run."""
    estimator.run(config)
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        estimator.run(config)
        times.append(time.perf_counter() - start)
    return times


def run_estimator_benchmark(
    *,
    duration_s: float = 1500.0,
    rate_qps: float = 700.0,
    seed: int = 0,
    repeats: int = 3,
    simpy_queries: int = 100_000,
) -> dict[str, Any]:
    """Run the estimator benchmark and return its figures (see the module docstring)."""
    pipeline, profiles, config = benchmark_workload()
    trace = gamma_trace(rate_qps, 2.0, duration_s, seed)
    estimator = Estimator(pipeline, profiles, trace, seed=seed)
    times = _time_runs(estimator, config, repeats)
    estimator_s = statistics.median(times)
    result = estimator.run(config)

    small = Trace.from_arrivals(trace.arrival_s[: max(1, simpy_queries)])
    small_estimator = Estimator(pipeline, profiles, small, seed=seed)
    small_estimator_s = statistics.median(_time_runs(small_estimator, config, repeats))
    small_latency = small_estimator.run(config).latency_s
    start = time.perf_counter()
    simpy_latency = simulate_with_simpy(small_estimator, config)
    simpy_s = time.perf_counter() - start
    identical = bool(np.array_equal(small_latency, simpy_latency))
    max_abs_diff_s = float(np.max(np.abs(small_latency - simpy_latency)))

    return {
        "queries": trace.n_queries,
        "stage_visits": estimator.stage_visits,
        "estimator_s": estimator_s,
        "stage_visits_per_s": estimator.stage_visits / estimator_s,
        # the fastest run: less sensitive to other processes on a shared machine
        "stage_visits_per_s_best": estimator.stage_visits / min(times),
        "simpy_queries": small.n_queries,
        "simpy_stage_visits": small_estimator.stage_visits,
        "simpy_s": simpy_s,
        "estimator_on_simpy_trace_s": small_estimator_s,
        "speedup_vs_simpy": simpy_s / small_estimator_s,
        "identical_to_simpy": identical,
        "max_abs_diff_s": max_abs_diff_s,
        "rate_qps": rate_qps,
        "duration_s": duration_s,
        "cv": 2.0,
        "seed": seed,
        "p99_s": result.p99_s,
        "utilization": {name: s.utilization for name, s in result.stages.items()},
        "mean_batch_size": {name: s.mean_batch_size for name, s in result.stages.items()},
    }


def tables(figures: dict[str, Any]) -> list[Table]:
    """The readable output: every figure of ``figures`` (as ``--json`` prints them) a row."""
    table = Table(title="estimator benchmark", show_header=False)
    for key, value in figures.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v:.3g}" for k, v in value.items())
        table.add_row(key, f"{value:,.4g}" if isinstance(value, float) else str(value))
    return [table]
