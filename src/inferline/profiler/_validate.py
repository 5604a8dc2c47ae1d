"""``inferline validate``: does the engine deliver the latency the Estimator promises?

Plan on the planning part of a trace (or take a given plan), serve the plan on the real
embedded engine on 127.0.0.1, replay evaluation traffic whose arrivals the planner never
saw, carrying real payloads from the bundle's samples function, and compare the
Estimator's P50/P99/miss rate for exactly those arrivals and paths with what the
replayer measured (docs/profiler.md, SPEC §4).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from inferline._bundle import Bundle, check_config_for, load_bundle
from inferline.engine import resources_for
from inferline.errors import ConfigError, InferLineError
from inferline.estimator import Estimator, ServiceTime, SimulationResult
from inferline.pipeline import (
    MeasuredPaths,
    PipelineConfig,
    StageConfig,
    load_config,
    save_config,
)
from inferline.planner import plan
from inferline.profiler._errors import ProfilerError
from inferline.profiler._profile import available_hardware
from inferline.profiler._samples import encode_bodies, load_samples
from inferline.profiler._stats import json_digest, scheduling_priority
from inferline.profiles import Profiles, speed_of_sizes
from inferline.workload import Trace, load_trace, rescale_to_mean_rate, split_trace

if TYPE_CHECKING:
    from inferline.engine.process import EngineProcess

__all__ = [
    "CorePlan",
    "ValidateOptions",
    "ValidationReport",
    "ValidationRun",
    "attach_samples",
    "plan_cores",
    "rate_for_utilisation",
    "validate_bundle",
]


@dataclass(frozen=True)
class ValidateOptions:
    """How ``inferline validate`` plans, loads and measures (times in seconds)."""

    slo_s: float
    config: Path | None = None
    utilisations: tuple[float, ...] = ()
    planning_fraction: float = 0.25
    duration_s: float = 60.0
    warmup_s: float = 5.0
    seed: int = 0
    service_time: ServiceTime = "lognormal"
    margin: float = 0.0
    hardware: tuple[str, ...] = ()
    start_timeout_s: float = 300.0
    replay_timeout_s: float = 60.0
    retime: bool = False
    pin: bool = True
    repeat: int = 1  # runs per level (same arrivals); the summary takes the median
    nice: int | None = None  # scheduling priority of validate, the engine and its replicas

    def __post_init__(self) -> None:
        def bad(field_name: str, problem: str) -> ConfigError:
            return ConfigError(problem, source="<argument>", field=field_name)

        if not (math.isfinite(self.slo_s) and self.slo_s > 0):
            raise bad("--slo-s", f"must be positive, got {self.slo_s}")
        for u in self.utilisations:
            if not 0.0 < u < 1.0:
                raise bad("--utilisation", f"must be a fraction in (0, 1), got {u}")
        if not 0.0 < self.planning_fraction < 1.0:
            raise bad("--planning-fraction", f"must be in (0, 1), got {self.planning_fraction}")
        if not self.duration_s > 0:
            raise bad("--duration-s", f"must be positive, got {self.duration_s}")
        if not self.warmup_s >= 0:
            raise bad("--warmup-s", f"must be >= 0, got {self.warmup_s}")
        if self.service_time not in ("fixed", "lognormal"):
            raise bad("--service-time", f"must be fixed or lognormal, got {self.service_time!r}")
        if not 0.0 <= self.margin < 1.0:
            raise bad("--margin", f"must be in [0, 1), got {self.margin}")
        if self.repeat < 1:
            raise bad("--repeat", f"must be at least 1, got {self.repeat}")


@dataclass(frozen=True)
class ValidationRun:
    """One evaluation run: the Estimator's figures and the engine's, for the same arrivals."""

    label: str
    target_utilisation: float | None
    rate_qps: float
    queries: int
    duration_s: float
    estimated: dict[str, float]
    estimated_without_overhead_p99_s: float
    utilisation: dict[str, float]
    cpu_demand: float
    measured: dict[str, Any]
    load_average: tuple[float, float]
    estimated_with_bundle_profiles: dict[str, float] | None = None
    service: dict[str, dict[str, float | None]] = field(default_factory=dict)
    estimated_other_service_time: dict[str, Any] = field(default_factory=dict)
    estimated_with_engine_service: dict[str, float] | None = None

    @property
    def p99_error(self) -> float | None:
        """(estimated − measured) / measured P99; None when nothing was measured."""
        return self._error(self.estimated)

    @property
    def stalled(self) -> bool:
        """The replayer itself fell behind its schedule by more than ``DISTURBED_LAG_S`` at
        the 99th percentile: the machine stalled (another job, the host)."""
        return float(self.measured.get("send_lag_p99_s") or 0.0) > DISTURBED_LAG_S

    @property
    def stage_speed_drift(self) -> dict[str, float]:
        """Per stage: how much slower (positive) its ``predict`` ran in the engine during
        the run than in the profile the estimate used, over the batch sizes it ran."""
        return {
            name: float(ratio) - 1.0
            for name, s in self.service.items()
            if (ratio := s.get("ratio")) is not None
        }

    @property
    def drifted_stages(self) -> list[str]:
        """Stages that ran more than ``DRIFT_LIMIT`` faster or slower than profiled, by
        more than ``DRIFT_MIN_S`` a batch (a stage of microseconds may be off by far
        more, harmlessly)."""
        out = []
        for name, drift in self.stage_speed_drift.items():
            s = self.service[name]
            engine_s, profiled_s = s.get("engine_predict_s"), s.get("profiled_predict_s")
            small = (
                engine_s is not None
                and profiled_s is not None
                and abs(engine_s - profiled_s) <= DRIFT_MIN_S
            )
            if abs(drift) > DRIFT_LIMIT and not small:
                out.append(name)
        return out

    @property
    def speed_drift(self) -> float | None:
        """The drift of the stage furthest off its profile among those that count (the
        drifted ones, else the busiest); None when unknown."""
        drifts = self.stage_speed_drift
        flagged = self.drifted_stages
        if flagged:
            return max((drifts[n] for n in flagged), key=abs)
        if not self.utilisation:
            return None
        busiest = max(self.utilisation, key=lambda name: self.utilisation[name])
        return drifts.get(busiest)

    @property
    def drifted(self) -> bool:
        """The machine ran a stage more than ``DRIFT_LIMIT`` faster or slower during the
        run than when it was timed: the estimate was made for another machine speed (this
        VM's host drifts by tens of per cent within minutes; stages served side by side
        run slower than alone)."""
        return bool(self.drifted_stages)

    @property
    def disturbed(self) -> bool:
        """Stalled or drifted: the run says more about the machine than about the
        Estimator, and level summaries leave it out when other runs are not."""
        return self.stalled or self.drifted

    @property
    def p99_error_bundle_profiles(self) -> float | None:
        """The same with the bundle's profiles when the stages were re-timed (else None)."""
        if self.estimated_with_bundle_profiles is None:
            return None
        return self._error(self.estimated_with_bundle_profiles)

    def _error(self, estimated: dict[str, float]) -> float | None:
        measured = self.measured.get("p99_s")
        if not measured:
            return None
        return float((estimated["p99_s"] - measured) / measured)

    def as_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "target_utilisation": self.target_utilisation,
            "rate_qps": self.rate_qps,
            "queries": self.queries,
            "duration_s": self.duration_s,
            "estimated": dict(self.estimated),
            "estimated_without_overhead_p99_s": self.estimated_without_overhead_p99_s,
            "utilisation": dict(self.utilisation),
            "busiest_utilisation": max(self.utilisation.values()),
            "cpu_demand_cores": self.cpu_demand,
            "measured": dict(self.measured),
            "p99_error": self.p99_error,
            "disturbed": self.disturbed,
            "stalled": self.stalled,
            "speed_drift": self.speed_drift,
            "stage_speed_drift": self.stage_speed_drift,
            "drifted_stages": self.drifted_stages,
            "drifted": self.drifted,
            "estimated_with_bundle_profiles": self.estimated_with_bundle_profiles,
            "estimated_other_service_time": self.estimated_other_service_time,
            "estimated_with_engine_service": self.estimated_with_engine_service,
            "p99_error_with_engine_service": None
            if self.estimated_with_engine_service is None
            else self._error(self.estimated_with_engine_service),
            "p99_error_bundle_profiles": self.p99_error_bundle_profiles,
            "service": self.service,
            "load_average_before_after": list(self.load_average),
        }


