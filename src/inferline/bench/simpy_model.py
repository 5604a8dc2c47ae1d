"""A plain SimPy model of exactly the Estimator's semantics: the reference it is checked against.

Nothing here is tuned for speed; it is meant to be read. One central queue per
stage (a heap keyed by the query's arrival time for EDF, or by the time it
reached the stage for FIFO, ties by query index) is shared by the stage's
replicas, each a SimPy process: an idle replica takes up to ``batch_size``
queued queries at once, holds them for the profiled latency of that batch size,
then hands each query on (to the successors it visits, once all their visited
predecessors are done) or records its completion.

Same-instant order, as in the kernel: every arrival at ``t``, then every batch
completion at ``t``, and only then do replicas pull. SimPy processes events at
one instant in the order they were scheduled, so:

* every arrival is scheduled up front, at time 0, as a timeout to its absolute
  time: these get the smallest event ids and so run first at their instant;
* a batch's service timeout was created before its instant, so it runs before
  anything created at that instant;
* a replica that finished a batch does ``yield env.timeout(0)`` before pulling
  again, and idle replicas wait on a per-stage event that an enqueue succeeds:
  both are created at the current instant and so run after every arrival and
  completion already scheduled for it.

Within these three groups the order does not matter: queue order depends only
on the (key, query) pairs queued, and replicas of one stage are identical.
Profiled latencies must be positive (as every loaded profile's are), so that a
batch never completes at the instant it started.
"""

from __future__ import annotations

import heapq
import statistics
from collections.abc import Generator
from typing import Any, cast

import numpy as np
import simpy

from inferline._bundle import check_config_for
from inferline.estimator import Estimator
from inferline.pipeline import PipelineConfig

#: z of the 99th percentile of a standard normal (the Estimator's lognormal service times).
_Z99 = statistics.NormalDist().inv_cdf(0.99)

__all__ = ["simulate_with_simpy"]


def simulate_with_simpy(estimator: Estimator, config: PipelineConfig) -> np.ndarray:
    """Per-query latencies (float64[n]) of ``config`` on the estimator's prepared trace.

    Uses the estimator's pipeline, profiles, queue policy, latency statistic and
    the very visit masks it prepared (recorded or sampled paths), so the result
    should equal ``estimator.run(config).latency_s`` exactly.
    """
    pipeline = estimator.pipeline
    check_config_for(config, pipeline, estimator.profiles)
    names = pipeline.stage_names
    n_stages = len(names)
    position = {name: i for i, name in enumerate(names)}
    successors = [[position[x] for x in pipeline.successors(name)] for name in names]
    max_batch = [config.stages[name].batch_size for name in names]
    latency = []
    for name in names:
        stage = config.stages[name]
        profile = estimator.profiles.get(name, stage.hardware)
        table = profile.latency_table(stage.batch_size, estimator.latency_stat).tolist()
        if min(table[1:]) <= 0.0:
            raise ValueError(f"stage '{name}' has a non-positive profiled latency")
        latency.append(table)
    sigma = [[1.0] * (config.stages[name].batch_size + 1) for name in names]
    if estimator.service_time == "lognormal":
        for i, name in enumerate(names):
            stage = config.stages[name]
            p99 = estimator.profiles.get(name, stage.hardware).latency_table(
                stage.batch_size, "p99"
            )
            sigma[i] = [1.0] + [
                float(np.log(p99[b] / latency[i][b]) / _Z99) for b in range(1, stage.batch_size + 1)
            ]
    prepared = estimator.prepared
    log_scale: list[float] = prepared.log_scale.tolist()

    arrival: list[float] = prepared.arrival_s.tolist()
    visits: list[int] = prepared.visit_mask.tolist()
    pending: list[list[int]] = prepared.pending.astype(np.int64).tolist()
    remaining = [mask.bit_count() for mask in visits]
    finish = [float("nan")] * len(arrival)
    edf = estimator.queue_policy == "edf"

    env = simpy.Environment()
    queues: list[list[tuple[float, int]]] = [[] for _ in range(n_stages)]
    wake = [env.event() for _ in range(n_stages)]

    def enqueue(q: int, s: int) -> None:
        key = arrival[q] if edf else env.now
        heapq.heappush(queues[s], (key, q))
        if not wake[s].triggered:
            wake[s].succeed()

    def arrive(event: simpy.Event) -> None:
        q = cast(int, event.value)  # the query index the timeout carries
        for s in range(n_stages):
            if visits[q] >> s & 1 and pending[q][s] == 0:
                enqueue(q, s)

    def deliver(s: int, batch: list[int]) -> None:
        for q in batch:
            remaining[q] -= 1
            if remaining[q] == 0:
                finish[q] = env.now
            for x in successors[s]:
                if visits[q] >> x & 1:
                    pending[q][x] -= 1
                    if pending[q][x] == 0:
                        enqueue(q, x)

    def replica(s: int) -> Generator[simpy.Event, Any, None]:
        queue = queues[s]
        while True:
            while not queue:
                if wake[s].triggered:
                    wake[s] = env.event()
                yield wake[s]
            size = min(len(queue), max_batch[s])
            batch = [heapq.heappop(queue)[1] for _ in range(size)]
            service = latency[s][size]
            if log_scale:  # the same per-(first query, stage) multiplier as the kernel
                service *= float(np.exp(sigma[s][size] * log_scale[batch[0] * n_stages + s]))
            yield env.timeout(service)
            deliver(s, batch)
            yield env.timeout(0)

    for q, t in enumerate(arrival):
        env.timeout(t, value=q).callbacks.append(arrive)
    for name in names:
        for _ in range(config.stages[name].replicas):
            env.process(replica(position[name]))
    env.run()
    latency_s: np.ndarray = np.asarray(finish, dtype=np.float64) - prepared.arrival_s
    return latency_s
