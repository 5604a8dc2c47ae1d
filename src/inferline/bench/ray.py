"""``inferline bench ray``: InferLine on Ray against the embedded engine and against Ray Serve.

On a 2-node Ray cluster started on this machine (:class:`LocalRayCluster`), with a
2-stage pipeline whose stages sleep for their service time (``prep`` 10 ms + 2.5 ms/query,
``model`` 100 ms + 25 ms/query; CPU-free, so replicas scale as on real hardware even on 2
cores), profiled in-process and planned by the InferLine Planner:

1. **Same plan, same trace, three runtimes.** The Estimator's P99 for the plan on an
   evaluation trace against the P99 measured on the embedded engine, on the Ray backend
   (``inferline serve --backend ray``) and on the same pipeline as a plain Ray Serve
   application with the planned replicas (per-replica queues, ``@serve.batch``); plus the
   per-stage overhead (time in a stage − ``predict``) the engine and the Ray backend
   measure, i.e. what the transport costs.
2. **Autoscaling on a rate step.** From a plan for the low rate, the InferLine Tuner on the
   Ray backend (``serve --tune``) against Ray Serve's default request-based autoscaler
   (:class:`RayServeAutoscaling`) on the same step: miss rate, P99, replicas over time,
   replica-seconds, measured activation times; and the simulated outcome of the Tuner and of
   the queue-length baseline on the same step.
"""

from __future__ import annotations

import contextlib
import http.client
import importlib
import json
import math
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from rich.table import Table

from inferline import Bundle, load_bundle
from inferline.engine import ReplayResult, replay, replay_summary
from inferline.engine.process import EngineProcess, free_port, start_engine
from inferline.estimator import Estimator
from inferline.pipeline import PipelineConfig, save_config
from inferline.planner import plan_inferline
from inferline.ray_backend.testing import LocalRayCluster, SleepModel, SleepPrep, SleepStage
from inferline.tuner import InferLineTuner, QueueLengthPolicy, TunerConfig, simulate_tuned
from inferline.workload import Segment, Trace, gamma_trace, piecewise_trace, save_trace

__all__ = ["RayBenchmarkSettings", "run_ray_benchmark", "tables"]

_MODEL = "sleep-pipeline"
_PRICE_PER_CPU_HOUR = 0.0425
_STAGES: dict[str, type[SleepStage]] = {"prep": SleepPrep, "model": SleepModel}
_BATCHES = (1, 2, 4, 8)


