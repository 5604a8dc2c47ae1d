"""What every planner shares: one Estimator, a feasibility test with a cache, and bounds.

A candidate configuration is a *key*: one ``(hardware, batch_size, replicas)``
triple per stage, in ``pipeline.stage_names`` order. Keys are hashable, so each
configuration is simulated at most once per planning run.

Feasible(config) = estimated P99 on the planning trace ≤ ``slo_s · (1 − margin)``.
A P99 above the target needs more than 1 % of the queries to miss it, so every
feasibility run stops as soon as more than ``floor(0.01 · n)`` queries have missed.

Two cheap, exact shortcuts avoid simulations that cannot succeed:

* **Hardware limits**: a key that uses more units of a hardware type than exist
  is infeasible, and so is one that does not fit the machine planned for (a pool from
  ``MachinePool.for_planning``: replica threads, GPU replicas, replica processes, and a
  CPU replica no wider than ``max_threads_per_replica``: :func:`usable_hardware`).
  Under the pool's ``busy`` fit rule a simulated key is also infeasible when its busy
  cores (Σ utilisation × replicas × threads, from the same run) exceed what the pool
  allows; such keys are not used for dominance (fewer replicas may fill batches better).
* **Work floor**: every query that meets the target finishes within
  ``[t_first, t_last + target]``, so a stage must be able to do the work of all
  but the allowed 1 % of its visits in that span: ``replicas · μ* · span ≥
  visits − floor(0.01 · n)``, with μ* the stage's best throughput at any batch
  size up to its maximum. Fewer replicas cannot be feasible on this trace.

One shortcut assumes, as the paper's "add replicas until feasible" does, that
more replicas never hurt:

* **Dominance**: a key is infeasible if a simulated key with the same hardware
  and batch sizes and at least as many replicas at every stage was infeasible.
  Under the ``shared`` fit rule, where the Estimator simulates the machine's cores as
  shared, one more replica can slow the others down, so this shortcut is off.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from inferline.errors import ConfigError, InfeasibleError
from inferline.estimator import Estimator, SimulationResult
from inferline.pipeline import Pipeline, PipelineConfig, StageConfig
from inferline.profiles import BatchProfile, LatencyStat, MachinePool, Profiles, resources_for
from inferline.workload import Trace, peak_rate_qps

__all__ = ["Key", "Outcome", "Search", "Setting", "usable_hardware"]

Setting = tuple[str, int, int]  # (hardware, batch_size, replicas)
Key = tuple[Setting, ...]  # one Setting per stage, in pipeline.stage_names order

_ABSOLUTE_REPLICA_GUARD = 10_000  # per stage, whatever the trace says


@dataclass(frozen=True)
class Outcome:
    """The Estimator's verdict on one configuration (or why it was not simulated)."""

    feasible: bool
    p50_s: float
    p99_s: float
    miss_rate: float  # against the true SLO; a lower bound when the run stopped early
    simulated: bool
    reason: str = ""
    #: Per stage (``names`` order), the replicas' busy fraction on the trace; None when
    #: not simulated or stopped early.
    utilization: tuple[float, ...] | None = None


def usable_hardware(profiles: Profiles, stage: str, machine: MachinePool | None) -> tuple[str, ...]:
    """The hardware ``stage`` may be planned on: every profiled one, less the CPU hardware
    too wide for ``machine`` (``MachinePool.too_wide``). A stage profiled only on hardware
    that wide keeps it: a slow plan beats none, and the engine serves it."""
    profiled = profiles.hardware_for(stage)
    if machine is None:
        return profiled
    narrow = tuple(hw for hw in profiled if not machine.too_wide(hw))
    return narrow or profiled


def _shape(key: Key) -> tuple[tuple[str, int], ...]:
    return tuple((hw, b) for hw, b, _ in key)


def _replicas(key: Key) -> tuple[int, ...]:
    return tuple(k for _, _, k in key)


