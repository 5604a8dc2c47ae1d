"""Live calibration: what the stages really take while served, and what the Estimator
makes of it (docs/engine.md, "Live calibration").

The engine hands every finished batch (stage, hardware, size, measured ``predict``
time, its CPU time and its round trip) and every answered query (arrival, latency,
path) to a :class:`Calibrator`; both are appends to bounded deques, the only work on
the hot path. Every ``interval_s``, off the event loop (a worker thread),
:meth:`Calibrator.refresh` calibrates the profiles on the last ``window_s`` of batches
(:func:`~inferline.profiles.calibrate_profiles`, round trips included) and runs the
Estimator on the last ``window_s`` of answered queries, as they arrived and along the
paths they took, under the plan in force: its P99 beside the measured one, with the
calibrated and with the original profiles (those on the host's cores shared, under the
machine's ``shared`` fit rule: calibrated profiles carry the contention already). Each
stage's speed ratio (measured / profiled ``predict`` time) is checked for drift: beyond
``drift_ratio`` (either way) for ``drift_sustain_s`` logs one warning naming the stage,
and counts it.
Nothing a refresh raises reaches the server: it is logged and shown in the status.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from inferline.errors import ConfigError
from inferline.estimator import ServiceTime, simulate
from inferline.pipeline import Pipeline, PipelineConfig
from inferline.planner import tail_bias
from inferline.profiles import (
    MIN_FRONTEND_QUERIES,
    Calibration,
    MachinePool,
    Profiles,
    calibrate_profiles,
    carry_speeds,
    hardware_to_mapping,
    nearest_rank,
    profiles_to_mapping,
    resources_for,
)
from inferline.workload import Trace

__all__ = ["CalibrationOptions", "Calibrator"]

#: A tail bias is a ratio of two P99s: under this many queries in the window, each P99 is
#: a handful of the slowest answers and the ratio noise (two 8 q/s serves of the demo,
#: about 160 queries each, said 1.50 and 1.05), so none is reported.
MIN_TAIL_BIAS_QUERIES = 1000

log = logging.getLogger("inferline.engine")


@dataclass(frozen=True, slots=True)
class CalibrationOptions:
    """How the engine calibrates its profiles while serving (times in seconds)."""

    interval_s: float = 5.0  # how often the estimate and the drift check are recomputed
    window_s: float = 60.0  # batches and queries older than this are forgotten
    min_samples: int = 20  # batches of one size before its measured times replace the profile
    drift_ratio: float = 1.25  # speed ratio beyond which (or below 1/it) a stage has drifted
    drift_sustain_s: float = 15.0  # ... for at least this long before the warning
    drift_min_s: float = 0.0005  # ... and a batch's mean predict time is off by more than this
    max_batches_per_size: int = 2_000  # per (stage, hardware, batch size)
    max_queries: int = 200_000  # answered queries kept for the measured P99
    #: The estimate (and the measured P99 beside it) covers at most this many of the
    #: window's latest queries: the Estimator's kernel holds the GIL, about 1.5 ms per
    #: 1,000 queries here, and that pauses the event loop too.
    estimate_max_queries: int = 10_000
    #: The Estimator's service-time model: lognormal fits each batch size's median and P99
    #: (served batches vary; the median alone understates how busy a stage is).
    service_time: ServiceTime = "lognormal"

    def __post_init__(self) -> None:
        for name in ("interval_s", "window_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"must be positive, got {getattr(self, name)!r}", field=name)
        if not self.drift_ratio > 1.0:
            raise ConfigError(f"must be > 1, got {self.drift_ratio!r}", field="drift_ratio")
        if not self.drift_sustain_s >= 0:
            raise ConfigError(f"must be ≥ 0, got {self.drift_sustain_s!r}", field="drift_sustain_s")
        if self.service_time not in ("fixed", "lognormal"):
            raise ConfigError(
                f"must be fixed or lognormal, got {self.service_time!r}", field="service_time"
            )
        for name in ("min_samples", "max_batches_per_size", "max_queries", "estimate_max_queries"):
            if getattr(self, name) < 1:
                raise ConfigError(f"must be ≥ 1, got {getattr(self, name)!r}", field=name)


@dataclass
class _Drift:
    since_s: float | None = None
    warned: bool = False
    warnings: int = 0


def _recent(
    batches: Mapping[tuple[str, str], Mapping[int, Iterable[tuple[float, float]]]], since: float
) -> dict[tuple[str, str], dict[int, list[float]]]:
    """The ``predict`` times of batches finished at ``since`` or later."""
    out: dict[tuple[str, str], dict[int, list[float]]] = {}
    for key, by_size in batches.items():
        sizes = {b: [p for t, p in d if t >= since] for b, d in by_size.items()}
        sizes = {b: v for b, v in sizes.items() if v}
        if sizes:
            out[key] = sizes
    return out


def _recent_values(samples: Iterable[tuple[float, float]], since: float) -> list[float]:
    """The values of (time, value) samples taken at ``since`` or later."""
    return [v for t, v in samples if t >= since]


@dataclass(frozen=True)
class _Snapshot:
    """What one refresh works on, copied on the event loop."""

    now_s: float
    config: PipelineConfig
    slo_s: float
    batches: dict[tuple[str, str], dict[int, list[tuple[float, float]]]]  # (time, predict)
    queries: list[tuple[float, float, tuple[str, ...]]]  # (arrival, latency, path)
    #: (time, CPU work) per batch: the process's CPU seconds ÷ the replica's threads
    work: dict[tuple[str, str], dict[int, list[tuple[float, float]]]] = field(default_factory=dict)
    #: (time, round trip) per batch: from handing it to a replica to taking its answers
    turns: dict[tuple[str, str], dict[int, list[tuple[float, float]]]] = field(default_factory=dict)
    #: (time, round trip − predict) per batch whose CPU work was measured
    rests: dict[tuple[str, str], dict[int, list[tuple[float, float]]]] = field(default_factory=dict)
    #: (time, seconds) per answered query: its time in the front-end outside the engine
    frontend: list[tuple[float, float]] = field(default_factory=list)

    def window(self, window_s: float) -> tuple[Any, np.ndarray, np.ndarray, list[Any]]:
        """Batch samples, arrivals (sorted), latencies and paths of the last ``window_s``."""
        since = self.now_s - window_s
        batches = _recent(self.batches, since)
        recent = sorted((q for q in self.queries if q[0] >= since), key=lambda q: q[0])
        arrival_s = np.array([q[0] for q in recent], dtype=np.float64)
        latency_s = np.array([q[1] for q in recent], dtype=np.float64)
        return batches, arrival_s, latency_s, [q[2] for q in recent]


class Calibrator:
    """Rolling per-(stage, batch size) ``predict`` times and the observed arrivals, and
    what they say about the profiles; see the module doc. ``clock``: the engine's."""

    def __init__(
        self,
        pipeline: Pipeline,
        profiles: Profiles | None,
        options: CalibrationOptions | None = None,
        *,
        clock: Callable[[], float],
        machine: MachinePool | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.profiles = profiles
        #: the host whose cores the uncalibrated estimate shares (fit ``shared``); the
        #: calibrated profiles carry that contention already
        self.machine = machine if machine is not None and machine.shares_cores else None
        self.options = options or CalibrationOptions()
        self._clock = clock
        self._batches: dict[tuple[str, str], dict[int, deque[tuple[float, float]]]] = {}
        self._work: dict[tuple[str, str], dict[int, deque[tuple[float, float]]]] = {}
        self._turns: dict[tuple[str, str], dict[int, deque[tuple[float, float]]]] = {}
        #: the round trip outside ``predict`` of the batches in ``_work``
        self._rests: dict[tuple[str, str], dict[int, deque[tuple[float, float]]]] = {}
        self._threads: dict[str, int] = {}
        self._queries: deque[tuple[float, float, tuple[str, ...]]] = deque(
            maxlen=self.options.max_queries
        )
        #: (time, seconds) per answered query: its time in the HTTP front-end, outside
        #: the engine (parsing, answering, waiting for the event loop)
        self._frontend: deque[tuple[float, float]] = deque(maxlen=self.options.max_queries)
        self._drift = {name: _Drift() for name in pipeline.stage_names}
        self._speeds: dict[str, dict[str, Any]] = {}
        self._pipeline: dict[str, Any] = {}
        self._latest: Calibration | None = None
        self._latest_work: Calibration | None = None
        self.updated_s: float | None = None
        self.errors = 0
        self._error: str | None = None
        self._task: asyncio.Task[None] | None = None

    # --- the hot path ----------------------------------------------------------------------
    def record_batch(
        self,
        stage: str,
        hardware: str,
        size: int,
        predict_s: float,
        predict_cpu_s: float | None = None,
        turn_s: float | None = None,
    ) -> None:
        now = self._clock()
        self._append(self._batches, stage, hardware, size, now, predict_s)
        if turn_s is not None:
            self._append(self._turns, stage, hardware, size, now, turn_s)
        if predict_cpu_s is not None and self.machine is not None:
            threads = self._threads.get(hardware)
            if threads is None:
                threads = self._threads[hardware] = resources_for(
                    hardware, self.machine.cores
                ).threads
            self._append(self._work, stage, hardware, size, now, predict_cpu_s / threads)
            if turn_s is not None:
                self._append(self._rests, stage, hardware, size, now, max(0.0, turn_s - predict_s))

    def _append(
        self,
        table: dict[tuple[str, str], dict[int, deque[tuple[float, float]]]],
        stage: str,
        hardware: str,
        size: int,
        now: float,
        value: float,
    ) -> None:
        by_size = table.get((stage, hardware))
        if by_size is None:
            by_size = table[(stage, hardware)] = {}
        samples = by_size.get(size)
        if samples is None:
            samples = by_size[size] = deque(maxlen=self.options.max_batches_per_size)
        samples.append((now, value))

    def record_query(self, arrival_s: float, latency_s: float, path: tuple[str, ...]) -> None:
        self._queries.append((arrival_s, latency_s, path))

    def record_frontend(self, seconds: float) -> None:
        """One answered query's time in the front-end outside the engine."""
        self._frontend.append((self._clock(), seconds))

    def reset(self) -> None:
        """Forget the batches and queries measured so far (``DELETE /v2/control/stats``)."""
        self._batches.clear()
        self._work.clear()
        self._turns.clear()
        self._rests.clear()
        self._queries.clear()
        self._frontend.clear()

    # --- reading -----------------------------------------------------------------------------
    def samples(self, now_s: float | None = None) -> dict[tuple[str, str], dict[int, list[float]]]:
        """Per (stage, hardware), batch size -> ``predict`` times of the last ``window_s``."""
        since = (self._clock() if now_s is None else now_s) - self.options.window_s
        return _recent(self._batches, since)

    def latest_calibration(self) -> Calibration | None:
        """The calibrated profiles of the latest refresh (None before one): what the live
        Tuner estimates with, without calibrating again on the event loop."""
        return self._latest

    def latest_work_calibration(self) -> Calibration | None:
        """Profiles calibrated on the CPU work of the latest refresh's batches (their
        process's CPU time ÷ threads: without the time they waited for a core), for an
        Estimator that simulates the host's cores as shared; None unless the machine's
        fit rule is ``shared`` and batches reported their CPU time."""
        return self._latest_work

    def calibration(self) -> Calibration | None:
        """The profiles calibrated on the last ``window_s`` (None: no profiles known)."""
        since = self._clock() - self.options.window_s
        return self._served(
            _recent(self._batches, since),
            _recent(self._turns, since),
            _recent_values(self._frontend, since),
        )

    def work_calibration(self) -> Calibration | None:
        """The profiles calibrated on the CPU work of the last ``window_s`` (None unless
        the machine's fit rule is ``shared`` and batches reported their CPU time)."""
        since = self._clock() - self.options.window_s
        return self._on_work(
            _recent(self._work, since),
            _recent_values(self._frontend, since),
            _recent(self._rests, since),
        )

    def _served(
        self,
        batches: dict[tuple[str, str], dict[int, list[float]]],
        turns: dict[tuple[str, str], dict[int, list[float]]],
        frontend_s: list[float],
    ) -> Calibration | None:
        """The profiles calibrated on these ``predict`` times, round trips and front-end
        times."""
        if self.profiles is None:
            return None
        return calibrate_profiles(
            self.profiles,
            batches,
            min_samples=self.options.min_samples,
            source=_SOURCE,
            turns=turns,
            frontend_s=frontend_s,
        )

    def _on_work(
        self,
        work: dict[tuple[str, str], dict[int, list[float]]],
        frontend_s: list[float],
        rests: dict[tuple[str, str], dict[int, list[float]]],
    ) -> Calibration | None:
        """The profiles calibrated on these CPU works, the same batches' round trips
        outside ``predict`` and front-end times (None: no work, or not shared cores)."""
        if self.profiles is None or self.machine is None or not work:
            return None
        return calibrate_profiles(
            self.profiles,
            work,
            min_samples=self.options.min_samples,
            source=_WORK_SOURCE,
            rests=rests,
            frontend_s=frontend_s,
        )

    def report(self, config: PipelineConfig) -> dict[str, Any]:
        """``GET /v2/control/calibration``: the calibrated profiles (hardware.yaml and
        profiles.yaml content) and, per stage, measured against profiled speed. A stage's
        hardware the engine did not serve it on is written at the speed the stage showed
        where it was served (:func:`~inferline.profiles.carry_speeds`): re-planning from
        the file would otherwise prefer hardware nobody measured, for its isolated times."""
        samples = self.samples()
        calibration = self.calibration()
        stages: dict[str, Any] = {}
        for name in self.pipeline.stage_names:
            hardware = config.stages[name].hardware
            key = (name, hardware)
            speed = calibration.speeds.get(key) if calibration is not None else None
            if speed is not None:
                stages[name] = speed.as_dict()
            else:
                stages[name] = _measured_only(name, hardware, samples.get(key, {}))
        body: dict[str, Any] = {
            "window_s": self.options.window_s,
            "min_samples": self.options.min_samples,
            "stages": stages,
            "pipeline": dict(self._pipeline),
            "hardware": None,
            "profiles": None,
        }
        if calibration is not None and self.profiles is not None:
            body["hardware"] = hardware_to_mapping(calibration.profiles.hardware)["hardware"]
            body["profiles"] = profiles_to_mapping(
                carry_speeds(calibration.profiles, self.profiles)
            )
        work = self.work_calibration()
        body["work_profiles"] = (
            None
            if work is None or self.profiles is None
            else profiles_to_mapping(carry_speeds(work.profiles, self.profiles))
        )
        body["frontend"] = self._frontend_summary()
        return body

    def _frontend_summary(self) -> dict[str, Any]:
        """The front-end's measured time per query beside the profiled per-query overhead."""
        values = sorted(_recent_values(self._frontend, self._clock() - self.options.window_s))
        overhead = self.profiles.overhead if self.profiles is not None else None
        return {
            "queries": len(values),
            "median_s": nearest_rank(values, 0.5) if values else None,
            "p99_s": nearest_rank(values, 0.99) if values else None,
            "profiled_median_s": overhead.per_query_s if overhead is not None else None,
            "profiled_p99_s": overhead.per_query_p99_s if overhead is not None else None,
            "calibrated": len(values) >= MIN_FRONTEND_QUERIES,
        }

    def status(self) -> dict[str, Any]:
        """The ``calibration`` section of the status (values of the latest refresh)."""
        stages = {
            name: {
                **self._speeds.get(name, _NO_SPEED),
                "drifted": d.warned,
                "drift_since_s": d.since_s,
                "drift_warnings": d.warnings,
            }
            for name, d in self._drift.items()
        }
        return {
            "profiles": self.profiles is not None,
            "interval_s": self.options.interval_s,
            "window_s": self.options.window_s,
            "drift_ratio": self.options.drift_ratio,
            "updated_s": self.updated_s,
            "errors": self.errors,
            "error": self._error,
            "stages": stages,
            "pipeline": dict(self._pipeline),
        }

    # --- refreshing --------------------------------------------------------------------------
    def snapshot(self, config: PipelineConfig, slo_s: float) -> _Snapshot:
        """Copies of the recent samples (on the event loop: C-level copies only; the
        filtering is done by :meth:`compute`, in the worker thread)."""
        now = self._clock()
        since = now - self.options.window_s
        queries = self._queries  # in order of answer, so nearly in order of arrival
        while queries and queries[0][0] < since:
            queries.popleft()
        while self._frontend and self._frontend[0][0] < since:
            self._frontend.popleft()
        for table in (self._batches, self._work, self._turns):
            for by_size in table.values():
                for d in by_size.values():
                    while d and d[0][0] < since:
                        d.popleft()
        return _Snapshot(
            now_s=now,
            config=config,
            slo_s=slo_s,
            batches={k: {b: list(d) for b, d in v.items()} for k, v in self._batches.items()},
            queries=list(queries),
            work={k: {b: list(d) for b, d in v.items()} for k, v in self._work.items()},
            turns={k: {b: list(d) for b, d in v.items()} for k, v in self._turns.items()},
            rests={k: {b: list(d) for b, d in v.items()} for k, v in self._rests.items()},
            frontend=list(self._frontend),
        )

    def compute(
        self, snap: _Snapshot
    ) -> tuple[dict[str, dict[str, Any]], dict[str, Any], Calibration | None, Calibration | None]:
        """Speeds per stage, the pipeline's estimated vs measured P99, the calibrated
        profiles they came from and those calibrated on CPU work (pure; runs in a worker
        thread)."""
        ratios = {name: dict(_NO_SPEED) for name in self.pipeline.stage_names}
        batches, arrival_s, latency_s, paths = snap.window(self.options.window_s)
        keep = self.options.estimate_max_queries
        if arrival_s.size > keep:
            arrival_s, latency_s, paths = arrival_s[-keep:], latency_s[-keep:], paths[-keep:]
        pipeline: dict[str, Any] = {
            "queries": int(arrival_s.size),
            "rate_qps": None,
            "measured_p99_s": None,
            "estimated_p99_s": None,
            "estimated_uncalibrated_p99_s": None,
            "estimated_shared_p99_s": None,
            "tail_bias": None,
        }
        if arrival_s.size:
            pipeline["measured_p99_s"] = nearest_rank(np.sort(latency_s).tolist(), 0.99)
            span = float(arrival_s[-1] - arrival_s[0])
            if span > 0:
                pipeline["rate_qps"] = (arrival_s.size - 1) / span
        since = snap.now_s - self.options.window_s
        frontend_s = _recent_values(snap.frontend, since)
        calibration = self._served(batches, _recent(snap.turns, since), frontend_s)
        if self.profiles is None or calibration is None:  # no profiles: measured only
            return ratios, pipeline, None, None
        work_calibration = self._on_work(
            _recent(snap.work, since), frontend_s, _recent(snap.rests, since)
        )
        for name in self.pipeline.stage_names:
            speed = calibration.speeds.get((name, snap.config.stages[name].hardware))
            if speed is None or speed.ratio is None:
                continue
            ratios[name] = {
                "speed_ratio": speed.ratio,
                "batches": speed.samples,
                "predict_s": speed.predict_s,
                "profiled_s": speed.profiled_s,
            }
        if arrival_s.size >= 2:
            trace = Trace.from_arrivals(arrival_s - arrival_s[0], paths)
            service = self.options.service_time
            estimates: list[tuple[str, Profiles, MachinePool | None, ServiceTime]] = [
                ("estimated_p99_s", calibration.profiles, None, service),
                ("estimated_uncalibrated_p99_s", self.profiles, self.machine, service),
            ]
            if work_calibration is not None:
                # the model plans are made with (fit=shared): the Planner's fixed service
                # times, so the tail bias covers all it leaves out (docs/planner.md)
                estimates.append(
                    ("estimated_shared_p99_s", work_calibration.profiles, self.machine, "fixed")
                )
            for key, profiles, machine, service_time in estimates:
                result = simulate(
                    self.pipeline,
                    profiles,
                    snap.config,
                    trace,
                    slo_s=snap.slo_s,
                    service_time=service_time,
                    machine=machine,
                )
                pipeline[key] = result.p99_s
            if (
                pipeline["estimated_shared_p99_s"] is not None
                and arrival_s.size >= MIN_TAIL_BIAS_QUERIES
            ):
                pipeline["tail_bias"] = tail_bias(
                    pipeline["measured_p99_s"], pipeline["estimated_shared_p99_s"]
                )
        return ratios, pipeline, calibration, work_calibration

    def apply(
        self,
        snap: _Snapshot,
        speeds: dict[str, dict[str, Any]],
        pipeline: dict[str, Any],
        calibration: Calibration | None = None,
        work_calibration: Calibration | None = None,
    ) -> None:
        """Take a computed refresh in (on the event loop): status values, drift warnings."""
        self._speeds, self._pipeline, self._latest = speeds, pipeline, calibration
        self._latest_work = work_calibration
        self.updated_s = snap.now_s
        self._error = None
        limit = self.options.drift_ratio
        for name, drift in self._drift.items():
            speed = speeds.get(name, _NO_SPEED)
            ratio = speed["speed_ratio"]
            if (
                ratio is None
                or 1 / limit <= ratio <= limit
                or abs(speed["predict_s"] - speed["profiled_s"]) <= self.options.drift_min_s
            ):
                drift.since_s, drift.warned = None, False
                continue
            if drift.since_s is None:
                drift.since_s = snap.now_s
            if not drift.warned and snap.now_s - drift.since_s >= self.options.drift_sustain_s:
                drift.warned = True
                drift.warnings += 1
                log.warning(
                    "calibration: stage '%s' runs at %.2fx its profiled predict time "
                    "(drift threshold %.2fx, for %.0f s); re-plan from `inferline calibrate`",
                    name,
                    ratio,
                    limit,
                    snap.now_s - drift.since_s,
                )

    def refresh(self, config: PipelineConfig, slo_s: float) -> None:
        """One refresh on the calling thread (tests; the server uses :meth:`run`)."""
        snap = self.snapshot(config, slo_s)
        self.apply(snap, *self.compute(snap))

    def warm_up(self, config: PipelineConfig, slo_s: float) -> None:
        """Load the Estimator's compiled kernel before serving (its first call takes about
        half a second), on a made-up two-query trace; nothing is kept."""
        if self.profiles is None:
            return
        try:
            path = tuple(self.pipeline.stage_names)
            trace = Trace.from_arrivals([0.0, 1e-3], [path, path])
            simulate(
                self.pipeline,
                self.profiles,
                config,
                trace,
                slo_s=slo_s,
                service_time=self.options.service_time,
            )
        except Exception as exc:  # the refreshes will report it
            log.warning("calibration: the Estimator cannot run this plan: %s", exc)

    async def run(self, config: Callable[[], PipelineConfig], slo_s: float) -> None:
        """Refresh every ``interval_s`` until cancelled; a failed refresh is logged once
        per kind of error and shown in the status."""
        while True:
            await asyncio.sleep(self.options.interval_s)
            try:
                snap = self.snapshot(config(), slo_s)
                self.apply(snap, *await asyncio.to_thread(self.compute, snap))
            except Exception as exc:
                self.errors += 1
                message = f"{type(exc).__name__}: {exc}"
                if message != self._error:
                    log.warning("calibration: refresh failed: %s", message)
                self._error = message

    def start(self, config: Callable[[], PipelineConfig], slo_s: float) -> None:
        self._task = asyncio.get_running_loop().create_task(self.run(config, slo_s))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


_SOURCE = "calibrated on the serving engine"
_WORK_SOURCE = "calibrated on the serving engine's CPU work per batch"
#: A stage's speed before it ran ``min_samples`` batches (or without profiles).
_NO_SPEED: dict[str, Any] = {
    "speed_ratio": None,
    "batches": 0,
    "predict_s": None,
    "profiled_s": None,
}


def _measured_only(stage: str, hardware: str, by_size: dict[int, list[float]]) -> dict[str, Any]:
    sizes: list[dict[str, Any]] = []
    total, time_s = 0, 0.0
    for b in sorted(by_size):
        ordered = sorted(by_size[b])
        n = len(ordered)
        median = ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) / 2
        total, time_s = total + n, time_s + n * median
        sizes.append(
            {
                "batch_size": b,
                "count": n,
                "median_s": median,
                "p99_s": nearest_rank(ordered, 0.99),
                "profiled_s": None,
            }
        )
    return {
        "stage": stage,
        "hardware": hardware,
        "samples": total,
        "ratio": None,
        "predict_s": time_s / total if total else None,
        "profiled_s": None,
        "batch_sizes": sizes,
    }
