"""Simulating a replica policy over time: the Estimator with changing replica counts.

The driver runs the resumable kernel in slices of ``tick_s`` seconds. At each
tick t it (1) simulates every event before t, (2) hands the policy the
arrivals admitted since the previous tick, the current replica counts
(starting ones included) and each stage's queued + in-flight queries, and (3)
applies the policy's targets at t: an added replica serves from t +
``activation_s`` and is billed from t; a removed one leaves at once if it is
starting or idle, otherwise finishes its batch (billed until then). Cost is the
integral of billed replicas × unit price over [first arrival, last finish].
Service times are the profiled median of the actual batch size (the
Estimator's ``fixed`` model). With a policy that never changes anything the
result equals :meth:`Estimator.run` query for query.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from inferline._bundle import check_config_for
from inferline.errors import ConfigError
from inferline.estimator import Estimator
from inferline.pipeline import Pipeline, PipelineConfig
from inferline.profiles import Profiles
from inferline.tuner import _kernel_timevarying as kt
from inferline.tuner._policy import Observation, Policy, default_replica_limits
from inferline.workload import Trace

__all__ = ["TunedResult", "simulate_tuned"]


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


def simulate_tuned(
    pipeline: Pipeline,
    profiles: Profiles,
    plan_config: PipelineConfig,
    trace: Trace,
    slo_s: float,
    policy: Policy,
    *,
    activation_s: float = 5.0,
    tick_s: float = 1.0,
    seed: int = 0,
    queue_policy: str = "edf",
) -> TunedResult:
    """Simulate ``trace`` starting from ``plan_config`` with ``policy`` deciding every tick."""
    if not slo_s > 0:
        raise ConfigError(f"the SLO must be positive seconds, got {slo_s}", field="slo_s")
    if not tick_s > 0:
        raise ConfigError(f"the tick must be positive seconds, got {tick_s}", field="tick_s")
    if not activation_s >= 0:
        raise ConfigError(
            f"the activation delay must be ≥ 0 s, got {activation_s}", field="activation_s"
        )
    check_config_for(plan_config, pipeline, profiles, "<plan>")
    est = Estimator(
        pipeline,
        profiles,
        trace,
        slo_s=slo_s,
        seed=seed,
        queue_policy=queue_policy,  # type: ignore[arg-type]
    )
    names = pipeline.stage_names
    S = len(names)
    cfgs = [plan_config.stages[n] for n in names]
    bmax = max(c.batch_size for c in cfgs)
    latency = np.zeros((S, bmax + 1))
    for i, (name, c) in enumerate(zip(names, cfgs, strict=True)):
        latency[i, : c.batch_size + 1] = profiles.get(name, c.hardware).latency_table(
            c.batch_size, "median"
        )
    max_batch = np.array([c.batch_size for c in cfgs], dtype=np.int64)
    price = np.array([profiles.hardware.get(c.hardware).price_per_hour for c in cfgs]) / 3600.0
    limits = default_replica_limits(profiles, plan_config)
    # slots: the most replicas a stage may hold, plus room for draining and cancelled ones
    slot_cap = np.array(
        [2 * max(limits[n], c.replicas) + 8 for n, c in zip(names, cfgs, strict=True)],
        dtype=np.int64,
    )
    slot_base = np.zeros(S, dtype=np.int64)
    slot_base[1:] = np.cumsum(slot_cap)[:-1]
    R = int(slot_cap.sum())
    slot_stage = np.repeat(np.arange(S, dtype=np.int64), slot_cap)
    status = np.zeros(R, dtype=np.int64)
    free_stack = np.zeros(R, dtype=np.int64)
    free_count = np.zeros(S, dtype=np.int64)
    for i, c in enumerate(cfgs):
        b = slot_base[i]
        status[b : b + c.replicas] = kt.ACTIVE
        free_stack[b : b + c.replicas] = np.arange(b, b + c.replicas)
        free_count[i] = c.replicas

    prepared = est.prepared
    arrival = prepared.arrival_s
    n = arrival.shape[0]
    capacity = prepared.stage_capacity
    heap_base = np.zeros(S, dtype=np.int64)
    heap_base[1:] = np.cumsum(capacity)[:-1]
    total = max(int(capacity.sum()), 1)
    hq = np.empty(total, dtype=np.int64)
    ht = np.empty(total, dtype=np.float64)
    qsize = np.zeros(S, dtype=np.int64)
    pending = prepared.pending.copy().reshape(n * S)
    batch_q = np.empty(R * max(bmax, 1), dtype=np.int64)
    batch_n = np.zeros(R, dtype=np.int64)
    removed_at = np.zeros(R)
    drain_billed = np.zeros(S)
    et = np.empty(R)
    es = np.empty(R, dtype=np.int64)
    er = np.empty(R, dtype=np.int64)
    finish = np.full(n, np.nan)
    remaining = np.zeros(n, dtype=np.int8)
    busy_s = np.zeros(S)
    wait_s = np.zeros(S)
    visits = np.zeros(S, dtype=np.int64)
    batches = np.zeros(S, dtype=np.int64)
    scal = np.zeros(kt.N_SCALARS, dtype=np.int64)
    ready = np.empty(S, dtype=np.int64)
    is_ready = np.zeros(S, dtype=np.bool_)
    fifo = queue_policy == "fifo"

    def advance(t_stop: float) -> None:
        kt.advance(
            t_stop, arrival, prepared.visit_mask, pending, prepared.succ_ptr, prepared.succ_idx,
            heap_base, hq, ht, qsize, status, slot_stage, free_stack, slot_base, free_count,
            batch_q, batch_n, removed_at, drain_billed, et, es, er, max_batch, latency, fifo,
            float(slo_s), finish, remaining, busy_s, wait_s, visits, batches, scal, ready,
            is_ready,
        )  # fmt: skip

    def allocated() -> npt.NDArray[np.int64]:
        live = (status == kt.STARTING) | (status == kt.ACTIVE)
        return np.bincount(slot_stage[live], minlength=S).astype(np.int64)

    t0 = float(arrival[0]) if n else 0.0
    state = policy.initial_state(t0)
    times: list[float] = []
    history: list[npt.NDArray[np.int64]] = []
    intervals: list[tuple[float, float, npt.NDArray[np.int64]]] = []  # (from, to, billed counts)
    ups = downs = added_total = removed_total = 0
    counts = allocated()
    t_prev = t0
    seen = 0
    k = 0
    # tick until every query has finished (the policy keeps deciding while queues drain)
    while n and (scal[kt.AI] < n or scal[kt.ESIZE] > 0):
        k += 1
        t = t0 + k * tick_s
        advance(t)
        intervals.append((t_prev, t, counts))
        t_prev = t
        ai = int(scal[kt.AI])
        if ai >= n and not qsize.any() and not batch_n.any():
            break  # every query has finished; only activations of unneeded replicas are left
        inflight = np.bincount(slot_stage, weights=batch_n, minlength=S)
        obs = Observation(
            arrivals_s=arrival[seen:ai],
            replicas={nm: int(counts[i]) for i, nm in enumerate(names)},
            outstanding={nm: int(qsize[i] + inflight[i]) for i, nm in enumerate(names)},
        )
        seen = ai
        targets, state = policy.decide(state, obs, t)
        up = down = False
        for i, nm in enumerate(names):
            want = int(targets.get(nm, counts[i]))
            if want == counts[i]:
                continue
            a, r = kt.set_target(
                i, max(want, 1), t, float(activation_s), status, slot_base, slot_cap,
                free_stack, free_count, removed_at, et, es, er, scal,
            )  # fmt: skip
            added_total += a
            removed_total += r
            up = up or a > 0
            down = down or r > 0
        ups += up
        downs += down
        counts = allocated()
        times.append(t)
        history.append(counts.copy())
    advance(math.inf)  # nothing is left by now; kept as a guard
    end = float(np.nanmax(finish)) if n else t0
    # starting + active replicas are billed per tick interval up to the last finish
    billed_s = np.zeros(S)
    for a, b, billed in intervals:
        if a >= end:
            break
        billed_s += billed * (min(b, end) - a)
    cost = float(((billed_s + drain_billed) * price).sum())
    latency_s = finish - arrival
    if prepared.extra_s is not None:  # the engine's measured per-query overhead, as the Estimator
        latency_s = latency_s + prepared.extra_s
    return TunedResult(
        policy=getattr(policy, "name", type(policy).__name__),
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
