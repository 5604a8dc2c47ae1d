"""Replica-count policies with one interface: ``decide(state, observation, now_s)``.

A policy is a frozen, stateless object; everything that changes lives in the
state it returns, so the same code runs in the simulator (the driver feeds it
simulated arrivals at simulated times) and live (the clock is injected through
``now_s``). ``initial_state(now_s)`` starts a run. Targets are replica counts
per stage (starting replicas included); a stage missing from the targets keeps
its count.

* :class:`InferLineTuner` — the paper's Tuner (§5.1): envelope-triggered scale-up,
  conservative scale-down.
* :class:`NoTuner` — the plan stays fixed.
* :class:`CoarseGrainedAutoscaler` — AutoScale-style whole-pipeline scaling.
* :class:`QueueLengthPolicy` — Ray Serve-style target ongoing requests per replica.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from inferline.errors import ConfigError
from inferline.estimator import Observation
from inferline.pipeline import Pipeline, PipelineConfig
from inferline.profiles import Profiles
from inferline.tuner._envelope import TrafficEnvelope, envelope_windows, planned_envelope
from inferline.workload import Trace

__all__ = [
    "CoarseGrainedAutoscaler",
    "InferLineTuner",
    "NoTuner",
    "Observation",
    "Policy",
    "QueueLengthPolicy",
    "TunerConfig",
    "TunerState",
    "default_replica_limits",
    "pipeline_service_s",
]

#: Sanity cap on a stage whose hardware has no unit limit: this many × its planned count (+16).
UNLIMITED_FACTOR = 16
#: Anticipated growth: the arrivals of the last activation delay must exceed those of the one
#: before by this many standard deviations of their difference (Poisson counts).
GROWTH_Z = 2.0
#: ... and the line through the two periods' mean rates (at now − 1.5·A and now − 0.5·A) is
#: followed to now + A, when a replica asked for now serves: r1 + 1.5·(r1 − r0).
GROWTH_AHEAD = 1.5


class Policy(Protocol):
    @property
    def name(self) -> str: ...

    def initial_state(self, now_s: float) -> Any: ...

    def decide(
        self, state: Any, observation: Observation, now_s: float
    ) -> tuple[dict[str, int], Any]: ...


def pipeline_service_s(pipeline: Pipeline, profiles: Profiles, config: PipelineConfig) -> float:
    """T_s: the batch-1 critical-path service time of a configuration."""
    return pipeline.longest_path_s(
        {n: profiles.get(n, c.hardware).latency_s(1) for n, c in config.stages.items()}
    )


def default_replica_limits(profiles: Profiles, config: PipelineConfig) -> dict[str, int]:
    """Per-stage upper bound: the hardware's unit limit, else a sanity cap (16 × planned + 16)."""
    out = {}
    for name, c in config.stages.items():
        limit = profiles.hardware.get(c.hardware).max_units
        out[name] = int(limit) if limit is not None else UNLIMITED_FACTOR * c.replicas + 16
    return out


def _clamp(
    targets: dict[str, int],
    limits: Mapping[str, int],
    hardware: Mapping[str, str],
    unit_limits: Mapping[str, int | None],
) -> dict[str, int]:
    """At least 1, at most each stage's limit, and no hardware type over its unit count."""
    out = {s: max(1, min(int(k), limits[s])) for s, k in targets.items()}
    for hw, limit in unit_limits.items():
        if limit is None:
            continue
        stages = [s for s in out if hardware[s] == hw]
        while sum(out[s] for s in stages) > limit:
            s = max(stages, key=lambda x: out[x])
            if out[s] <= 1:
                break
            out[s] -= 1
    return out