@dataclass(frozen=True)
class ValidationReport:
    bundle: Path
    pipeline: str
    config: PipelineConfig
    config_source: str
    cost_per_hour: float
    slo_s: float
    planning_queries: int
    runs: tuple[ValidationRun, ...]
    wall_s: float
    notes: tuple[str, ...] = field(default=())
    retimed: bool = False
    cores: CorePlan | None = None

    def levels(self) -> list[dict[str, Any]]:
        """Per load level: the median P99 error over its repeated runs (undisturbed ones
        when there are any; with ``--retime`` each run has its own rate and estimate), and
        the median estimated and measured P99."""
        out = []
        for label in dict.fromkeys(r.label for r in self.runs):
            runs = [r for r in self.runs if r.label == label]
            calm = [r for r in runs if not r.disturbed] or runs
            measured = [r.measured["p99_s"] for r in calm if r.measured.get("p99_s")]
            errors = [e for r in calm if (e := r.p99_error) is not None]
            out.append(
                {
                    "label": label,
                    "runs": len(runs),
                    "undisturbed_runs": sum(1 for r in runs if not r.disturbed),
                    "estimated_p99_s_median": float(
                        np.median([r.estimated["p99_s"] for r in calm])
                    ),
                    "measured_p99_s_median": float(np.median(measured)) if measured else None,
                    "measured_p99_s": [r.measured.get("p99_s") for r in runs],
                    "p99_errors": [r.p99_error for r in runs],
                    "p99_error": float(np.median(errors)) if errors else None,
                }
            )
        return out

    def summary(self) -> dict[str, Any]:
        return {
            "bundle": str(self.bundle),
            "pipeline": self.pipeline,
            "slo_s": self.slo_s,
            "config_source": self.config_source,
            "config": {
                name: {"hardware": c.hardware, "batch_size": c.batch_size, "replicas": c.replicas}
                for name, c in self.config.stages.items()
            },
            "cost_per_hour": self.cost_per_hour,
            "planning_queries": self.planning_queries,
            "retimed": self.retimed,
            "pinned": None if self.cores is None else self.cores.as_dict(),
            "levels": self.levels(),
            "runs": [r.as_dict() for r in self.runs],
            "notes": list(self.notes),
            "wall_s": self.wall_s,
        }


