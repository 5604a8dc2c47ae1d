"""``inferline bench promise``: does a plan the Planner calls feasible hold when served?

SPEC §4's rows "The promise, served" and "Estimator accuracy on the real engine", on this
machine (issue 14, "Done when"). Per bundle:

1. **Capacity**: the highest Poisson rate at which the Planner finds a plan for this
   machine (``plan(..., machine=pool)``: by default the cores its replicas keep busy
   within 80 % of the host's, after the front-end's measured share), found by bisection
   on the rate (:func:`machine_capacity`).
2. **A binding SLO**: the smallest SLO at which a plan fits at the top load
   (:func:`tightest_slo`; × ``slo_factor``, 1 by default), the SLO of the capacity; then
   each load gets its own, the tightest at that load (one SLO for all with
   ``slo_per_load=False``): a plan *binds* when its estimated P99 is ≥ 80 % of the SLO.
   Plans, capacity and the tightest SLOs are all made for an estimated P99 ≤ SLO × (1 −
   ``margin``) (0.15 by default): headroom for a machine whose speed moves between
   minutes, so a plan at the tightest SLO estimates 82–85 % of it.
3. **The promise**: at each load (0.5 and 0.8 × capacity) the plan is served on the real
   engine and a held-out Poisson trace with the bundle's real sample payloads replayed;
   measured P99 and misses against the Estimator's for the same arrivals, with the
   bundle's profiles and with the profiles the engine calibrated from the run
   (:func:`calibrated_estimate`, along the paths the engine answered). Medians over
   ``repeats``. Then the Planner plans again from what the engine calibrated
   (:func:`replanning_profiles`) and a different plan is served the same way.
4. **A ramp**: 0.4 → 0.8 × capacity with the Tuner on against the fixed plan sized for the
   peak: misses and the replica cost integrated over the run from the engine's status.
5. **The machine**: the most replica threads the engine ran at any time, against the pool;
   and what other processes and the hypervisor took during each run (a disturbed run is
   run again, ``max_reruns``).

With ``profile_here`` each bundle is first copied into a temporary folder and profiled on
this machine (:func:`profile_copy`): a bundle's profiles are from the machine they were
taken on, and planned on another machine's the benchmark measures their age, not the
promise.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import math
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from rich.table import Table

from inferline import Bundle, load_bundle
from inferline.bench._machine_load import (
    OTHER_CORES_LIMIT,
    STEAL_LIMIT,
    MachineLoadMeter,
)
from inferline.engine import CalibrationReport, fetch_calibration
from inferline.errors import ConfigError, InfeasibleError, InferLineError
from inferline.estimator import Estimator, ServiceTime, SimulationResult
from inferline.pipeline import Pipeline, PipelineConfig, save_config
from inferline.planner import Plan, plan, tail_bias, with_batch_headroom
from inferline.profiles import (
    EngineOverhead,
    MachinePool,
    Profiles,
    frontend_cpu_s_per_query,
    machine_pool_for_host,
    resources_for,
)
from inferline.workload import Trace, gamma_trace, ramp_trace

if TYPE_CHECKING:
    from inferline.engine.process import EngineProcess
    from inferline.profiler import ProfileOptions

__all__ = [
    "DEFAULT_BUNDLES",
    "FRONTEND_CPU_S_PER_QUERY",
    "PLANNING_MARGIN",
    "PromiseSettings",
    "StatusPoller",
    "calibrated_estimate",
    "machine_capacity",
    "machine_pool",
    "plan_for_machine",
    "repeat_spread",
    "run_promise_benchmark",
    "status_figures",
    "tables",
    "tightest_slo",
]

#: Front-end CPU per query (HTTP, queues, dispatch; issue 14 measured 0.6-0.8 ms): the
#: machine's cores bound the rate the capacity search tries.
FRONTEND_CPU_S_PER_QUERY = 0.0007

#: The Tuner's ramp cost may exceed the fixed plan's by this share: cost is the replicas'
#: price integrated over each run's own length, so two runs of one plan differ slightly.
RAMP_COST_TOLERANCE = 0.01

#: The planning margin the benchmark plans with by default: on the 2-core VM the same
#: plan's measured P99 moved 14–41 % between consecutive minutes (runs P and Q,
#: benchmarks/results/promise.md) while the estimate calibrated on each run followed it;
#: planned to the SLO itself, 5 of 12 levels missed more than 1 %.
PLANNING_MARGIN = 0.15

Progress = Callable[[str, int, int], None]

#: Where the benchmark's plans come from: "calibrated", profiles the engine calibrated
#: serving a first plan on this machine (what a user does: profile, serve, ``inferline
#: calibrate``, plan); "isolated", the bundle's profiles as they are.
PlanFrom = Literal["calibrated", "isolated"]
PLAN_FROM: tuple[PlanFrom, ...] = ("calibrated", "isolated")

#: The example pipelines, relative to the checkout.
DEFAULT_BUNDLES = (
    Path("examples/text-pipeline"),
    Path("examples/image-cascade"),
    Path("examples/tabular-triage"),
)


@dataclass(frozen=True, slots=True)
class PromiseSettings:
    """What the benchmark plans, serves and sends (times in seconds, rates in q/s)."""

    bundles: tuple[Path, ...] = DEFAULT_BUNDLES
    loads: tuple[float, ...] = (0.5, 0.8)  # fractions of the machine's capacity
    duration_s: float = 60.0  # held-out arrivals per run
    repeats: int = 3
    warmup_s: float = 3.0
    slo_s: float | None = None  # None: the tightest SLO that fits at the top load, × slo_factor
    slo_per_load: bool = True  # without slo_s: each load its own tightest SLO × slo_factor
    #: × the tightest SLO: the margin is the slack (runs P and Q, margin 0, served at
    #: 1.1 × the tightest; with margin 0.15 that left the estimate at 77 % of the SLO)
    slo_factor: float = 1.0
    loose_slo_s: float = 1.0  # the SLO of the first capacity search, and the SLO search's top
    binding_fraction: float = 0.8  # a plan binds when its estimated P99 ≥ this × the SLO
    #: plans (and the tightest SLO) are made for an estimated P99 ≤ SLO × (1 − margin):
    #: headroom for the machine's speed moving between minutes (docs/planner.md,
    #: "Headroom for a drifting machine"); 0 plans to the SLO itself
    margin: float = PLANNING_MARGIN
    #: three held-out runs long: on one 60-s trace the cheapest plan that passed had passed
    #: partly by the trace's luck (run B: the image cascade's plans estimated 15–25 % higher
    #: on every held-out trace than on their planning one); shorter flatters more
    planning_duration_s: float = 180.0
    max_rate_qps: float | None = None  # None: what the machine's cores could parse
    machine: MachinePool | None = None  # None: this host (machine_pool_for_host, fit=busy)
    ramp: bool = True
    ramp_from: float = 0.4
    ramp_to: float = 0.8
    ramp_s: float = 60.0
    ramp_hold_s: float = 5.0  # flat before and after the ramp
    policy: str | None = None  # None: `inferline serve --tune`'s default
    #: the Tuner's start plan with each batch raised a step at no cost where it stays
    #: feasible (:func:`~inferline.planner.with_batch_headroom`): the Tuner scales replicas
    #: only (run H: from a plan trimmed to batch 2 it bought a replica the peak's plan,
    #: at batch 4, did without); False serves the Planner's plan as it is
    batch_headroom: bool = True
    #: the benchmark's estimates use the Planner's own service-time model (fixed, at each
    #: batch's median), so the tail bias it measures corrects plans for all the model
    #: leaves out, the batches' spread included: with lognormal times here (runs A–C) the
    #: same plans estimated 9–24 % above what the Planner had judged them at, and plans
    #: corrected by a lognormal bias missed by that much
    service_time: ServiceTime = "fixed"
    miss_target: float = 0.01
    error_target: float = 0.10
    poll_s: float = 0.25
    start_timeout_s: float = 300.0
    tail_s: float = 30.0  # after the last send, wait this long for answers
    #: a run during which other processes kept more than ``other_cores_limit`` cores busy
    #: or the hypervisor stole more than ``steal_limit`` of the CPU is run again, at most
    #: this many times per load (and per leg of the ramp)
    max_reruns: int = 2
    #: after each load's runs, plan again from the profiles the engine calibrated and
    #: serve that plan too when it differs
    replan: bool = True
    other_cores_limit: float = OTHER_CORES_LIMIT
    steal_limit: float = STEAL_LIMIT
    #: profile a copy of each bundle on this machine first (:func:`profile_copy`)
    profile_here: bool = False
    plan_from: PlanFrom = "calibrated"
    #: with plan_from="calibrated": the first plan serves this share of the capacity the
    #: isolated profiles give at the loose SLO, for this long
    calibration_load: float = 0.6
    #: 60 s: the tail bias is a ratio of two P99s, and a 30-s serve's moved it by ±12 %
    calibration_s: float = 60.0
    #: with plan_from="calibrated": correct plans and estimates by the tail bias the
    #: calibration serve measured (:func:`tail_bias`; docs/planner.md, "The Estimator's
    #: tail bias on this machine"); False plans with the calibrated profiles alone
    correct_bias: bool = True
    #: measure that bias on a second serve, of a plan made from the calibrated profiles
    #: (:func:`_bias_serve`); False: on the first plan's serve
    bias_serve: bool = True
    #: judge each run's estimate as the engine's live calibration makes it: the Estimator
    #: on the run's own CPU work (sh), × the measured ÷ sh ratio this plan showed on the
    #: window served just before (:func:`_priming_ratio` before the first run). The
    #: ratio depends on the plan's shape (docs/planner.md, "What one ratio cannot do"),
    #: so it is learned on the plan in force; False judges sh × the Planner's tail bias
    live_bias: bool = True
    #: the window served before a load's first run to learn that ratio on (0: the first
    #: run is judged with the Planner's tail bias)
    priming_s: float = 20.0
    seed: int = 0

    def __post_init__(self) -> None:
        positive = (
            "duration_s",
            "slo_factor",
            "loose_slo_s",
            "planning_duration_s",
            "ramp_s",
            "poll_s",
            "start_timeout_s",
            "calibration_s",
            "tail_s",
        )
        for name in positive:
            if not getattr(self, name) > 0:
                raise ConfigError(f"must be positive, got {getattr(self, name)!r}", field=name)
        for name in ("warmup_s", "ramp_hold_s", "priming_s"):
            if getattr(self, name) < 0:
                raise ConfigError(f"must be ≥ 0, got {getattr(self, name)!r}", field=name)
        if self.slo_s is not None and not self.slo_s > 0:
            raise ConfigError(f"must be positive, got {self.slo_s!r}", field="slo_s")
        if self.max_rate_qps is not None and not self.max_rate_qps > 0:
            raise ConfigError(f"must be positive, got {self.max_rate_qps!r}", field="max_rate_qps")
        if self.repeats < 1:
            raise ConfigError(f"must be ≥ 1, got {self.repeats}", field="repeats")
        if self.max_reruns < 0:
            raise ConfigError(f"must be ≥ 0, got {self.max_reruns}", field="max_reruns")
        for name in ("other_cores_limit", "steal_limit"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"must be ≥ 0, got {getattr(self, name)!r}", field=name)
        if not self.bundles:
            raise ConfigError("give at least one bundle folder", field="bundles")
        if not self.loads or not all(0 < f <= 1 for f in self.loads):
            raise ConfigError(
                f"give fractions of capacity in (0, 1], got {self.loads!r}", field="loads"
            )
        if not 0 < self.ramp_from < self.ramp_to <= 1:
            raise ConfigError(
                f"the ramp goes up within capacity: 0 < from < to ≤ 1, got "
                f"{self.ramp_from!r} → {self.ramp_to!r}",
                field="ramp_from",
            )
        if self.plan_from not in PLAN_FROM:
            raise ConfigError(
                f"plan from one of {', '.join(PLAN_FROM)}, got {self.plan_from!r}",
                field="plan_from",
            )
        if not 0 < self.calibration_load <= 1:
            raise ConfigError(
                f"a share of capacity in (0, 1], got {self.calibration_load!r}",
                field="calibration_load",
            )
        if not 0 < self.binding_fraction <= 1:
            raise ConfigError(
                f"must be in (0, 1], got {self.binding_fraction!r}", field="binding_fraction"
            )
        for name in ("miss_target", "error_target", "margin"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"must be in [0, 1), got {getattr(self, name)!r}", field=name)


# --- the machine and planning for it (pure: no engine) ------------------------------------


def machine_pool(settings: PromiseSettings) -> MachinePool:
    """The machine plans are made for: the one given, else this host as the Planner's
    ``--machine local`` sees it (docs/planner.md, "Planning for a machine")."""
    return settings.machine if settings.machine is not None else machine_pool_for_host()


def usable_profiles(profiles: Profiles, pool: MachinePool) -> Profiles:
    """Only hardware this machine has: GPU profiles go when the pool has no GPU."""
    entries = {
        key: p
        for key, p in profiles.entries.items()
        if pool.gpus > 0 or resources_for(key[1]).device != "cuda"
    }
    return Profiles(profiles.hardware, entries, profiles.source, profiles.overhead)


def plan_for_machine(
    pipeline: Pipeline,
    profiles: Profiles,
    trace: Trace,
    slo_s: float,
    pool: MachinePool,
    *,
    seed: int = 0,
    margin: float = 0.0,
    tail_bias: float = 1.0,
) -> Plan | None:
    """The Planner's plan for ``trace`` at ``slo_s`` (estimated P99 × ``tail_bias`` ≤ SLO ×
    (1 − margin)) on the machine ``pool``, else None (infeasible there, or anywhere)."""
    try:
        return plan(
            "inferline",
            pipeline,
            profiles,
            trace,
            slo_s,
            seed=seed,
            margin=margin,
            machine=pool,
            tail_bias=tail_bias,
        )
    except InfeasibleError:
        return None


def machine_capacity(
    fits_at: Callable[[float], bool],
    start_rate_qps: float,
    *,
    max_rate_qps: float,
    min_rate_qps: float = 0.5,
    rel_tol: float = 0.03,
) -> float:
    """The highest rate in [min, max] at which ``fits_at(rate)`` holds (0 if none).

    Assumes feasibility falls with the rate: doubling or halving from the start brackets
    it, bisection on log-rate narrows it to ``rel_tol``."""
    rate = min(max(start_rate_qps, min_rate_qps), max_rate_qps)
    if fits_at(rate):
        lo = rate
        while True:  # double until it no longer fits
            if lo >= max_rate_qps:
                return max_rate_qps
            hi = min(lo * 2.0, max_rate_qps)
            if not fits_at(hi):
                break
            lo = hi
    else:
        hi = rate
        while True:  # halve until it fits
            lo = max(hi / 2.0, min_rate_qps)
            if fits_at(lo):
                break
            if lo <= min_rate_qps:
                return 0.0
            hi = lo
    while hi / lo > 1.0 + rel_tol:
        mid = math.sqrt(lo * hi)
        if fits_at(mid):
            lo = mid
        else:
            hi = mid
    return lo


def tightest_slo(
    fits_with: Callable[[float], bool], high_slo_s: float, *, rel_tol: float = 0.03
) -> float | None:
    """The smallest SLO up to ``high_slo_s`` with which ``fits_with(slo)`` holds, to
    ``rel_tol`` (None if even ``high_slo_s`` does not): bisection on log-SLO."""
    if not fits_with(high_slo_s):
        return None
    hi = high_slo_s
    lo = high_slo_s / 2.0
    while fits_with(lo):
        hi, lo = lo, lo / 2.0
        if lo < 1e-5:
            return hi
    while hi / lo > 1.0 + rel_tol:
        mid = math.sqrt(lo * hi)
        if fits_with(mid):
            hi = mid
        else:
            lo = mid
    return hi


def single_replica_rate(pipeline: Pipeline, profiles: Profiles) -> float:
    """The rate one replica per stage could carry at its best batch: a first guess."""
    scale = pipeline.scale_factors
    rates = []
    for stage in pipeline.stage_names:
        best = max(
            profiles.get(stage, hw).throughput_qps(p.batch_size)
            for hw in profiles.hardware_for(stage)
            for p in profiles.get(stage, hw).points
        )
        rates.append(best / max(scale.get(stage, 1.0), 1e-9))
    return max(1.0, min(rates))


# --- calibration from what the engine measured ---------------------------------------------


def calibrated_estimate(
    pipeline: Pipeline,
    config: PipelineConfig,
    trace: Trace,
    url: str,
    *,
    slo_s: float,
    seed: int = 0,
    service_time: ServiceTime = "lognormal",
    machine: MachinePool | None = None,
    client_cpu_s_per_query: float | None = None,
) -> SimulationResult | None:
    """The Estimator again on the same arrivals with the profiles the engine at ``url``
    calibrated from the run's own batches and front-end times (``GET
    /v2/control/calibration``). None when the engine has none.

    Without ``machine``: the batches' wall times (measured median and P99 per stage and
    batch size, other sizes scaled by the stage's speed ratio), each replica simulated
    as a dedicated unit: the contention is in the times, but not when it happened. With
    a ``machine`` that shares its cores: the batches' CPU work, on the machine's cores
    simulated as shared, so slow batches come when the replicas are busy together, as
    served (None when the engine calibrated no CPU work), less the cores the load
    generator took (``client_cpu_s_per_query``, :func:`with_client_cpu`)."""
    try:
        report = fetch_calibration(url)
    except InferLineError:
        return None
    shared = machine is not None and machine.shares_cores
    source = report.work_profiles if shared else report.profiles
    if source is None:
        return None
    if shared:
        source = with_client_cpu(source, client_cpu_s_per_query)
    return Estimator(
        pipeline,
        source,
        trace,
        slo_s=slo_s,
        seed=seed,
        service_time=service_time,
        machine=machine if shared else None,
    ).run(config)


def with_client_cpu(profiles: Profiles, client_cpu_s_per_query: float | None) -> Profiles:
    """``profiles`` with the load generator's CPU per query added to the front-end's: the
    benchmark's client runs on the machine it plans for, and takes its cores from the
    replicas as the front-end does (a user's clients run elsewhere)."""
    if not client_cpu_s_per_query:
        return profiles
    cpu, _ = frontend_cpu_s_per_query(profiles.overhead)
    overhead = profiles.overhead or EngineOverhead()
    return profiles.with_overhead(
        dataclasses.replace(overhead, frontend_cpu_s_per_query=cpu + client_cpu_s_per_query)
    )


# --- the engine's status during a run ------------------------------------------------------


class StatusPoller:
    """Reads the engine's status every ``period_s`` while a replay runs: the most replica
    threads at any time and the replica cost integrated over the run (SPEC §2.2:
    replicas that are starting count); and, about every second, the machine's CPU
    counters (:class:`MachineLoadMeter`: what other processes and the hypervisor took)."""

    def __init__(
        self,
        engine: EngineProcess,
        price_per_hour: Mapping[str, float],
        period_s: float,
    ) -> None:
        self._engine = engine
        self._price = dict(price_per_hour)
        self._period_s = period_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="promise-status", daemon=True)
        self.samples: list[tuple[float, int, int, float]] = []  # t, threads, replicas, $/h
        self.batches_first: dict[str, int] = {}
        self.batches_last: dict[str, int] = {}
        self.machine_load = MachineLoadMeter(engine.process.pid)
        self._load_every = max(1, round(1.0 / period_s))

    def __enter__(self) -> StatusPoller:
        self._t0 = time.monotonic()
        self.machine_load.read()
        self._read()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self._read()
        self.machine_load.read()

    def _run(self) -> None:
        ticks = 0
        while not self._stop.wait(self._period_s):
            self._read()
            ticks += 1
            if ticks % self._load_every == 0:
                self.machine_load.read()

    def _read(self) -> None:
        try:
            status = self._engine.status()
        except Exception:  # a missed reading only coarsens the integral
            return
        threads = replicas = 0
        dollars = 0.0
        for stage in status.get("stages", {}).values():
            for r in stage.get("replica_list", []):
                threads += int(r.get("threads") or 1)
                replicas += 1
                dollars += self._price.get(str(r.get("hardware")), 0.0)
        self.samples.append((time.monotonic() - self._t0, threads, replicas, dollars))
        batches = {
            name: sum(int(r.get("batches") or 0) for r in stage.get("replica_list", []))
            for name, stage in status.get("stages", {}).items()
        }
        self.batches_first = self.batches_first or batches
        self.batches_last = batches

    def served_batch(self, stats: Mapping[str, Any]) -> dict[str, float]:
        """Per stage, the mean batch size served while polling: visits in ``stats``
        (taken after a reset at the start) over the batches the replicas finished."""
        out = {}
        for name, stage in stats.get("stages", {}).items():
            done = self.batches_last.get(name, 0) - self.batches_first.get(name, 0)
            visits = int(stage.get("visits") or 0)
            if done > 0 and visits > 0:
                out[name] = visits / done
        return out

    def figures(self) -> dict[str, Any]:
        return status_figures(self.samples)

    def load_figures(self, settings: PromiseSettings) -> dict[str, Any] | None:
        """Other processes' cores and the steal during the run, and whether that
        disturbed it (None: fewer than two readings)."""
        share = self.machine_load.share()
        if share is None:
            return None
        return {
            **share.as_dict(),
            "disturbed": share.disturbed(settings.other_cores_limit, settings.steal_limit),
        }


