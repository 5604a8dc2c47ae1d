"""Measure the serving engine's own overhead on the pipeline's DAG with no-op stages.

The same DAG is served by the real engine (``inferline serve`` in a child process, HTTP
on 127.0.0.1) with a :class:`~inferline.profiler._relay.Relay` at every stage; the
sample requests, each carrying its recorded path, are replayed open loop at a low rate
so that queries almost never queue. Two numbers come out (docs/profiler.md):

- **per batch**: the median over stages of (time in the stage − ``predict``), from the
  engine's ``/v2/control/stats``, minus what the Profiler's own harness already counts
  in a profiled batch (the relay's round trip − its ``predict``): the engine's dispatch
  and routing work per batch, which keeps the replica from its next batch;
- **per query**: each query's client-side latency minus the relay path's estimate (its
  critical path of relay round trips plus the per-batch part): HTTP parsing and answer,
  admission, the loopback. Median and 99th percentile.

A third comes from the operating system: the **front-end's CPU per query**. At each
rate, the CPU time of the ``serve`` process (its replicas are processes of their own)
over the rounds, per second of wall time, is the cores it used; a line through
(achieved rate, cores used) over the rates gives the CPU per query as its slope (the
intercept is the idle process: event loop, control plane). With one rate, or a slope
the noise made non-positive, the smallest CPU time per query over the rates. A Planner
keeps that share of the machine for the front-end (``profiles.MachinePool.for_planning``).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from inferline.engine import replay, replay_summary, resources_for
from inferline.engine.process import start_engine
from inferline.errors import ConfigError, InferLineError
from inferline.pipeline import MeasuredPaths, Pipeline
from inferline.profiler._errors import ProfilerError
from inferline.profiler._harness import StageWorker
from inferline.profiler._measure import _Pool, measure_batch_size
from inferline.profiler._relay import PATH_TENSOR, relay_module_source
from inferline.profiler._samples import parse_requests
from inferline.profiler._stats import RepetitionPolicy
from inferline.profiles import OVERHEAD_PERCENTILES, EngineOverhead

__all__ = ["OverheadOptions", "OverheadResult", "measure_overhead", "with_path"]

_RELAY_HARDWARE = "cpu-1"


@dataclass(frozen=True)
class OverheadOptions:
    """How the no-op DAG is loaded: at each rate, ``rounds`` Poisson runs of
    ``duration_s / rounds`` seconds after ``warmup_s`` of warm-up (times in seconds)."""

    rates_qps: tuple[float, ...] = (50.0, 150.0, 400.0)
    duration_s: float = 9.0  # per rate
    rounds: int = 3
    warmup_s: float = 1.0
    seed: int = 0
    start_timeout_s: float = 60.0

    def __post_init__(self) -> None:
        rates = tuple(sorted(float(r) for r in self.rates_qps))
        object.__setattr__(self, "rates_qps", rates)
        if not rates or any(not (math.isfinite(r) and r > 0) for r in rates):
            raise ConfigError(
                f"overhead rates must be positive q/s, got {self.rates_qps}",
                source="<argument>",
                field="--overhead-rate",
            )
        if not self.duration_s > 0 or self.rounds < 1 or not self.warmup_s >= 0:
            raise ConfigError(
                "the overhead run needs a positive duration, at least one round and a "
                "non-negative warm-up",
                source="<argument>",
                field="--overhead-duration-s",
            )


@dataclass(frozen=True)
class OverheadResult:
    overhead: EngineOverhead
    details: dict[str, Any]


def with_path(body: dict[str, Any], path: Sequence[str]) -> dict[str, Any]:
    """``body`` plus the ``inferline_path`` tensor a Relay routes by."""
    tensor = {"name": PATH_TENSOR, "shape": [1], "datatype": "BYTES", "data": ["+".join(path)]}
    return {**body, "inputs": [*body["inputs"], tensor]}


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of process ``pid`` (all its threads), None where unreadable."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return None


def _cpu_per_query(use: list[tuple[float, int, float]]) -> float | None:
    """The slope of cores used against queries per second (see the module doc)."""
    if not use:
        return None
    per_query = min(cpu / queries for cpu, queries, _ in use)
    if len(use) > 1:
        rates = np.array([queries / wall for _, queries, wall in use])
        cores = np.array([cpu / wall for cpu, _, wall in use])
        if np.ptp(rates) > 0:
            slope = float(np.polyfit(rates, cores, 1)[0])
            if math.isfinite(slope) and slope > 0:
                per_query = slope
    return round(per_query, 7)


def _poisson(rate_qps: float, duration_s: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    gaps = rng.exponential(1.0 / rate_qps, int(rate_qps * duration_s * 1.5) + 10)
    arrivals = np.cumsum(gaps)
    return arrivals[arrivals < duration_s]


def _write_relay_bundle(folder: Path, pipeline: Pipeline, batch_size: int) -> tuple[Path, Path]:
    source, classes = relay_module_source({s: pipeline.successors(s) for s in pipeline.stage_names})
    (folder / "inferline_relay_stages.py").write_text(source, encoding="utf-8")
    spec = {
        "name": pipeline.name,
        "stages": [
            {"name": s, "model": f"inferline_relay_stages:{classes[s]}"}
            for s in pipeline.stage_names
        ],
        "edges": [{"from": e.source, "to": e.target} for e in pipeline.edges],
    }
    (folder / "pipeline.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    plan = {
        "stages": {
            s: {"hardware": _RELAY_HARDWARE, "batch_size": batch_size, "replicas": 1}
            for s in pipeline.stage_names
        }
    }
    (folder / "plan.yaml").write_text(yaml.safe_dump(plan, sort_keys=False))
    return folder / "pipeline.yaml", folder / "plan.yaml"


async def _relay_round_trip(
    folder: Path, pipeline: Pipeline, requests: list[Any]
) -> tuple[float, float]:
    """Median round trip and median predict of a batch of 1 through a relay in the harness."""
    stage = pipeline.sources[0]
    worker = StageWorker(
        stage,
        f"inferline_relay_stages:Relay{pipeline.stage_names.index(stage)}",
        _RELAY_HARDWARE,
        resources_for(_RELAY_HARDWARE),
        pipeline.successors(stage),
        folder,
    )
    try:
        await worker.start()
        summary = await measure_batch_size(
            worker,
            _Pool(requests),
            1,
            RepetitionPolicy(min_reps=200, max_reps=2000, min_time_s=0.5, warmup=20),
        )
    finally:
        await worker.close()
    assert summary.predict_median_s is not None
    return summary.median_s, summary.predict_median_s


def measure_overhead(
    pipeline: Pipeline,
    paths: MeasuredPaths,
    bodies: Sequence[dict[str, Any]],
    *,
    options: OverheadOptions,
    key: str,
    measured_on: str,
    run_async: Callable[[Any], Any],
    status: Callable[[str], None] = lambda _msg: None,
) -> OverheadResult:
    """Serve the no-op DAG, replay the samples at a low rate, fit the two overheads."""
    relay_bodies = [with_path(b, paths.path_of(i)) for i, b in enumerate(bodies)]
    encoded = [json.dumps(b, separators=(",", ":")).encode() for b in relay_bodies]
    with tempfile.TemporaryDirectory(prefix="inferline-overhead-") as tmp:
        folder = Path(tmp)
        bundle, plan = _write_relay_bundle(folder, pipeline, batch_size=8)
        status("timing a no-op relay stage in the harness")
        requests = parse_requests(encoded, {}, "overhead measurement")
        rt_s, predict_s = run_async(_relay_round_trip(folder, pipeline, requests))
        harness_s = max(0.0, rt_s - predict_s)
        per_round_s = options.duration_s / options.rounds
        measured: list[tuple[float, list[tuple[int, int, Any, dict[str, Any]]]]] = []
        cpu_use: dict[float, tuple[float, int, float]] = {}  # rate: (cpu s, queries, wall s)
        saturated: float | None = None
        try:
            with start_engine(
                bundle, plan, "--slo-s", "10", start_timeout_s=options.start_timeout_s
            ) as engine:
                offset = 0
                for rate in options.rates_qps:
                    status(f"serving the DAG with no-op stages at {rate:g} q/s")
                    warm = _poisson(rate, options.warmup_s, options.seed + 1)
                    if warm.size:
                        replay(engine.url, warm, encoded, slo_s=10.0, model=pipeline.name)
                    results = []
                    cpu_s, cpu_queries, wall_s = 0.0, 0, 0.0
                    for k in range(options.rounds):
                        arrivals = _poisson(rate, per_round_s, options.seed + 10 * k)
                        query_bodies = [
                            encoded[(offset + i) % len(encoded)] for i in range(arrivals.size)
                        ]
                        engine.reset_stats()
                        before, started = _cpu_seconds(engine.process.pid), time.monotonic()
                        result = replay(
                            engine.url, arrivals, query_bodies, slo_s=10.0, model=pipeline.name
                        )
                        after, ended = _cpu_seconds(engine.process.pid), time.monotonic()
                        if before is not None and after is not None:
                            cpu_s += after - before
                            cpu_queries += arrivals.size
                            wall_s += ended - started
                        stats = engine.stats()
                        results.append((offset, int(arrivals.size), result, stats))
                        offset += arrivals.size
                    summary = replay_summary(results[-1][2])
                    if summary["errors"]:
                        first = next(iter(results[-1][2].errors.values()), "")
                        raise ProfilerError(
                            f"the no-op pipeline answered {summary['errors']} of "
                            f"{summary['sent']} queries with errors (first: {first})"
                        )
                    if summary["achieved_rate"] < 0.9 * summary["offered_rate"]:
                        saturated = rate  # the front-end cannot keep up: stop here
                        break
                    measured.append((rate, results))
                    if cpu_queries and wall_s > 0:
                        cpu_use[rate] = (cpu_s, cpu_queries, wall_s)
        except InferLineError:
            raise
        except (OSError, RuntimeError, TimeoutError) as exc:
            raise ProfilerError(f"could not serve the no-op pipeline: {exc}") from None
    if not measured:
        raise ProfilerError(
            f"the engine could not keep up with the no-op pipeline even at "
            f"{options.rates_qps[0]:g} q/s; lower --overhead-rate"
        )

    def per_batch_of(results: list[tuple[int, int, Any, dict[str, Any]]]) -> float:
        values = []
        for _, _, _, stats in results:
            excess = [
                max(0.0, st["overhead_s"]["p50"] - harness_s)
                for st in stats["stages"].values()
                if st["overhead_s"]["p50"] is not None
            ]
            values.append(float(np.median(excess)) if excess else 0.0)
        return float(np.median(values))

    # the engine's per-batch work at the lowest rate, without front-end queueing; what the
    # front-end adds at higher rates shows in their per-query distributions
    per_batch_s = per_batch_of(measured[0][1])
    stage_time = dict.fromkeys(pipeline.stage_names, rt_s + per_batch_s)
    by_rate: list[tuple[float, tuple[float, ...]]] = []
    details_rates: list[dict[str, Any]] = []
    for rate, results in measured:
        rows = []
        for offset, count, result, _ in results:
            estimate = np.array(
                [
                    pipeline.longest_path_s(stage_time, paths.path_of((offset + i) % len(bodies)))
                    for i in range(count)
                ]
            )
            residual = result.latency_s - estimate
            residual = np.maximum(residual[np.isfinite(residual)], 0.0)
            rows.append(np.percentile(residual, OVERHEAD_PERCENTILES))
        # per percentile, the median over rounds: one round caught in a stall of the machine
        # (another job, the host) does not decide the tail; medians of non-decreasing rows
        # are non-decreasing
        values = tuple(round(float(v), 7) for v in np.median(np.array(rows), axis=0))
        by_rate.append((rate, values))
        details_rates.append(
            {
                "rate_qps": rate,
                "per_batch_s": per_batch_of(results),
                "per_query_p50_s": float(np.interp(50.0, OVERHEAD_PERCENTILES, values)),
                "per_query_p99_s": float(np.interp(99.0, OVERHEAD_PERCENTILES, values)),
                "client_p99_s_per_round": [replay_summary(r[2])["p99_s"] for r in results],
                "frontend_cpu_s_per_query": (
                    cpu_use[rate][0] / cpu_use[rate][1] if rate in cpu_use else None
                ),
                "frontend_cores_used": (
                    cpu_use[rate][0] / cpu_use[rate][2] if rate in cpu_use else None
                ),
                "queries": sum(r[1] for r in results),
            }
        )
    base = by_rate[0][1]
    overhead = EngineOverhead(
        per_batch_s=round(per_batch_s, 7),
        per_query_s=round(float(np.interp(50.0, OVERHEAD_PERCENTILES, base)), 7),
        per_query_p99_s=round(float(np.interp(99.0, OVERHEAD_PERCENTILES, base)), 7),
        per_query_percentiles=OVERHEAD_PERCENTILES,
        per_query_percentiles_s=base,
        per_query_by_rate=tuple(by_rate) if len(by_rate) > 1 else (),
        frontend_cpu_s_per_query=_cpu_per_query(list(cpu_use.values())),
        source=(
            "inferline profile: the DAG served with no-op relay stages at "
            f"{', '.join(f'{r:g}' for r, _ in measured)} q/s, {options.rounds} x "
            f"{per_round_s:g} s each; per batch = median over stages of (time in stage - "
            f"predict) - the relay's harness round trip ({harness_s * 1e6:.0f} us), at the "
            "lowest rate; per query = client latency - relay path estimate; medians over "
            "the rounds; front-end CPU per query = the serve process's CPU time / queries, "
            "the largest over the rates"
            + (f"; the engine could not keep up at {saturated:g} q/s" if saturated else "")
        ),
        measured_on=measured_on,
        key=key,
    )
    details = {
        "relay_round_trip_s": rt_s,
        "relay_predict_s": predict_s,
        "rates": details_rates,
        "saturated_at_qps": saturated,
        "queries": sum(d["queries"] for d in details_rates),
    }
    return OverheadResult(overhead, details)