#: A run whose replayer sent its 99th-percentile query later than this is "disturbed".
DISTURBED_LAG_S = 0.010
#: A run with a stage this much faster or slower than profiled is "disturbed" ...
DRIFT_LIMIT = 0.15
#: ... when that is more than this per batch (seconds).
DRIFT_MIN_S = 0.0005

#: Front-end and replayer CPU per query, for deciding whether core 0 can hold them (s).
_FRONT_END_CPU_S = 0.0006


@dataclass(frozen=True)
class CorePlan:
    """Which cores the engine's processes may run on during validation.

    The busiest single-thread replicas get a core each (``dedicated``: stage → the core of
    each of its replicas, in replica order); the front-end, the replayer and every other
    replica share ``shared``. On a small machine this keeps the front-end's and the light
    stages' wake-ups from pre-empting a busy model in the middle of a batch, which the
    profiles (timed with nothing else of the pipeline running) do not contain.
    """

    shared: tuple[int, ...]
    dedicated: dict[str, tuple[int | None, ...]]

    def as_dict(self) -> dict[str, Any]:
        return {
            "shared": list(self.shared),
            "dedicated": {k: list(v) for k, v in self.dedicated.items()},
        }


def plan_cores(
    config: PipelineConfig,
    utilisation: dict[str, float],
    rate_qps: float,
    cores: int,
) -> CorePlan | None:
    """Dedicated cores for busy single-thread replicas, or None when pinning does not fit
    (one core, multi-thread replicas, or more work than the shared core can hold)."""
    if cores < 2:
        return None
    replicas: list[tuple[float, str, int]] = []
    for name, c in config.stages.items():
        if resources_for(c.hardware).threads > 1:
            return None
        replicas.extend((utilisation.get(name, 0.0), name, i) for i in range(c.replicas))
    load = dict.fromkeys(range(1, cores), 0.0)
    shared_demand = rate_qps * _FRONT_END_CPU_S
    chosen: dict[tuple[str, int], int] = {}
    for demand, name, i in sorted(replicas, key=lambda r: (-r[0], r[1], r[2])):
        core = min(load, key=lambda k: (load[k], k))
        if demand >= 0.2 and load[core] + demand <= 0.95:
            load[core] += demand
            chosen[(name, i)] = core
        else:
            shared_demand += demand
    if not chosen or shared_demand > 0.9:
        return None
    dedicated = {
        name: tuple(chosen.get((name, i)) for i in range(c.replicas))
        for name, c in config.stages.items()
        if any((name, i) in chosen for i in range(c.replicas))
    }
    return CorePlan(shared=(0,), dedicated=dedicated)


