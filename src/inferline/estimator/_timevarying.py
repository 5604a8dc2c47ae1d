"""The Estimator with replica counts that a controller changes during the run.

The driver runs the Estimator's kernel in slices of ``tick_s`` seconds. At each
tick t it (1) simulates every event before t, (2) hands the controller (a Tuner
policy, say) the arrivals admitted since the previous tick with the stages each
visits, the current replica counts (starting ones included) and each stage's
queued + in-flight queries,
and (3) applies the controller's targets at t (at least 1 per stage): an added
replica serves from t + ``activation_s`` and is billed from t; a removed one
leaves at once if it is starting or idle, otherwise finishes its batch (billed
until then). Cost is the
integral of billed replicas × unit price over [first arrival, last finish].
Service times are the profiled median of the actual batch size (the
Estimator's ``fixed`` model). With a controller that never changes anything the
result equals :meth:`Estimator.run` query for query (the same kernel runs both).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from inferline.errors import ConfigError
from inferline.estimator._simulate import Estimator, QueuePolicy
from inferline.pipeline import Pipeline, PipelineConfig
from inferline.profiles import Profiles
from inferline.workload import Trace

__all__ = ["Observation", "ReplicaController", "TunedResult", "simulate_timevarying"]


@dataclass(frozen=True)
class Observation:
    """What a replica controller sees at a decision.

    ``arrivals_s``: pipeline arrivals since the previous decision (sorted);
    ``replicas``: current replicas per stage (starting ones included);
    ``outstanding``: per stage, queries queued plus in flight (only the
    queue-length policy needs it; ``None`` where the caller cannot measure it);
    ``visits``: per arrival, the stages its query visits as a bitmask over the
    pipeline's ``stage_names`` (bit i: stage i; ``None`` where unknown, e.g. live,
    where a query's path is known only once it has finished).
    """

    arrivals_s: npt.NDArray[np.float64]
    replicas: Mapping[str, int]
    outstanding: Mapping[str, int] | None = None
    visits: npt.NDArray[np.int64] | None = None


class ReplicaController(Protocol):
    """Decides replica counts over time; every Tuner policy is one."""

    def initial_state(self, now_s: float) -> Any: ...

    def decide(
        self, state: Any, observation: Observation, now_s: float
    ) -> tuple[dict[str, int], Any]: ...


@dataclass(frozen=True)
class TunedResult:
    """Per-query latencies, cost and the replica timeline of one policy run."""

    policy: str
    stage_names: tuple[str, ...]
    arrival_s: npt.NDArray[np.float64]
    latency_s: npt.NDArray[np.float64]
    slo_s: float
    cost_dollars: float
    duration_s: float
    tick_s: npt.NDArray[np.float64]  # decision times
    replicas: npt.NDArray[np.int64]  # [ticks, stages]: counts after each decision
    scale_ups: int  # decisions that added replicas
    scale_downs: int  # decisions that removed replicas
    replicas_added: int
    replicas_removed: int

    @property
    def queries(self) -> int:
        return int(self.latency_s.shape[0])

    @property
    def miss_rate(self) -> float:
        return float(np.mean(self.latency_s > self.slo_s)) if self.queries else 0.0

    @property
    def p99_s(self) -> float:
        return float(np.percentile(self.latency_s, 99)) if self.queries else 0.0

    @property
    def mean_cost_per_hour(self) -> float:
        return self.cost_dollars / self.duration_s * 3600.0 if self.duration_s > 0 else 0.0

    def p99_over_time(
        self, window_s: float = 10.0
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """(window start, P99 of the queries arriving in it); NaN for an empty window."""
        if not self.queries:
            return np.zeros(0), np.zeros(0)
        t0 = self.arrival_s[0]
        idx = ((self.arrival_s - t0) // window_s).astype(np.int64)
        n = int(idx[-1]) + 1
        out = np.full(n, np.nan)
        bounds = np.searchsorted(idx, np.arange(n + 1))
        for i in range(n):
            seg = self.latency_s[bounds[i] : bounds[i + 1]]
            if seg.size:
                out[i] = np.percentile(seg, 99)
        return t0 + window_s * np.arange(n), out

    def rate_over_time(
        self, window_s: float = 10.0
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        if not self.queries:
            return np.zeros(0), np.zeros(0)
        t0 = self.arrival_s[0]
        idx = ((self.arrival_s - t0) // window_s).astype(np.int64)
        counts = np.bincount(idx)
        return t0 + window_s * np.arange(counts.size), counts / window_s

    def summary(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "queries": self.queries,
            "slo_s": self.slo_s,
            "miss_rate": self.miss_rate,
            "p99_s": self.p99_s,
            "cost_dollars": self.cost_dollars,
            "mean_cost_per_hour": self.mean_cost_per_hour,
            "duration_s": self.duration_s,
            "scale_ups": self.scale_ups,
            "scale_downs": self.scale_downs,
            "replicas_added": self.replicas_added,
            "replicas_removed": self.replicas_removed,
            "max_replicas": {
                n: int(self.replicas[:, i].max()) if self.replicas.size else 0
                for i, n in enumerate(self.stage_names)
            },
        }


def simulate_timevarying(
    pipeline: Pipeline,
    profiles: Profiles,
    config: PipelineConfig,
    trace: Trace,
    slo_s: float,
    controller: ReplicaController,
    *,
    max_replicas: Mapping[str, int],
    activation_s: float = 5.0,
    tick_s: float = 1.0,
    seed: int = 0,
    queue_policy: QueuePolicy = "edf",
    source: str = "<plan>",
) -> TunedResult:
    """Simulate ``trace`` starting from ``config`` with ``controller`` deciding every tick.

    ``max_replicas[stage]``: the most replicas (starting + serving) the controller
    asks for; it sizes the stage's replica slots (2 × it + 8, with room for draining
    and cancelled replicas), and a target that finds no free slot is cut there.
    """
    if not slo_s > 0:
        raise ConfigError(f"the SLO must be positive seconds, got {slo_s}", field="slo_s")
    if not tick_s > 0:
        raise ConfigError(f"the tick must be positive seconds, got {tick_s}", field="tick_s")
    if not activation_s >= 0:
        raise ConfigError(
            f"the activation delay must be ≥ 0 s, got {activation_s}", field="activation_s"
        )
    names = pipeline.stage_names
    missing = [n for n in names if n not in max_replicas]
    if missing:
        raise ConfigError(
            f"no replica limit for stage(s) {', '.join(missing)}", field="max_replicas"
        )
    est = Estimator(pipeline, profiles, trace, slo_s=slo_s, seed=seed, queue_policy=queue_policy)
    stages = est._stage_arrays(config, source=source)
    S = len(names)
    cfgs = [config.stages[n] for n in names]
    price = np.array([profiles.hardware.get(c.hardware).price_per_hour for c in cfgs]) / 3600.0
    limit = np.array([max(int(max_replicas[n]), 1) for n in names], dtype=np.int64)
    # slots: the most replicas a stage may hold, plus room for draining and cancelled ones
    slot_cap = 2 * np.maximum(limit, stages.replicas) + 8
    sim = est._start(stages, slot_cap=slot_cap)
    arrival = sim.arrival
    n = arrival.shape[0]

    t0 = float(arrival[0]) if n else 0.0
    state = controller.initial_state(t0)
    times: list[float] = []
    history: list[npt.NDArray[np.int64]] = []
    intervals: list[tuple[float, float, npt.NDArray[np.int64]]] = []  # (from, to, billed counts)
    ups = downs = added_total = removed_total = 0
    counts = sim.allocated()
    t_prev = t0
    seen = 0
    k = 0
    # tick until every query has finished (the controller keeps deciding while queues drain)
    while n and (sim.admitted < n or sim.events_pending):
        k += 1
        t = t0 + k * tick_s
        sim.advance(t)
        intervals.append((t_prev, t, counts))
        t_prev = t
        ai = sim.admitted
        if ai >= n and not sim.qsize.any() and not sim.batch_n.any():
            break  # every query has finished; only activations of unneeded replicas are left
        inflight = np.bincount(sim.slot_stage, weights=sim.batch_n, minlength=S)
        obs = Observation(
            arrivals_s=arrival[seen:ai],
            replicas={nm: int(counts[i]) for i, nm in enumerate(names)},
            outstanding={nm: int(sim.qsize[i] + inflight[i]) for i, nm in enumerate(names)},
            visits=sim.visit_mask[seen:ai],
        )
        seen = ai
        targets, state = controller.decide(state, obs, t)
        up = down = False
        for i, nm in enumerate(names):
            want = int(targets.get(nm, counts[i]))
            if want == counts[i]:
                continue
            a, r = sim.set_target(i, max(want, 1), t, activation_s)
            added_total += a
            removed_total += r
            up = up or a > 0
            down = down or r > 0
        ups += up
        downs += down
        counts = sim.allocated()
        times.append(t)
        history.append(counts.copy())
    sim.advance(math.inf)  # nothing is left by now; kept as a guard
    finish = sim.finish
    end = float(np.nanmax(finish)) if n else t0
    # starting + active replicas are billed per tick interval up to the last finish
    billed_s = np.zeros(S)
    for t_from, t_to, billed in intervals:
        if t_from >= end:
            break
        billed_s += billed * (min(t_to, end) - t_from)
    cost = float(((billed_s + sim.drain_billed_s) * price).sum())
    latency_s = finish - arrival
    extra_s = est.prepared.extra_s
    if extra_s is not None:  # the engine's measured per-query overhead, as in Estimator.run
        latency_s = latency_s + extra_s
    return TunedResult(
        policy=getattr(controller, "name", type(controller).__name__),
        stage_names=names,
        arrival_s=arrival,
        latency_s=latency_s,
        slo_s=float(slo_s),
        cost_dollars=cost,
        duration_s=end - t0,
        tick_s=np.asarray(times),
        replicas=np.asarray(history, dtype=np.int64).reshape(len(history), S),
        scale_ups=ups,
        scale_downs=downs,
        replicas_added=added_total,
        replicas_removed=removed_total,
    )
