"""`make demo`: InferLine keeps its promise on this machine, end to end.

1. profile the text pipeline (langid → MiniLM → scikit-learn) on this machine
   (cached: a second run reuses the measurements);
2. calibrate: plan from those profiles for THIS machine (`--machine local`), serve that
   plan on the first part of a real Azure trace slice (8 q/s) with real payloads, and
   write what the engine measured (`inferline calibrate URL --cpu-work -o ...`): isolated profiles
   are not serving conditions;
3. plan again from the calibrated profiles at a tight SLO where the SLO binds (the
   plan's estimated P99 ≥ 80 % of it): 1.1 × (else 1 ×) the tightest SLO the machine can
   still keep when the load doubles, found by searching with the Planner (else the
   tightest at the base load); plans keep an estimated P99 ≤ 85 % of the SLO
   (`--margin 0.15`: headroom for the machine's speed drifting);
4. serve that plan and replay the evaluation part: the Estimator's P99 and misses with
   the profiled speeds (before calibration) and with the calibrated ones the plan was
   made from, against the measured ones (demo.json also has the estimate with the speeds
   the engine calibrated on this very run);
5. a load step a plan must scale for: the base load 0.3 × the machine's capacity (the
   highest rate with a plan at SLO 1 s, by the calibrated profiles), as the traffic of
   enough users like the trace's one (the recording started at random points and
   merged), doubling after 30 s; the SLO 1.1 × the tightest the machine keeps at the
   doubled load, and the base load's plan for it; served twice, the fixed plan, then with
   the Tuner on; misses, replica cost integrated from the status, and the most replica
   threads against what the machine allows;
6. a PNG over time: per-second measured P99, the engine's live estimated P99, replicas
   per stage (Tuner solid, fixed plan dashed), into $DEMO_OUT or a fresh temp folder.

Each step shows the `inferline` command a user would type. DEMO_QUICK=1: a shorter run.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import numpy.typing as npt
from rich.console import Console
from rich.table import Table

from inferline import load_bundle, load_config, save_trace
from inferline.bench.promise import (
    PLANNING_MARGIN,
    calibrated_estimate,
    machine_capacity,
    plan_for_machine,
    single_replica_rate,
    status_figures,
    tightest_slo,
)
from inferline.engine import EngineProcess, replay, replay_summary, start_engine
from inferline.estimator import Estimator, ServiceTime
from inferline.profiler import attach_samples, load_samples
from inferline.profiles import (
    DEFAULT_FRONTEND_CPU_S_PER_QUERY,
    MachinePool,
    machine_pool_for_host,
)
from inferline.workload import Trace, bundled_trace_path, load_timestamp_csv

ROOT = Path(__file__).resolve().parent.parent
SOURCE_BUNDLE = ROOT / "examples" / "text-pipeline"
BUNDLE = SOURCE_BUNDLE  # the working copy in the output folder once main() made it
MODEL = "text-pipeline"
QUICK = os.environ.get("DEMO_QUICK") == "1"
MEAN_RATE_QPS = 8.0  # the promise part's load (steps 2-4)
#: The slice of the Azure trace the promise part replays: its busiest stretch, in minutes.
SLICE_MIN = (14.0, 25.0)
MAX_GAP_S = 5.0  # idle gaps of the recording longer than this are cut to it
#: The load step's base load: this share of the machine's capacity (the highest rate with a
#: plan on this machine at SLO 1 s, by the calibrated profiles). At the promise part's 8
#: q/s the text pipeline's plan is shaped by the trace's bursts and holds twice the rate
#: as it is, so the Tuner has nothing to do; at this share the doubled load needs
#: replicas the base plan lacks, and the machine has room for them.
STEP_BASE_FRACTION = 0.3
STEP_PLANNING_S = 60.0 if not QUICK else 30.0  # the load step's planning workload
EVAL_S = 60.0 if not QUICK else 30.0
CALIBRATION_S = 40.0 if not QUICK else 20.0  # the first plan serves this long to calibrate
#: The load step: the second half of the step run comes at this many times the rate.
STEP_FACTOR = 2.0
SLO_FACTOR = 1.2  # the SLO: this × the tightest the machine keeps at the stepped rate
STEP_SLO_FACTOR = 1.1  # the load step's SLO: this × the tightest at the doubled load
BINDING_FRACTION = 0.8  # the SLO binds when the plan's estimated P99 ≥ this × the SLO
LOOSE_SLO_S = 1.0  # the top of the SLO search
POLL_S = 0.5
SERVICE_TIME: ServiceTime = "lognormal"
console = Console()


# --- pure helpers (tests/unit/test_demo_script.py) -----------------------------------------


def step_arrivals(
    arrival_s: npt.NDArray[np.float64], duration_s: float, factor: float, rate_qps: float
) -> npt.NDArray[np.float64]:
    """``duration_s`` of arrivals, the first half at ``rate_qps`` and the second at ``factor``
    × that: two consecutive stretches of the recording, each stretched or compressed in
    time to fill its half, so each half keeps the recording's burstiness at an exact mean
    rate (a stretch of a bursty recording taken as it comes may be slower than the one
    before it, and then a "step" is none)."""
    a = np.sort(np.asarray(arrival_s, dtype=np.float64))
    half = duration_s / 2.0
    first_n = round(rate_qps * half)
    second_n = round(factor * rate_qps * half)
    if first_n < 1 or second_n < 1 or a.size < first_n + second_n + 1:
        raise ValueError(
            f"a step of {first_n} then {second_n} arrivals needs {first_n + second_n + 1} "
            f"recorded ones, got {a.size}"
        )

    def fill_half(stretch: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """All but the last of ``stretch``, from 0, scaled so the whole spans ``half``."""
        span = float(stretch[-1] - stretch[0])
        if span <= 0.0:
            return np.arange(stretch.size - 1, dtype=np.float64) * (half / (stretch.size - 1))
        return np.asarray((stretch[:-1] - stretch[0]) * (half / span), dtype=np.float64)

    before = fill_half(a[: first_n + 1])
    after = half + fill_half(a[first_n : first_n + second_n + 1])
    return np.concatenate([before, after])


def squeeze_gaps(arrival_s: npt.NDArray[np.float64], max_gap_s: float) -> npt.NDArray[np.float64]:
    """The arrivals with every idle gap longer than ``max_gap_s`` cut to it: the recording's
    idle minutes would only make the demo wait."""
    a = np.sort(np.asarray(arrival_s, dtype=np.float64))
    if a.size == 0:
        return a
    gaps = np.minimum(np.diff(a), max_gap_s)
    return np.concatenate([[0.0], np.cumsum(gaps)])


def superposed(
    arrival_s: npt.NDArray[np.float64],
    rate_qps: float,
    duration_s: float,
    max_gap_s: float,
    seed: int = 0,
) -> npt.NDArray[np.float64]:
    """Arrivals at a mean ``rate_qps`` over ``[0, duration_s)`` from one recording, as the
    traffic of k users like the recorded one: idle gaps cut to ``max_gap_s``, then k copies
    of the recording, each started at a random point of it (and wrapping round), merged;
    time is stretched slightly so the rate is exact, and the merged recording played again
    as often as ``duration_s`` needs. Merging streams keeps their bursts but, unlike
    compressing one recording in time, does not make every burst k times as dense."""
    once = squeeze_gaps(arrival_s, max_gap_s)
    if once.size < 2 or once[-1] <= 0.0:
        raise ValueError("a recording to replay needs at least two distinct arrivals")
    cycle_s = float(once[-1]) * once.size / (once.size - 1)  # one mean gap between plays
    natural_qps = once.size / cycle_s
    users = max(1, int(np.ceil(rate_qps / natural_qps - 1e-9)))
    offsets = np.random.default_rng(seed).uniform(0.0, cycle_s, users)
    merged = np.sort(np.concatenate([(once + u) % cycle_s for u in offsets]))
    stretch = users * natural_qps / rate_qps
    plays = int(np.ceil(duration_s / (cycle_s * stretch))) + 1
    times = np.concatenate([merged + j * cycle_s for j in range(plays)]) * stretch
    return times[times < duration_s]


@dataclass(frozen=True, slots=True)
class SloChoice:
    """The SLO the demo plans for and why (seconds)."""

    slo_s: float
    tightest_s: float
    estimated_p99_s: float
    binds: bool
    peak_feasible: bool  # the SLO also has a plan on the machine at the stepped rate


def choose_slo(
    base_p99: Callable[[float], float | None],
    peak_p99: Callable[[float], float | None],
    *,
    high_slo_s: float = LOOSE_SLO_S,
    factor: float = SLO_FACTOR,
    binding_fraction: float = BINDING_FRACTION,
) -> SloChoice | None:
    """A tight SLO that binds at the base load: ``factor`` × the tightest SLO the machine
    keeps at the peak load (so the Tuner has room to scale into), else that tightest SLO
    itself, else ``factor`` × (or 1 ×) the tightest at the base load.

    ``base_p99(slo)``/``peak_p99(slo)``: the estimated P99 of the plan for that SLO on the
    machine, None when none fits. None when not even ``high_slo_s`` fits the base load."""
    base_tight = tightest_slo(lambda s: base_p99(s) is not None, high_slo_s)
    if base_tight is None:
        return None
    peak_tight = tightest_slo(lambda s: peak_p99(s) is not None, high_slo_s)
    candidates = [] if peak_tight is None else [(peak_tight * f, peak_tight) for f in (factor, 1.0)]
    candidates += [(base_tight * factor, base_tight), (base_tight, base_tight)]
    fallback: SloChoice | None = None
    for slo, tight in candidates:
        est = base_p99(slo)
        if est is None:
            continue
        choice = SloChoice(
            slo_s=slo,
            tightest_s=tight,
            estimated_p99_s=est,
            binds=est >= binding_fraction * slo,
            peak_feasible=peak_p99(slo) is not None,
        )
        if choice.binds:
            return choice
        fallback = fallback or choice
    return fallback


def per_second_p99(
    sent_s: npt.NDArray[np.float64], latency_s: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Per whole second of sending, the P99 (nearest rank) of the answered queries."""
    ok = np.isfinite(latency_s)
    second = np.floor(sent_s[ok]).astype(np.int64)
    lat = latency_s[ok]
    ts, p99 = [], []
    for s in np.unique(second).tolist():
        x = np.sort(lat[second == s])
        ts.append(s + 0.5)
        p99.append(float(x[max(0, int(np.ceil(0.99 * x.size)) - 1)]))
    return np.array(ts, dtype=np.float64), np.array(p99, dtype=np.float64)