def _compute_share(profiles: Profiles, stage: str, c: StageConfig) -> float:
    """The share of a batch's time spent in ``predict`` (the rest is IPC and process
    wake-ups, which keep a replica busy but hardly use a core); 1 when not recorded."""
    profile = profiles.get(stage, c.hardware)
    point = next((q for q in profile.points if q.batch_size >= c.batch_size), profile.points[-1])
    if point.predict_median_s is None:
        return 1.0
    return min(1.0, point.predict_median_s / point.median_s)


def _set_affinity(pid: int, cores: set[int]) -> None:
    """Pin every thread of ``pid`` (a replica may have started library threads)."""
    tasks = Path(f"/proc/{pid}/task")
    tids = [int(t.name) for t in tasks.iterdir()] if tasks.is_dir() else [pid]
    for tid in tids:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(tid, cores)


def _pin(engine: EngineProcess, plan: CorePlan) -> None:
    shared = set(plan.shared)
    _set_affinity(engine.process.pid, shared)
    for name, stage in engine.status()["stages"].items():
        cores = plan.dedicated.get(name, ())
        for i, replica in enumerate(stage["replica_list"]):
            core = cores[i] if i < len(cores) else None
            _set_affinity(int(replica["pid"]), shared if core is None else {core})


def attach_samples(
    arrival_s: np.ndarray, paths: MeasuredPaths, seed: int, source: str
) -> tuple[Trace, np.ndarray]:
    """A trace whose query ``i`` carries sample ``k[i]``'s recorded path, and ``k``."""
    rng = np.random.default_rng([seed, 7])
    k = rng.integers(0, paths.samples, size=arrival_s.size)
    trace = Trace.from_arrivals(
        arrival_s, [paths.path_of(int(i)) for i in k.tolist()], source=source
    )
    return trace, k


def rate_for_utilisation(
    utilisation_at: Callable[[float], float], start_rate_qps: float, target: float
) -> float:
    """The rate at which ``utilisation_at(rate)`` (increasing, roughly proportional) is
    ``target``: proportional steps to bracket it, then bisection on log-rate."""
    rate = start_rate_qps
    lo = hi = None
    for _ in range(60):
        u = utilisation_at(rate)
        if abs(u - target) <= 0.002:
            return rate
        if u < target:
            lo = rate
        else:
            hi = rate
        if lo is not None and hi is not None:
            rate = math.sqrt(lo * hi)
            if hi / lo < 1.0005:
                return rate
        else:
            factor = target / u if u > 0 else 2.0
            rate *= min(4.0, max(0.25, factor))
    return rate


def _restricted_profiles(profiles: Profiles, hardware: Sequence[str]) -> Profiles:
    """Only the hardware that exists here (and that ``hardware`` names, if given)."""
    usable, _ = available_hardware(profiles.hardware, hardware)
    names = {name for name, _ in usable}
    entries = {k: p for k, p in profiles.entries.items() if k[1] in names}
    return Profiles(profiles.hardware, entries, profiles.source, profiles.overhead)


def _plan(
    bundle: Bundle, profiles: Profiles, planning: Trace, options: ValidateOptions
) -> tuple[PipelineConfig, str]:
    if options.config is not None:
        config = load_config(options.config)
        check_config_for(config, bundle.pipeline, profiles, str(options.config))
        return config, str(options.config)
    for stage in bundle.pipeline.stage_names:
        if not profiles.hardware_for(stage):
            raise ConfigError(
                f"stage '{stage}' has no profile on hardware that exists on this machine; "
                "run `inferline profile` first",
                source=profiles.source,
            )
    result = plan(
        "inferline",
        bundle.pipeline,
        profiles,
        planning,
        options.slo_s,
        seed=options.seed,
        margin=options.margin,
    )
    return result.config, "inferline planner on the planning trace"


