"""A resumable variant of the Estimator kernel whose replica counts change during a run.

Same semantics and event order as :func:`inferline.estimator._kernel.run_kernel`
(arrivals at t, then batch completions at t, then dispatch), plus replica
activations, which are processed with the completions at their instant (a
replica activated at t can take a batch at t). The fixed-replica kernel is left
untouched so that the Planner's hot path keeps its speed; this one keeps every
piece of state in arrays owned by the caller, so a Python driver can run it in
time slices (``advance`` processes every event strictly before ``t_stop``) and
change replica counts between slices (``set_target``).

Replica slots of stage s live in ``[slot_base[s], slot_base[s] + slot_cap[s])``
with a status:

* ``OFF`` – unused;
* ``STARTING`` – added, billed, serves only once its activation event fires;
* ``ACTIVE`` – serving (idle on the stage's free stack, or busy with a batch);
* ``DRAINING`` – removed while busy: finishes its batch, then turns ``OFF``
  (billed until then);
* ``CANCELLED`` – removed while starting: no longer billed, its activation
  event still pending (the slot is reused only after it fires, so a slot never
  has two events in the heap and the heap needs one entry per slot).

Event heap entries are (time, sequence, code): code ≥ 0 is a batch completion
of replica ``code``; code < 0 the activation of replica ``-code - 1``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from inferline.estimator._kernel import _before

OFF = 0
STARTING = 1
ACTIVE = 2
DRAINING = 3
CANCELLED = 4

# indices into the int64 scalar-state array
AI = 0  # next arrival to admit
ESIZE = 1  # events in the heap
SEQ = 2  # next event sequence number
MISSES = 3  # queries finished later than the SLO
N_SCALARS = 4


@njit(cache=True)
def _push_event(et, es, er, scal, t, code):  # type: ignore[no-untyped-def]
    i = scal[ESIZE]
    seq = scal[SEQ]
    while i > 0:
        parent = (i - 1) >> 1
        if not (t < et[parent] or (t == et[parent] and seq < es[parent])):
            break
        et[i] = et[parent]
        es[i] = es[parent]
        er[i] = er[parent]
        i = parent
    et[i] = t
    es[i] = seq
    er[i] = code
    scal[ESIZE] += 1
    scal[SEQ] += 1


@njit(cache=True)
def _push_queue(hq, ht, base, size, fifo, t, q):  # type: ignore[no-untyped-def]
    i = size
    while i > 0:
        parent = (i - 1) >> 1
        pq = hq[base + parent]
        pt = ht[base + parent]
        if not _before(fifo, t, q, pt, pq):
            break
        hq[base + i] = pq
        ht[base + i] = pt
        i = parent
    hq[base + i] = q
    ht[base + i] = t


@njit(cache=True)
def advance(  # type: ignore[no-untyped-def]
    t_stop,  # process every event strictly before this time
    arrival,  # float64[n], sorted
    visit_mask,  # int64[n]
    pending,  # int8[n * S] (mutated)
    succ_ptr,  # int64[S + 1]
    succ_idx,  # int64[E]
    heap_base,  # int64[S]
    hq,  # int64[total]: stage queues (query)
    ht,  # float64[total]: stage queues (enqueue time)
    qsize,  # int64[S]
    status,  # int64[R]: replica slot status
    slot_stage,  # int64[R]
    free_stack,  # int64[R], stage s in [slot_base[s], ...)
    slot_base,  # int64[S]
    free_count,  # int64[S]
    batch_q,  # int64[R * bmax]
    batch_n,  # int64[R]
    removed_at,  # float64[R]: when a draining replica was removed
    drain_billed_s,  # float64[S]: replica-seconds billed to draining replicas
    et,  # float64[R]: event heap
    es,  # int64[R]
    er,  # int64[R]
    max_batch,  # int64[S]
    latency,  # float64[S, bmax + 1]
    fifo,  # bool
    slo_s,  # float
    finish,  # float64[n] (mutated)
    remaining,  # int8[n] (mutated)
    busy_s,  # float64[S]
    wait_s,  # float64[S]
    visits,  # int64[S]
    batches,  # int64[S]
    scal,  # int64[N_SCALARS]
    ready,  # int64[S]
    is_ready,  # bool[S]
):
    n = arrival.shape[0]
    S = qsize.shape[0]
    bmax = latency.shape[1] - 1
    inf = np.inf
    ai = scal[AI]
    n_ready = 0
    while True:
        ta = arrival[ai] if ai < n else inf
        te = et[0] if scal[ESIZE] > 0 else inf
        t = ta if ta < te else te
        if t >= t_stop or t == inf:
            break
        # 1. arrivals at t
        while ai < n and arrival[ai] == t:
            q = ai
            m = visit_mask[q]
            count = 0
            s = 0
            while m != 0:
                if m & 1:
                    count += 1
                    if pending[q * S + s] == 0:
                        _push_queue(hq, ht, heap_base[s], qsize[s], fifo, t, q)
                        qsize[s] += 1
                        if not is_ready[s]:
                            is_ready[s] = True
                            ready[n_ready] = s
                            n_ready += 1
                m >>= 1
                s += 1
            remaining[q] = count
            ai += 1
        # 2. completions and activations at t
        while scal[ESIZE] > 0 and et[0] == t:
            code = er[0]
            esize = scal[ESIZE] - 1
            scal[ESIZE] = esize
            if esize > 0:
                lt = et[esize]
                ls = es[esize]
                lr = er[esize]
                i = 0
                while True:
                    child = 2 * i + 1
                    if child >= esize:
                        break
                    if child + 1 < esize and (
                        et[child + 1] < et[child]
                        or (et[child + 1] == et[child] and es[child + 1] < es[child])
                    ):
                        child += 1
                    if not (et[child] < lt or (et[child] == lt and es[child] < ls)):
                        break
                    et[i] = et[child]
                    es[i] = es[child]
                    er[i] = er[child]
                    i = child
                et[i] = lt
                es[i] = ls
                er[i] = lr
            if code < 0:  # activation
                rg = -code - 1
                s = slot_stage[rg]
                if status[rg] == STARTING:
                    status[rg] = ACTIVE
                    free_stack[slot_base[s] + free_count[s]] = rg
                    free_count[s] += 1
                    if not is_ready[s]:
                        is_ready[s] = True
                        ready[n_ready] = s
                        n_ready += 1
                else:  # cancelled while starting
                    status[rg] = OFF
                continue
            rg = code
            s = slot_stage[rg]
            if status[rg] == DRAINING:
                status[rg] = OFF
                drain_billed_s[s] += t - removed_at[rg]
            else:
                free_stack[slot_base[s] + free_count[s]] = rg
                free_count[s] += 1
                if not is_ready[s]:
                    is_ready[s] = True
                    ready[n_ready] = s
                    n_ready += 1
            k0 = succ_ptr[s]
            k1 = succ_ptr[s + 1]
            off = rg * bmax
            for j in range(batch_n[rg]):
                q = batch_q[off + j]
                remaining[q] -= 1
                if remaining[q] == 0:
                    finish[q] = t
                    if t - arrival[q] > slo_s:
                        scal[MISSES] += 1
                    continue
                m = visit_mask[q]
                for k in range(k0, k1):
                    x = succ_idx[k]
                    if (m >> x) & 1:
                        px = q * S + x
                        pending[px] -= 1
                        if pending[px] == 0:
                            _push_queue(hq, ht, heap_base[x], qsize[x], fifo, t, q)
                            qsize[x] += 1
                            if not is_ready[x]:
                                is_ready[x] = True
                                ready[n_ready] = x
                                n_ready += 1
            batch_n[rg] = 0
        # 3. idle replicas pull up to max_batch queued queries
        for j in range(n_ready):
            s = ready[j]
            is_ready[s] = False
            base = heap_base[s]
            size = qsize[s]
            while free_count[s] > 0 and size > 0:
                free_count[s] -= 1
                rg = free_stack[slot_base[s] + free_count[s]]
                b = size if size < max_batch[s] else max_batch[s]
                off = rg * bmax
                for k in range(b):
                    batch_q[off + k] = hq[base]
                    wait_s[s] += t - ht[base]
                    size -= 1
                    if size > 0:
                        lq = hq[base + size]
                        lt = ht[base + size]
                        i = 0
                        while True:
                            child = 2 * i + 1
                            if child >= size:
                                break
                            cq = hq[base + child]
                            ct = ht[base + child]
                            if child + 1 < size:
                                rq = hq[base + child + 1]
                                rt = ht[base + child + 1]
                                if _before(fifo, rt, rq, ct, cq):
                                    child += 1
                                    cq = rq
                                    ct = rt
                            if not _before(fifo, ct, cq, lt, lq):
                                break
                            hq[base + i] = cq
                            ht[base + i] = ct
                            i = child
                        hq[base + i] = lq
                        ht[base + i] = lt
                batch_n[rg] = b
                service = latency[s, b]
                busy_s[s] += service
                visits[s] += b
                batches[s] += 1
                _push_event(et, es, er, scal, t + service, rg)
            qsize[s] = size
        n_ready = 0
    scal[AI] = ai


@njit(cache=True)
def set_target(  # type: ignore[no-untyped-def]
    s,  # stage
    target,  # replicas wanted (starting + active)
    t,  # now
    activation_s,  # delay before an added replica serves
    status,
    slot_base,
    slot_cap,
    free_stack,
    free_count,
    removed_at,
    et,
    es,
    er,
    scal,
):
    """Move stage ``s`` to ``target`` replicas at time ``t``; returns (added, removed).

    Removal order: replicas still starting (newest first), then idle ones, then
    busy ones, which drain (finish their batch). Adding stops early only if the
    stage has no free slot (the caller sizes the slots so that it does not happen).
    """
    b0 = slot_base[s]
    b1 = b0 + slot_cap[s]
    current = 0
    for rg in range(b0, b1):
        if status[rg] == STARTING or status[rg] == ACTIVE:
            current += 1
    added = 0
    removed = 0
    while current < target:
        slot = -1
        for rg in range(b0, b1):
            if status[rg] == OFF:
                slot = rg
                break
        if slot < 0:
            break
        status[slot] = STARTING
        _push_event(et, es, er, scal, t + activation_s, -slot - 1)
        current += 1
        added += 1
    while current > target:
        victim = -1
        for rg in range(b1 - 1, b0 - 1, -1):  # a starting replica first
            if status[rg] == STARTING:
                victim = rg
                break
        if victim >= 0:
            status[victim] = CANCELLED
        elif free_count[s] > 0:  # then an idle one
            free_count[s] -= 1
            victim = free_stack[b0 + free_count[s]]
            status[victim] = OFF
        else:  # then a busy one, which finishes its batch first
            for rg in range(b0, b1):
                if status[rg] == ACTIVE:
                    victim = rg
                    break
            if victim < 0:
                break
            status[victim] = DRAINING
            removed_at[victim] = t
        current -= 1
        removed += 1
    return added, removed