@dataclass
class Timeline:
    """One served run over time (seconds from the replay's start)."""

    latency_t_s: Sequence[float] = ()
    latency_p99_s: Sequence[float] = ()
    status_t_s: list[float] = field(default_factory=list)
    estimated_p99_s: list[float | None] = field(default_factory=list)
    replicas: dict[str, list[int]] = field(default_factory=dict)


def write_timeline_png(
    path: Path, runs: Mapping[str, Timeline], *, slo_s: float, step_at_s: float | None = None
) -> Path:
    """Three panels over time: measured per-second P99, the engine's live estimated P99,
    replicas per stage. The first run solid, the others dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    stages = sorted({s for run in runs.values() for s in run.replicas})
    for i, (label, run) in enumerate(runs.items()):
        style = "-" if i == 0 else "--"
        axes[0].plot(
            run.latency_t_s, np.asarray(run.latency_p99_s) * 1000, style, label=label, lw=1.2
        )
        est = [np.nan if e is None else e * 1000 for e in run.estimated_p99_s]
        axes[1].plot(run.status_t_s, est, style, label=label, lw=1.2)
        for j, stage in enumerate(stages):
            axes[2].step(
                run.status_t_s,
                run.replicas.get(stage, [0] * len(run.status_t_s)),
                style,
                where="post",
                color=colours[j % len(colours)],
                label=f"{stage} ({label})",
                lw=1.2,
            )
    for ax in axes[:2]:
        ax.axhline(slo_s * 1000, color="red", lw=0.8, ls=":", label="SLO")
        ax.set_ylabel("ms (log scale)")
        ax.set_yscale("log")
        ax.legend(fontsize=7, loc="upper left")
    if step_at_s is not None:
        for ax in axes:
            ax.axvline(step_at_s, color="grey", lw=0.8, ls=":")
    axes[0].set_title("measured P99 per second")
    axes[1].set_title("the engine's live estimated P99 (calibrated)")
    axes[2].set_title("replicas per stage")
    axes[2].set_ylabel("replicas")
    axes[2].set_xlabel("seconds from the start of the replay")
    axes[2].legend(fontsize=7, loc="upper left", ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --- running it ----------------------------------------------------------------------------


def inferline(*args: str, as_json: bool = True) -> dict[str, Any]:
    """Run one `inferline` command as a user would, show it, return its JSON; on failure
    show its message and exit with its code (3: infeasible)."""
    console.print(f"[dim]$ inferline {shlex.join(args)}[/]")
    binary = Path(sys.executable).parent / "inferline"
    command = [str(binary), *args, *(["--json"] if as_json else [])]
    done = subprocess.run(command, check=False, capture_output=as_json, text=True)
    if done.returncode != 0:
        if as_json:
            message = done.stderr.strip()
            with contextlib.suppress(json.JSONDecodeError, AttributeError):
                message = str(json.loads(done.stdout).get("error") or message)
            console.print(f"[bold red]{message}[/]")
        raise SystemExit(done.returncode)
    return dict(json.loads(done.stdout)) if as_json else {}


@functools.cache
def recorded_arrivals() -> npt.NDArray[np.float64]:
    """The bundled Azure trace's arrival times (read once: the capacity search asks often)."""
    return load_timestamp_csv(bundled_trace_path()).arrival_s