def _estimate(
    bundle: Bundle,
    profiles: Profiles,
    trace: Trace,
    config: PipelineConfig,
    options: ValidateOptions,
    *,
    engine_overhead: bool = True,
) -> SimulationResult:
    return Estimator(
        bundle.pipeline,
        profiles,
        trace,
        slo_s=options.slo_s,
        seed=options.seed,
        service_time=options.service_time,
        engine_overhead=engine_overhead,
    ).run(config)


def _cpu_demand(result: SimulationResult, config: PipelineConfig) -> float:
    """Cores the replicas keep busy on average: Σ utilisation × replicas × threads."""
    return float(
        sum(
            stats.utilization
            * config.stages[name].replicas
            * resources_for(config.stages[name].hardware).threads
            for name, stats in result.stages.items()
        )
    )


def validate_bundle(
    bundle_dir: str | Path,
    trace_file: str | Path,
    options: ValidateOptions,
    status: Callable[[str], None] = lambda _msg: None,
) -> ValidationReport:
    """Plan (or load a plan), serve it, replay evaluation traffic, compare with the Estimator."""
    with scheduling_priority(options.nice):
        return _validate_bundle(bundle_dir, trace_file, options, status)


@dataclass(frozen=True)
class _Prepared:
    """One run before serving: its arrivals, samples and the Estimator's figures."""

    level: float | None
    label: str
    trace: Trace
    samples: np.ndarray
    estimated: SimulationResult
    bare: SimulationResult
    alternative: dict[str, Any]
    from_bundle: dict[str, float] | None


def _prepare(
    bundle: Bundle,
    paths: MeasuredPaths,
    evaluation: Trace,
    config: PipelineConfig,
    profiles: Profiles,
    bundle_profiles: Profiles | None,
    level: float | None,
    options: ValidateOptions,
) -> _Prepared:
    """The run's trace (rescaled to ``level``) and every estimate of it."""
    if level is None:
        scaled = evaluation
    else:

        def utilisation_at(rate: float) -> float:
            window = rescale_to_mean_rate(evaluation, rate).window(0.0, options.duration_s)
            t, _ = attach_samples(window.arrival_s, paths, options.seed, "probe")
            result = _estimate(bundle, profiles, t, config, options)
            return max(s.utilization for s in result.stages.values())

        rate = rate_for_utilisation(utilisation_at, evaluation.mean_rate_qps, level)
        scaled = rescale_to_mean_rate(evaluation, rate)
    window = scaled.window(0.0, options.duration_s)
    label = "trace rate" if level is None else f"U={level:.2f}"
    run_trace, k = attach_samples(
        window.arrival_s, paths, options.seed, f"{evaluation.source} ({label})"
    )
    estimated = _estimate(bundle, profiles, run_trace, config, options)
    bare = _estimate(bundle, profiles, run_trace, config, options, engine_overhead=False)
    other_model: ServiceTime = "lognormal" if options.service_time == "fixed" else "fixed"
    other = _estimate(
        bundle, profiles, run_trace, config, dataclasses.replace(options, service_time=other_model)
    )
    alternative = {
        "service_time": other_model,
        "p50_s": other.p50_s,
        "p99_s": other.p99_s,
        "miss_rate": other.miss_rate,
    }
    from_bundle = None
    if bundle_profiles is not None:
        b = _estimate(bundle, bundle_profiles, run_trace, config, options)
        from_bundle = {"p50_s": b.p50_s, "p99_s": b.p99_s, "miss_rate": b.miss_rate}
    return _Prepared(level, label, run_trace, k, estimated, bare, alternative, from_bundle)