class Search:
    """One Estimator, a result cache and the per-stage bounds, shared by a planning run."""

    def __init__(
        self,
        pipeline: Pipeline,
        profiles: Profiles,
        trace: Trace,
        slo_s: float,
        *,
        seed: int = 0,
        margin: float = 0.0,
        latency_stat: LatencyStat = "median",
        machine: MachinePool | None = None,
    ) -> None:
        if not (isinstance(slo_s, int | float) and math.isfinite(slo_s) and slo_s > 0):
            raise ConfigError(f"the SLO must be positive seconds, got {slo_s!r}", field="slo_s")
        if not (isinstance(margin, int | float) and 0.0 <= margin < 1.0):
            raise ConfigError(
                f"the safety margin must be a fraction in [0, 1), got {margin!r}", field="margin"
            )
        self.pipeline = pipeline
        self.profiles = profiles
        self.trace = trace
        self.slo_s = float(slo_s)
        self.margin = float(margin)
        self.target_s = self.slo_s * (1.0 - self.margin)
        self.latency_stat: LatencyStat = latency_stat
        #: under the ``shared`` fit rule the Estimator simulates the machine's cores as shared
        self.shares_cores = machine is not None and machine.shares_cores
        self.estimator = Estimator(
            pipeline,
            profiles,
            trace,
            slo_s=self.target_s,
            seed=seed,
            latency_stat=latency_stat,
            machine=machine if self.shares_cores else None,
        )
        self.names = pipeline.stage_names
        self.scale = pipeline.scale_factors
        self.prices = profiles.hardware.price_per_hour
        self.limits = {h.name: h.max_units for h in profiles.hardware}
        self.machine = machine
        cores = machine.cores if machine is not None else None
        self.threads = {h: resources_for(h, cores).threads for h in profiles.hardware.names}
        self.gpu = {h: resources_for(h, cores).device == "cuda" for h in profiles.hardware.names}
        self.catalogue_index = {name: i for i, name in enumerate(profiles.hardware.names)}
        #: per stage, the hardware its replicas may use on the machine planned for
        self.usable = {n: usable_hardware(profiles, n, machine) for n in pipeline.stage_names}
        n = trace.n_queries
        self.n_queries = n
        self.max_misses = math.floor(0.01 * n)
        self.visits = self.estimator.stage_visit_counts
        arrivals = trace.arrival_s
        self.span_s = float(arrivals[-1] - arrivals[0]) + self.target_s
        self.mean_rate_qps = float(trace.mean_rate_qps)
        self.peak_rate_qps = float(peak_rate_qps(trace, self.slo_s))
        self.calls = 0
        self.pruned = 0
        self.cache: dict[Key, Outcome] = {}
        self._mu_best: dict[tuple[str, str, int], float] = {}
        self._infeasible: dict[tuple[tuple[str, int], ...], list[tuple[int, ...]]] = {}

    # --- profiles ---------------------------------------------------------------------------
    def profile(self, stage: str, hardware: str) -> BatchProfile:
        return self.profiles.get(stage, hardware)

    def latency_s(self, stage: str, hardware: str, batch: int) -> float:
        return self.profile(stage, hardware).latency_s(batch, self.latency_stat)

    def mu(self, stage: str, hardware: str, batch: int) -> float:
        """One replica's throughput running full batches of ``batch`` (queries/s)."""
        return self.profile(stage, hardware).throughput_qps(batch, self.latency_stat)

    def best_mu(self, stage: str, hardware: str, max_batch: int) -> float:
        """The highest throughput a replica can reach with batches of at most ``max_batch``."""
        key = (stage, hardware, max_batch)
        if key not in self._mu_best:
            prof = self.profile(stage, hardware)
            sizes = {b for b in prof.batch_sizes if b <= max_batch} | {max_batch}
            self._mu_best[key] = max(self.mu(stage, hardware, b) for b in sizes)
        return self._mu_best[key]

    def fastest_hardware(self, stage: str) -> list[str]:
        """The stage's hardware by batch-1 latency (ties: cheaper, then catalogue order)."""
        return sorted(
            self.usable[stage],
            key=lambda h: (self.latency_s(stage, h, 1), self.prices[h], self.catalogue_index[h]),
        )

    # --- bounds -----------------------------------------------------------------------------
    def work_floor(self, stage: str, hardware: str, max_batch: int) -> int:
        """Fewest replicas that could do this stage's work on the trace in time (exact bound)."""
        must_serve = max(0, self.visits[stage] - self.max_misses)
        need = must_serve / (self.best_mu(stage, hardware, max_batch) * self.span_s)
        return max(1, math.ceil(need - 1e-9))

    def replica_cap(self, stage: str, hardware: str) -> int:
        """Search bound on one stage's replicas at batch 1 on ``hardware`` (limits aside).

        Twice what it takes to serve the trace's peak rate (over a window equal to
        the SLO) at batch 1, and at least 4.
        """
        need = math.ceil(self.peak_rate_qps * self.scale[stage] / self.mu(stage, hardware, 1))
        floor = self.work_floor(stage, hardware, 1)
        return min(max(2 * need, 4, floor + 1), _ABSOLUTE_REPLICA_GUARD)

    def free_units(self, key: Key, hardware: str, skip: int | None = None) -> int | None:
        """Units of ``hardware`` left over by the other stages (None = unlimited): within
        its ``max_units`` and, when planning for a machine, its threads, GPUs and memory."""
        limit = self.limits[hardware]
        free = None if limit is None else limit - self.units_used(key, hardware, skip)
        pool = self.machine
        if pool is None:
            return free
        others = [(hw, k) for i, (hw, _, k) in enumerate(key) if i != skip]
        threads_left = pool.max_threads - sum(self.threads[hw] * k for hw, k in others)
        left = min(
            threads_left // self.threads[hardware],
            pool.max_replicas - sum(k for _, k in others),
        )
        if self.gpu[hardware]:
            left = min(left, pool.max_gpus - sum(k for hw, k in others if self.gpu[hw]))
        return left if free is None else min(free, left)

    # --- configurations ---------------------------------------------------------------------
    def cost(self, key: Key) -> float:
        return float(sum(self.prices[hw] * k for hw, _, k in key))

    def units_used(self, key: Key, hardware: str, skip: int | None = None) -> int:
        return sum(k for i, (hw, _, k) in enumerate(key) if hw == hardware and i != skip)

    def units_ok(self, key: Key) -> bool:
        used: dict[str, int] = {}
        for hw, _, k in key:
            used[hw] = used.get(hw, 0) + k
        for hw, n in used.items():
            limit = self.limits[hw]
            if limit is not None and n > limit:
                return False
        return self.machine_ok(key)

    def machine_ok(self, key: Key) -> bool:
        """True if ``key`` fits the machine planned for (or there is none)."""
        pool = self.machine
        if pool is None:
            return True
        return (
            all(hw in self.usable[n] for n, (hw, _, _) in zip(self.names, key, strict=True))
            and sum(self.threads[hw] * k for hw, _, k in key) <= pool.max_threads
            and sum(k for hw, _, k in key if self.gpu[hw]) <= pool.max_gpus
            and sum(k for _, _, k in key) <= pool.max_replicas
        )

    def below_floor(self, key: Key) -> str | None:
        for name, (hw, b, k) in zip(self.names, key, strict=True):
            if k < self.work_floor(name, hw, b):
                return name
        return None

    def config(self, key: Key) -> PipelineConfig:
        return PipelineConfig(
            stages={
                name: StageConfig(hardware=hw, batch_size=b, replicas=k)
                for name, (hw, b, k) in zip(self.names, key, strict=True)
            }
        )

    def key_of(self, config: PipelineConfig) -> Key:
        return tuple(
            (config.stages[n].hardware, config.stages[n].batch_size, config.stages[n].replicas)
            for n in self.names
        )

    @staticmethod
    def replace(key: Key, index: int, setting: Setting) -> Key:
        return (*key[:index], setting, *key[index + 1 :])

    # --- the feasibility test ---------------------------------------------------------------
    def evaluate(self, key: Key) -> Outcome:
        """Feasible(key), simulated at most once; early-stopped once the miss budget is spent."""
        found = self.cache.get(key)
        if found is not None:
            return found
        if not self.units_ok(key):
            outcome = self._unsimulated("exceeds a hardware limit or the machine")
        elif (stage := self.below_floor(key)) is not None:
            outcome = self._unsimulated(f"'{stage}' cannot keep up with the trace")
        elif self._dominated(key):
            outcome = self._unsimulated("more replicas of the same settings were infeasible")
        else:
            result = self.estimator.run(self.config(key), max_misses=self.max_misses)
            self.calls += 1
            outcome = self._outcome(result)
            if not outcome.feasible:
                self._infeasible.setdefault(_shape(key), []).append(_replicas(key))
            elif (busy := self.busy_excess(key, outcome)) is not None:
                outcome = dataclasses.replace(outcome, feasible=False, reason=busy)
        self.cache[key] = outcome
        return outcome

    def busy_cores(self, key: Key, outcome: Outcome) -> float | None:
        """Cores ``key``'s replicas keep busy on the trace (None: not simulated in full)."""
        if outcome.utilization is None:
            return None
        return sum(
            u * k * self.threads[hw] for u, (hw, _, k) in zip(outcome.utilization, key, strict=True)
        )

    def busy_excess(self, key: Key, outcome: Outcome) -> str | None:
        """Why ``key`` keeps more cores busy than the machine's ``busy`` rule allows, or None."""
        pool = self.machine
        busy = self.busy_cores(key, outcome)
        if pool is None or not pool.bounds_busy_cores or busy is None:
            return None
        if busy <= pool.busy_cores_allowed + 1e-9:
            return None
        return (
            f"keeps {busy:.2f} cores busy; the machine allows {pool.busy_cores_allowed:.2f} "
            f"({pool.max_busy_fraction * 100:.0f} % of {pool.cores} less the front-end's "
            f"{pool.frontend_reserve_cores:.2f})"
        )

    def _dominated(self, key: Key) -> bool:
        """True if a configuration with the same settings and at least as many replicas failed.

        Not on shared cores: there one more replica can slow every other one down."""
        if self.shares_cores:
            return False
        known = self._infeasible.get(_shape(key))
        if not known:
            return False
        mine = _replicas(key)
        return any(all(a >= b for a, b in zip(other, mine, strict=True)) for other in known)

    def simulate_full(self, key: Key) -> Outcome:
        """Run the whole trace (no early stop) and report the real P99, even if infeasible."""
        result = self.estimator.run(self.config(key))
        self.calls += 1
        outcome = self._outcome(result)
        self.cache[key] = outcome
        return outcome

    def full_run(self, key: Key) -> tuple[float, float]:
        """``key``'s estimated P99 and busy cores over the whole trace (no early stop, not
        cached: for comparing steps that all miss the target)."""
        self.calls += 1
        outcome = self._outcome(self.estimator.run(self.config(key)))
        busy = self.busy_cores(key, outcome)
        return outcome.p99_s, math.inf if busy is None else busy

    def _unsimulated(self, reason: str) -> Outcome:
        self.pruned += 1
        return Outcome(False, math.inf, math.inf, math.nan, False, reason)

    def _outcome(self, result: SimulationResult) -> Outcome:
        if result.stopped_early:
            return Outcome(False, math.inf, math.inf, result.miss_rate, True)
        p99 = result.p99_s
        miss = float(np.mean(result.latency_s > self.slo_s))
        utilization = tuple(result.stages[name].utilization for name in self.names)
        return Outcome(p99 <= self.target_s, result.p50_s, p99, miss, True, "", utilization)

    # --- the service-time check (paper Algorithm 1) -----------------------------------------
    def check_service_time(self, planner: str) -> dict[str, str]:
        """Each stage's fastest hardware; InfeasibleError if even that misses the SLO."""
        fastest = {name: self.fastest_hardware(name)[0] for name in self.names}
        times = {name: self.latency_s(name, fastest[name], 1) for name in self.names}
        service_s = self.pipeline.longest_path_s(times)
        if service_s > self.target_s:
            path = self.pipeline.critical_path(times)
            steps = " -> ".join(
                f"{name} ({times[name] * 1000:.2f} ms on {fastest[name]})" for name in path
            )
            smallest = math.ceil(service_s / (1.0 - self.margin) * 1000 - 1e-9) / 1000
            target = (
                f"{self.slo_s:g} s"
                if self.margin == 0
                else f"{self.slo_s:g} s with margin {self.margin:g} ({self.target_s:g} s)"
            )
            raise InfeasibleError(
                f"{planner}: the SLO of {target} is below the fastest possible service time of "
                f"pipeline '{self.pipeline.name}': at batch 1 on each stage's fastest hardware "
                f"the critical path {steps} takes {service_s * 1000:.2f} ms. The smallest SLO "
                f"that could work is {smallest:g} s."
            )
        return fastest

    def describe(self, key: Key) -> str:
        return ", ".join(
            f"{name}={hw}/b{b}/x{k}" for name, (hw, b, k) in zip(self.names, key, strict=True)
        )
