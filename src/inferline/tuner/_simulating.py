"""A Tuner that simulates before it scales (issue 14, item 4; SPEC §2.7 "Beyond the paper").

Each decision replays the recent arrivals (the last ``lookback_s``, with the paths they
took when the observation has them) as a *forecast*: the same arrivals, each
``bucket_s`` bucket squeezed in time so that its rate is the highest bucket rate of the
window — raised to the rate the growth of the last two buckets, or the trend of the last
seconds, points to when a replica asked for now serves, or to a step up seen in the last
second, when beyond noise — times 1 + ``rate_headroom``. The squeeze keeps each bucket's
burstiness and the mix of paths; only the rate is raised. The Estimator runs candidate
replica counts on that forecast (a 30-s window takes a few milliseconds) and the policy
picks:

* **scale up** when the estimated P99 of the current counts is above SLO × (1 − margin),
  or a stage would run above ``max_utilisation``: first every such stage gets the fewest
  replicas that keep it within that bound, then, greedily, one replica at a time to the
  stage whose extra replica cuts the estimated P99 the most per $/hour, until the
  estimate is within SLO × (1 − margin). A replica that cuts the estimate by less than
  ``min_gain`` × SLO is never bought: a stage that is not a bottleneck never gets one.
* **scale down** (no sooner than ``scale_down_holdoff_s``, nor one bucket, after any
  change) while the estimate stays within SLO × (1 − scale_down_margin) and no stage goes
  above ``max_utilisation``: repeatedly the removal that saves the most $/hour, never
  below the plan with ``floor_at_plan``.

Counts never go above the stage's limit, the hardware's unit count or the machine
(:class:`~inferline.profiles.MachinePool`): its threads; on shared cores, a stage's
replica threads beyond the machine's cores (unless the plan has them); and, on a machine
that bounds busy cores (``fit="busy"`` or ``"shared"``), the cores the estimate says the
replicas keep busy at the forecast rate, within the share the Planner allows (a replica
the cores cannot feed only adds contention: on 2 cores the live engine once went to 8
threads and 90 % misses).
Under ``fit="shared"`` the estimate also simulates the cores as shared, unless the
profiles were calibrated on the time batches took while served (they carry the
contention already); the live engine gives it profiles calibrated on the batches' CPU
work instead, so that a replica more is judged with the contention it adds.
A stage that needed a replica the machine has no room for is recorded in the state's
``capacity_limited``. Batch sizes and hardware
never change. The policy is pure (clock injected, no I/O); calibrated profiles replace
the planned ones through :meth:`SimulatingTuner.with_profiles`.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

from inferline.errors import CapacityError, ConfigError
from inferline.estimator import Estimator, Observation
from inferline.pipeline import Pipeline, PipelineConfig
from inferline.profiles import (
    MachinePool,
    Profiles,
    check_plan_fits,
    frontend_cpu_s_per_query,
)
from inferline.workload import Trace

__all__ = ["Forecast", "SimulateState", "SimulatingTuner"]

#: A replica vector → its estimated P99 (s): what the greedy searches call.
_Estimate = Callable[[Mapping[str, int]], float]
#: Fewer recent arrivals than this give no forecast (and no scale-up).
MIN_ARRIVALS = 20
#: A step up shows first in the shortest window: the last this-many seconds' rate, less
#: GROWTH_Z Poisson standard deviations, counts as a forecast when it is the highest.
SHORT_WINDOW_S = 1.0
#: Growth is trusted when the last bucket's arrivals exceed the previous one's, or the
#: trend's slope is above zero, by this many standard deviations.
GROWTH_Z = 2.0
#: Seconds of 1-s counts the growth trends are fitted to: a short one reacts to a steep
#: ramp, a long one sees a gentle ramp through the noise.
TREND_WINDOWS_S = (5, 10)


@dataclass(frozen=True)
class Forecast:
    """The arrivals a decision simulates and where their rate came from."""

    trace: Trace
    rate_qps: float  # the forecast's mean rate
    peak_qps: float  # the highest bucket rate of the window
    growing: bool  # the rate was raised for growth


@dataclass
class SimulateState:
    """Recent arrivals (chunks per decision, with their visit masks), the last change and
    what the last decision estimated."""

    recent: deque[tuple[npt.NDArray[np.float64], npt.NDArray[np.int64] | None]]
    last_change_s: float
    started_s: float
    last_reason: str = ""
    estimate_p99_s: float | None = None
    forecast_qps: float = 0.0
    simulations: int = 0
    capacity_limited: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class SimulatingTuner:
    """Replica counts chosen by simulating candidates on the recent and forecast arrivals.

    ``plan``: the planned configuration (batch sizes and hardware; its replica counts are
    only the start). ``max_replicas``: per-stage limit. Options (docs/tuner.md): ``margin``
    (scale up above SLO × (1 − margin)), ``scale_down_margin`` (scale down only while the
    estimate stays within SLO × (1 − it); ≥ margin, the gap is the hysteresis),
    ``lookback_s``/``bucket_s`` (the window replayed and its rate buckets),
    ``scale_down_holdoff_s``, ``activation_s`` (how far ahead growth is followed),
    ``anticipate_growth`` (also the rate the last two buckets' growth, the last 5 s'
    trend or a step in the last second, beyond noise, point to), ``min_gain`` (the smallest P99 cut,
    × SLO, worth a replica), ``floor_at_plan`` (never below the planned counts),
    ``rate_headroom`` (the forecast rate × (1 + it)), ``max_utilisation`` (no stage above
    this utilisation at the forecast rate, whatever the estimate: room for profiles that
    are slower in serving than measured).
    """

    pipeline: Pipeline
    profiles: Profiles
    plan: PipelineConfig
    slo_s: float
    max_replicas: Mapping[str, int]
    machine: MachinePool | None = None
    margin: float = 0.1
    scale_down_margin: float = 0.3
    lookback_s: float = 30.0
    bucket_s: float = 5.0
    scale_down_holdoff_s: float = 15.0
    activation_s: float = 5.0
    anticipate_growth: bool = True
    min_gain: float = 0.01
    floor_at_plan: bool = False
    rate_headroom: float = 0.0
    max_utilisation: float = 1.0
    seed: int = 0
    name: str = "simulate"
    #: the profiles were calibrated on the time batches took while served (they carry
    #: the machine's contention), so the Estimator does not simulate shared cores on top
    profiles_carry_contention: bool = False

    def __post_init__(self) -> None:
        if not self.slo_s > 0:
            raise ConfigError(f"the SLO must be positive seconds, got {self.slo_s}", field="slo_s")
        if not 0 <= self.margin < 1:
            raise ConfigError(f"a fraction in [0, 1) is needed, got {self.margin}", field="margin")
        if not self.margin <= self.scale_down_margin < 1:
            raise ConfigError(
                f"must be in [margin ({self.margin:g}), 1), got {self.scale_down_margin}",
                field="scale_down_margin",
            )
        if not self.bucket_s > 0 or not self.lookback_s >= self.bucket_s:
            raise ConfigError(
                f"the lookback ({self.lookback_s} s) must hold at least one bucket "
                f"({self.bucket_s} s)",
                field="lookback_s",
            )
        if min(self.scale_down_holdoff_s, self.activation_s, self.min_gain) < 0:
            raise ConfigError(
                "hold-off, activation delay and minimum gain must be ≥ 0", field="min_gain"
            )
        if not 0 < self.max_utilisation <= 1:
            raise ConfigError(
                f"a fraction in (0, 1] is needed, got {self.max_utilisation}",
                field="max_utilisation",
            )
        if self.rate_headroom < 0:
            raise ConfigError(f"must be ≥ 0, got {self.rate_headroom}", field="rate_headroom")
        missing = [n for n in self.pipeline.stage_names if n not in self.max_replicas]
        if missing:
            raise ConfigError(
                f"no replica limit for stage(s) {', '.join(missing)}", field="max_replicas"
            )

    # --- seams for the live engine ---------------------------------------------------------

    def with_profiles(
        self, profiles: Profiles, *, carry_contention: bool = True
    ) -> SimulatingTuner:
        """The same policy estimating with ``profiles`` (e.g. calibrated on the machine:
        on the time batches took, which carries the contention, or on their CPU work,
        which does not); a state from the old one stays valid."""
        return dataclasses.replace(
            self, profiles=profiles, profiles_carry_contention=carry_contention
        )

    def with_machine(self, machine: MachinePool | None) -> SimulatingTuner:
        return dataclasses.replace(self, machine=machine)

    def with_activation(self, activation_s: float) -> SimulatingTuner:
        return dataclasses.replace(self, activation_s=max(0.0, activation_s))

    def warm_up(self) -> None:
        """Run the Estimator once on a made-up trace: its kernel loads from numba's cache on
        first use (up to seconds on a busy machine), which live would stall the engine's
        event loop at the first decision that simulates — the first surge."""
        arrival = np.linspace(0.0, 1.0, MIN_ARRIVALS)
        est = Estimator(self.pipeline, self.profiles, Trace(arrival), slo_s=self.slo_s)
        est.run(self.plan)

    # --- the policy -------------------------------------------------------------------------

    def initial_state(self, now_s: float) -> SimulateState:
        return SimulateState(recent=deque(), last_change_s=now_s, started_s=now_s)

    def _record(self, state: SimulateState, observation: Observation, now_s: float) -> None:
        arrivals = np.asarray(observation.arrivals_s, dtype=np.float64)
        if arrivals.size:
            visits = observation.visits
            masks = None if visits is None else np.asarray(visits, dtype=np.int64)
            state.recent.append((arrivals, masks))
        edge = now_s - self.lookback_s
        while state.recent and state.recent[0][0][-1] <= edge:
            state.recent.popleft()

    def forecast(self, state: SimulateState, now_s: float) -> Forecast | None:
        """The recent window warped to its forecast rate (None: too few arrivals).

        The window is cut into ``bucket_s`` buckets ending now (the last second its own
        piece when a step up shows there); each piece's arrivals are squeezed in time so
        that its rate becomes the forecast rate, so every piece keeps its own burstiness
        and paths and a quiet past does not dilute, nor a step inflate, the forecast.
        """
        if not state.recent:
            return None
        b = self.bucket_s
        n_buckets = math.floor(min(self.lookback_s, now_s - state.started_s) / b + 1e-9)
        if n_buckets < 1:
            return None
        span = n_buckets * b
        times = np.concatenate([c[0] for c in state.recent])
        keep = times > now_s - span
        if int(keep.sum()) < MIN_ARRIVALS:
            return None
        times = times[keep]
        masks: npt.NDArray[np.int64] | None = None
        if all(c[1] is not None for c in state.recent):
            masks = np.concatenate([c[1] for c in state.recent if c[1] is not None])[keep]
        # counts[0]: the last bucket (now − b, now]
        ago = np.minimum(((now_s - times) // b).astype(np.int64), n_buckets - 1)
        counts = np.bincount(ago, minlength=n_buckets)
        peak = float(counts.max()) / b
        rate = peak
        growing = False
        edges = [now_s - b * i for i in range(n_buckets, -1, -1)]  # oldest first
        if self.anticipate_growth and n_buckets >= 2:
            n1, n0 = int(counts[0]), int(counts[1])
            rise = n1 - n0 - GROWTH_Z * math.sqrt(n1 + n0)  # the growth, less its noise
            if rise > 0:
                # the line through the two buckets' mean rates, followed to when a replica
                # asked for now serves
                ahead = (n1 + rise * (self.activation_s + b / 2) / b) / b
                if ahead > rate:
                    rate, growing = ahead, True
        for window in TREND_WINDOWS_S if self.anticipate_growth else ():
            trend = self._trend_rate(times, now_s, min(span, window))
            if trend is not None and trend > rate:
                rate, growing = trend, True
        rate *= 1 + self.rate_headroom
        if self.anticipate_growth and b > SHORT_WINDOW_S:
            n = int(np.count_nonzero(times > now_s - SHORT_WINDOW_S))
            short = (n - GROWTH_Z * math.sqrt(n)) / SHORT_WINDOW_S
            if short > rate:
                rate, growing = short, True
                edges.insert(-1, now_s - SHORT_WINDOW_S)
        # piece by piece: arrivals at offset x in a piece of length L holding m arrivals go to
        # (arrivals before it + x·m/L) / rate
        bounds = np.searchsorted(times, edges, side="right")
        arrival = np.empty_like(times)
        before = 0
        for i in range(len(edges) - 1):
            lo, hi = int(bounds[i]), int(bounds[i + 1])
            if hi == lo:
                continue
            width = edges[i + 1] - edges[i]
            arrival[lo:hi] = (before + (times[lo:hi] - edges[i]) * (hi - lo) / width) / rate
            before += hi - lo
        if masks is not None:
            table, ids = self._paths(masks)
            trace = Trace(arrival, path_ids=ids, path_table=table, source="<forecast>")
        else:
            trace = Trace(arrival, source="<forecast>")
        return Forecast(trace, rate_qps=rate, peak_qps=peak, growing=growing)

    def _trend_rate(
        self, times: npt.NDArray[np.float64], now_s: float, span: float
    ) -> float | None:
        """The rate at now + ``activation_s`` on the least-squares line through the last
        ``span`` seconds' 1-s counts, when its slope is beyond noise (else None)."""
        n = math.floor(span + 1e-9)
        if n < 3:
            return None
        ago = ((now_s - times[times > now_s - n]) // 1.0).astype(np.int64)
        counts = np.bincount(np.minimum(ago, n - 1), minlength=n)[::-1].astype(np.float64)
        x = np.arange(n, dtype=np.float64) - (n - 1) / 2  # centred: seconds, the last at (n−1)/2
        slope = float(x @ counts / (x @ x))
        resid = counts - counts.mean() - slope * x
        # noise: the residuals', at least Poisson's
        sigma = max(math.sqrt(float(resid @ resid) / (n - 2)), math.sqrt(counts.mean()))
        if slope <= GROWTH_Z * sigma / math.sqrt(float(x @ x)):
            return None
        # the last second's centre is (n − 1)/2; now is half a second later. The line's
        # value there, less GROWTH_Z of its standard error: a slope that noise could have
        # made, followed seconds ahead, would forecast a rate that never comes
        ahead = (n - 1) / 2 + 0.5 + self.activation_s
        error = sigma * math.sqrt(1 / n + ahead * ahead / float(x @ x))
        return float(counts.mean() + slope * ahead - GROWTH_Z * error)

    def _paths(
        self, masks: npt.NDArray[np.int64]
    ) -> tuple[tuple[tuple[str, ...], ...], npt.NDArray[np.int32]]:
        names = self.pipeline.stage_names
        uniq, ids = np.unique(masks, return_inverse=True)
        table = tuple(
            tuple(sorted(n for i, n in enumerate(names) if int(m) >> i & 1)) for m in uniq.tolist()
        )
        return table, ids.astype(np.int32)

    def _config(self, counts: Mapping[str, int]) -> PipelineConfig:
        return PipelineConfig(
            stages={
                n: c.model_copy(update={"replicas": int(counts[n])})
                for n, c in self.plan.stages.items()
            }
        )

    def _needed(self, est: Estimator, fc: Forecast) -> dict[str, int]:
        """Per stage, the fewest replicas keeping its utilisation at the forecast rate
        within ``max_utilisation`` (strictly below 1 when that is 1)."""
        duration = max(fc.trace.duration_s, 1e-9)
        out = {}
        for n, visits in est.stage_visit_counts.items():
            c = self.plan.stages[n]
            mu = self.profiles.get(n, c.hardware).throughput_qps(c.batch_size)
            load = visits / duration / mu
            if self.max_utilisation >= 1:
                out[n] = math.floor(load) + 1
            else:
                out[n] = max(1, math.ceil(load / self.max_utilisation - 1e-9))
        return out

    def _floor(self) -> dict[str, int]:
        """The fewest replicas a scale-down leaves per stage."""
        if self.floor_at_plan:
            return {n: c.replicas for n, c in self.plan.stages.items()}
        return dict.fromkeys(self.pipeline.stage_names, 1)

    def _refusal(self, counts: Mapping[str, int]) -> Literal["stage", "machine"] | None:
        """What refuses ``counts``: a limit of one stage ("stage": its replica limit, its
        hardware's unit count, or on shared cores more of its replica threads than the
        machine has cores, beyond the plan's) or the machine; None when they run."""
        if any(k > self.max_replicas[n] for n, k in counts.items()):
            return "stage"
        for hw in {c.hardware for c in self.plan.stages.values()}:
            limit = self.profiles.hardware.get(hw).max_units
            used = sum(k for n, k in counts.items() if self.plan.stages[n].hardware == hw)
            if limit is not None and used > limit:
                return "stage"
        if self.machine is None:
            return None
        config = self._config(counts)
        if self.machine.shares_cores:
            # on shared cores a stage's replica threads beyond the cores add no throughput,
            # only contention (live: the text demo's embed at 4 replicas on 2 cores, the
            # tabular ramp at 8 threads, both worse than fewer)
            for n, threads in self.machine.threads_of(config).items():
                if counts[n] > self.plan.stages[n].replicas and threads > self.machine.cores:
                    return "stage"
        try:
            check_plan_fits(config, self.machine)
        except CapacityError:
            return "machine"
        return None

    def _busy_pool(self, rate_qps: float) -> MachinePool | None:
        """The machine at ``rate_qps`` when it bounds the cores replicas keep busy (fit
        ``busy``): the front-end keeps its measured share, as when planning."""
        if self.machine is None or not self.machine.bounds_busy_cores:
            return None
        cpu, _ = frontend_cpu_s_per_query(self.profiles.overhead)
        return self.machine.for_planning(rate_qps, cpu)

    def decide(
        self, state: SimulateState, observation: Observation, now_s: float
    ) -> tuple[dict[str, int], SimulateState]:
        self._record(state, observation, now_s)
        names = self.pipeline.stage_names
        current = {n: int(observation.replicas[n]) for n in names}
        fc = self.forecast(state, now_s)
        # bucket rates lag a step by up to a bucket: no scale-down sooner than one after a change
        held = now_s - state.last_change_s < max(self.scale_down_holdoff_s, self.bucket_s)
        if fc is None:
            state.estimate_p99_s = None
            state.forecast_qps = 0.0
            # nothing to serve: one replica per stage, once the hold-off has passed
            low = self._floor()
            if held or all(current[n] <= low[n] for n in names):
                return current, state
            state.last_change_s = now_s
            state.last_reason = "scale down: no recent arrivals"
            return {n: min(current[n], low[n]) for n in names}, state
        state.forecast_qps = fc.rate_qps
        shared = self.machine is not None and self.machine.shares_cores
        est = Estimator(
            self.pipeline,
            self.profiles,
            fc.trace,
            slo_s=self.slo_s,
            seed=self.seed,
            machine=self.machine if shared and not self.profiles_carry_contention else None,
        )
        cache: dict[tuple[int, ...], tuple[float, float, dict[str, float]]] = {}
        pool = self._busy_pool(fc.rate_qps)

        def run(counts: Mapping[str, int]) -> tuple[float, float, dict[str, float]]:
            """(estimated P99, cores the replicas keep busy, per stage the mean wait for a
            replica) of ``counts``."""
            key = tuple(counts[n] for n in names)
            if key not in cache:
                config = self._config(counts)
                result = est.run(config)
                busy = 0.0
                if pool is not None:
                    use = {n: st.utilization for n, st in result.stages.items()}
                    busy = sum(pool.busy_cores_of(config, use).values())
                waits = {n: st.mean_queue_s for n, st in result.stages.items()}
                cache[key] = (result.p99_s, busy, waits)
                state.simulations += 1
            return cache[key]

        def p99(counts: Mapping[str, int]) -> float:
            return run(counts)[0]

        def waits(counts: Mapping[str, int]) -> Mapping[str, float]:
            return run(counts)[2]

        def busy_ok(counts: Mapping[str, int]) -> bool:
            """More replicas add no core: on a machine whose busy cores are bounded a
            replica the cores cannot feed only adds contention."""
            return pool is None or run(counts)[1] <= pool.busy_cores_allowed + 1e-9

        up_to = self.slo_s * (1 - self.margin)
        now_p99 = p99(current)
        what = f"{fc.rate_qps:.1f} qps{' (growing)' if fc.growing else ''}"
        need = self._needed(est, fc)
        if now_p99 > up_to or any(current[n] < need[n] for n in names):
            targets, limited = self._scale_up(need, current, p99, up_to, busy_ok, waits)
            state.capacity_limited = limited
            state.estimate_p99_s = p99(targets)
            if targets != current:
                state.last_change_s = now_s
                state.last_reason = (
                    f"scale up: estimated P99 {now_p99 * 1e3:.1f} → "
                    f"{state.estimate_p99_s * 1e3:.1f} ms at {what}"
                    + ("; capped at the machine" if limited else "")
                )
            return targets, state
        state.capacity_limited = {}
        state.estimate_p99_s = now_p99
        if held:
            return current, state
        targets = self._scale_down(current, p99, self.slo_s * (1 - self.scale_down_margin), need)
        if targets != current:
            state.last_change_s = now_s
            state.estimate_p99_s = p99(targets)
            state.last_reason = (
                f"scale down: estimated P99 {state.estimate_p99_s * 1e3:.1f} ms at {what}"
            )
        return targets, state

    def _scale_up(
        self,
        need: Mapping[str, int],
        current: dict[str, int],
        p99: _Estimate,
        target_s: float,
        busy_ok: Callable[[Mapping[str, int]], bool] = lambda counts: True,
        waits: Callable[[Mapping[str, int]], Mapping[str, float]] | None = None,
    ) -> tuple[dict[str, int], dict[str, int]]:
        """The greedy scale-up; returns the counts and, per stage that needed a replica
        the limits had no room for, the count it wanted.

        A replica can only shorten the wait for a replica at its own stage: a stage whose
        queries wait less than ``min_gain`` × SLO on average (``waits``) gets none, whatever
        the estimate says it would cut (on shared cores such a cut is a bigger share of the
        cores taken from the other stages, which the real machine does not give). Once the
        machine refuses a replica the search stops: on full cores one more anywhere only
        adds contention."""
        names = self.pipeline.stage_names
        counts = dict(current)
        limited: dict[str, int] = {}
        full = False  # the machine refused a replica

        def refused(trial: Mapping[str, int]) -> Literal["stage", "machine"] | None:
            return self._refusal(trial) or (None if busy_ok(trial) else "machine")

        # a stage its visits alone load beyond max_utilisation: the fewest replicas that do not
        for n in names:
            while counts[n] < need[n]:
                counts[n] += 1
                why = refused(counts)
                if why is not None:
                    counts[n] -= 1
                    limited[n] = need[n]
                    full = full or why == "machine"
                    break
        price = self.profiles.hardware.price_per_hour
        blocked: set[str] = set()
        for _ in range(0 if full else sum(self.max_replicas.values())):
            now = p99(counts)
            if now <= target_s:
                break
            best, best_gain = None, 0.0
            waiting = waits(counts) if waits is not None else None
            for n in names:
                if n in blocked:
                    continue
                if waiting is not None and waiting[n] < self.min_gain * self.slo_s:
                    continue  # not a bottleneck: its queries do not wait for a replica
                trial = {**counts, n: counts[n] + 1}
                cut = now - p99(trial)
                if cut < self.min_gain * self.slo_s:
                    continue
                gain = cut / max(price[self.plan.stages[n].hardware], 1e-12)
                if gain > best_gain:
                    best, best_gain = n, gain
            if best is None:
                break  # no replica moves the estimate: not a matter of replicas
            counts[best] += 1
            why = refused(counts)
            if why is not None:
                counts[best] -= 1
                limited[best] = counts[best] + 1
                if why == "machine":
                    break
                blocked.add(best)
        return counts, limited

    def _scale_down(
        self,
        current: dict[str, int],
        p99: _Estimate,
        target_s: float,
        need: Mapping[str, int],
    ) -> dict[str, int]:
        """Remove replicas, the biggest saving first, while the estimate stays ≤ target
        (never below the plan's floor nor the utilisation bound)."""
        counts = dict(current)
        price = self.profiles.hardware.price_per_hour
        names = self.pipeline.stage_names
        low = {n: max(k, need[n]) for n, k in self._floor().items()}
        while True:
            options = []
            for n in names:
                if counts[n] <= low[n]:
                    continue
                trial = {**counts, n: counts[n] - 1}
                est = p99(trial)
                if est <= target_s:
                    options.append((-price[self.plan.stages[n].hardware], est, n))
            if not options:
                return counts
            counts[min(options)[2]] -= 1