def _validate_bundle(
    bundle_dir: str | Path,
    trace_file: str | Path,
    options: ValidateOptions,
    status: Callable[[str], None],
) -> ValidationReport:
    from inferline.engine.process import start_engine

    started = time.monotonic()
    bundle = load_bundle(bundle_dir)
    if bundle.paths is None or bundle.samples is None:
        raise ConfigError(
            "validate needs the bundle's sample queries and their measured paths: give "
            "pipeline.yaml `samples:` and `paths: paths.yaml`, and run `inferline profile`",
            source=bundle.root / "pipeline.yaml",
            field="paths" if bundle.paths is None else "samples",
        )
    paths = bundle.paths
    bodies = load_samples(bundle.root, bundle.samples, paths.samples, paths.seed)
    if paths.samples_hash and json_digest(bodies) != paths.samples_hash:
        raise ProfilerError(
            f"the samples function {bundle.samples} now returns other bodies than when "
            f"{Path(paths.source).name} was measured; re-run `inferline profile`"
        )
    encoded = encode_bodies(bodies)
    profiles = _restricted_profiles(bundle.profiles, options.hardware)
    trace = load_trace(trace_file)
    planning_arrivals, evaluation = split_trace(trace, options.planning_fraction)
    planning, _ = attach_samples(
        planning_arrivals.arrival_s, paths, options.seed, f"{trace.source} (planning part)"
    )
    status("planning" if options.config is None else "checking the plan")
    config, config_source = _plan(bundle, profiles, planning, options)

    def prepare(level: float | None, now: Profiles, retimed: bool) -> _Prepared:
        return _prepare(
            bundle, paths, evaluation, config, now, profiles if retimed else None, level, options
        )

    levels: list[float | None] = list(options.utilisations) or [None]
    prepared = [prepare(level, profiles, False) for level in levels for _ in range(options.repeat)]
    own_cores = os.sched_getaffinity(0)
    cores = None
    if options.pin:
        busiest = {
            name: max(run.estimated.stages[name].utilization for run in prepared)
            * _compute_share(profiles, name, config.stages[name])
            for name in config.stages
        }
        top_rate = max(float(run.trace.mean_rate_qps) for run in prepared)
        cores = plan_cores(config, busiest, top_rate, len(own_cores))
    runs = []
    with tempfile.TemporaryDirectory(prefix="inferline-validate-") as tmp:
        plan_file = Path(tmp) / "plan.yaml"
        save_config(config, plan_file)
        status(f"starting the engine ({sum(c.replicas for c in config.stages.values())} replicas)")
        try:
            with start_engine(
                bundle.root,
                plan_file,
                "--slo-s",
                repr(options.slo_s),
                "--max-queue",
                "1000000",
                "--calibration-window-s",
                "86400",  # the batch sizes each stage ran: every batch since reset_stats
                start_timeout_s=options.start_timeout_s,
            ) as engine:
                if cores is not None:
                    _pin(engine, cores)
                for i, run in enumerate(prepared):
                    used = profiles
                    if options.retime:
                        # time the planned stages again now, while the engine idles, and
                        # choose this run's rate and estimate from those figures
                        status(f"{run.label}: re-timing the planned stages")
                        os.sched_setaffinity(0, own_cores)
                        used = retimed_profiles(bundle, profiles, config, bodies)
                        run = prepared[i] = prepare(run.level, used, True)
                    if cores is not None:
                        os.sched_setaffinity(0, set(cores.shared))
                    runs.append(
                        _serve_run(engine, run, used, config, encoded, bundle, options, status)
                    )
        except InferLineError:
            raise
        except (OSError, RuntimeError, TimeoutError) as exc:
            raise ProfilerError(f"could not serve the plan: {exc}") from None
        finally:
            os.sched_setaffinity(0, own_cores)
    notes = []
    n_cores = len(own_cores)
    for r in runs:
        if r.cpu_demand > n_cores - 0.5:
            notes.append(
                f"{r.label}: the replicas alone keep {r.cpu_demand:.2f} of {n_cores} cores busy; "
                "with the front-end and the replayer on the same cores the measured latency "
                "includes CPU contention the profiles do not (docs/profiler.md)"
            )
    stalled = [r.label for r in runs if r.stalled]
    if stalled:
        notes.append(
            f"{len(stalled)} run(s) ({', '.join(stalled)}) were disturbed: the replayer "
            f"itself fell more than {DISTURBED_LAG_S * 1000:g} ms behind its schedule (P99), "
            "so the machine stalled during them; level summaries use the other runs"
        )
    drifted = [f"{r.label} ({r.speed_drift:+.0%})" for r in runs if r.drifted and r.speed_drift]
    if drifted:
        notes.append(
            f"{len(drifted)} run(s) were disturbed by the machine's speed: the busiest stage's "
            f"predict ran more than {DRIFT_LIMIT:.0%} slower or faster in the engine than in "
            f"the profile the estimate used ({', '.join(drifted)}); level summaries use the "
            "other runs (the estimate for the speed seen is in --json: "
            "p99_error_with_engine_service)"
        )
    if options.pin and cores is None:
        notes.append(
            "nothing was pinned: no single-thread replica is busy enough, a replica has several "
            "threads, or the other replicas would not fit on one core"
        )
    return ValidationReport(
        bundle=bundle.root,
        pipeline=bundle.pipeline.name,
        config=config,
        config_source=config_source,
        cost_per_hour=config.cost_per_hour(profiles.hardware.price_per_hour),
        slo_s=options.slo_s,
        planning_queries=planning.n_queries,
        runs=tuple(runs),
        wall_s=time.monotonic() - started,
        notes=tuple(notes),
        retimed=options.retime,
        cores=cores,
    )


