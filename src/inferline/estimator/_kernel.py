"""The compiled discrete-event core: one central batched queue per stage.

Event order within one instant is fixed so that results never depend on the
order events were created in: first every arrival at time t, then every batch
completion at t (routing finished queries to their next stages), and only then
do idle replicas pull batches. A batch that finishes at t therefore reaches the
next stage as a whole, as it does in the engine.

Queue keys: EDF orders by the query's pipeline deadline (arrival + SLO, i.e. by
arrival time since the SLO is common); FIFO by the time the query reached the
stage. Ties break on query index, so every run is deterministic.
"""

from __future__ import annotations

import numpy as np
from numba import njit

QUEUE_EDF = 0
QUEUE_FIFO = 1


@njit(cache=True, inline="always")
def _less(key_a: float, q_a: int, key_b: float, q_b: int) -> bool:
    return key_a < key_b or (key_a == key_b and q_a < q_b)


@njit(cache=True)
def _stage_push(hk, hq, ht, base, size, key, q, t):  # type: ignore[no-untyped-def]
    i = size
    while i > 0:
        parent = (i - 1) >> 1
        if _less(key, q, hk[base + parent], hq[base + parent]):
            hk[base + i] = hk[base + parent]
            hq[base + i] = hq[base + parent]
            ht[base + i] = ht[base + parent]
            i = parent
        else:
            break
    hk[base + i] = key
    hq[base + i] = q
    ht[base + i] = t


@njit(cache=True)
def _stage_pop(hk, hq, ht, base, size):  # type: ignore[no-untyped-def]
    """Remove the head of a heap holding ``size`` entries; returns (query, enqueue time)."""
    q_top = hq[base]
    t_top = ht[base]
    last = size - 1
    key = hk[base + last]
    q = hq[base + last]
    t = ht[base + last]
    i = 0
    while True:
        child = 2 * i + 1
        if child >= last:
            break
        if child + 1 < last and _less(
            hk[base + child + 1], hq[base + child + 1], hk[base + child], hq[base + child]
        ):
            child += 1
        if _less(hk[base + child], hq[base + child], key, q):
            hk[base + i] = hk[base + child]
            hq[base + i] = hq[base + child]
            ht[base + i] = ht[base + child]
            i = child
        else:
            break
    if last > 0:
        hk[base + i] = key
        hq[base + i] = q
        ht[base + i] = t
    return q_top, t_top


@njit(cache=True)
def _event_push(et, es, er, size, t, seq, r):  # type: ignore[no-untyped-def]
    i = size
    while i > 0:
        parent = (i - 1) >> 1
        if t < et[parent] or (t == et[parent] and seq < es[parent]):
            et[i] = et[parent]
            es[i] = es[parent]
            er[i] = er[parent]
            i = parent
        else:
            break
    et[i] = t
    es[i] = seq
    er[i] = r


@njit(cache=True)
def _event_pop(et, es, er, size):  # type: ignore[no-untyped-def]
    r_top = er[0]
    last = size - 1
    t = et[last]
    seq = es[last]
    r = er[last]
    i = 0
    while True:
        child = 2 * i + 1
        if child >= last:
            break
        if child + 1 < last and (
            et[child + 1] < et[child] or (et[child + 1] == et[child] and es[child + 1] < es[child])
        ):
            child += 1
        if et[child] < t or (et[child] == t and es[child] < seq):
            et[i] = et[child]
            es[i] = es[child]
            er[i] = er[child]
            i = child
        else:
            break
    if last > 0:
        et[i] = t
        es[i] = seq
        er[i] = r
    return r_top