def azure_slice(rate_qps: float) -> Trace:
    """The busiest minutes of the real trace, idle gaps squeezed, time-scaled to
    ``rate_qps`` on average."""
    t = recorded_arrivals()
    t = t - t[0]
    lo, hi = SLICE_MIN[0] * 60.0, SLICE_MIN[1] * 60.0
    cut = squeeze_gaps(t[(t >= lo) & (t < hi)] - lo, MAX_GAP_S)
    scale = (cut.size / rate_qps) / float(cut[-1])
    return Trace.from_arrivals(cut * scale, source="azure slice")


def users_of_the_trace(rate_qps: float, duration_s: float, seed: int = 0) -> Trace:
    """The whole bundled Azure trace as the traffic of enough users to make ``rate_qps``
    (:func:`superposed`), for ``duration_s``."""
    arrivals = superposed(recorded_arrivals(), rate_qps, duration_s, MAX_GAP_S, seed=seed)
    return Trace.from_arrivals(arrivals, source="azure users")


class Watch:
    """Polls the engine's status while a replay runs: replicas per stage, the live
    estimated P99, the replica cost, and the Tuner's changes as they happen."""

    def __init__(self, engine: EngineProcess, price: Mapping[str, float], show: bool) -> None:
        self.engine, self.price, self.show = engine, dict(price), show
        self.timeline = Timeline()
        self.samples: list[tuple[float, int, int, float]] = []  # t, threads, replicas, $/h
        self.changes: list[dict[str, Any]] = []
        self.capacity_limited: Any = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Watch:
        self._t0 = time.monotonic()
        self._read()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self._read()

    def _run(self) -> None:
        while not self._stop.wait(POLL_S):
            self._read()

    def _read(self) -> None:
        try:
            status = self.engine.status()
        except Exception:  # a missed reading only coarsens the timeline
            return
        t = time.monotonic() - self._t0
        threads = replicas = 0
        dollars = 0.0
        tl = self.timeline
        tl.status_t_s.append(t)
        for name, stage in status.get("stages", {}).items():
            listed = stage.get("replica_list", [])
            for r in listed:
                threads += int(r.get("threads") or 1)
                dollars += self.price.get(str(r.get("hardware")), 0.0)
            replicas += len(listed)
            tl.replicas.setdefault(name, []).append(len(listed))
        self.samples.append((t, threads, replicas, dollars))
        calibration = status.get("calibration") or {}
        estimate = (calibration.get("pipeline") or {}).get("estimated_p99_s")
        tl.estimated_p99_s.append(None if estimate is None else float(estimate))
        tuner = status.get("tuner") or {}
        limited = tuner.get("capacity_limited")
        if limited is not None:
            self.capacity_limited = (
                limited.get("decisions") if isinstance(limited, dict) else limited
            )
        for c in tuner.get("changes", [])[len(self.changes) :]:
            self.changes.append(c)
            if self.show:
                arrow = "▲" if c["to"] > c["from"] else "▼"
                console.print(
                    f"  [bold]{arrow}[/] t={c['time_s']:6.1f} s  {c['stage']:>10}: "
                    f"{c['from']} → {c['to']} replicas"
                )

    def figures(self) -> dict[str, Any]:
        return {**status_figures(self.samples), "changes": len(self.changes)}