@dataclass(frozen=True)
class TunerConfig:
    """What the Planner hands the Tuner (paper §5.1), plus its timing constants.

    ``mu_qps``: single-replica throughput of each stage at its planned batch and
    hardware; ``rho``: provisioning ratio λ·s/(k·μ) of the plan on the planning
    trace (λ its mean rate); ``windows``/``envelope_qps``: the planning trace's
    envelope.

    ``slo_s`` (optional): the pipeline's SLO. With it the Tuner also reads each
    stage's queued work (:attr:`Observation.outstanding`): a stage whose queue
    would take more than ``queue_budget`` × SLO to drain is scaled up, and is not
    scaled down (see :class:`InferLineTuner`). Without it only the envelope rules run.

    Opt-in departures from SPEC §2.7 (off by default):

    * ``anticipate_growth`` — also scale up for the rate expected when a replica
      asked for now becomes active: the growth between the last two periods of
      ``activation_s`` seconds, continued until then;
    * ``floor_at_plan`` — never scale a stage below its planned count.
    """

    stages: tuple[str, ...]
    mu_qps: Mapping[str, float]
    rho: Mapping[str, float]
    scale_factor: Mapping[str, float]
    windows: tuple[float, ...]
    envelope_qps: tuple[float, ...]
    max_replicas: Mapping[str, int]
    planned_replicas: Mapping[str, int] = field(default_factory=dict)
    hardware: Mapping[str, str] = field(default_factory=dict)
    unit_limits: Mapping[str, int | None] = field(default_factory=dict)
    activation_s: float = 5.0
    scale_down_holdoff_s: float = 15.0
    lookback_s: float = 30.0
    bucket_s: float = 5.0
    slo_s: float | None = None
    queue_budget: float = 0.5
    anticipate_growth: bool = False
    floor_at_plan: bool = False

    def __post_init__(self) -> None:
        if len(self.windows) != len(self.envelope_qps):
            raise ConfigError("one planned envelope rate per window is needed", field="windows")
        if self.slo_s is not None and not self.slo_s > 0:
            raise ConfigError(f"the SLO must be positive seconds, got {self.slo_s}", field="slo_s")
        if not 0 < self.queue_budget <= 1:
            raise ConfigError(
                f"the queue budget is a fraction of the SLO in (0, 1], got {self.queue_budget}",
                field="queue_budget",
            )
        if self.floor_at_plan and not self.planned_replicas:
            raise ConfigError("floor_at_plan needs the planned counts", field="floor_at_plan")
        for s in self.stages:
            if not self.mu_qps[s] > 0 or not self.rho[s] > 0:
                raise ConfigError(
                    f"stage '{s}': throughput and provisioning ratio must be positive",
                    field="mu_qps",
                )

    @property
    def rho_min(self) -> float:
        return min(self.rho[s] for s in self.stages)

    @classmethod
    def from_plan(
        cls,
        pipeline: Pipeline,
        profiles: Profiles,
        plan_config: PipelineConfig,
        planning_trace: Trace,
        **options: Any,
    ) -> TunerConfig:
        """From a plan and its planning trace; ``options`` set the other fields (timing
        constants, ``slo_s`` and the opt-in rules)."""
        names = pipeline.stage_names
        factors = pipeline.scale_factors
        rate = planning_trace.n_queries / max(planning_trace.duration_s, 1e-9)
        mu, rho = {}, {}
        for n in names:
            c = plan_config.stages[n]
            mu[n] = profiles.get(n, c.hardware).throughput_qps(c.batch_size)
            rho[n] = max(rate * factors[n] / (c.replicas * mu[n]), 1e-6)
        windows = envelope_windows(pipeline_service_s(pipeline, profiles, plan_config))
        env = planned_envelope(planning_trace, windows)
        return cls(
            stages=names,
            mu_qps=mu,
            rho=rho,
            scale_factor=dict(factors),
            windows=windows,
            envelope_qps=tuple(float(x) for x in env),
            max_replicas=default_replica_limits(profiles, plan_config),
            planned_replicas={n: plan_config.stages[n].replicas for n in names},
            hardware={n: plan_config.stages[n].hardware for n in names},
            unit_limits={h.name: h.max_units for h in profiles.hardware},
            **options,
        )

    def replicas_for(self, rate_qps: float, rho: Mapping[str, float] | float) -> dict[str, int]:
        """k_s = ceil(rate·s / (μ·ρ)) per stage (ρ per stage or one value for all)."""
        out = {}
        for s in self.stages:
            r = rho if isinstance(rho, float) else rho[s]
            # the small tolerance keeps k from rounding up on floating-point noise
            out[s] = max(
                1, math.ceil(rate_qps * self.scale_factor[s] / (self.mu_qps[s] * r) - 1e-9)
            )
        return out

    def clamp(self, targets: dict[str, int]) -> dict[str, int]:
        return _clamp(targets, self.max_replicas, self.hardware, self.unit_limits)

    def window_nearest(self, length_s: float) -> int:
        """Index of the envelope window whose length is nearest ``length_s`` (log scale)."""
        w = np.asarray(self.windows)
        return int(np.argmin(np.abs(np.log(w / max(length_s, 1e-9)))))


