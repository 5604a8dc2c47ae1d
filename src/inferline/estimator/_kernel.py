"""The compiled discrete-event core: one central batched queue per stage.

Event order within one instant is fixed so that results never depend on the
order events were created in: first every arrival at time t, then every batch
completion at t (routing finished queries to their next stages), and only then
do idle replicas pull batches. A batch that finishes at t therefore reaches the
next stage as a whole, as it does in the engine.

Service time: the profiled latency of the actual batch size, optionally times
a random multiplier exp(sigma[s, b] * log_scale[q, s]) drawn per (query, stage)
and applied per batch through its first query (see ``Estimator``'s
``service_time``).

Queue keys: EDF orders by the query's pipeline deadline (arrival + SLO, i.e. by
arrival time since the SLO is common); FIFO by the time the query reached the
stage. Ties break on query index, so every run is deterministic.

Implementation notes (speed only; the semantics above are the contract):
arrivals are sorted, so EDF's (arrival time, query) order is plain query-index
order and the EDF heap compares integers only; a FIFO key is the time the
query reached the stage, which is also its enqueue time, so each stage queue is
a binary heap of (query, enqueue time) pairs in its own slice of two shared
arrays. Only stages whose queue grew or whose replica came free at an instant
are considered for dispatch (the order in which stages dispatch within an
instant cannot change any result: queue order depends only on the queued keys,
and batches finishing at the same instant are all routed before any dispatch).
Heap operations are written out inline because numba adds atomic
reference-count updates to every call of a helper that takes arrays, and
indices are unsigned (``_U``) to spare numba's negative-index handling.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# Array indices in the main loop are cast to unsigned: numba then omits the negative-index
# wraparound it emits for signed ones, which frees registers in this large loop (~15 %).
_U = np.uint64

QUEUE_EDF = 0
QUEUE_FIFO = 1


@njit(cache=True, inline="always")
def _before(fifo: bool, t_a: float, q_a: int, t_b: float, q_b: int) -> bool:
    """Queue order of (enqueue time, query) entries: EDF by query index, FIFO by time then index."""
    if fifo:
        return t_a < t_b or (t_a == t_b and q_a < q_b)
    return q_a < q_b


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
    log_scale,  # float64[n * S] or empty: per-(query, stage) log service-time multipliers
    sigma,  # float64[S, Bmax + 1]: spread applied to log_scale (batch b at stage s)
):
    n = arrival.shape[0]
    S = replicas.shape[0]
    bmax = latency.shape[1] - 1
    fifo = queue_policy == QUEUE_FIFO
    scaled = log_scale.shape[0] > 0

    finish = np.full(n, np.nan)
    remaining = np.zeros(n, dtype=np.int8)  # visited stages not finished yet (<= 62)
    pending = pending_init.copy().reshape(n * S)  # flat: entry q * S + s

    # stage queues: binary heaps of (query, enqueue time), stage s in [heap_base[s], ...)
    heap_base = np.zeros(S, dtype=np.int64)
    for s in range(1, S):
        heap_base[s] = heap_base[s - 1] + stage_capacity[s - 1]
    total_cap = heap_base[S - 1] + stage_capacity[S - 1] if S > 0 else 0
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
        for _ in range(replicas[s]):
            replica_stage[r] = s
            free_stack[r] = r  # within the stage's slice
            r += 1
        free_count[s] = replicas[s]
    batch_q = np.empty(max(n_replicas, 1) * max(bmax, 1), dtype=np.int64)
    batch_n = np.zeros(max(n_replicas, 1), dtype=np.int64)

    # batch completions: a binary heap of (time, dispatch sequence, replica)
    et = np.empty(max(n_replicas, 1), dtype=np.float64)
    es = np.empty(max(n_replicas, 1), dtype=np.int64)
    er = np.empty(max(n_replicas, 1), dtype=np.int64)
    esize = 0
    seq = 0

    # stages whose queue grew or whose replica came free at this instant: only they can
    # start batches (every other stage has an empty queue or no idle replica)
    ready = np.empty(max(S, 1), dtype=np.int64)
    is_ready = np.zeros(max(S, 1), dtype=np.bool_)
    n_ready = 0

    busy_s = np.zeros(S)
    wait_s = np.zeros(S)
    visits = np.zeros(S, dtype=np.int64)
    batches = np.zeros(S, dtype=np.int64)

    misses = 0
    stopped = False
    ai = 0
    inf = np.inf
    while True:
        ta = arrival[_U(ai)] if ai < n else inf
        te = et[_U(0)] if esize > 0 else inf
        t = ta if ta < te else te
        if t == inf:
            break
        # 1. arrivals at t enter the queues of their source stages
        while ai < n and arrival[_U(ai)] == t:
            q = ai
            m = visit_mask[_U(q)]
            count = 0
            s = 0
            while m != 0:
                if m & 1:
                    count += 1
                    if pending[_U(q * S + s)] == 0:
                        base = heap_base[_U(s)]
                        i = qsize[_U(s)]
                        while i > 0:  # sift up
                            parent = (i - 1) >> 1
                            pq = hq[_U(base + parent)]
                            pt = ht[_U(base + parent)]
                            if not _before(fifo, t, q, pt, pq):
                                break
                            hq[_U(base + i)] = pq
                            ht[_U(base + i)] = pt
                            i = parent
                        hq[_U(base + i)] = q
                        ht[_U(base + i)] = t
                        qsize[_U(s)] += 1
                        if not is_ready[_U(s)]:
                            is_ready[_U(s)] = True
                            ready[_U(n_ready)] = s
                            n_ready += 1
                m >>= 1
                s += 1
            remaining[_U(q)] = count
            ai += 1
        # 2. batches finishing at t free their replica and route their queries on
        while esize > 0 and et[_U(0)] == t:
            rg = er[_U(0)]
            esize -= 1
            if esize > 0:  # move the last event to the root and sift it down
                lt = et[_U(esize)]
                ls = es[_U(esize)]
                lr = er[_U(esize)]
                i = 0
                while True:
                    child = 2 * i + 1
                    if child >= esize:
                        break
                    if child + 1 < esize and (
                        et[_U(child + 1)] < et[_U(child)]
                        or (
                            et[_U(child + 1)] == et[_U(child)] and es[_U(child + 1)] < es[_U(child)]
                        )
                    ):
                        child += 1
                    if not (et[_U(child)] < lt or (et[_U(child)] == lt and es[_U(child)] < ls)):
                        break
                    et[_U(i)] = et[_U(child)]
                    es[_U(i)] = es[_U(child)]
                    er[_U(i)] = er[_U(child)]
                    i = child
                et[_U(i)] = lt
                es[_U(i)] = ls
                er[_U(i)] = lr
            s = replica_stage[_U(rg)]
            free_stack[_U(free_base[_U(s)] + free_count[_U(s)])] = rg
            free_count[_U(s)] += 1
            if not is_ready[_U(s)]:
                is_ready[_U(s)] = True
                ready[_U(n_ready)] = s
                n_ready += 1
            k0 = succ_ptr[_U(s)]
            k1 = succ_ptr[_U(s + 1)]
            off = rg * bmax
            for j in range(batch_n[_U(rg)]):
                q = batch_q[_U(off + j)]
                remaining[_U(q)] -= 1
                if remaining[_U(q)] == 0:
                    finish[_U(q)] = t
                    if t - arrival[_U(q)] > slo_s:
                        misses += 1
                    continue  # every visited stage is done: nothing to route
                m = visit_mask[_U(q)]
                for k in range(k0, k1):
                    x = succ_idx[_U(k)]
                    if (m >> x) & 1:
                        px = q * S + x
                        pending[_U(px)] -= 1
                        if pending[_U(px)] == 0:
                            base = heap_base[_U(x)]
                            i = qsize[_U(x)]
                            while i > 0:  # sift up
                                parent = (i - 1) >> 1
                                pq = hq[_U(base + parent)]
                                pt = ht[_U(base + parent)]
                                if not _before(fifo, t, q, pt, pq):
                                    break
                                hq[_U(base + i)] = pq
                                ht[_U(base + i)] = pt
                                i = parent
                            hq[_U(base + i)] = q
                            ht[_U(base + i)] = t
                            qsize[_U(x)] += 1
                            if not is_ready[_U(x)]:
                                is_ready[_U(x)] = True
                                ready[_U(n_ready)] = x
                                n_ready += 1
            batch_n[_U(rg)] = 0
        if max_misses >= 0 and misses > max_misses:
            stopped = True
            break
        # 3. idle replicas pull up to max_batch queued queries
        for j in range(n_ready):
            s = ready[_U(j)]
            is_ready[_U(s)] = False
            base = heap_base[_U(s)]
            size = qsize[_U(s)]
            while free_count[_U(s)] > 0 and size > 0:
                free_count[_U(s)] -= 1
                rg = free_stack[_U(free_base[_U(s)] + free_count[_U(s)])]
                b = size if size < max_batch[_U(s)] else max_batch[_U(s)]
                off = rg * bmax
                for k in range(b):
                    batch_q[_U(off + k)] = hq[_U(base)]
                    wait_s[_U(s)] += t - ht[_U(base)]
                    size -= 1
                    if size > 0:  # move the last entry to the root and sift it down
                        lq = hq[_U(base + size)]
                        lt = ht[_U(base + size)]
                        i = 0
                        while True:
                            child = 2 * i + 1
                            if child >= size:
                                break
                            cq = hq[_U(base + child)]
                            ct = ht[_U(base + child)]
                            if child + 1 < size:
                                rq = hq[_U(base + child + 1)]
                                rt = ht[_U(base + child + 1)]
                                if _before(fifo, rt, rq, ct, cq):
                                    child += 1
                                    cq = rq
                                    ct = rt
                            if not _before(fifo, ct, cq, lt, lq):
                                break
                            hq[_U(base + i)] = cq
                            ht[_U(base + i)] = ct
                            i = child
                        hq[_U(base + i)] = lq
                        ht[_U(base + i)] = lt
                batch_n[_U(rg)] = b
                service = latency[_U(s), _U(b)]
                if scaled:  # variable service time, drawn for the batch's first query
                    service *= np.exp(sigma[_U(s), _U(b)] * log_scale[_U(batch_q[_U(off)] * S + s)])
                busy_s[_U(s)] += service
                visits[_U(s)] += b
                batches[_U(s)] += 1
                # schedule the completion: sift (t + service, seq, rg) up the event heap
                t_done = t + service
                i = esize
                while i > 0:
                    parent = (i - 1) >> 1
                    if not (
                        t_done < et[_U(parent)]
                        or (t_done == et[_U(parent)] and seq < es[_U(parent)])
                    ):
                        break
                    et[_U(i)] = et[_U(parent)]
                    es[_U(i)] = es[_U(parent)]
                    er[_U(i)] = er[_U(parent)]
                    i = parent
                et[_U(i)] = t_done
                es[_U(i)] = seq
                er[_U(i)] = rg
                esize += 1
                seq += 1
            qsize[_U(s)] = size
        n_ready = 0
    return finish, busy_s, wait_s, visits, batches, misses, stopped