def status_figures(samples: Sequence[tuple[float, int, int, float]]) -> dict[str, Any]:
    """From (time s, replica threads, replicas, $/hour) readings: the most threads and
    replicas, the cost of the run ($/hour held from one reading to the next) and its mean
    $/hour."""
    if not samples:
        return {"max_threads": None, "max_replicas": None, "cost_usd": None}
    t = np.array([x[0] for x in samples])
    rate = np.array([x[3] for x in samples])
    span = float(t[-1] - t[0])
    cost = float(np.sum(rate[:-1] * np.diff(t)) / 3600.0)
    return {
        "max_threads": max(x[1] for x in samples),
        "max_replicas": max(x[2] for x in samples),
        "cost_usd": cost,
        "mean_cost_per_hour": cost * 3600.0 / span if span > 0 else float(rate[0]),
        "readings": len(samples),
    }


# --- the benchmark -------------------------------------------------------------------------


@dataclass
class _Context:
    """One bundle, loaded, with its sample payloads and the pool."""

    bundle: Bundle
    profiles: Profiles
    bodies: list[bytes]
    pool: MachinePool
    settings: PromiseSettings
    plans: dict[tuple[float, float, int], Plan | None] = field(default_factory=dict)
    #: the bundle's profiles when ``profiles`` are calibrated ones (None: they are these)
    isolated: Profiles | None = None
    #: measured ÷ estimated P99 the plans are corrected by (:func:`tail_bias`)
    bias: float = 1.0

    def calibrated(self, profiles: Profiles, bias: float = 1.0) -> _Context:
        """This bundle planned from ``profiles`` (corrected by ``bias``) from now on (plans
        made so far dropped)."""
        return _Context(
            self.bundle, profiles, self.bodies, self.pool, self.settings, {}, self.profiles,
            bias,
        )  # fmt: skip

    @property
    def name(self) -> str:
        return self.bundle.pipeline.name

    def trace(self, rate_qps: float, duration_s: float, seed: int, label: str) -> Trace:
        """Poisson arrivals; with the bundle's measured paths each query carries a sample's."""
        arrivals = gamma_trace(rate_qps, 1.0, duration_s, seed).arrival_s
        return self.with_paths(arrivals, seed, label)[0]

    def with_paths(self, arrivals: np.ndarray, seed: int, label: str) -> tuple[Trace, np.ndarray]:
        paths = self.bundle.paths
        if paths is None:
            k = np.random.default_rng([seed, 7]).integers(0, len(self.bodies), arrivals.size)
            return Trace.from_arrivals(arrivals, source=label), k
        from inferline.profiler import attach_samples

        return attach_samples(arrivals, paths, seed, label)

    def plan_at(self, rate_qps: float, slo_s: float, seed: int) -> Plan | None:
        """The plan for a Poisson planning trace at this rate (the same inputs, the same
        plan: remembered)."""
        key = (rate_qps, slo_s, seed)
        if key not in self.plans:
            self.plans[key] = plan_for_machine(
                self.bundle.pipeline,
                self.profiles,
                self.planning_trace(rate_qps, seed),
                slo_s,
                self.pool,
                seed=seed,
                margin=self.settings.margin,
                tail_bias=self.bias,
            )
        return self.plans[key]

    def capacity(self, slo_s: float, start_qps: float, max_rate_qps: float) -> float:
        """The machine's capacity at ``slo_s`` with these profiles (:func:`machine_capacity`
        from ``start_qps``)."""
        seed = self.settings.seed
        return machine_capacity(
            lambda r: self.plan_at(r, slo_s, seed) is not None,
            start_qps,
            max_rate_qps=max_rate_qps,
        )

    def binding_slo(self, rate_qps: float, high_slo_s: float) -> tuple[float | None, float]:
        """The tightest SLO up to ``high_slo_s`` with a plan at this rate (None: none), and
        the one to serve: ``slo_factor`` × it, at most ``high_slo_s`` (that when none)."""
        s = self.settings
        tight = tightest_slo(lambda x: self.plan_at(rate_qps, x, s.seed) is not None, high_slo_s)
        return tight, high_slo_s if tight is None else min(high_slo_s, tight * s.slo_factor)

    def planning_trace(self, rate_qps: float, seed: int) -> Trace:
        """The Poisson trace plans at this rate are made for."""
        s = self.settings
        return self.trace(rate_qps, s.planning_duration_s, seed, f"planning, {rate_qps:.1f} q/s")

    def estimate(
        self,
        trace: Trace,
        config: PipelineConfig,
        slo_s: float,
        profiles: Profiles | None = None,
    ) -> SimulationResult:
        """The Estimator on ``trace`` with the profiles plans come from (or ``profiles``)."""
        s = self.settings
        return Estimator(
            self.bundle.pipeline,
            profiles or self.profiles,
            trace,
            slo_s=slo_s,
            seed=s.seed,
            service_time=s.service_time,
            machine=self.pool if self.pool.shares_cores else None,
        ).run(config)


