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
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from inferline.engine._hardware import resources_for
from inferline.engine._replay import replay, replay_summary
from inferline.engine.testing import served_engine
from inferline.errors import InferLineError
from inferline.pipeline import Pipeline
from inferline.pipeline._io import MeasuredPaths
from inferline.profiler._errors import ProfilerError
from inferline.profiler._harness import StageWorker
from inferline.profiler._measure import _Pool, measure_batch_size
from inferline.profiler._relay import PATH_TENSOR, relay_module_source
from inferline.profiler._samples import parse_requests
from inferline.profiler._stats import RepetitionPolicy
from inferline.profiles import EngineOverhead

__all__ = ["OverheadOptions", "OverheadResult", "measure_overhead", "with_path"]

_RELAY_HARDWARE = "cpu-1"


#: Percentiles at which the per-query overhead distribution is recorded (finer in the tail).
PERCENTILE_GRID = (
    *range(0, 95, 5),
    *range(95, 100),
    99.5,
    99.9,
    100,
)


@dataclass(frozen=True)
class OverheadOptions:
    rate_qps: float = 100.0
    duration_s: float = 12.0
    rounds: int = 3
    warmup_s: float = 1.0
    seed: int = 0
    start_timeout_s: float = 60.0


@dataclass(frozen=True)
class OverheadResult:
    overhead: EngineOverhead
    details: dict[str, Any]


def with_path(body: dict[str, Any], path: Sequence[str]) -> dict[str, Any]:
    """``body`` plus the ``inferline_path`` tensor a Relay routes by."""
    tensor = {"name": PATH_TENSOR, "shape": [1], "datatype": "BYTES", "data": ["+".join(path)]}
    return {**body, "inputs": [*body["inputs"], tensor]}


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
        rounds = [
            _poisson(options.rate_qps, per_round_s, options.seed + 10 * k)
            for k in range(options.rounds)
        ]
        n_queries = sum(r.size for r in rounds)
        status(
            f"serving the DAG with no-op stages; {n_queries} queries at {options.rate_qps:g} q/s "
            f"in {options.rounds} rounds"
        )
        results = []
        try:
            with served_engine(
                bundle, plan, "--slo-s", "10", start_timeout_s=options.start_timeout_s
            ) as engine:
                warm = _poisson(options.rate_qps, options.warmup_s, options.seed + 1)
                replay(engine.url, warm, encoded, slo_s=10.0, model=pipeline.name)
                offset = 0
                for arrivals in rounds:
                    query_bodies = [
                        encoded[(offset + i) % len(encoded)] for i in range(arrivals.size)
                    ]
                    engine.request("DELETE", "/v2/control/stats")
                    result = replay(
                        engine.url, arrivals, query_bodies, slo_s=10.0, model=pipeline.name
                    )
                    _, stats = engine.request("GET", "/v2/control/stats")
                    results.append((offset, arrivals.size, result, stats))
                    offset += arrivals.size
        except InferLineError:
            raise
        except (OSError, RuntimeError, TimeoutError) as exc:
            raise ProfilerError(f"could not serve the no-op pipeline: {exc}") from None
    per_batch_rounds = []
    percentile_rounds = []
    per_stage: dict[str, Any] = {}
    client = []
    for offset, count, result, stats in results:
        summary = replay_summary(result)
        if summary["errors"]:
            first = next(iter(result.errors.values()), "")
            raise ProfilerError(
                f"the no-op pipeline answered {summary['errors']} of {summary['sent']} queries "
                f"with errors (first: {first})"
            )
        client.append((summary["p50_s"], summary["p99_s"]))
        excess = []
        for name, st in stats["stages"].items():
            over = st["overhead_s"]["p50"]
            per_stage.setdefault(name, []).append(
                {
                    "overhead_median_s": over,
                    "overhead_p99_s": st["overhead_s"]["p99"],
                    "queue_wait_median_s": st["queue_wait_s"]["p50"],
                    "predict_median_s": st["predict_s"]["p50"],
                    "visits": st["visits"],
                }
            )
            if over is not None:
                excess.append(max(0.0, over - harness_s))
        per_batch = float(np.median(excess)) if excess else 0.0
        per_batch_rounds.append(per_batch)
        stage_time = dict.fromkeys(pipeline.stage_names, rt_s + per_batch)
        estimate = np.array(
            [
                pipeline.longest_path_s(stage_time, paths.path_of((offset + i) % len(bodies)))
                for i in range(count)
            ]
        )
        residual = result.latency_s - estimate
        residual = np.maximum(residual[np.isfinite(residual)], 0.0)
        percentile_rounds.append(np.percentile(residual, PERCENTILE_GRID))
    # per percentile, the median over rounds: one round caught in a stall of the machine
    # (another job, the host) does not decide the tail (medians of non-decreasing rows
    # are non-decreasing)
    percentiles = np.median(np.array(percentile_rounds), axis=0)
    per_batch_s = float(np.median(per_batch_rounds))
    p50 = float(np.interp(50.0, PERCENTILE_GRID, percentiles))
    p99 = float(np.interp(99.0, PERCENTILE_GRID, percentiles))
    overhead = EngineOverhead(
        per_batch_s=round(per_batch_s, 7),
        per_query_s=round(p50, 7),
        per_query_p99_s=round(p99, 7),
        per_query_percentiles=tuple(float(q) for q in PERCENTILE_GRID),
        per_query_percentiles_s=tuple(round(float(v), 7) for v in percentiles),
        source=(
            f"inferline profile: the DAG served with no-op relay stages at "
            f"{options.rate_qps:g} q/s for {options.rounds} x {per_round_s:g} s "
            f"({n_queries} queries); per batch = median over stages of (time in stage - "
            f"predict) - the relay's harness round trip ({harness_s * 1e6:.0f} us); per query "
            "= client latency - relay path estimate; medians over the rounds"
        ),
        measured_on=measured_on,
        key=key,
    )
    details = {
        "relay_round_trip_s": rt_s,
        "relay_predict_s": predict_s,
        "client_p50_s_per_round": [c[0] for c in client],
        "client_p99_s_per_round": [c[1] for c in client],
        "per_batch_s_per_round": per_batch_rounds,
        "per_query_p99_s_per_round": [
            float(np.interp(99.0, PERCENTILE_GRID, r)) for r in percentile_rounds
        ],
        "queries": int(n_queries),
        "stages": per_stage,
    }
    return OverheadResult(overhead, details)