@dataclass
class TunerState:
    """The InferLine Tuner's state: live envelope, 5-s buckets and last change time.

    ``recent``: the arrival times of (at least) the last two activation delays, one
    array per decision (kept only with ``anticipate_growth``); ``added_s``: per
    stage, when replicas were last added (they are starting until ``activation_s``
    after it).
    """

    envelope: TrafficEnvelope
    buckets: deque[tuple[int, int]]  # (bucket index, arrivals), oldest first
    last_change_s: float
    last_reason: str = ""
    recent: deque[npt.NDArray[np.float64]] = field(default_factory=deque)
    added_s: dict[str, float] = field(default_factory=dict)
    started_s: float = 0.0


@dataclass(frozen=True)
class InferLineTuner:
    """The paper's Tuner (§5.1), rules as in SPEC §2.7; docs/tuner.md explains each choice.

    Scale up (checked first, every decision; a stage never loses replicas here):

    * **Envelope.** Every live window's rate r_live,w is compared with the planning
      trace's r_plan,w. The provisioning ratio is taken per window, ρ_s,w =
      r_plan,w·s/(k0_s·μ_s) (the headroom the plan has for bursts of that length),
      so the paper's k_s = ceil(r_live,w·s/(μ_s·ρ_s,w)) = ceil(k0_s·r_live,w/r_plan,w),
      maximised over the windows: r_max is the window with the largest ratio to its
      planned rate, not the largest rate. A stage below that count is scaled up to
      it. This is the paper's trigger ("a live window exceeds the planned
      envelope") read per stage at its current provisioning: stage s reacts when
      r_live,w > r_plan,w·k_s/k0_s (at the planned counts exactly the paper's test;
      below them, after a scale-down, it reacts before the load reaches the
      planning trace's; above them, it does not re-trigger on a window its extra
      replicas already cover). With the paper's single ρ (from the mean rate), a
      short window's rate (high even in the planning trace) asks for 14-16
      replicas where 3 suffice and doubled the cost on a steady load. Without
      planned counts the single-ρ rule is used.
    * **Queued work** (only with ``slo_s``). The envelope sees pipeline arrivals
      only; a stage behind a branch (e.g. social-media's nmt_spanish, 1 replica at
      batch 8) sees a thinned, relatively burstier stream that the planned
      envelope does not describe. So a stage whose queued plus in-flight work q_s
      would take more than ``queue_budget``·SLO to drain, q_s/(k_s·μ_s), gets one
      more replica — at most one per activation delay: while replicas added less
      than ``activation_s`` ago are starting, a deep queue is expected (they cannot
      serve yet) and asking again would only pile up replicas that all arrive
      after the queue has gone.
    * **Anticipated growth** (opt-in ``anticipate_growth``, a departure from SPEC
      §2.7): with r1, r0 the mean rates of the last two ``activation_s`` periods A,
      when the growth is beyond Poisson noise (n1 − n0 > 2·sqrt(n1 + n0) arrivals),
      the rate expected when a replica asked for now serves (at now + A) is
      r1 + 1.5·(r1 − r0); it is compared with the planned rate of the window nearest
      A like a live window. The envelope alone lags a steep ramp: its windows see
      the rate of the past, and a replica it asks for serves A later.

    Scale down (only ≥ ``scale_down_holdoff_s`` after any change): λ_new = the highest
    5-s bucket rate of the last 30 s, k_s = ceil(λ_new·s/(μ·ρ_min)); a stage above
    max(k_s, its scale-up count now) loses one replica per step, as in the paper, each
    step restarting the hold-off (removing the whole surplus at once missed 1.8 % on
    the social-media Azure scenario, right after deep cuts). A stage whose queued work
    exceeds the budget keeps its replicas. Opt-in ``floor_at_plan`` (a departure):
    never below the planned count.

    Stages are scaled independently, so their order does not matter; never below 1
    replica nor above the hardware limits.
    """

    config: TunerConfig
    name: str = "inferline"

    def initial_state(self, now_s: float) -> TunerState:
        return TunerState(
            envelope=TrafficEnvelope(self.config.windows),
            buckets=deque(),
            last_change_s=now_s,
            started_s=now_s,
        )

    def _record_buckets(self, state: TunerState, arrivals: npt.NDArray[np.float64]) -> None:
        if arrivals.size == 0:
            return
        idx = np.floor(arrivals / self.config.bucket_s).astype(np.int64)
        keys, counts = np.unique(idx, return_counts=True)
        for k, c in zip(keys.tolist(), counts.tolist(), strict=True):
            if state.buckets and state.buckets[-1][0] == k:
                state.buckets[-1] = (k, state.buckets[-1][1] + c)
            else:
                state.buckets.append((k, c))

    def lookback_rate(self, state: TunerState, now_s: float) -> float:
        """Highest 5-s bucket rate among buckets overlapping the last 30 s (the current one too)."""
        first = math.floor((now_s - self.config.lookback_s) / self.config.bucket_s)
        while state.buckets and state.buckets[0][0] < first:
            state.buckets.popleft()
        return max((c for _, c in state.buckets), default=0) / self.config.bucket_s

    def _record_recent(self, state: TunerState, arrivals: npt.NDArray[np.float64]) -> None:
        """Keep the arrivals of the last two activation delays (for ``anticipate_growth``)."""
        if not self.config.anticipate_growth:
            return
        if arrivals.size:
            state.recent.append(arrivals)
        edge = arrivals[-1] - 2 * self.config.activation_s if arrivals.size else None
        while edge is not None and state.recent and state.recent[0][-1] <= edge:
            state.recent.popleft()

    def anticipated_rate(self, state: TunerState, now_s: float) -> float | None:
        """r1 + 1.5·(r1 − r0) over the last two activation delays when the rate grew, else None.

        None also until two activation delays have passed since the start.
        """
        a = self.config.activation_s
        if a <= 0 or now_s - 2 * a < state.started_s - 1e-9:
            return None
        n1 = n0 = 0
        for chunk in state.recent:
            lo, mid = np.searchsorted(chunk, [now_s - 2 * a, now_s - a], side="right")
            n0 += int(mid - lo)
            n1 += int(chunk.size - mid)
        # growth beyond GROWTH_Z standard deviations of Poisson counts, not noise
        if n1 - n0 <= GROWTH_Z * math.sqrt(n1 + n0):
            return None
        return (n1 + GROWTH_AHEAD * (n1 - n0)) / a

    def _planned_scale(self, rate_ratio: float) -> dict[str, int]:
        """ceil(k0_s · ratio) per stage: the plan scaled for traffic ``ratio`` × its envelope."""
        cfg = self.config
        return {s: math.ceil(cfg.planned_replicas[s] * rate_ratio - 1e-9) for s in cfg.stages}

    def _queue_heavy(self, observation: Observation, current: Mapping[str, int]) -> set[str]:
        """Stages whose queued + in-flight work takes over the budget to drain."""
        cfg = self.config
        if cfg.slo_s is None or observation.outstanding is None:
            return set()
        budget = cfg.queue_budget * cfg.slo_s
        return {
            s
            for s in cfg.stages
            if observation.outstanding.get(s, 0) / (max(current[s], 1) * cfg.mu_qps[s]) > budget
        }

    def scale_up_counts(
        self,
        state: TunerState,
        live: npt.NDArray[np.float64],
        observation: Observation,
        current: Mapping[str, int],
        now_s: float,
    ) -> tuple[dict[str, int], str]:
        """Per stage, the count the scale-up rules ask for now (≤ current: nothing to add)."""
        cfg = self.config
        env = np.asarray(cfg.envelope_qps)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratios = np.where(env > 0, live / np.where(env > 0, env, 1.0), 0.0)
        w = int(np.argmax(ratios))
        if cfg.planned_replicas:
            want = self._planned_scale(float(ratios[w]))
        else:  # the paper's rule: the largest exceeding rate with the single ρ
            over = live > env * (1 + 1e-12)
            r_max = float(live[over].max()) if over.any() else 0.0
            want = cfg.replicas_for(r_max, cfg.rho) if over.any() else dict.fromkeys(cfg.stages, 0)
        reasons = dict.fromkeys(cfg.stages, f"window {cfg.windows[w]:.3g} s at {live[w]:.1f} qps")
        if cfg.anticipate_growth and cfg.planned_replicas:
            rate = self.anticipated_rate(state, now_s)
            if rate is not None:
                k = cfg.window_nearest(cfg.activation_s)
                for s, n in self._planned_scale(rate / env[k] if env[k] > 0 else 0.0).items():
                    if n > want[s]:
                        want[s] = n
                        reasons[s] = f"anticipated {rate:.1f} qps"
        heavy = self._queue_heavy(observation, current)
        if heavy:
            assert observation.outstanding is not None
            for s in heavy:
                starting = now_s - state.added_s.get(s, -math.inf) < cfg.activation_s
                if starting:
                    continue
                if current[s] + 1 > want[s]:
                    want[s] = current[s] + 1
                    reasons[s] = f"{observation.outstanding[s]} queued"
        grown = [s for s in cfg.stages if want[s] > current[s]]
        why = "; ".join(f"{s}: {reasons[s]}" for s in grown)
        return want, why

    def decide(
        self, state: TunerState, observation: Observation, now_s: float
    ) -> tuple[dict[str, int], TunerState]:
        cfg = self.config
        arrivals = np.asarray(observation.arrivals_s, dtype=np.float64)
        live = state.envelope.observe(arrivals)
        self._record_buckets(state, arrivals)
        self._record_recent(state, arrivals)
        current = {s: int(observation.replicas[s]) for s in cfg.stages}
        want, why = self.scale_up_counts(state, live, observation, current, now_s)
        if any(want[s] > current[s] for s in cfg.stages):
            targets = cfg.clamp({s: max(current[s], want[s]) for s in cfg.stages})
            if targets != current:
                state.last_change_s = now_s
                state.last_reason = f"scale up ({why})"
                for s in cfg.stages:
                    if targets[s] > current[s]:
                        state.added_s[s] = now_s
                return targets, state
        if now_s - state.last_change_s >= cfg.scale_down_holdoff_s:
            lam = self.lookback_rate(state, now_s)
            floor = cfg.replicas_for(lam, cfg.rho_min)
            keep = self._queue_heavy(observation, current)
            for s in cfg.stages:
                floor[s] = max(floor[s], want[s])
                if cfg.floor_at_plan:
                    floor[s] = max(floor[s], cfg.planned_replicas[s])
            targets = cfg.clamp(
                {
                    s: current[s] - 1 if floor[s] < current[s] and s not in keep else current[s]
                    for s in cfg.stages
                }
            )
            if targets != current:
                state.last_change_s = now_s
                state.last_reason = f"scale down: 30-s peak {lam:.1f} qps"
            return targets, state
        return current, state