def _serve_run(
    engine: EngineProcess,
    run: _Prepared,
    profiles: Profiles,
    config: PipelineConfig,
    encoded: list[bytes],
    bundle: Bundle,
    options: ValidateOptions,
    status: Callable[[str], None],
) -> ValidationRun:
    """Warm up, replay one run against the served engine, and pair it with its estimate."""
    from inferline.engine import replay, replay_summary

    arrivals = run.trace.arrival_s
    rate = float(run.trace.mean_rate_qps)
    query_bodies = [encoded[i] for i in run.samples.tolist()]
    if options.warmup_s > 0:
        status(f"{run.label}: warming up for {options.warmup_s:g} s at {rate:.1f} q/s")
        rng = np.random.default_rng([options.seed, 11])
        n_warm = max(1, int(rate * options.warmup_s))
        warm = np.cumsum(rng.exponential(1.0 / rate, n_warm))
        warm_bodies = [encoded[i] for i in rng.integers(0, len(encoded), n_warm)]
        replay(
            engine.url,
            warm,
            warm_bodies,
            slo_s=options.slo_s,
            model=bundle.pipeline.name,
            timeout_s=options.replay_timeout_s,
        )
    engine.reset_stats()
    load_before = os.getloadavg()[0]
    status(
        f"{run.label}: replaying {arrivals.size} queries over {run.trace.duration_s:.1f} s "
        f"({rate:.1f} q/s)"
    )
    result = replay(
        engine.url,
        arrivals,
        query_bodies,
        slo_s=options.slo_s,
        model=bundle.pipeline.name,
        timeout_s=options.replay_timeout_s,
    )
    measured = replay_summary(result)
    stats = engine.stats()
    code, calibration = engine.request("GET", "/v2/control/calibration")
    sizes = calibration.get("stages", {}) if code == 200 and isinstance(calibration, dict) else {}
    if measured["errors"]:
        measured["first_error"] = next(iter(result.errors.values()), "")
    estimated = run.estimated
    service = _service_drift(stats, sizes, estimated, profiles, config)
    engine_service = None
    seen = _with_engine_service(profiles, config, service)
    if seen is not None:
        again = _estimate(bundle, seen, run.trace, config, options)
        engine_service = {"p50_s": again.p50_s, "p99_s": again.p99_s, "miss_rate": again.miss_rate}
    return ValidationRun(
        label=run.label,
        target_utilisation=run.level,
        rate_qps=rate,
        queries=int(arrivals.size),
        duration_s=float(run.trace.duration_s),
        estimated={
            "p50_s": estimated.p50_s,
            "p99_s": estimated.p99_s,
            "miss_rate": estimated.miss_rate,
        },
        estimated_without_overhead_p99_s=run.bare.p99_s,
        utilisation={n: s.utilization for n, s in estimated.stages.items()},
        cpu_demand=_cpu_demand(estimated, config),
        measured=measured,
        load_average=(load_before, os.getloadavg()[0]),
        estimated_with_bundle_profiles=run.from_bundle,
        service=service,
        estimated_other_service_time=run.alternative,
        estimated_with_engine_service=engine_service,
    )