@dataclass
class Served:
    """One replay: the summary, the status figures and the timeline."""

    summary: dict[str, Any]
    machine: dict[str, Any]
    timeline: Timeline


class Demo:
    def __init__(self, out: Path, root: Path | None = None) -> None:
        self.out = out
        self.bundle = load_bundle(root or BUNDLE)
        self.price = dict(self.bundle.profiles.hardware.price_per_hour)
        self.pool: MachinePool = machine_pool_for_host()
        paths = self.bundle.paths
        n, seed = (paths.samples, paths.seed) if paths else (64, 0)
        assert self.bundle.samples is not None, "the text pipeline names its samples"
        dicts = load_samples(self.bundle.root, self.bundle.samples, n, seed)
        self.bodies = [json.dumps(b, separators=(",", ":")).encode() for b in dicts]

    def with_payloads(
        self, arrival_s: npt.NDArray[np.float64], seed: int, label: str
    ) -> tuple[Trace, list[bytes]]:
        """The trace with each query's recorded path and its real payload."""
        a = np.asarray(arrival_s, dtype=np.float64)
        if self.bundle.paths is None:
            k = np.random.default_rng([seed, 7]).integers(0, len(self.bodies), a.size)
            return Trace.from_arrivals(a, source=label), [self.bodies[int(i)] for i in k]
        trace, k = attach_samples(a, self.bundle.paths, seed, label)
        return trace, [self.bodies[int(i)] for i in k.tolist()]

    def capacity(self) -> float:
        """The highest rate (q/s) with a plan on this machine at the loose SLO."""

        def fits_at(rate_qps: float) -> bool:
            planning = users_of_the_trace(rate_qps, STEP_PLANNING_S)
            return self.plan_p99(planning)(LOOSE_SLO_S) is not None

        guess = single_replica_rate(self.bundle.pipeline, self.bundle.profiles)
        top = self.pool.cores / DEFAULT_FRONTEND_CPU_S_PER_QUERY
        return machine_capacity(fits_at, guess, max_rate_qps=top)

    def load_step(self, out: Path) -> tuple[float, float, Path, Trace, list[bytes]] | None:
        """The load-step case: (SLO, base rate, plan file, the step trace and its payloads),
        None when the doubled load has no plan on this machine."""
        capacity = self.capacity()
        rate = round(STEP_BASE_FRACTION * capacity, 1)
        planning = users_of_the_trace(rate, STEP_PLANNING_S, seed=0)
        peak = users_of_the_trace(STEP_FACTOR * rate, STEP_PLANNING_S, seed=0)
        peak_p99 = self.plan_p99(peak)
        tight = tightest_slo(lambda s: peak_p99(s) is not None, LOOSE_SLO_S)
        if tight is None:
            return None
        slo_s = round(STEP_SLO_FACTOR * tight, 4)
        source_s = EVAL_S / 2 * (1 + STEP_FACTOR) * 1.1 + 5.0  # a cut play's rate varies
        source = users_of_the_trace(rate, source_s, seed=1).arrival_s
        step, bodies = self.with_payloads(
            step_arrivals(source, EVAL_S, STEP_FACTOR, rate), 2, "step"
        )
        save_trace(planning, out / "step-planning.csv")
        save_trace(step, out / "step.csv")
        path = out / "step-plan.yaml"
        make_plan(str(self.bundle.root), out, slo_s, path, trace="step-planning.csv")
        console.print(
            f"  capacity {capacity:.0f} q/s → base load {rate:g} q/s, then {STEP_FACTOR * rate:g}"
            f" q/s; tightest SLO at the doubled load {tight * 1000:.1f} ms → SLO "
            f"{slo_s * 1000:.1f} ms"
        )
        return slo_s, rate, path, step, bodies

    def plan_p99(self, trace: Trace) -> Callable[[float], float | None]:
        memo: dict[float, float | None] = {}

        def p99(slo_s: float) -> float | None:
            if slo_s not in memo:
                found = plan_for_machine(
                    self.bundle.pipeline,
                    self.bundle.profiles,
                    trace,
                    slo_s,
                    self.pool,
                    margin=PLANNING_MARGIN,
                )  # None: infeasible on this machine or at all
                memo[slo_s] = None if found is None else found.estimated_p99_s
            return memo[slo_s]

        return p99

    def estimate(self, trace: Trace, plan_path: Path, slo_s: float) -> dict[str, float]:
        result = Estimator(
            self.bundle.pipeline,
            self.bundle.profiles,
            trace,
            slo_s=slo_s,
            service_time=SERVICE_TIME,
            machine=self.pool if self.pool.shares_cores else None,  # as the plan was judged
        ).run(load_config(plan_path))
        return {"p99_s": result.p99_s, "miss_rate": result.miss_rate}

    def serve_replay(
        self,
        engine: EngineProcess,
        trace: Trace,
        bodies: list[bytes],
        slo_s: float,
        *,
        show: bool,
    ) -> Served:
        console.print(
            f"[dim]$ inferline replay {engine.url} --trace {trace.source}.csv --requests …[/]"
        )
        engine.reset_stats()
        with Watch(engine, self.price, show) as watch:
            result = replay(engine.url, trace.arrival_s, bodies, slo_s=slo_s, model=MODEL)
        t, p99 = per_second_p99(result.sent_s, result.latency_s)
        watch.timeline.latency_t_s, watch.timeline.latency_p99_s = t.tolist(), p99.tolist()
        figures = watch.figures()
        figures["capacity_limited"] = watch.capacity_limited
        return Served(replay_summary(result), figures, watch.timeline)