def profile_copy(
    bundle: Path, copy: Path, options: ProfileOptions | None = None
) -> tuple[Path, dict[str, Any]]:
    """``bundle`` copied to ``copy`` (its model cache linked, not copied) and profiled there
    on this machine (``options``: everything measured again); also how the new profiles
    compare with the bundle's: per stage and hardware, the median over their common batch
    sizes of new ÷ old median latency."""
    from inferline.profiler import NullProgress, ProfileOptions, profile_bundle

    root = bundle if bundle.is_dir() else bundle.parent
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns(".models"))
    if (root / ".models").is_dir():
        (copy / ".models").symlink_to((root / ".models").resolve(), target_is_directory=True)
    before = load_bundle(root).profiles
    started = time.perf_counter()
    profile_bundle(copy, options or ProfileOptions(force=True), NullProgress())
    after = load_bundle(copy).profiles
    ratios = _latency_ratios(before, after)
    return copy, {"wall_s": time.perf_counter() - started, "latency_vs_bundle": ratios}


def _load(path: Path, settings: PromiseSettings, pool: MachinePool) -> _Context:
    bundle = load_bundle(path)
    profiles = usable_profiles(bundle.profiles, pool)
    if bundle.samples is None:
        raise ConfigError(
            "the promise is measured with the bundle's real payloads: give pipeline.yaml "
            "`samples:` (docs/bundles.md)",
            source=bundle.root / "pipeline.yaml",
            field="samples",
        )
    from inferline.profiler import load_samples

    n, seed = (bundle.paths.samples, bundle.paths.seed) if bundle.paths else (64, 0)
    dicts = load_samples(bundle.root, bundle.samples, n, seed)
    bodies = [json.dumps(b, separators=(",", ":")).encode() for b in dicts]
    return _Context(bundle, profiles, bodies, pool, settings)


def _median(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.median(kept)) if kept else None


def _serve_args(slo_s: float, *extra: str) -> tuple[str, ...]:
    return ("--slo-s", repr(slo_s), "--max-queue", "1000000", *extra)


def _replay(
    ctx: _Context, engine: EngineProcess, trace: Trace, samples: np.ndarray, slo_s: float
) -> tuple[dict[str, Any], StatusPoller, Trace]:
    """Replay ``trace`` with its sample payloads while polling status; also the trace
    with the paths the engine answered along (:func:`observed_trace`)."""
    from inferline.engine import replay, replay_summary

    price = ctx.profiles.hardware.price_per_hour
    bodies = [ctx.bodies[int(i)] for i in samples.tolist()]
    cpu_before = time.process_time()  # the client: this process, which only sends now
    with StatusPoller(engine, price, ctx.settings.poll_s) as poller:
        result = replay(
            engine.url,
            trace.arrival_s - trace.arrival_s[0],
            bodies,
            slo_s=slo_s,
            model=ctx.name,
            timeout_s=ctx.settings.tail_s,
        )
    client_cpu_s = time.process_time() - cpu_before
    measured = replay_summary(result)
    measured["p99_sd_s"] = p99_sampling_sd(result.latency_s, seed=ctx.settings.seed)
    sent = measured["sent"]
    measured["client_cpu_s_per_query"] = client_cpu_s / sent if sent else None
    if measured["errors"]:
        measured["first_error"] = next(iter(result.errors.values()), "")
    return measured, poller, observed_trace(trace, result.paths)