def _with_engine_service(
    profiles: Profiles, config: PipelineConfig, service: dict[str, dict[str, float | None]]
) -> Profiles | None:
    """The profiles with each planned stage's ``predict`` part scaled by how much slower
    (or faster) the engine ran it during the run than profiled: a post-hoc estimate that
    tells the Estimator's own error from the machine's speed drift (None if unknown)."""
    entries = dict(profiles.entries)
    for name, c in config.stages.items():
        ratio = service.get(name, {}).get("ratio")
        if ratio is None:
            return None
        old = entries[(name, c.hardware)]
        points = []
        for q in old.points:
            if q.predict_median_s is None:
                return None
            extra = (ratio - 1.0) * q.predict_median_s
            points.append(
                dataclasses.replace(
                    q,
                    median_s=max(1e-9, q.median_s + extra),
                    p99_s=max(1e-9, q.p99_s + extra * q.p99_s / q.median_s),
                )
            )
        entries[(name, c.hardware)] = dataclasses.replace(old, points=tuple(points))
    return Profiles(profiles.hardware, entries, profiles.source).with_overhead(profiles.overhead)


def _service_drift(
    stats: dict[str, Any],
    sizes: dict[str, Any],
    estimated: SimulationResult,
    profiles: Profiles,
    config: PipelineConfig,
) -> dict[str, dict[str, float | None]]:
    """Per stage: ``predict`` in the engine during the run against the profile's: over
    every batch the stage ran, at its size (``sizes``: the engine's calibration report's
    stages), or else at the profiled batch size nearest (above) the run's mean batch size.
    How far each stage's speed drifted from its profile."""
    out: dict[str, dict[str, float | None]] = {}
    for name, s in stats.get("stages", {}).items():
        predict = s.get("predict_s", {})
        engine_s = predict.get("p50")
        c = config.stages[name]
        profile = profiles.get(name, c.hardware)
        mean_batch = estimated.stages[name].mean_batch_size or 1.0
        point = next(
            (p for p in profile.points if p.batch_size >= round(mean_batch)), profile.points[-1]
        )
        profiled = point.predict_median_s
        out[name] = {
            "engine_predict_median_s": engine_s,
            "engine_predict_mean_s": predict.get("mean"),
            "engine_predict_p99_s": predict.get("p99"),
            "engine_overhead_median_s": s.get("overhead_s", {}).get("p50"),
            "engine_queue_wait_mean_s": s.get("queue_wait_s", {}).get("mean"),
            "profiled_predict_median_s": profiled,
            "profiled_median_s": point.median_s,
            "profiled_p99_s": point.p99_s,
            "batch_size": float(point.batch_size),
            "ratio": engine_s / profiled if engine_s and profiled else None,
        }
        seen = [
            (int(x["batch_size"]), int(x["count"]), float(x["median_s"]), float(x["p99_s"]))
            for x in sizes.get(name, {}).get("batch_sizes", [])
        ]
        speed = speed_of_sizes(profile, seen, min_samples=1) if seen else None
        if speed is not None and speed.ratio is not None:
            out[name].update(
                ratio=speed.ratio,
                batches=float(speed.samples),
                engine_predict_s=speed.predict_s,
                profiled_predict_s=speed.profiled_s,
            )
    return out


def retimed_profiles(
    bundle: Bundle, profiles: Profiles, config: PipelineConfig, bodies: list[dict[str, Any]]
) -> Profiles:
    """``profiles`` with each planned (stage, hardware) timed again now, at batch sizes up to
    the planned one: on a shared machine the speed drifts, and this separates that drift
    from the Estimator's own error (docs/profiler.md)."""
    from inferline.profiler._profile import (
        NullProgress,
        ProfileOptions,
        capture_and_time,
        run_async,
    )
    from inferline.profiler._stats import batch_sizes

    usable = dict(available_hardware(profiles.hardware)[0])
    todo = {
        (name, c.hardware): list(batch_sizes(c.batch_size)) for name, c in config.stages.items()
    }
    hw_order = [
        (hw, usable[hw]) for hw in dict.fromkeys(c.hardware for c in config.stages.values())
    ]
    _, measured = run_async(
        capture_and_time(
            bundle.pipeline,
            bundle.root,
            bodies,
            hw_order,
            todo,
            ProfileOptions(),
            NullProgress(),
            paths_meta={
                "samples_function": str(bundle.samples),
                "code_hash": "",
                "samples_hash": "",
                "measured_on": "",
            },
        )
    )
    entries = dict(profiles.entries)
    for (stage, hw), points in measured.items():
        old = profiles.entries[(stage, hw)]
        entries[(stage, hw)] = dataclasses.replace(
            old, points=tuple(summary.point(b) for b, summary in sorted(points.items()))
        )
    return Profiles(profiles.hardware, entries, profiles.source).with_overhead(profiles.overhead)