def serve_command(slo_s: float, tune: Path | None) -> tuple[str, ...]:
    extra: tuple[str, ...] = (
        "--slo-s",
        repr(round(slo_s, 4)),
        "--no-shed",
        "--calibration-interval-s",
        "2",
    )
    if tune is not None:
        extra += ("--tune", "--planning-trace", str(tune))
    console.print(f"[dim]$ inferline serve {BUNDLE.name} --config plan.yaml {shlex.join(extra)}[/]")
    return extra


def warm_up(engine: EngineProcess, demo: Demo, slo_s: float, rate_qps: float) -> None:
    """A few seconds of queries so the first measured ones do not pay for cold caches."""
    rng = np.random.default_rng(11)
    n = int(rate_qps * 3)
    bodies = [demo.bodies[int(i)] for i in rng.integers(0, len(demo.bodies), n)]
    arrivals = np.cumsum(rng.exponential(1 / rate_qps, n))
    replay(engine.url, arrivals, bodies, slo_s=slo_s, model=MODEL)


def _ms(x: float | None) -> str:
    return "—" if x is None else f"{x * 1000:.1f}"


def infeasible(bundle_arg: str, pool: MachinePool) -> NoReturn:
    console.print(
        f"[bold red]infeasible on this machine[/]: no plan for the planning part fits "
        f"{pool.cores} cores even at SLO {LOOSE_SLO_S:g} s; see `inferline plan "
        f"{bundle_arg} --trace planning.csv --slo-s {LOOSE_SLO_S:g} --machine local`"
    )
    raise SystemExit(3)