@njit(cache=True)
def run_kernel(  # type: ignore[no-untyped-def]
    arrival,  # float64[n], sorted
    visit_mask,  # int64[n], bit s set = the query visits stage s
    pending_init,  # int8[n, S], visited predecessors per visited stage
    succ_ptr,  # int64[S + 1]
    succ_idx,  # int64[E]
    stage_capacity,  # int64[S], queries that visit each stage (heap sizes)
    replicas,  # int64[S]
    max_batch,  # int64[S]
    latency,  # float64[S, Bmax + 1]
    queue_policy,  # QUEUE_EDF or QUEUE_FIFO
    slo_s,  # float, for counting misses (inf = none)
    max_misses,  # int, stop once more queries than this missed (-1 = never stop)
):
    n = arrival.shape[0]
    S = replicas.shape[0]
    bmax = latency.shape[1] - 1

    finish = np.full(n, np.nan)
    remaining = np.zeros(n, dtype=np.int64)
    pending = pending_init.copy()

    heap_base = np.zeros(S, dtype=np.int64)
    for s in range(1, S):
        heap_base[s] = heap_base[s - 1] + stage_capacity[s - 1]
    total_cap = heap_base[S - 1] + stage_capacity[S - 1] if S > 0 else 0
    hk = np.empty(max(total_cap, 1), dtype=np.float64)
    hq = np.empty(max(total_cap, 1), dtype=np.int64)
    ht = np.empty(max(total_cap, 1), dtype=np.float64)
    qsize = np.zeros(S, dtype=np.int64)

    n_replicas = 0
    for s in range(S):
        n_replicas += replicas[s]
    replica_stage = np.empty(max(n_replicas, 1), dtype=np.int64)
    free_stack = np.empty(max(n_replicas, 1), dtype=np.int64)
    free_base = np.zeros(S, dtype=np.int64)
    free_count = np.zeros(S, dtype=np.int64)
    r = 0
    for s in range(S):
        free_base[s] = r
        for k in range(replicas[s]):
            replica_stage[r] = s
            free_stack[r] = r  # within the stage's slice
            r += 1
        free_count[s] = replicas[s]
    batch_q = np.empty(max(n_replicas, 1) * max(bmax, 1), dtype=np.int64)
    batch_n = np.zeros(max(n_replicas, 1), dtype=np.int64)

    et = np.empty(max(n_replicas, 1), dtype=np.float64)
    es = np.empty(max(n_replicas, 1), dtype=np.int64)
    er = np.empty(max(n_replicas, 1), dtype=np.int64)
    esize = 0
    seq = 0

    busy_s = np.zeros(S)
    wait_s = np.zeros(S)
    visits = np.zeros(S, dtype=np.int64)
    batches = np.zeros(S, dtype=np.int64)

    misses = 0
    completed = 0
    stopped = False
    ai = 0
    inf = np.inf
    while True:
        ta = arrival[ai] if ai < n else inf
        te = et[0] if esize > 0 else inf
        t = ta if ta < te else te
        if t == inf:
            break
        # 1. arrivals at t enter the queues of their source stages
        while ai < n and arrival[ai] == t:
            q = ai
            m = visit_mask[q]
            count = 0
            for s in range(S):
                if (m >> s) & 1:
                    count += 1
                    if pending[q, s] == 0:
                        key = arrival[q] if queue_policy == QUEUE_EDF else t
                        _stage_push(hk, hq, ht, heap_base[s], qsize[s], key, q, t)
                        qsize[s] += 1
            remaining[q] = count
            ai += 1
        # 2. batches finishing at t free their replica and route their queries on
        while esize > 0 and et[0] == t:
            rg = _event_pop(et, es, er, esize)
            esize -= 1
            s = replica_stage[rg]
            free_stack[free_base[s] + free_count[s]] = rg
            free_count[s] += 1
            for i in range(batch_n[rg]):
                q = batch_q[rg * bmax + i]
                remaining[q] -= 1
                if remaining[q] == 0:
                    finish[q] = t
                    completed += 1
                    if t - arrival[q] > slo_s:
                        misses += 1
                m = visit_mask[q]
                for k in range(succ_ptr[s], succ_ptr[s + 1]):
                    x = succ_idx[k]
                    if (m >> x) & 1:
                        pending[q, x] -= 1
                        if pending[q, x] == 0:
                            key = arrival[q] if queue_policy == QUEUE_EDF else t
                            _stage_push(hk, hq, ht, heap_base[x], qsize[x], key, q, t)
                            qsize[x] += 1
            batch_n[rg] = 0
        if max_misses >= 0 and misses > max_misses:
            stopped = True
            break
        # 3. idle replicas pull up to max_batch queued queries
        for s in range(S):
            while free_count[s] > 0 and qsize[s] > 0:
                free_count[s] -= 1
                rg = free_stack[free_base[s] + free_count[s]]
                b = qsize[s] if qsize[s] < max_batch[s] else max_batch[s]
                for i in range(b):
                    q, t_enq = _stage_pop(hk, hq, ht, heap_base[s], qsize[s])
                    qsize[s] -= 1
                    batch_q[rg * bmax + i] = q
                    wait_s[s] += t - t_enq
                batch_n[rg] = b
                service = latency[s, b]
                busy_s[s] += service
                visits[s] += b
                batches[s] += 1
                _event_push(et, es, er, esize, t + service, seq, rg)
                esize += 1
                seq += 1
    return finish, busy_s, wait_s, visits, batches, misses, stopped