def paths_agreement(trace: Trace, observed: Trace) -> float | None:
    """The share of queries that took the path their sample took when profiled."""
    if trace.path_ids is None or observed.path_ids is None or not trace.arrival_s.size:
        return None
    planned = [trace.path_table[k] for k in trace.path_ids.tolist()]
    served = [observed.path_table[k] for k in observed.path_ids.tolist()]
    return sum(a == b for a, b in zip(planned, served, strict=True)) / len(planned)


def p99_sampling_sd(latency_s: np.ndarray, *, seed: int = 0, resamples: int = 200) -> float | None:
    """The bootstrap standard deviation of the P99 of the answered latencies: how much
    the measured P99 of a run this long moves by chance alone (None: under 100 answers)."""
    kept = latency_s[np.isfinite(latency_s)]
    if kept.size < 100:
        return None
    rng = np.random.default_rng([seed, 99])
    picks = rng.integers(0, kept.size, (resamples, kept.size))
    return float(np.std(np.percentile(kept[picks], 99, axis=1)))


def observed_trace(trace: Trace, answered: Sequence[str | None]) -> Trace:
    """``trace`` with each query's path replaced by the one the engine answered along
    (stage names joined by ``+``, in visit order; None: kept as it was). A bundle's
    paths record which path each sample took when profiled; models trained on another
    machine may route some samples the other way, which calibration, seeing the served
    queries, should not inherit."""
    if trace.path_ids is None or not any(answered):
        return trace
    ids = trace.path_ids.tolist()
    paths = [
        tuple(a.split("+")) if a else trace.path_table[k]
        for k, a in itertools.zip_longest(ids, answered[: len(ids)])
    ]
    return Trace.from_arrivals(trace.arrival_s, paths, source=trace.source)


def _warm_up(ctx: _Context, engine: EngineProcess, rate_qps: float, slo_s: float) -> None:
    from inferline.engine import replay

    s = ctx.settings
    if s.warmup_s <= 0:
        return
    rng = np.random.default_rng([s.seed, 11])
    n = max(1, int(rate_qps * s.warmup_s))
    arrivals = np.cumsum(rng.exponential(1.0 / rate_qps, n))
    bodies = [ctx.bodies[int(i)] for i in rng.integers(0, len(ctx.bodies), n)]
    replay(engine.url, arrivals, bodies, slo_s=slo_s, model=ctx.name, timeout_s=s.tail_s)


def _level(
    ctx: _Context,
    fraction: float,
    capacity_qps: float,
    slo_s: float,
    tmp: Path,
    step: Callable[[str], None],
) -> dict[str, Any]:
    """Plan at ``fraction`` of capacity, serve it, replay ``repeats`` held-out traces;
    then re-plan from what the engine calibrated and serve that plan too."""
    s = ctx.settings
    rate = fraction * capacity_qps
    chosen = ctx.plan_at(rate, slo_s, s.seed)
    out: dict[str, Any] = {"load": fraction, "rate_qps": rate, "slo_s": slo_s}
    label = f"{ctx.name} at {fraction:g}×"
    if chosen is None:
        out["feasible"] = False
        step(f"{label}: no plan fits")
        return out
    out.update(_plan_figures(ctx, chosen, slo_s))
    runs, disturbed, report = _serve_plan(
        ctx, chosen.config, tmp / f"plan-{fraction:g}.yaml", rate, slo_s, label, step,
        calibration=s.replan,
    )  # fmt: skip
    out["runs"] = runs
    out["disturbed_runs"] = disturbed
    out.update(_level_summary(runs, ctx.pool, s))
    if report is not None:
        client = _median([r["measured"].get("client_cpu_s_per_query") for r in runs])
        out["replanned"] = _replan(
            ctx, report, chosen, rate, slo_s, tmp / f"replan-{fraction:g}.yaml", step, client
        )
    return out


def _serve_plan(
    ctx: _Context,
    config: PipelineConfig,
    plan_file: Path,
    rate: float,
    slo_s: float,
    label: str,
    step: Callable[[str], None],
    *,
    calibration: bool = False,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], CalibrationReport | None]:
    """``config`` served by ``inferline serve`` for :func:`_serve_runs`; with
    ``calibration``, also what the engine calibrated by the end (None: nothing)."""
    from inferline.engine.process import start_engine

    save_config(config, plan_file)
    report = None
    with start_engine(
        ctx.bundle.root,
        plan_file,
        *_serve_args(slo_s),
        start_timeout_s=ctx.settings.start_timeout_s,
    ) as engine:
        runs, disturbed = _serve_runs(ctx, engine, config, rate, slo_s, label, step)
        if calibration:
            with contextlib.suppress(InferLineError):
                report = fetch_calibration(engine.url)
    return runs, disturbed, report