def choose_first_slo(
    demo: Demo, planning: Trace, peak_planning: Trace, bundle_arg: str, pool: MachinePool
) -> float:
    """The SLO the first plan (from the profiles as measured) is served at."""
    choice = choose_slo(demo.plan_p99(planning), demo.plan_p99(peak_planning))
    if choice is None:
        infeasible(bundle_arg, pool)
    return round(choice.slo_s, 4)


def make_plan(
    bundle_arg: str, out: Path, slo_s: float, plan_path: Path, trace: str = "planning.csv"
) -> dict[str, Any]:
    """``inferline plan`` for this machine, with the demo's margin."""
    return inferline(
        "plan",
        bundle_arg,
        "--trace",
        str(out / trace),
        "--slo-s",
        repr(slo_s),
        "--machine",
        "local",
        "--margin",
        repr(PLANNING_MARGIN),
        "-o",
        str(plan_path),
    )


def calibrated_copy(root: Path, profiles: Path, out: Path) -> Path:
    """A copy of the bundle whose profiles are the calibrated ones (what a user does:
    `cp calibrated.yaml BUNDLE/profiles.yaml`); the working copy keeps its measured
    profiles, so a re-run's `inferline profile` stays cached."""
    copy = out / f"{root.name}-calibrated"
    if copy.exists():
        shutil.rmtree(copy)
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns(".models"), symlinks=True)
    (copy / ".models").symlink_to((root / ".models").resolve(), target_is_directory=True)
    shutil.copyfile(profiles, copy / "profiles.yaml")
    return copy


def use_working_copy(out: Path) -> None:
    """Profile and serve a copy of the bundle in ``out``: the demo writes nothing into the
    checkout. Its profiles come along (a re-run re-measures only what changed); the model
    cache is linked, not copied."""
    global BUNDLE
    copy = out / SOURCE_BUNDLE.name
    if not copy.exists():
        shutil.copytree(SOURCE_BUNDLE, copy, ignore=shutil.ignore_patterns(".models"))
        models = SOURCE_BUNDLE / ".models"
        models.mkdir(exist_ok=True)
        (copy / ".models").symlink_to(models, target_is_directory=True)
    BUNDLE = copy