@dataclass(frozen=True)
class RayBenchmarkSettings:
    """What ``inferline bench ray`` runs (rates in queries per second, times in seconds)."""

    slo_s: float = 0.4
    rate_qps: float = 16.0  # part 1: the plan's rate and the evaluation trace's
    duration_s: float = 20.0
    planning_duration_s: float = 120.0
    low_rate_qps: float = 4.0  # part 2: the rate step
    high_rate_qps: float = 16.0
    low_s: float = 10.0
    high_s: float = 30.0
    tail_s: float = 10.0
    warmup_s: float = 2.0
    head_cpus: int = 4
    worker_cpus: int = 4
    profile_repeats: int = 8
    include_ray_serve: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("slo_s", "rate_qps", "duration_s", "low_rate_qps", "high_rate_qps"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")
        if self.head_cpus < 1 or self.worker_cpus < 1:
            raise ValueError("each node needs at least one CPU")


# --- set-up ------------------------------------------------------------------------------------


def _measure_profile(cls: type[SleepStage], repeats: int) -> list[dict[str, float]]:
    """Median and P99 of ``predict`` per batch size, measured here (as the Profiler does)."""
    model = cls()
    points = []
    for b in _BATCHES:
        items = [{"x": 0.0}] * b
        model.predict(items)  # warm-up
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            model.predict(items)
            times.append(time.perf_counter() - started)
        times.sort()
        p99 = times[min(len(times) - 1, math.ceil(0.99 * len(times)) - 1)]
        points.append(
            {
                "batch_size": b,
                "median_s": round(statistics.median(times), 6),
                "p99_s": round(p99, 6),
            }
        )
    return points


def _write_bundle(folder: Path, repeats: int, max_units: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    pipeline = {
        "name": _MODEL,
        "description": "prep -> model, stages that sleep for their service time",
        "hardware": "hardware.yaml",
        "profiles": "profiles.yaml",
        "stages": [
            {"name": name, "model": f"inferline.ray_backend.testing:{cls.__name__}"}
            for name, cls in _STAGES.items()
        ],
        "edges": [{"from": "prep", "to": "model"}],
    }
    hardware = {
        "hardware": [
            {
                "name": "cpu-1",
                "description": "one logical CPU of the Ray cluster",
                "price_per_hour": _PRICE_PER_CPU_HOUR,
                "accelerator": False,
                "max_units": max_units,
                "source": "c5 on-demand price per vCPU-hour (as examples/reference)",
            }
        ]
    }
    measured_on = f"{os.cpu_count()} CPUs, measured by inferline bench ray"
    profiles = {
        "profiles": [
            {
                "stage": name,
                "hardware": "cpu-1",
                "source": "time.sleep service time, measured in-process",
                "measured_on": measured_on,
                "points": _measure_profile(cls, repeats),
            }
            for name, cls in _STAGES.items()
        ]
    }
    for file, body in (
        ("pipeline.yaml", pipeline),
        ("hardware.yaml", hardware),
        ("profiles.yaml", profiles),
    ):
        (folder / file).write_text(yaml.safe_dump(body, sort_keys=False))
    return folder / "pipeline.yaml"


def _poisson(rate_qps: float, duration_s: float, seed: int) -> Trace:
    return gamma_trace(rate_qps, 1.0, duration_s, seed)


# --- measuring ------------------------------------------------------------------------------


class _Poller:
    """Calls ``sample()`` every ``interval_s`` in a thread; keeps (seconds since start, value)."""

    def __init__(self, sample: Callable[[], Any], interval_s: float = 0.5) -> None:
        self.sample = sample
        self.interval_s = interval_s
        self.t0 = time.monotonic()
        self.points: list[tuple[float, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-poller", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):
                self.points.append((time.monotonic() - self.t0, self.sample()))
            self._stop.wait(self.interval_s)

    def __enter__(self) -> _Poller:
        self.t0 = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def _summary(result: ReplayResult) -> dict[str, Any]:
    s = replay_summary(result)
    return {
        k: s[k]
        for k in ("sent", "ok", "errors", "p50_s", "p99_s", "max_s", "miss_rate", "achieved_rate")
    }


def _stage_overhead(stats: dict[str, Any]) -> dict[str, Any]:
    return {
        name: {
            "overhead_p50_s": s["overhead_s"]["p50"],
            "overhead_p99_s": s["overhead_s"]["p99"],
            "queue_wait_p50_s": s["queue_wait_s"]["p50"],
            "predict_p50_s": s["predict_s"]["p50"],
        }
        for name, s in stats["stages"].items()
    }


def _batches_run(status: dict[str, Any]) -> dict[str, int]:
    return {
        name: sum(r["batches"] for r in s["replica_list"]) for name, s in status["stages"].items()
    }


def _mean_batch(visits: dict[str, int], before: dict[str, int], after: dict[str, int]) -> Any:
    return {
        name: visits[name] / (after[name] - before[name]) if after[name] > before[name] else None
        for name in visits
    }


def _measure_engine(engine: EngineProcess, trace: Any, warm: Any, slo_s: float) -> dict[str, Any]:
    replay(engine.url, warm, slo_s=slo_s, model=_MODEL)
    engine.request("DELETE", "/v2/control/stats")
    before = _batches_run(engine.status())
    result = replay(engine.url, trace.arrival_s, slo_s=slo_s, model=_MODEL)
    stats = engine.request("GET", "/v2/control/stats")[1]
    status = engine.status()
    out = _summary(result)
    out["stages"] = _stage_overhead(stats)
    out["mean_batch_size"] = _mean_batch(
        {n: s["visits"] for n, s in stats["stages"].items()}, before, _batches_run(status)
    )
    out["activation_s"] = status["activation_s"]
    if "ray" in status:
        out["nodes_used"] = len(
            {r["node_id"] for rs in status["ray"]["replicas"].values() for r in rs}
        )
    return out


def _inferline_sample(engine: EngineProcess) -> dict[str, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", engine.port, timeout=5)
    try:
        conn.request("GET", "/v2/control/status")
        status = json.loads(conn.getresponse().read())
    finally:
        conn.close()
    return {
        name: {"target": s["replicas"], "ready": s["ready"], "starting": s["starting"]}
        for name, s in status["stages"].items()
    }


@contextlib.contextmanager
def _ray_serve_session(cluster: LocalRayCluster) -> Iterator[int]:
    import logging

    import ray

    serve: Any = importlib.import_module("ray.serve")
    ray.init(
        address=cluster.address,
        namespace="inferline-bench-serve",
        logging_level=logging.WARNING,
        log_to_driver=False,
    )
    logging.getLogger("ray.serve").setLevel(logging.WARNING)  # no per-deployment INFO lines
    try:
        port = free_port()
        serve.start(
            http_options={"host": "127.0.0.1", "port": port},
            proxy_location="HeadOnly",
            logging_config={"log_level": "WARNING", "enable_access_log": False},
        )
        yield port
    finally:
        with contextlib.suppress(Exception):
            serve.shutdown()
        ray.shutdown()


def _run_serve_app(
    port: int,
    app: Any,
    trace: Any,
    warm: Any,
    slo_s: float,
    poll: bool,
) -> tuple[dict[str, Any], list[tuple[float, Any]], ReplayResult]:
    from ray import serve

    from inferline.bench.ray_serve_peer import serve_batch_stats, serve_replica_counts

    started = time.monotonic()
    serve.run(app, name="pipeline", route_prefix="/")
    deploy_s = time.monotonic() - started
    url = f"http://127.0.0.1:{port}"
    try:
        replay(url, warm, slo_s=slo_s, model=_MODEL)
        before = serve_batch_stats("pipeline", list(_STAGES)) if not poll else {}
        with contextlib.ExitStack() as stack:
            poller = (
                stack.enter_context(_Poller(lambda: serve_replica_counts("pipeline")))
                if poll
                else None
            )
            result = replay(url, trace.arrival_s, slo_s=slo_s, model=_MODEL, timeout_s=20)
        out = _summary(result)
        out["deploy_s"] = deploy_s
        if not poll:  # fixed replicas: batches formed during the measured replay
            after = serve_batch_stats("pipeline", list(_STAGES))
            out["mean_batch_size"] = {}
            for name in _STAGES:
                queries = batches = 0
                for pid, sizes in after[name].items():
                    old = before.get(name, {}).get(pid, {})
                    for size, count in sizes.items():
                        n = count - old.get(size, 0)
                        queries += int(size) * n
                        batches += n
                out["mean_batch_size"][name] = queries / batches if batches else None
        return out, (poller.points if poller is not None else []), result
    finally:
        serve.delete("pipeline")


# --- the timelines ---------------------------------------------------------------------------


def _inferline_timeline(points: list[tuple[float, Any]]) -> dict[str, Any]:
    return {
        "time_s": [round(t, 2) for t, _ in points],
        "stages": {
            name: {
                "target": [p[name]["target"] for _, p in points],
                "ready": [p[name]["ready"] for _, p in points],
            }
            for name in (points[0][1] if points else {})
        },
    }


def _serve_timeline(points: list[tuple[float, Any]], stages: Sequence[str]) -> dict[str, Any]:
    return {
        "time_s": [round(t, 2) for t, _ in points],
        "stages": {
            name: {
                "running": [p.get(name, {}).get("RUNNING", 0) for _, p in points],
                "all": [sum(p.get(name, {}).values()) for _, p in points],
            }
            for name in stages
        },
    }


def _replica_seconds(times: Sequence[float], counts: Sequence[int]) -> float:
    if len(times) < 2:
        return 0.0
    return float(sum(counts[i] * (times[i + 1] - times[i]) for i in range(len(times) - 1)))


def _serve_activations(points: list[tuple[float, Any]], stages: Sequence[str]) -> list[float]:
    """Seconds from a replica's appearance (starting) to its RUNNING, from the 0.5-s polls."""
    out: list[float] = []
    for name in stages:
        pending: list[float] = []
        prev_all, prev_running = None, None
        for t, p in points:
            counts = p.get(name, {})
            total, running = sum(counts.values()), counts.get("RUNNING", 0)
            if prev_all is not None and prev_running is not None:
                pending.extend([t] * max(0, total - prev_all))
                for _ in range(max(0, running - prev_running)):
                    if pending:
                        out.append(t - pending.pop(0))
            prev_all, prev_running = total, running
    return out


def _windows(result: ReplayResult, width_s: float, slo_s: float) -> dict[str, list[float]]:
    """Offered rate and miss rate per window of the replay (for the plot)."""
    end = float(result.scheduled_s.max()) if result.scheduled_s.size else 0.0
    edges = np.arange(0.0, end + width_s, width_s)
    idx = np.digitize(result.scheduled_s, edges) - 1
    ok = (result.status == 200) & (np.nan_to_num(result.latency_s, nan=np.inf) <= slo_s)
    rate, miss = [], []
    for k in range(len(edges) - 1):
        sel = idx == k
        n = int(sel.sum())
        rate.append(n / width_s)
        miss.append(float(1 - ok[sel].mean()) if n else 0.0)
    return {"time_s": edges[:-1].tolist(), "rate_qps": rate, "miss_rate": miss}


# --- the benchmark ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Setup:
    """The profiled bundle, both plans and every trace, written under a temporary folder."""

    settings: RayBenchmarkSettings
    pipeline_file: Path
    bundle: Bundle
    plan_a: PipelineConfig  # part 1: planned for ``rate_qps``
    plan_a_file: Path
    eval_trace: Trace
    warm: np.ndarray
    plan_b: PipelineConfig  # part 2: planned for ``low_rate_qps``
    plan_b_file: Path
    planning_b: Trace
    planning_b_file: Path
    step: Trace
    warm_b: np.ndarray

    @property
    def total_cpus(self) -> int:
        return self.settings.head_cpus + self.settings.worker_cpus


def _prepare(settings: RayBenchmarkSettings, tmp: Path, progress: Callable[[str], None]) -> _Setup:
    """Profile the sleeping stages in-process, then plan both parts with the Planner."""
    progress("profiling the stages")
    total_cpus = settings.head_cpus + settings.worker_cpus
    pipeline_file = _write_bundle(tmp / "bundle", settings.profile_repeats, total_cpus)
    bundle = load_bundle(pipeline_file)
    progress("planning")
    seed, slo = settings.seed, settings.slo_s
    planning_a = _poisson(settings.rate_qps, settings.planning_duration_s, seed)
    plan_a = plan_inferline(bundle.pipeline, bundle.profiles, planning_a, slo, seed=seed).config
    save_config(plan_a, tmp / "plan_a.yaml")
    low, high = settings.low_rate_qps, settings.high_rate_qps
    planning_b = _poisson(low, settings.planning_duration_s, seed + 3)
    plan_b = plan_inferline(bundle.pipeline, bundle.profiles, planning_b, slo, seed=seed).config
    save_config(plan_b, tmp / "plan_b.yaml")
    save_trace(planning_b, tmp / "planning_b.csv")
    segments = [
        Segment(settings.low_s, low),
        Segment(settings.high_s, high),
        Segment(settings.tail_s, low),
    ]
    return _Setup(
        settings=settings,
        pipeline_file=pipeline_file,
        bundle=bundle,
        plan_a=plan_a,
        plan_a_file=tmp / "plan_a.yaml",
        eval_trace=_poisson(settings.rate_qps, settings.duration_s, seed + 1),
        warm=_poisson(settings.rate_qps, settings.warmup_s, seed + 2).arrival_s,
        plan_b=plan_b,
        plan_b_file=tmp / "plan_b.yaml",
        planning_b=planning_b,
        planning_b_file=tmp / "planning_b.csv",
        step=piecewise_trace(segments, seed + 4),
        warm_b=_poisson(low, 3.0, seed + 5).arrival_s,
    )


def _estimated(setup: _Setup) -> dict[str, Any]:
    """Part 1's plan and the Estimator's figures for it on the evaluation trace."""
    slo, bundle = setup.settings.slo_s, setup.bundle
    estimate = Estimator(
        bundle.pipeline, bundle.profiles, setup.eval_trace, slo_s=slo, seed=setup.settings.seed
    ).run(setup.plan_a)
    return {
        "plan": {n: c.model_dump() for n, c in setup.plan_a.stages.items()},
        "rate_qps": setup.settings.rate_qps,
        "queries": setup.eval_trace.n_queries,
        "estimated": {
            "p50_s": estimate.p50_s,
            "p99_s": estimate.p99_s,
            "miss_rate": estimate.miss_rate,
            "utilization": {n: s.utilization for n, s in estimate.stages.items()},
        },
    }


def _step_description(setup: _Setup) -> dict[str, Any]:
    s = setup.settings
    return {
        "plan": {n: c.model_dump() for n, c in setup.plan_b.stages.items()},
        "step": {
            "low_qps": s.low_rate_qps,
            "high_qps": s.high_rate_qps,
            "segments_s": [s.low_s, s.high_s, s.tail_s],
            "queries": setup.step.n_queries,
        },
        "cluster_cpus": setup.total_cpus,
    }


def _tuner_on_step(setup: _Setup, ray_args: Sequence[str]) -> tuple[dict[str, Any], ReplayResult]:
    """Part 2: ``serve --backend ray --tune`` from the low-rate plan through the rate step."""
    slo = setup.settings.slo_s
    tune_args = ("--tune", "--planning-trace", str(setup.planning_b_file))
    with start_engine(
        setup.pipeline_file, setup.plan_b_file, *ray_args, *tune_args, start_timeout_s=180
    ) as engine:
        replay(engine.url, setup.warm_b, slo_s=slo, model=_MODEL)
        with _Poller(lambda: _inferline_sample(engine)) as poller:
            result = replay(engine.url, setup.step.arrival_s, slo_s=slo, model=_MODEL, timeout_s=20)
        status = engine.status()
    timeline = _inferline_timeline(poller.points)
    totals = [
        sum(s["target"][i] for s in timeline["stages"].values())
        for i in range(len(timeline["time_s"]))
    ]
    figures = {
        **_summary(result),
        "replica_seconds": _replica_seconds(timeline["time_s"], totals),
        "max_replicas": {n: max(s["target"]) for n, s in timeline["stages"].items()},
        "activation_s": status["activation_s"],
        "changes": status["tuner"]["changes"],
        "trimmed_to_cluster": status["ray"]["tuner_trimmed"],
        "timeline": timeline,
    }
    return figures, result


def _ray_serve_runs(
    setup: _Setup, cluster: LocalRayCluster, progress: Callable[[str], None]
) -> tuple[dict[str, Any], dict[str, Any], ReplayResult]:
    """Both parts as a plain Ray Serve application: part 1 with the planned replicas, part 2
    with Ray Serve's request-based autoscaler (the cluster's CPUs shared evenly: the budget
    InferLine's tuner has). Returns part 1's figures, part 2's and part 2's replay."""
    from inferline.bench.ray_serve_peer import RayServeAutoscaling, build_serve_app  # imports ray

    slo, pipeline = setup.settings.slo_s, setup.bundle.pipeline
    autoscaling = RayServeAutoscaling()
    max_replicas = dict.fromkeys(_STAGES, setup.total_cpus // len(_STAGES))
    with _ray_serve_session(cluster) as port:
        progress("part 1: the pipeline as a Ray Serve application")
        app = build_serve_app(pipeline, setup.plan_a)
        same_plan, _, _ = _run_serve_app(port, app, setup.eval_trace, setup.warm, slo, poll=False)
        progress("part 2: Ray Serve's autoscaler")
        app = build_serve_app(
            pipeline, setup.plan_b, autoscaling=autoscaling, max_replicas=max_replicas
        )
        step_out, points, result = _run_serve_app(
            port, app, setup.step, setup.warm_b, slo, poll=True
        )
    timeline = _serve_timeline(points, list(_STAGES))
    all_counts = [
        sum(s["all"][i] for s in timeline["stages"].values())
        for i in range(len(timeline["time_s"]))
    ]
    activations = _serve_activations(points, list(_STAGES))
    step = {
        **step_out,
        "autoscaling": {"settings": asdict(autoscaling), "max_replicas": max_replicas},
        "replica_seconds": _replica_seconds(timeline["time_s"], all_counts),
        "max_replicas": {n: max(s["all"], default=0) for n, s in timeline["stages"].items()},
        "activation_s": {
            "median": statistics.median(activations) if activations else None,
            "count": len(activations),
            "resolution_s": 0.5,
        },
        "timeline": timeline,
    }
    return same_plan, step, result


def _simulated_step(setup: _Setup, activation_s: float) -> dict[str, Any]:
    """Part 2 in the Estimator: the InferLine tuner and the queue-length baseline (Ray
    Serve's autoscaler's rule) on the same step, with the measured activation time."""
    from inferline.bench.ray_serve_peer import RayServeAutoscaling  # imports ray

    pipeline, profiles = setup.bundle.pipeline, setup.bundle.profiles
    tuner = InferLineTuner(
        TunerConfig.from_plan(pipeline, profiles, setup.plan_b, setup.planning_b)
    )
    serve_like = RayServeAutoscaling()
    queue = QueueLengthPolicy(
        stages=pipeline.stage_names,
        max_replicas=dict.fromkeys(pipeline.stage_names, setup.total_cpus // len(_STAGES)),
        target_ongoing_requests=dict.fromkeys(
            pipeline.stage_names, serve_like.target_ongoing_requests
        ),
        upscale_delay_s=serve_like.upscale_delay_s,
        downscale_delay_s=serve_like.downscale_delay_s,
    )
    simulated: dict[str, Any] = {"activation_s": activation_s}
    for policy in (tuner, queue):
        sim = simulate_tuned(
            pipeline, profiles, setup.plan_b, setup.step, setup.settings.slo_s, policy,
            activation_s=activation_s, seed=setup.settings.seed,
        )  # fmt: skip
        simulated[policy.name] = {
            "miss_rate": sim.miss_rate,
            "p99_s": sim.p99_s,
            "cost_dollars": sim.cost_dollars,
            "max_replicas": dict(
                zip(sim.stage_names, sim.replicas.max(axis=0).tolist(), strict=True)
            ),
        }
    return simulated


def run_ray_benchmark(
    settings: RayBenchmarkSettings | None = None,
    *,
    out_dir: Path | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Run both parts (module docstring); returns JSON-ready figures, and with ``out_dir``
    writes ``ray.json`` and ``ray_autoscaling.png`` there."""
    settings = settings or RayBenchmarkSettings()
    started = time.monotonic()
    slo = settings.slo_s
    figures: dict[str, Any] = {
        "settings": asdict(settings),
        "cpus_here": os.cpu_count(),
        "load_average_1m_before": round(os.getloadavg()[0], 2),
    }
    with tempfile.TemporaryDirectory(prefix="inferline-bench-ray-") as tmp:
        setup = _prepare(settings, Path(tmp), progress)
        figures["profiles"] = yaml.safe_load((Path(tmp) / "bundle" / "profiles.yaml").read_text())
        same_plan = _estimated(setup)
        progress("part 1: the embedded engine")
        with start_engine(setup.pipeline_file, setup.plan_a_file, "--slo-s", str(slo)) as engine:
            same_plan["engine"] = _measure_engine(engine, setup.eval_trace, setup.warm, slo)
        progress(
            f"starting a 2-node Ray cluster ({settings.head_cpus} + {settings.worker_cpus} CPUs)"
        )
        step = _step_description(setup)
        results: dict[str, ReplayResult] = {}
        with LocalRayCluster((settings.head_cpus, settings.worker_cpus)) as cluster:
            ray_args = ("--backend", "ray", "--address", cluster.address, "--slo-s", str(slo))
            progress("part 1: the Ray backend")
            with start_engine(
                setup.pipeline_file, setup.plan_a_file, *ray_args, start_timeout_s=180
            ) as engine:
                same_plan["ray"] = _measure_engine(engine, setup.eval_trace, setup.warm, slo)
            progress("part 2: InferLine's tuner on the Ray backend")
            step["inferline"], results["inferline"] = _tuner_on_step(setup, ray_args)
            if settings.include_ray_serve:
                same_plan["ray_serve"], step["ray_serve"], results["ray_serve"] = _ray_serve_runs(
                    setup, cluster, progress
                )
            if cluster.alive_groups():
                leftover = cluster.query()["alive_actors"]
                figures["leftover_actors_before_cluster_stop"] = leftover
        activation = step["inferline"]["activation_s"]["median"] or 5.0
        step["simulated"] = _simulated_step(setup, float(activation))
    for name, result in results.items():
        step[name]["cost_dollars"] = step[name]["replica_seconds"] * _PRICE_PER_CPU_HOUR / 3600.0
        step[name]["windows"] = _windows(result, 5.0, slo)
    figures["same_plan"] = same_plan
    figures["rate_step"] = step
    figures["load_average_1m_after"] = round(os.getloadavg()[0], 2)
    figures["wall_s"] = round(time.monotonic() - started, 1)
    figures["written"] = []
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        figures["written"] = [str(out_dir / "ray.json"), str(out_dir / "ray_autoscaling.png")]
        (out_dir / "ray.json").write_text(json.dumps(figures, indent=1) + "\n")
        _plot(figures, out_dir / "ray_autoscaling.png")
    return figures


def _plot(figures: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    step = figures["rate_step"]
    slo = figures["settings"]["slo_s"]
    fig, axes = plt.subplots(3, 1, figsize=(9, 8.5), sharex=True)
    ax_rate, ax_rep, ax_miss = axes
    first = step.get("inferline", {})
    win = first.get("windows", {})
    ax_rate.step(win.get("time_s", []), win.get("rate_qps", []), where="post", color="black")
    ax_rate.set_ylabel("offered q/s (5-s windows)")
    ax_rate.set_title(
        f"rate step {step['step']['low_qps']:g} → {step['step']['high_qps']:g} q/s, "
        f"SLO {slo * 1000:.0f} ms, 2-node Ray cluster"
    )
    colors = {"inferline": "tab:blue", "ray_serve": "tab:orange"}
    labels = {
        "inferline": "InferLine tuner (Ray backend), planned",
        "ray_serve": "Ray Serve autoscaler, existing",
    }
    for name in ("inferline", "ray_serve"):
        if name not in step:
            continue
        timeline = step[name]["timeline"]
        key = "target" if name == "inferline" else "all"
        for stage, series in timeline["stages"].items():
            style = "-" if stage == "model" else ":"
            ax_rep.step(
                timeline["time_s"],
                series[key],
                where="post",
                linestyle=style,
                color=colors[name],
                label=f"{labels[name]}: {stage}",
            )
        w = step[name]["windows"]
        ax_miss.step(
            w["time_s"],
            [100 * m for m in w["miss_rate"]],
            where="post",
            color=colors[name],
            label=f"{labels[name]} (overall {100 * step[name]['miss_rate']:.1f} %)",
        )
    ax_rep.set_ylabel("replicas (starting ones too)")
    ax_rep.legend(fontsize=8, loc="upper left")
    ax_miss.set_ylabel("SLO misses, % (5-s windows)")
    ax_miss.set_xlabel("seconds since the replay started")
    ax_miss.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def tables(figures: dict[str, Any]) -> list[Table]:
    """The readable output of :func:`run_ray_benchmark`'s figures: estimated against
    measured for the same plan, the rate step, and the wall time and files written."""

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value * 1000:.1f}"

    part1 = figures["same_plan"]
    one = Table(
        title=f"same plan {part1['plan']} at {part1['rate_qps']:g} q/s, "
        f"{part1['queries']} queries: estimated vs measured"
    )
    for col in ("runtime", "P50 ms", "P99 ms", "P99 vs estimate", "miss", "errors", "mean batch"):
        one.add_column(col, justify="right")
    est = part1["estimated"]
    one.add_row(
        "Estimator", ms(est["p50_s"]), ms(est["p99_s"]), "", f"{est['miss_rate']:.2%}", "", ""
    )
    for key, label in (
        ("engine", "embedded engine"),
        ("ray", "Ray backend"),
        ("ray_serve", "Ray Serve app"),
    ):
        if key not in part1:
            continue
        r = part1[key]
        delta = (
            f"{(r['p99_s'] - est['p99_s']) / r['p99_s']:+.0%}" if r["p99_s"] else "-"
        )  # relative to measured, as SPEC §4 states the target
        batches = " / ".join(
            "-" if v is None else f"{v:.2f}" for v in r.get("mean_batch_size", {}).values()
        )
        one.add_row(
            label,
            ms(r["p50_s"]),
            ms(r["p99_s"]),
            delta,
            f"{r['miss_rate']:.2%}",
            str(r["errors"]),
            batches,
        )
    step = figures["rate_step"]
    two = Table(
        title=f"rate step {step['step']['low_qps']:g} → {step['step']['high_qps']:g} q/s "
        f"from plan {step['plan']}"
    )
    for col in ("policy", "miss", "P99 ms", "max replicas", "replica-s", "activation s"):
        two.add_column(col, justify="right")
    for key, label in (("inferline", "InferLine tuner"), ("ray_serve", "Ray Serve autoscaler")):
        if key not in step:
            continue
        r = step[key]
        act = r["activation_s"].get("median")
        two.add_row(
            label,
            f"{r['miss_rate']:.2%}",
            ms(r["p99_s"]),
            str(r["max_replicas"]),
            f"{r['replica_seconds']:.0f}",
            "-" if act is None else f"{act:.2f}",
        )
    for name, sim in step["simulated"].items():
        if name == "activation_s":
            continue
        two.add_row(
            f"simulated {name}",
            f"{sim['miss_rate']:.2%}",
            ms(sim["p99_s"]),
            str(sim["max_replicas"]),
            "",
            "",
        )
    two.caption = f"wall time {figures['wall_s']:.0f} s" + "".join(
        f"; wrote {path}" for path in figures.get("written", [])
    )
    return [one, two]