def _serve_runs(
    ctx: _Context,
    engine: EngineProcess,
    config: PipelineConfig,
    rate: float,
    slo_s: float,
    label: str,
    step: Callable[[str], None],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``repeats`` held-out runs on the engine serving ``config``, each against the
    Estimator's P99 with the profiles and calibrated; and the disturbed runs, re-run."""
    s = ctx.settings
    runs: list[dict[str, Any]] = []
    disturbed: list[dict[str, Any]] = []
    live: float | None = None
    if s.live_bias:
        step(f"{label} ({rate:.1f} q/s): {s.priming_s:g} s to learn this plan's tail ratio on")
        live = _priming_ratio(ctx, engine, config, rate, slo_s) or ctx.bias
    while len(runs) < s.repeats:
        r = len(runs)
        again = " again" if disturbed and disturbed[-1]["repeat"] == r else ""
        step(f"{label} ({rate:.1f} q/s): run {r + 1} of {s.repeats}{again}")
        trace, measured, poller, observed = _replay_window(
            ctx, engine, rate, slo_s, s.duration_s, s.seed + 1000 * (r + 1), "held out"
        )
        stats = engine.stats()
        served_batch = poller.served_batch(stats)
        profiled = ctx.estimate(trace, config, slo_s)
        isolated = (
            None if ctx.isolated is None else ctx.estimate(trace, config, slo_s, ctx.isolated)
        )
        calibrated, calibrated_shared = (
            _estimate_on_run(ctx, engine.url, config, observed, slo_s, measured, machine)
            for machine in (None, ctx.pool)
        )
        run = _run_figures(
            measured,
            poller.figures(),
            profiled,
            calibrated,
            calibrated_shared,
            isolated,
            bias=ctx.bias,
            live_ratio=live,
        )
        run.update(
            repeat=r,
            served_batch=served_batch,
            stages=_time_split(stats),
            paths_as_profiled=paths_agreement(trace, observed),
            machine_load=poller.load_figures(s),
        )
        if _disturbed(run) and len(disturbed) < s.max_reruns:
            disturbed.append(run)
            step(f"{label}: run {r + 1} {_disturbance(run)}")
            continue
        runs.append(run)
        if live is not None:  # the next run's estimate learns from this one
            live = run["measured_over_shared"] or live
    return runs, disturbed


def ratio_of(measured_p99_s: float | None, estimated_p99_s: float | None) -> float | None:
    """measured ÷ estimated P99, unclamped (None when either is missing or not positive):
    a live estimate is corrected both ways, unlike a plan (:func:`tail_bias`)."""
    if not measured_p99_s or not estimated_p99_s or not estimated_p99_s > 0:
        return None
    ratio = measured_p99_s / estimated_p99_s
    return ratio if math.isfinite(ratio) and ratio > 0 else None


def _priming_ratio(
    ctx: _Context, engine: EngineProcess, config: PipelineConfig, rate: float, slo_s: float
) -> float | None:
    """measured ÷ sh over ``priming_s`` of this plan served before its first run: what the
    engine's calibration would know of its tail by then (None: no window or no estimate)."""
    s = ctx.settings
    if s.priming_s <= 0:
        return None
    _, measured, _, observed = _replay_window(
        ctx, engine, rate, slo_s, s.priming_s, s.seed + 999, "priming"
    )
    shared = _estimate_on_run(ctx, engine.url, config, observed, slo_s, measured, ctx.pool)
    return ratio_of(measured.get("p99_s"), None if shared is None else shared.p99_s)


def _replay_window(
    ctx: _Context,
    engine: EngineProcess,
    rate: float,
    slo_s: float,
    duration_s: float,
    seed: int,
    label: str,
) -> tuple[Trace, dict[str, Any], StatusPoller, Trace]:
    """Poisson arrivals at ``rate`` for ``duration_s``, replayed after a warm-up on stats
    reset: the trace, what was measured, the status poller and the answered paths."""
    arrivals = gamma_trace(rate, 1.0, duration_s, seed).arrival_s
    trace, samples = ctx.with_paths(arrivals, seed, f"{label}, {rate:.1f} q/s")
    _warm_up(ctx, engine, rate, slo_s)
    engine.reset_stats()
    measured, poller, observed = _replay(ctx, engine, trace, samples, slo_s)
    return trace, measured, poller, observed


def _estimate_on_run(
    ctx: _Context,
    url: str,
    config: PipelineConfig,
    observed: Trace,
    slo_s: float,
    measured: Mapping[str, Any],
    machine: MachinePool | None,
) -> SimulationResult | None:
    """:func:`calibrated_estimate` of a run just replayed, with the bench's settings."""
    return calibrated_estimate(
        ctx.bundle.pipeline,
        config,
        observed,
        url,
        slo_s=slo_s,
        seed=ctx.settings.seed,
        service_time=ctx.settings.service_time,
        machine=machine,
        client_cpu_s_per_query=measured.get("client_cpu_s_per_query"),
    )


def replanning_profiles(report: CalibrationReport, pool: MachinePool) -> Profiles:
    """What to re-plan with after serving: on a machine whose cores the Planner simulates
    as shared, the CPU work the engine calibrated (the Planner adds the contention of
    each candidate itself; the served times carry that of the plan they were served
    under); else the served times. Both carry the per-query overhead the front-end
    measured (the profiled one when it answered too few queries)."""
    chosen = report.work_profiles if pool.shares_cores else None
    return chosen or report.profiles


def _replan(
    ctx: _Context,
    report: CalibrationReport,
    first: Plan,
    rate: float,
    slo_s: float,
    plan_file: Path,
    step: Callable[[str], None],
    client_cpu_s_per_query: float | None = None,
) -> dict[str, Any]:
    """The Planner again, on the same planning trace, with the profiles the engine
    calibrated while serving ``first`` (:func:`calibration_profiles`); a different plan
    is served like the first."""
    s = ctx.settings
    profiles = calibration_profiles(report, ctx.pool, client_cpu_s_per_query)
    trace = ctx.planning_trace(rate, s.seed)
    again = plan_for_machine(
        ctx.bundle.pipeline,
        profiles,
        trace,
        slo_s,
        ctx.pool,
        seed=s.seed,
        margin=s.margin,
        tail_bias=ctx.bias,
    )
    if again is None:
        return {"feasible": False}
    out: dict[str, Any] = {
        "feasible": True,
        "plan": _plan_summary(again.config),
        "cost_per_hour": again.cost_per_hour,
        "first_cost_per_hour": first.cost_per_hour,
        "planned_p99_s": again.estimated_p99_s,
        "same_plan": again.config == first.config,
        "plan_threads": sum(ctx.pool.threads_of(again.config).values()),
    }
    if out["same_plan"]:
        return out
    label = f"{ctx.name} at {rate:.1f} q/s, re-planned"
    runs, disturbed, _ = _serve_plan(ctx, again.config, plan_file, rate, slo_s, label, step)
    summary = _level_summary(runs, ctx.pool, s)
    out.update(
        runs=runs,
        disturbed_runs=disturbed,
        measured_p99_s=summary["measured_p99_s"],
        measured_miss_rate=summary["measured_miss_rate"],
        max_threads=summary["max_threads"],
        passed=summary["misses_pass"] and summary["fits_machine"],
    )
    return out


def calibration_profiles(
    report: CalibrationReport,
    pool: MachinePool,
    client_cpu_s_per_query: float | None = None,
) -> Profiles:
    """What to plan from after a calibration serve: :func:`replanning_profiles` (where
    the hardware the serve did not use comes at its stage's calibrated speed: the engine
    writes it so, :func:`~inferline.profiles.carry_speeds`), only hardware this machine
    has, and on shared cores the load generator's CPU counted with the front-end's."""
    profiles = usable_profiles(replanning_profiles(report, pool), pool)
    return with_client_cpu(profiles, client_cpu_s_per_query) if pool.shares_cores else profiles


def _calibrate_first(
    ctx: _Context, loose_qps: float, tmp: Path, step: Callable[[str], None]
) -> tuple[dict[str, Any], Profiles | None]:
    """Serve the isolated profiles' plan at ``calibration_load`` × ``loose_qps`` (at
    ``slo_factor`` × the tightest SLO they allow there) for ``calibration_s`` and read
    what the engine calibrated: the profiles to plan from, and what the serve measured."""
    rate = ctx.settings.calibration_load * loose_qps
    step(f"{ctx.name}: a first plan at {rate:.1f} q/s to calibrate on")
    out, report = _serve_tightest_plan(ctx, rate, tmp, "calibration", seed_offset=500)
    if report is None:
        return out, None
    client_cpu = out.get("client_cpu_s_per_query")
    profiles = calibration_profiles(report, ctx.pool, client_cpu)
    out["latency_vs_isolated"] = _latency_ratios(ctx.profiles, profiles)
    return out, profiles


def _bias_serve(
    ctx: _Context, rate: float, tmp: Path, step: Callable[[str], None]
) -> dict[str, Any]:
    """The tail bias measured on a plan made the way the levels' are: from the calibrated
    profiles (``ctx``, uncorrected), at the calibration rate and the tightest SLO they
    allow there. The first plan, from isolated profiles, is under-provisioned where those
    ran fast, and its ratio was no guide: tabular triage's measured 0.98 there and
    1.13–1.14 at both levels (run G)."""
    step(f"{ctx.name}: a calibrated plan at {rate:.1f} q/s to measure the tail bias on")
    out, _ = _serve_tightest_plan(ctx, rate, tmp, "bias", seed_offset=600)
    return out


def _serve_tightest_plan(
    ctx: _Context, rate: float, tmp: Path, label: str, *, seed_offset: int
) -> tuple[dict[str, Any], CalibrationReport | None]:
    """``ctx``'s plan at ``rate`` and ``slo_factor`` × the tightest SLO it allows there,
    served for ``calibration_s`` (:func:`_serve_measuring_bias`); only the rate and SLO
    when no plan fits."""
    s = ctx.settings
    _, slo = ctx.binding_slo(rate, s.loose_slo_s)
    chosen = ctx.plan_at(rate, slo, s.seed)
    out: dict[str, Any] = {"rate_qps": rate, "slo_s": slo, "duration_s": s.calibration_s}
    if chosen is None:
        return out, None
    out.update(_plan_figures(ctx, chosen, slo))
    served, report = _serve_measuring_bias(ctx, chosen, rate, slo, tmp, label, s.seed + seed_offset)
    out.update(served)
    return out, report


def _serve_measuring_bias(
    ctx: _Context, chosen: Plan, rate: float, slo: float, tmp: Path, label: str, seed: int
) -> tuple[dict[str, Any], CalibrationReport | None]:
    """Serve ``chosen`` for ``calibration_s`` and measure its P99 against the model plans
    are judged by, calibrated on this serve itself (how far below or above the measured
    P99 it comes on the very run it was calibrated on: the tail bias); with what the
    engine calibrated (None when it could not say)."""
    from inferline.engine.process import start_engine

    s = ctx.settings
    plan_file = tmp / f"{label}-plan.yaml"
    save_config(chosen.config, plan_file)
    report = None
    with start_engine(
        ctx.bundle.root, plan_file, *_serve_args(slo), start_timeout_s=s.start_timeout_s
    ) as engine:
        trace, measured, poller, observed = _replay_window(
            ctx, engine, rate, slo, s.calibration_s, seed, label
        )
        with contextlib.suppress(InferLineError):
            report = fetch_calibration(engine.url)
        shared = _estimate_on_run(ctx, engine.url, chosen.config, observed, slo, measured, ctx.pool)
    meas = measured.get("p99_s")
    shared_p99 = None if shared is None else shared.p99_s
    out = {
        "calibrated_shared_p99_s": shared_p99,
        "measured_over_calibrated": ratio_of(meas, shared_p99),
        "tail_bias": tail_bias(meas, shared_p99) if s.correct_bias else 1.0,
        "estimated_p99_s": ctx.estimate(trace, chosen.config, slo).p99_s,
        "measured_p99_s": meas,
        "measured_miss_rate": measured["miss_rate"],
        "client_cpu_s_per_query": measured.get("client_cpu_s_per_query"),
        "machine_load": poller.load_figures(s),
    }
    return out, report


def _latency_ratios(before: Profiles, after: Profiles) -> dict[str, float]:
    """Per stage and hardware, the median over common batch sizes of after ÷ before."""
    ratios: dict[str, float] = {}
    for (stage, hw), new in after.entries.items():
        old = before.entries.get((stage, hw))
        if old is None:
            continue
        sizes = sorted({p.batch_size for p in new.points} & {p.batch_size for p in old.points})
        if sizes:
            ratios[f"{stage} on {hw}"] = float(
                np.median([new.latency_s(b) / old.latency_s(b) for b in sizes])
            )
    return ratios


def _disturbed(run: Mapping[str, Any]) -> bool:
    load = run.get("machine_load")
    return bool(load and load["disturbed"])


def _disturbance(run: Mapping[str, Any]) -> str:
    load = run["machine_load"]
    return (
        f"disturbed (other processes kept {load['other_cores']:.2f} cores busy, the "
        f"hypervisor stole {load['steal_fraction']:.1%}): running it again"
    )


def _time_split(stats: Mapping[str, Any]) -> dict[str, dict[str, float | None]]:
    """Per stage, the medians and P99s of the engine's time split (where the time went)."""
    return {
        name: {
            f"{part}_{q}": stage.get(f"{part}_s", {}).get(q)
            for part in ("queue_wait", "predict", "overhead")
            for q in ("p50", "p99")
        }
        for name, stage in stats.get("stages", {}).items()
    }


def _plan_figures(ctx: _Context, chosen: Plan, slo_s: float) -> dict[str, Any]:
    threads = sum(ctx.pool.threads_of(chosen.config).values())
    return {
        "feasible": chosen.feasible,
        "plan": _plan_summary(chosen.config),
        "plan_threads": threads,
        "cost_per_hour": chosen.cost_per_hour,
        "planned_p99_s": chosen.estimated_p99_s,
        # the P99 the plan was made for: the estimate corrected by the tail bias
        "planned_corrected_p99_s": chosen.estimated_p99_s * ctx.bias,
        "tail_bias": ctx.bias,
        "binds": chosen.estimated_p99_s * ctx.bias >= ctx.settings.binding_fraction * slo_s,
    }


def _plan_summary(config: PipelineConfig) -> dict[str, dict[str, Any]]:
    return {
        n: {"hardware": c.hardware, "batch_size": c.batch_size, "replicas": c.replicas}
        for n, c in config.stages.items()
    }


def _run_figures(
    measured: dict[str, Any],
    machine: dict[str, Any],
    profiled: SimulationResult,
    calibrated: SimulationResult | None,
    calibrated_shared: SimulationResult | None = None,
    isolated: SimulationResult | None = None,
    *,
    bias: float = 1.0,
    live_ratio: float | None = None,
) -> dict[str, Any]:
    """One run's P99s: measured; estimated with the profiles plans came from, with the
    bundle's own when those were calibrated (``isolated``), and with those the engine
    calibrated on the run itself (served times; CPU work on shared cores); the last two
    the plans' way also corrected by the tail bias (``bias``, :func:`tail_bias`); and
    live, the CPU-work estimate × ``live_ratio``, the measured ÷ estimated P99 this plan
    showed on the window before (None: not judged live)."""
    meas = measured.get("p99_s")

    def error(est: float | None) -> float | None:
        return None if est is None or not meas else abs(est - meas) / meas

    cal_p99 = None if calibrated is None else calibrated.p99_s
    shared_p99 = None if calibrated_shared is None else calibrated_shared.p99_s
    isolated_p99 = None if isolated is None else isolated.p99_s
    corrected_p99 = None if shared_p99 is None else shared_p99 * bias
    live_p99 = None if shared_p99 is None or live_ratio is None else shared_p99 * live_ratio
    return {
        "tail_bias": bias,
        "measured_over_shared": ratio_of(meas, shared_p99),
        "live_ratio": live_ratio,
        "live_p99_s": live_p99,
        "live_error": error(live_p99),
        "predicted_p99_s": profiled.p99_s * bias,
        "predicted_error": error(profiled.p99_s * bias),
        "corrected_p99_s": corrected_p99,
        "corrected_error": error(corrected_p99),
        "isolated_p99_s": isolated_p99,
        "isolated_error": error(isolated_p99),
        "calibrated_shared_p99_s": shared_p99,
        "calibrated_shared_error": error(shared_p99),
        "estimated_p99_s": profiled.p99_s,
        "estimated_miss_rate": profiled.miss_rate,
        "calibrated_p99_s": cal_p99,
        "measured_p99_s": meas,
        "measured_p99_sd_s": measured.get("p99_sd_s"),
        "measured_miss_rate": measured["miss_rate"],
        "error": error(profiled.p99_s),
        "calibrated_error": error(cal_p99),
        "max_threads": machine["max_threads"],
        "measured": measured,
    }


def _level_summary(
    runs: list[dict[str, Any]], pool: MachinePool, s: PromiseSettings
) -> dict[str, Any]:
    summary: dict[str, Any] = {
        key: _median([r.get(key) for r in runs])
        for key in (
            "estimated_p99_s",
            "calibrated_p99_s",
            "measured_p99_s",
            "measured_miss_rate",
            "error",
            "calibrated_error",
            "calibrated_shared_p99_s",
            "calibrated_shared_error",
            "isolated_p99_s",
            "isolated_error",
            "predicted_p99_s",
            "predicted_error",
            "corrected_p99_s",
            "corrected_error",
            "live_p99_s",
            "live_error",
        )
    }
    summary["other_cores"] = _median(
        [r["machine_load"]["other_cores"] for r in runs if r.get("machine_load")]
    )
    summary["runs_disturbed"] = sum(_disturbed(r) for r in runs)
    summary["measured_p99_spread"] = repeat_spread([r["measured_p99_s"] for r in runs])
    max_threads = max((r["max_threads"] or 0) for r in runs)
    misses = summary["measured_miss_rate"]
    # once calibrated: live, as the engine's calibration estimates the plan in force (CPU
    # work on shared cores × the ratio learned on it); else the model plans are made with
    # (× the tail bias) when the plans are corrected; else the served times
    corrected = s.correct_bias and s.plan_from == "calibrated"
    summary["error_judged"] = (
        "live" if summary["live_error"] is not None else "corrected" if corrected else "calibrated"
    )
    err = summary[f"{summary['error_judged']}_error"]
    summary.update(
        max_threads=max_threads,
        fits_machine=max_threads <= pool.max_threads,
        misses_pass=misses is not None and misses <= s.miss_target,
        error_pass=err is not None and err <= s.error_target,
    )
    summary["passed"] = bool(
        summary["misses_pass"] and summary["error_pass"] and summary["fits_machine"]
    )
    return summary


def _ramp(
    ctx: _Context, capacity_qps: float, slo_s: float, tmp: Path, step: Callable[[str], None]
) -> dict[str, Any]:
    """The fixed plan sized for the peak against the Tuner from the start rate's plan."""
    from inferline.engine.process import start_engine

    s = ctx.settings
    low, peak = s.ramp_from * capacity_qps, s.ramp_to * capacity_qps
    arrivals = ramp_trace(
        low,
        peak,
        s.ramp_s,
        before_s=s.ramp_hold_s,
        after_s=s.ramp_hold_s,
        cv=1.0,
        seed=s.seed + 77,
    ).arrival_s
    trace, samples = ctx.with_paths(arrivals, s.seed + 77, "ramp")
    out: dict[str, Any] = {
        "from_qps": low,
        "to_qps": peak,
        "queries": trace.n_queries,
        "slo_s": slo_s,
    }
    for label, rate, tune in (("fixed", peak, False), ("tuned", low, True)):
        chosen = ctx.plan_at(rate, slo_s, s.seed)
        if chosen is not None and tune and s.batch_headroom:
            chosen = with_batch_headroom(
                chosen, ctx.bundle.pipeline, ctx.profiles, ctx.planning_trace(rate, s.seed),
                seed=s.seed,
            )  # fmt: skip
        if chosen is None:
            out[label] = {"feasible": False}
            step(f"{ctx.name} ramp, {label}: no plan fits")
            continue
        step(f"{ctx.name} ramp {low:.0f} → {peak:.0f} q/s, {label}")
        plan_file = tmp / f"ramp-{label}.yaml"
        save_config(chosen.config, plan_file)
        extra: tuple[str, ...] = ()
        if tune:
            extra = ("--tune", "--planning-rate", repr(rate))
            if s.policy is not None:
                extra += ("--policy", s.policy)
        for attempt in range(s.max_reruns + 1):
            with start_engine(
                ctx.bundle.root,
                plan_file,
                *_serve_args(slo_s, *extra),
                start_timeout_s=s.start_timeout_s,
            ) as engine:
                _warm_up(ctx, engine, low, slo_s)
                measured, poller, _ = _replay(ctx, engine, trace, samples, slo_s)
                machine = poller.figures()
                tuner = engine.status().get("tuner", {})
            load = poller.load_figures(s)
            if not (load and load["disturbed"]) or attempt == s.max_reruns:
                break
            step(f"{ctx.name} ramp, {label}: {_disturbance({'machine_load': load})}")
        out[label] = {
            "machine_load": load,
            "reruns": attempt,
            "feasible": True,
            "plan": _plan_summary(chosen.config),
            "plan_cost_per_hour": chosen.cost_per_hour,
            "plan_threads": sum(ctx.pool.threads_of(chosen.config).values()),
            "policy": tuner.get("policy"),
            "tuner_changes": tuner.get("n_changes"),
            "capacity_limited": tuner.get("capacity_limited", {}).get("decisions"),
            "measured_p99_s": measured.get("p99_s"),
            "measured_miss_rate": measured["miss_rate"],
            **machine,
        }
    fixed, tuned = out.get("fixed", {}), out.get("tuned", {})
    if fixed.get("feasible") and tuned.get("feasible"):
        # the Tuner starts from the peak's own plan: it can only match the fixed plan's
        # cost by changing nothing
        out["same_start"] = fixed["plan"] == tuned["plan"]
        out["passed"] = bool(
            tuned["measured_miss_rate"] <= s.miss_target
            and tuned["cost_usd"] is not None
            and fixed["cost_usd"] is not None
            # the same replicas cost what the run lasted: equal plans differ by ~0.1 %
            and tuned["cost_usd"] <= fixed["cost_usd"] * (1 + RAMP_COST_TOLERANCE)
        )
        out["fits_machine"] = max(fixed["max_threads"] or 0, tuned["max_threads"] or 0) <= (
            ctx.pool.max_threads
        )
    return out


def _bundle(
    ctx: _Context, tmp: Path, step: Callable[[str], None], skip: Callable[[int], None]
) -> dict[str, Any]:
    s = ctx.settings
    pipeline = ctx.bundle.pipeline
    out: dict[str, Any] = {
        "bundle": str(ctx.bundle.root),
        "pipeline": ctx.name,
        "pool_threads": ctx.pool.max_threads,
    }
    missing = [stage for stage in pipeline.stage_names if not ctx.profiles.hardware_for(stage)]
    if missing:
        out["infeasible"] = (
            f"infeasible on this machine: no profile on hardware it has for "
            f"{', '.join(missing)} (run `inferline profile` here)"
        )
        skip(len(s.loads) * s.repeats + (2 if s.ramp else 0))
        return out
    min_threads = sum(
        min(resources_for(hw).threads for hw in ctx.profiles.hardware_for(stage))
        for stage in pipeline.stage_names
    )
    out["min_threads"] = min_threads
    if min_threads > ctx.pool.max_threads:
        out["infeasible"] = (
            f"infeasible on this machine: one replica per stage needs {min_threads} replica "
            f"threads, the pool allows {ctx.pool.max_threads} ({ctx.pool.cores} cores, "
            f"at most {ctx.pool.max_threads_per_core:g} thread(s) per core; see --machine)"
        )
        skip(len(s.loads) * s.repeats + (2 if s.ramp else 0))
        return out
    top_rate = max(s.max_rate_qps or ctx.pool.cores / FRONTEND_CPU_S_PER_QUERY, 1.0)
    guess = single_replica_rate(pipeline, ctx.profiles)
    searching = time.perf_counter()
    step(f"{ctx.name}: searching the machine's capacity")
    loose = ctx.capacity(s.loose_slo_s, guess, top_rate)
    out["capacity_loose_slo_qps"] = loose
    out["loose_slo_s"] = s.loose_slo_s
    if loose > 0 and s.plan_from == "calibrated":
        out["calibration"], calibrated = _calibrate_first(ctx, loose, tmp, step)
        if calibrated is None:
            out["infeasible"] = (
                "no calibration: the first plan did not fit or the engine calibrated nothing"
            )
            skip(len(s.loads) * s.repeats + (2 if s.ramp else 0))
            return out
        bias = out["calibration"].get("tail_bias", 1.0)
        if s.correct_bias and s.bias_serve:
            rate = out["calibration"]["rate_qps"]
            uncorrected = ctx.calibrated(calibrated)
            out["calibration"]["bias_serve"] = _bias_serve(uncorrected, rate, tmp, step)
            # no plan at that rate by the calibrated profiles: the first serve's bias
            bias = out["calibration"]["bias_serve"].get("tail_bias", bias)
            out["calibration"]["tail_bias"] = bias
        ctx = ctx.calibrated(calibrated, bias)
        step(f"{ctx.name}: the machine's capacity by the calibrated profiles")
        loose = ctx.capacity(s.loose_slo_s, loose, top_rate)
        out["capacity_loose_slo_qps"] = loose
    if loose <= 0:
        out["infeasible"] = (
            f"infeasible on this machine: no rate ≥ 0.5 q/s has a plan that fits it "
            f"({ctx.pool.cores} cores, fit={ctx.pool.fit}) at SLO {s.loose_slo_s:g} s"
        )
        skip(len(s.loads) * s.repeats + (2 if s.ramp else 0))
        return out
    slo = s.slo_s
    if slo is None:
        top_load = max(s.loads) * loose
        step(f"{ctx.name}: the tightest SLO at {top_load:.1f} q/s")
        out["tightest_slo_s"], slo = ctx.binding_slo(top_load, s.loose_slo_s)
    out["slo_s"] = slo
    step(f"{ctx.name}: the machine's capacity at SLO {slo * 1000:.0f} ms")
    capacity = ctx.capacity(slo, loose, top_rate)
    out["capacity_qps"] = capacity
    out["search_s"] = time.perf_counter() - searching
    if capacity <= 0:
        out["infeasible"] = f"no plan fits this machine at SLO {slo:g} s"
        skip(len(s.loads) * s.repeats + (2 if s.ramp else 0))
        return out
    chosen: dict[float, float] = {}

    def slo_at(fraction: float) -> float:
        """The bundle's SLO, or with ``slo_per_load`` ``slo_factor`` × the tightest at this
        load."""
        if s.slo_s is not None or not s.slo_per_load:
            return slo
        if fraction not in chosen:
            step(f"{ctx.name}: the tightest SLO at {fraction:g}× capacity")
            _, chosen[fraction] = ctx.binding_slo(fraction * capacity, slo)
        return chosen[fraction]

    out["levels"] = [_level(ctx, f, capacity, slo_at(f), tmp, step) for f in s.loads]
    if s.ramp:
        out["ramp"] = _ramp(ctx, capacity, slo_at(s.ramp_to), tmp, step)
    return out


def run_promise_benchmark(
    settings: PromiseSettings | None = None,
    *,
    out_dir: Path | None = None,
    progress: Progress = lambda _text, _done, _total: None,
) -> dict[str, Any]:
    """Every bundle in turn; figures as a JSON-ready dict, and with ``out_dir`` written to
    ``promise.json`` there. ``progress(text, done, total)`` after each step."""
    s = settings or PromiseSettings()
    started = time.perf_counter()
    pool = machine_pool(s)
    per_bundle = (
        3
        + len(s.loads) * (s.repeats + 1 + (1 if s.live_bias else 0))
        + (3 if s.ramp else 0)
        + (1 if s.profile_here else 0)
        + (2 if s.plan_from == "calibrated" else 0)
    )
    total = per_bundle * len(s.bundles)
    done = 0

    def step(text: str) -> None:
        nonlocal done
        progress(text, done, total)
        done += 1

    def skip(n: int) -> None:
        nonlocal done
        done += n

    load_before = _load_average()
    bundles = []
    for path in s.bundles:
        first = done
        with tempfile.TemporaryDirectory(prefix="inferline-promise-") as tmp:
            source, profiled = Path(path), None
            if s.profile_here:
                step(f"{source.name}: profiling a copy on this machine")
                source, profiled = profile_copy(source, Path(tmp) / "bundle")
            ctx = _load(source, s, pool)
            served = _bundle(ctx, Path(tmp), step, skip)
            if profiled is not None:
                served["profiled_here"] = profiled
            bundles.append(served)
        done = first + per_bundle
    progress("done", total, total)
    figures: dict[str, Any] = {
        "settings": {
            **{k: v for k, v in asdict(s).items() if k != "bundles"},
            "bundles": [str(b) for b in s.bundles],
        },
        "machine": {**pool.as_dict(), "fit": pool.fit, "max_busy_fraction": pool.max_busy_fraction},
        "load_average_before_after": [load_before, _load_average()],
        "bundles": bundles,
        "notes": _notes(pool, load_before),
        "passed": _passed(bundles),
        "wall_s": time.perf_counter() - started,
        "written": [],
    }
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        figures["written"] = [str(out_dir / "promise.json")]
        (out_dir / "promise.json").write_text(json.dumps(figures, indent=1) + "\n")
    return figures


def _notes(pool: MachinePool, load_before: float) -> list[str]:
    busiest = max(load_before, _load_average())
    if busiest <= pool.cores:
        return []
    return [
        f"the machine was busy: load average {busiest:.1f} on {pool.cores} cores; the "
        "measured latencies include the other jobs, which the profiles do not"
    ]


def _load_average() -> float:
    import os

    return float(os.getloadavg()[0])


def _passed(bundles: list[dict[str, Any]]) -> bool:
    """Every bundle planned, every level, re-planned level and ramp passed."""
    for b in bundles:
        if "infeasible" in b:
            return False
        if not all(level.get("passed") for level in b.get("levels", [])):
            return False
        replans = [
            lv["replanned"] for lv in b.get("levels", []) if "runs" in lv.get("replanned", {})
        ]
        if not all(r.get("passed") for r in replans):
            return False
        if "ramp" in b and not (b["ramp"].get("passed") and b["ramp"].get("fits_machine")):
            return False
    return True


# --- readable output -----------------------------------------------------------------------


def _cores(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def _ms(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value * 1000:.0f}" if value >= 0.1 else f"{value * 1000:.1f}"


def _pct(value: float | None, digits: int = 0) -> str:
    return "—" if value is None else f"{value * 100:.{digits}f}%"


def _money(value: float | None, digits: int) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _ramp_passed(ramp: dict[str, Any]) -> bool | None:
    if ramp.get("passed") is None:
        return None
    return bool(ramp["passed"] and ramp.get("fits_machine", True))


def _verdict(ok: bool | None) -> str:
    return "—" if ok is None else ("PASS" if ok else "FAIL")


def _table(title: str, columns: Sequence[str]) -> Table:
    table = Table(title=title, show_edge=False, pad_edge=False)
    for col in columns:
        table.add_column(col, justify="right")
    return table


def tables(figures: dict[str, Any]) -> list[Table]:
    """The readable output: the machine and each bundle's capacity and SLO, then per bundle
    the promise per load and the ramp (latencies in ms)."""
    s = figures["settings"]
    m = figures["machine"]
    overview = Table(
        title=(
            f"does the promise hold? {m['cores']} cores, plans fit by {m.get('fit', 'threads')}"
            f", at most {m['max_threads']} replica threads"
            + (f"; planned with margin {s['margin']:g}" if s.get("margin") else "")
        )
    )
    for col in ("pipeline", "capacity q/s", "at SLO ms", "tightest ms", "notes"):
        overview.add_column(col, justify="left" if col in ("pipeline", "notes") else "right")
    for b in figures["bundles"]:
        overview.add_row(
            b["pipeline"],
            "—" if "capacity_qps" not in b else f"{b['capacity_qps']:.1f}",
            _ms(b.get("slo_s")),
            _ms(b.get("tightest_slo_s")),
            b.get("infeasible", "")
            or "; ".join(
                n
                for n in (
                    _profiled_note(b.get("profiled_here")),
                    _calibration_note(b.get("calibration")),
                )
                if n
            ),
        )
    out = [overview]
    for b in figures["bundles"]:
        if b.get("levels"):
            out.append(_levels_table(b, s))
            if any(lv.get("replanned") for lv in b["levels"]):
                out.append(_replan_table(b))
        if b.get("ramp"):
            out.append(_ramp_table(b, s))
    out[-1].caption = "".join(f"{note}; " for note in figures.get("notes", [])) + (
        f"{'PASS' if figures['passed'] else 'FAIL'}; wall time {figures['wall_s']:.0f} s; "
        f"load average {figures['load_average_before_after'][0]:.1f} before, "
        f"{figures['load_average_before_after'][1]:.1f} after"
        + "".join(f"; → {path}" for path in figures.get("written", []))
    )
    return out


def _ratio_span(ratios: Mapping[str, float]) -> str:
    """ "0.45–0.60×" ("0.52×" when they agree; empty without ratios)."""
    if not ratios:
        return ""
    lo, hi = min(ratios.values()), max(ratios.values())
    return f"{lo:.2f}×" if hi - lo < 0.005 else f"{lo:.2f}–{hi:.2f}×"


def _profiled_note(profiled: Mapping[str, Any] | None) -> str:
    """ "profiled here: 0.45–0.60× the bundle's latencies" (empty without profiling)."""
    if not profiled:
        return ""
    span = _ratio_span(profiled["latency_vs_bundle"])
    return f"profiled here: {span} the bundle's latencies" if span else "profiled here"


def _calibration_note(calibration: Mapping[str, Any] | None) -> str:
    """ "calibrated serving 61 q/s for 30 s: 1.18–1.64× the isolated latencies" (empty
    without a calibration)."""
    if not calibration:
        return ""
    rate, seconds = calibration["rate_qps"], calibration["duration_s"]
    span = _ratio_span(calibration.get("latency_vs_isolated", {}))
    ratio = calibration.get("measured_over_calibrated")
    bias = calibration.get("tail_bias", 1.0)
    second = (calibration.get("bias_serve") or {}).get("measured_over_calibrated")
    return (
        f"calibrated serving {rate:.0f} q/s for {seconds:g} s: "
        + (f"{span} the isolated latencies" if span else "nothing calibrated")
        + ("" if ratio is None else f", its P99 {ratio:.2f}× the estimate calibrated on it")
        + ("" if second is None else f"; a calibrated plan's {second:.2f}×")
        + (f" (plans corrected by {bias:.2f}×)" if bias != 1.0 else "")
    )


def _levels_table(b: dict[str, Any], s: dict[str, Any]) -> Table:
    calibrated = bool(b.get("calibration"))
    source = (
        "the profiles calibrated on a first plan (uncal: the bundle's, isolated)"
        if calibrated
        else "the bundle's profiles"
    )
    levels = [lv for lv in b["levels"] if "runs" in lv]
    judged_as = levels[0].get("error_judged") if levels else None
    live = judged_as == "live"
    corrected = judged_as == "corrected" or (
        live and bool(s.get("correct_bias")) and s.get("plan_from") == "calibrated"
    )
    bias = (b.get("calibration") or {}).get("tail_bias", 1.0)
    # corrected: est and sh × the tail bias, as plans are made (est the plan's own model)
    est, err, sh = (
        ("predicted_p99_s", "predicted_error", "corrected")
        if corrected
        else ("estimated_p99_s", "error", "calibrated_shared")
    )
    judged = "live" if live else "sh×b" if corrected else "cal"
    table = _table(
        f"{b['pipeline']}: the promise, served ({s['duration_s']:g} s held-out Poisson runs, "
        f"median of {s['repeats']}). est: the Estimator's P99 with {source}"
        + (f", × the tail bias b = {bias:.2f}" if corrected else "")
        + "; cal: with those the engine calibrated on the run (served times, each replica "
        "dedicated); sh: with the CPU work it calibrated, on the cores simulated as shared "
        "(what plans, the Tuner and the re-plan estimate with)"
        + (", × b" if corrected else "")
        + (
            "; live: sh × the measured ÷ sh P99 this plan showed on the window served before "
            f"the run ({s.get('priming_s', 0):g} s before the first), as the engine's "
            "calibration learns it on the plan in force"
            if live
            else ""
        )
        + "; err: |est − meas| / meas. Targets: "
        f"misses ≤ {s['miss_target']:.0%}, err {judged} ≤ {s['error_target']:.0%}; "
        "*: a run counted was still disturbed after its re-runs. "
        + _noise_and_machine(b["levels"], s),
        ("load", "q/s", "SLO", "binds", "est×b" if corrected else "est", "cal",
         "sh×b" if corrected else "sh", *(("live",) if live else ()), "meas", "err",
         "err cal", "err sh×b" if corrected else "err sh", *(("err live",) if live else ()),
         *(("err uncal",) if calibrated else ()), "miss", "thr", ""),
    )  # fmt: skip
    for lv in b["levels"]:
        if "runs" not in lv:
            table.add_row(f"{lv['load']:g}×", f"{lv['rate_qps']:.1f}", _ms(lv.get("slo_s")), "—")
            continue
        table.add_row(
            f"{lv['load']:g}×",
            f"{lv['rate_qps']:.0f}",
            _ms(lv.get("slo_s")),
            "yes" if lv["binds"] else "no",
            _ms(lv.get(est)),
            _ms(lv["calibrated_p99_s"]),
            _ms(lv.get(f"{sh}_p99_s")),
            *((_ms(lv.get("live_p99_s")),) if live else ()),
            _ms(lv["measured_p99_s"]),
            _pct(lv.get(err)),
            _pct(lv["calibrated_error"]),
            _pct(lv.get(f"{sh}_error")),
            *((_pct(lv.get("live_error")),) if live else ()),
            *((_pct(lv.get("isolated_error")),) if calibrated else ()),
            _pct(lv["measured_miss_rate"], 1),
            f"{lv['max_threads']}/{b['pool_threads']}",
            _verdict(lv["passed"]) + ("*" if lv.get("runs_disturbed") else ""),
        )
    return table


def repeat_spread(p99s: Sequence[float | None]) -> float | None:
    """How far apart the repeats of one load measured its P99: (largest − smallest) ÷
    their median (None with fewer than two). The same plan, load and arrivals measured
    again: what a run's own bootstrap SD does not show (the VM's speed between runs)."""
    values = [v for v in p99s if v is not None and math.isfinite(v)]
    if len(values) < 2:
        return None
    middle = float(np.median(values))
    return (max(values) - min(values)) / middle if middle > 0 else None


def _noise_and_machine(levels: Sequence[dict[str, Any]], s: dict[str, Any]) -> str:
    """The caption's last sentences: how noisy a measured P99 is (within a run and
    between repeats), and whether the machine was ours (other processes' cores; runs
    re-run because it was not)."""
    runs = [r for lv in levels for r in lv.get("runs", [])]
    noise = [
        r["measured_p99_sd_s"] / r["measured_p99_s"]
        for r in runs
        if r.get("measured_p99_sd_s") is not None and r.get("measured_p99_s")
    ]
    spreads = [lv["measured_p99_spread"] for lv in levels if lv.get("measured_p99_spread")]
    other = [r["machine_load"]["other_cores"] for r in runs if r.get("machine_load")]
    reruns = sum(len(lv.get("disturbed_runs", [])) for lv in levels)
    out = ""
    if noise:
        out += (
            f"A measured P99's own sampling error (bootstrap SD): {min(noise):.0%}–{max(noise):.0%}"
        )
        out += (
            f"; between repeats of one load: up to {max(spreads):.0%} apart. " if spreads else ". "
        )
    if other:
        out += f"Other processes kept {min(other):.2f}–{max(other):.2f} cores busy; "
    return out + (
        f"{reruns} run(s) re-run (a run above {s['other_cores_limit']:g} cores of other "
        f"processes or {s['steal_limit']:.0%} steal is run again, up to {s['max_reruns']} "
        "times a load)"
    )


def _replan_table(b: dict[str, Any]) -> Table:
    table = _table(
        f"{b['pipeline']}: planned again from the profiles the engine calibrated while "
        "serving (CPU work on shared cores), same load and SLO; a different plan is served "
        "like the first",
        ("load", "$/h first", "$/h again", "thr", "est", "meas", "miss", ""),
    )
    for lv in b["levels"]:
        r = lv.get("replanned", {})
        if not r:
            continue
        if not r["feasible"]:
            table.add_row(f"{lv['load']:g}×", _money(lv.get("cost_per_hour"), 4), "no plan fits")
            continue
        same = r["same_plan"]
        table.add_row(
            f"{lv['load']:g}×",
            _money(r["first_cost_per_hour"], 4),
            "same plan" if same else _money(r["cost_per_hour"], 4),
            f"{r['plan_threads']}/{b['pool_threads']}",
            _ms(r["planned_p99_s"]),
            "—" if same else _ms(r.get("measured_p99_s")),
            "—" if same else _pct(r.get("measured_miss_rate"), 1),
            "" if same else _verdict(r.get("passed")),
        )
    return table


def _ramp_table(b: dict[str, Any], s: dict[str, Any]) -> Table:
    r = b["ramp"]
    table = _table(
        f"{b['pipeline']}: {r['from_qps']:.0f} → {r['to_qps']:.0f} q/s "
        f"({s['ramp_from']:g} → {s['ramp_to']:g} × capacity) over {s['ramp_s']:g} s, "
        f"SLO {_ms(r.get('slo_s'))} ms: the Tuner against the fixed plan sized for the peak"
        + (
            " (the start's plan is the peak's: the Tuner matches its cost only by changing nothing)"
            if r.get("same_start")
            else ""
        ),
        ("run", "policy", "changes", "P99", "miss", "cost $", "$/h", "thr", "other", ""),
    )
    for label in ("fixed", "tuned"):
        x = r.get(label, {})
        if not x.get("feasible"):
            table.add_row(label, "no plan fits")
            continue
        table.add_row(
            label,
            str(x.get("policy") or "—"),
            "—" if x.get("tuner_changes") is None else str(x["tuner_changes"]),
            _ms(x["measured_p99_s"]),
            _pct(x["measured_miss_rate"], 2),
            _money(x["cost_usd"], 5),
            _money(x.get("mean_cost_per_hour"), 3),
            f"{x['max_threads']}/{b['pool_threads']}",
            _cores((x.get("machine_load") or {}).get("other_cores")),
            _verdict(_ramp_passed(r)) if label == "tuned" else "",
        )
    return table