def main() -> None:
    started = time.monotonic()
    out = Path(os.environ.get("DEMO_OUT") or tempfile.mkdtemp(prefix="inferline-demo-"))
    out.mkdir(parents=True, exist_ok=True)
    use_working_copy(out)
    console.rule("InferLine demo: a plan for this machine that keeps its SLO (text pipeline)")
    bundle_arg = str(BUNDLE)
    console.print("[bold]1. Profile[/] each stage on this machine (cached after the first run)")
    inferline(
        "profile",
        bundle_arg,
        "--hardware",
        "cpu-1",
        "--max-batch",
        "16",
        "--samples",
        "300",
        as_json=False,
    )
    demo = Demo(out)
    pool = demo.pool

    full = azure_slice(MEAN_RATE_QPS)
    cut = full.duration_s * 0.3
    planning = full.window(0.0, cut)
    evaluation, eval_bodies = demo.with_payloads(
        full.window(cut, cut + EVAL_S).arrival_s, 1, "evaluation"
    )
    if evaluation.duration_s < 0.8 * EVAL_S:
        console.print(f"[yellow]note[/]: the evaluation part spans {evaluation.duration_s:.0f} s")
    peak_planning = Trace.from_arrivals(planning.arrival_s / STEP_FACTOR, source="planning ×2")
    for name, tr in (("planning", planning), ("evaluation", evaluation)):
        save_trace(tr, out / f"{name}.csv")
    console.print(
        f"\n[bold]Workload[/]: Azure LLM code trace, minutes {SLICE_MIN[0]:g}–{SLICE_MIN[1]:g} "
        f"(idle gaps over {MAX_GAP_S:g} s cut to it) rescaled to {MEAN_RATE_QPS:g} q/s on "
        f"average: planning part {planning.n_queries} queries, evaluation part "
        f"{evaluation.n_queries} over {evaluation.duration_s:.0f} s"
    )
    console.print(
        f"Machine: {pool.cores} cores, {pool.frontend_reserve_cores:g} reserved for the "
        f"front-end, at most {pool.max_threads} replica threads (fit={pool.fit})"
    )

    first_slo = choose_first_slo(demo, planning, peak_planning, bundle_arg, pool)
    console.print(
        f"\n[bold]2. Calibrate[/]: plan from the profiles at SLO {first_slo * 1000:.1f} ms, "
        f"serve it on the first {CALIBRATION_S:g} s of the planning part, and write what "
        "the engine measured"
    )
    first_path = out / "first-plan.yaml"
    make_plan(bundle_arg, out, first_slo, first_path)
    calibration, cal_bodies = demo.with_payloads(
        planning.window(0.0, CALIBRATION_S).arrival_s, 3, "calibration"
    )
    work_path = out / "calibrated-work.yaml"
    with start_engine(
        BUNDLE, first_path, *serve_command(first_slo, None), start_timeout_s=240.0
    ) as e:
        warm_up(e, demo, first_slo, MEAN_RATE_QPS)
        first_run = demo.serve_replay(e, calibration, cal_bodies, first_slo, show=False)
        inferline("calibrate", e.url, "--cpu-work", "-o", str(work_path), as_json=False)
    console.print(
        f"  the first plan: P99 {_ms(first_run.summary.get('p99_s'))} ms measured against "
        f"{_ms(demo.estimate(calibration, first_path, first_slo)['p99_s'])} ms estimated "
        "from the profiles"
    )
    calibrated_root = calibrated_copy(BUNDLE, work_path, out)
    served = Demo(out, calibrated_root)

    console.print(
        f"\n[bold]3. Plan for this machine from the calibrated profiles[/] at a tight SLO: "
        f"{SLO_FACTOR:g} × the tightest SLO the machine keeps at {STEP_FACTOR:g}× the load, "
        "searched with the Planner"
    )
    searching = time.perf_counter()
    choice = choose_slo(served.plan_p99(planning), served.plan_p99(peak_planning))
    if choice is None:
        infeasible(bundle_arg, pool)
    console.print(
        f"  tightest {choice.tightest_s * 1000:.1f} ms → SLO {choice.slo_s * 1000:.1f} ms "
        f"({time.perf_counter() - searching:.1f} s of planning)"
        + ("" if choice.peak_feasible else "; [yellow]no plan fits the stepped load[/]")
    )
    slo_s = round(choice.slo_s, 4)
    plan_path = out / "plan.yaml"
    planned = make_plan(str(calibrated_root), out, slo_s, plan_path)
    config = load_config(plan_path)
    for name, st in config.stages.items():
        console.print(f"  {name:>10}: {st.replicas} × {st.hardware}, max batch {st.batch_size}")
    plan_p99 = float(planned["estimated_p99_s"])
    binds = plan_p99 >= BINDING_FRACTION * slo_s
    console.print(
        f"  ${planned['cost_per_hour']:.4f}/hour; estimated P99 {plan_p99 * 1000:.1f} ms = "
        f"{plan_p99 / slo_s:.0%} of the SLO (planned for at most {1 - PLANNING_MARGIN:.0%}: "
        f"headroom for a drifting machine): "
        + ("[green]the SLO binds[/]" if binds else "[yellow]the SLO does not bind[/]")
    )
    threads_planned = sum(pool.threads_of(config).values())
    console.print(f"  {threads_planned} replica threads of the {pool.max_threads} allowed")

    console.print("\n[bold]4. Serve the plan[/] and replay the evaluation part (real payloads)")
    estimated = demo.estimate(evaluation, plan_path, slo_s)
    planned_with = served.estimate(evaluation, plan_path, slo_s)
    with start_engine(
        calibrated_root, plan_path, *serve_command(slo_s, None), start_timeout_s=240.0
    ) as e:
        warm_up(e, served, slo_s, MEAN_RATE_QPS)
        fixed_eval = served.serve_replay(e, evaluation, eval_bodies, slo_s, show=False)
        calibrated_path = out / "calibrated-profiles.yaml"
        inferline("calibrate", e.url, "-o", str(calibrated_path), as_json=False)
        cal = calibrated_estimate(
            served.bundle.pipeline,
            config,
            evaluation,
            e.url,
            slo_s=slo_s,
            service_time=SERVICE_TIME,
        )

    console.print(
        f"\n[bold]5. Load step[/]: a load the plan must scale for. The machine's capacity "
        f"by the calibrated profiles; the base load {STEP_BASE_FRACTION:g} × that, doubling "
        f"after {EVAL_S / 2:.0f} s; the SLO {STEP_SLO_FACTOR:g} × the tightest the machine "
        "keeps at the doubled load, and the base load's plan for it"
    )
    step_case = served.load_step(out)
    if step_case is None:
        console.print(
            "[yellow]no SLO up to 1 s has a plan for the doubled load on this machine: "
            "no load step[/]"
        )
        raise SystemExit(3)
    step_slo, step_rate, step_path, step, step_bodies = step_case
    console.print(f"$ inferline plan … --trace step-planning.csv --slo-s {step_slo!r} …")
    step_config = load_config(step_path)
    for name, st in step_config.stages.items():
        console.print(f"  {name:>10}: {st.replicas} × {st.hardware}, max batch {st.batch_size}")
    console.print("  first the fixed plan …")
    with start_engine(
        calibrated_root, step_path, *serve_command(step_slo, None), start_timeout_s=240.0
    ) as e:
        warm_up(e, served, step_slo, step_rate)
        fixed_step = served.serve_replay(e, step, step_bodies, step_slo, show=False)
    console.print("  … then with the Tuner on: its replica changes as they happen")
    tune_args = serve_command(step_slo, out / "step-planning.csv")
    with start_engine(calibrated_root, step_path, *tune_args, start_timeout_s=240.0) as e:
        warm_up(e, served, step_slo, step_rate)
        tuned_step = served.serve_replay(e, step, step_bodies, step_slo, show=True)
        tuner_policy = e.status().get("tuner", {}).get("policy")

    table = Table(
        title=f"4. the promise: SLO {slo_s * 1000:.1f} ms, {evaluation.n_queries} "
        f"queries over {evaluation.duration_s:.0f} s"
    )
    for col in ("P99 ms", "miss rate", "|est − meas| / meas"):
        table.add_column(col, justify="right")
    table.add_column("", justify="left")
    meas = fixed_eval.summary
    m_p99 = meas.get("p99_s")

    def err(x: float | None) -> str:
        return "—" if x is None or not m_p99 else f"{abs(x - m_p99) / m_p99:.0%}"

    cal_p99 = None if cal is None else cal.p99_s
    table.add_row(
        _ms(estimated["p99_s"]),
        f"{estimated['miss_rate']:.2%}",
        err(estimated["p99_s"]),
        "estimated, profiled speeds (before calibration)",
    )
    table.add_row(
        _ms(planned_with["p99_s"]),
        f"{planned_with['miss_rate']:.2%}",
        err(planned_with["p99_s"]),
        "estimated, calibrated speeds (the profiles the plan was made from)",
    )
    table.add_row(
        _ms(m_p99), f"{float(meas['miss_rate']):.2%}", "", f"measured (errors {meas['errors']})"
    )
    console.print(table)

    step_table = Table(
        title=f"5. load step: {step.n_queries} queries, {step_rate:g} q/s, {STEP_FACTOR:g}× "
        f"after {EVAL_S / 2:.0f} s, SLO {step_slo * 1000:.1f} ms"
    )
    for col in (
        "run",
        "P99 ms",
        "miss rate",
        "errors",
        "cost $",
        "tuner changes",
        "max replica threads",
    ):
        step_table.add_column(col, justify="right")
    for label, run in (("fixed plan", fixed_step), (f"Tuner ({tuner_policy})", tuned_step)):
        step_table.add_row(
            label,
            _ms(run.summary.get("p99_s")),
            f"{float(run.summary['miss_rate']):.2%}",
            str(run.summary["errors"]),
            f"{run.machine['cost_usd']:.5f}" if run.machine["cost_usd"] is not None else "—",
            str(run.machine["changes"]) if label != "fixed plan" else "—",
            f"{run.machine['max_threads']} / {pool.max_threads}",
        )
    console.print(step_table)
    fewer = float(tuned_step.summary["miss_rate"]) < float(fixed_step.summary["miss_rate"])
    within = (tuned_step.machine["max_threads"] or 0) <= pool.max_threads
    console.print(
        ("[green]the Tuner missed less[/]" if fewer else "[yellow]the Tuner did not miss less[/]")
        + " than the fixed plan, "
        + ("[green]within the machine[/]" if within else "[red]beyond the machine[/]")
        + f"; capacity-limited decisions: {tuned_step.machine.get('capacity_limited')}"
    )

    png = write_timeline_png(
        out / "demo.png",
        {"Tuner": tuned_step.timeline, "fixed plan": fixed_step.timeline},
        slo_s=step_slo,
        step_at_s=EVAL_S / 2,
    )
    load = os.getloadavg()[0]
    figures = {
        "slo_s": slo_s,
        "plan_estimated_p99_s": plan_p99,
        "binds": binds,
        "machine_max_threads": pool.max_threads,
        "calibration": {
            "slo_s": first_slo,
            "measured": first_run.summary,
            "profiles": str(work_path),
        },
        "evaluation": {
            "estimated": estimated,
            "planned_with": planned_with,
            "calibrated_p99_s": cal_p99,
            "measured": meas,
        },
        "step": {
            "rate_qps": step_rate,
            "slo_s": step_slo,
            "plan": str(step_path),
            "fixed": {**fixed_step.summary, **fixed_step.machine},
            "tuned": {**tuned_step.summary, **tuned_step.machine, "policy": tuner_policy},
        },
        "load_average": load,
        "wall_s": time.monotonic() - started,
    }
    (out / "demo.json").write_text(json.dumps(figures, indent=1, default=str) + "\n")
    busy = f" (the machine was busy: load average {load:.1f})" if load > pool.cores else ""
    console.print(
        f"\nwall time {figures['wall_s']:.0f} s{busy}\nfigure: [bold]{png}[/]\n"
        f"figures, plan and traces: {out}"
    )


if __name__ == "__main__":
    main()