@dataclass(frozen=True)
class NoTuner:
    """The plan stays fixed: always answers the current counts."""

    name: str = "none"

    def initial_state(self, now_s: float) -> object:
        return None

    def decide(
        self, state: object, observation: Observation, now_s: float
    ) -> tuple[dict[str, int], object]:
        return dict(observation.replicas), state


@dataclass
class CGState:
    recent: deque[tuple[float, int]]  # (decision time, arrivals since the previous one)
    units: int
    below_since_s: float | None
    start_s: float


@dataclass(frozen=True)
class CoarseGrainedAutoscaler:
    """Whole-pipeline scaling in the style of AutoScale (Gandhi et al., TOCS 2012).

    Our reading: the pipeline is a black box replicated in *units*; a unit is the
    plan's per-stage replica vector divided by the greatest common divisor of
    the counts (one replica of every stage for a coarse-grained plan), and the
    plan holds ``units0`` units. A unit sustains ``unit_qps`` = min_s (u_s·μ_s/s_s)
    pipeline queries per second and is loaded to ``threshold`` = the plan's own
    ratio λ/(units0·unit_qps) on its planning trace (so the plan reproduces itself).
    The load is the mean arrival rate over the last ``measure_s`` seconds.

    * Scale up at once (AutoScale provisions for the load it sees):
      units = ceil(load / (unit_qps·threshold)) when that exceeds the current count.
    * Scale down conservatively (AutoScale's t_wait timer): only once the load has
      needed fewer units continuously for ``wait_s``, and then to what it needs now.
    """

    stages: tuple[str, ...]
    unit: Mapping[str, int]
    unit_qps: float
    threshold: float
    max_units: int
    measure_s: float = 10.0
    wait_s: float = 60.0
    name: str = "cg-autoscale"

    @classmethod
    def from_plan(
        cls,
        pipeline: Pipeline,
        profiles: Profiles,
        plan_config: PipelineConfig,
        planning_trace: Trace,
        **options: float,
    ) -> CoarseGrainedAutoscaler:
        names = pipeline.stage_names
        counts = [plan_config.stages[n].replicas for n in names]
        g = math.gcd(*counts)
        unit = {n: plan_config.stages[n].replicas // g for n in names}
        factors = pipeline.scale_factors
        unit_qps = min(
            unit[n]
            * profiles.get(n, plan_config.stages[n].hardware).throughput_qps(
                plan_config.stages[n].batch_size
            )
            / max(factors[n], 1e-9)
            for n in names
        )
        rate = planning_trace.n_queries / max(planning_trace.duration_s, 1e-9)
        threshold = min(1.0, max(rate / (g * unit_qps), 1e-3))
        limits = default_replica_limits(profiles, plan_config)
        max_units = max(1, min(limits[n] // unit[n] for n in names))
        return cls(
            stages=names,
            unit=unit,
            unit_qps=unit_qps,
            threshold=threshold,
            max_units=max_units,
            **options,  # type: ignore[arg-type]
        )

    def initial_state(self, now_s: float) -> CGState:
        return CGState(recent=deque(), units=-1, below_since_s=None, start_s=now_s)

    def decide(
        self, state: CGState, observation: Observation, now_s: float
    ) -> tuple[dict[str, int], CGState]:
        if state.units < 0:  # the current configuration's unit count
            state.units = max(1, min(observation.replicas[s] // self.unit[s] for s in self.stages))
        state.recent.append((now_s, int(np.asarray(observation.arrivals_s).size)))
        while state.recent and state.recent[0][0] <= now_s - self.measure_s:
            state.recent.popleft()
        # arrivals reported at decisions in (now − measure_s, now], i.e. over that span
        span = min(self.measure_s, now_s - state.start_s)
        load = sum(c for _, c in state.recent) / span if span > 0 else 0.0
        need = max(1, math.ceil(load / (self.unit_qps * self.threshold) - 1e-9))
        need = min(need, self.max_units)
        if need > state.units:
            state.units = need
            state.below_since_s = None
        elif need < state.units:
            if state.below_since_s is None:
                state.below_since_s = now_s
            elif now_s - state.below_since_s >= self.wait_s:
                state.units = need
                state.below_since_s = None
        else:
            state.below_since_s = None
        return {s: state.units * self.unit[s] for s in self.stages}, state


@dataclass
class QueueState:
    proposal_since_s: dict[str, tuple[int, float]]  # stage -> (proposed count, since)


@dataclass(frozen=True)
class QueueLengthPolicy:
    """Ray Serve's default autoscaler, per stage (our reading of its documentation).

    desired = ceil(outstanding / target_ongoing_requests) where outstanding is the
    stage's queued plus in-flight queries (Ray smooths the metric; we use the
    value at the decision). A change is applied only once the same direction has
    been wanted continuously for ``upscale_delay_s`` (up) or ``downscale_delay_s``
    (down) — Ray's defaults are 30 s and 600 s; the defaults here are shorter (5 s,
    60 s) so the baseline can react within our scenarios. Counts stay within
    [min_replicas, the stage's limit].
    """

    stages: tuple[str, ...]
    max_replicas: Mapping[str, int]
    target_ongoing_requests: Mapping[str, float]
    upscale_delay_s: float = 5.0
    downscale_delay_s: float = 60.0
    min_replicas: int = 1
    name: str = "queue-length"

    @classmethod
    def from_plan(
        cls,
        pipeline: Pipeline,
        profiles: Profiles,
        plan_config: PipelineConfig,
        **options: float,
    ) -> QueueLengthPolicy:
        """Target ongoing requests per replica = 2 planned batches (Ray's default target is 2)."""
        names = pipeline.stage_names
        target = {n: 2.0 * plan_config.stages[n].batch_size for n in names}
        return cls(
            stages=names,
            max_replicas=default_replica_limits(profiles, plan_config),
            target_ongoing_requests=target,
            **options,  # type: ignore[arg-type]
        )

    def initial_state(self, now_s: float) -> QueueState:
        return QueueState(proposal_since_s={})

    def decide(
        self, state: QueueState, observation: Observation, now_s: float
    ) -> tuple[dict[str, int], QueueState]:
        if observation.outstanding is None:
            raise ConfigError(
                "the queue-length policy needs per-stage queued + in-flight counts",
                field="outstanding",
            )
        targets = {}
        for s in self.stages:
            cur = int(observation.replicas[s])
            desired = math.ceil(observation.outstanding[s] / self.target_ongoing_requests[s])
            desired = max(self.min_replicas, min(desired, self.max_replicas[s]))
            targets[s] = cur
            if desired == cur:
                state.proposal_since_s.pop(s, None)
                continue
            direction = 1 if desired > cur else -1
            prev = state.proposal_since_s.get(s)
            if prev is None or prev[0] != direction:
                state.proposal_since_s[s] = (direction, now_s)
                prev = state.proposal_since_s[s]
            delay = self.upscale_delay_s if direction > 0 else self.downscale_delay_s
            if now_s - prev[1] >= delay:
                targets[s] = desired
                state.proposal_since_s.pop(s, None)
        return targets, state
