"""The compiled discrete-event core: one central batched queue per stage.

One kernel serves both a fixed configuration (:meth:`Estimator.run`, one call up
to t = ∞) and replica counts that change during a run (``simulate_timevarying``:
``advance`` in time slices, ``set_target`` between them). Every piece of state
lives in arrays owned by the caller (``_run.KernelRun``).

Event order within one instant is fixed so that results never depend on the
order events were created in: first every arrival at time t, then every batch
completion and replica activation at t (routing finished queries to their next
stages; a replica activated at t can take a batch at t), and only then do idle
replicas pull batches. A batch that finishes at t therefore reaches the next
stage as a whole, as it does in the engine.

Service time: the profiled latency of the actual batch size, optionally times
a random multiplier exp(sigma[s, b] * log_scale[q, s]) drawn per (query, stage)
and applied per batch through its first query (see ``Estimator``'s
``service_time``).

Shared cores (processor sharing): a stage with ``demand[s] > 0`` runs on the
machine's ``cores`` together with every other such stage, in one of C run queues
(``clag.shape[0]``):

* C = 1, ``fair``: one queue for all the cores. Each busy batch asks for
  ``demand[s]`` cores (its replica's threads); while the busy batches ask for
  D > cores, every one of them runs at cores / D of its full speed.
* C > 1, ``per-core``: a queue per core, as an OS scheduler keeps them. A
  starting batch joins the queue with the fewest batches; the k batches of one
  queue share its core (each at 1 / k of its speed), so three batches on two
  cores run at 1/2, 1/2 and 1, not 2/3 each. A core whose queue stays empty for
  ``balance_s`` while another queue holds two or more takes one of them (the
  scheduler's load balancing, which does not act at once on a machine whose
  cores keep waking for short tasks; 0: at once). While every core is busy each
  gives the replicas ``cores`` / C of its time (the rest goes to the front-end).

The batches of one queue progress at the same rate, so a virtual clock V_c per
queue orders their completions: a batch of work w started at virtual time V0
finishes when V_c reaches V0 + w, whatever the rate does in between. Each queue
is a heap keyed by virtual time (slice ``[c * R, c * R + csize[c])`` of
``vt``/``vs``/``vr``); the real time of its next completion is recomputed from its
current rate at every step. V_c is kept as its lag behind real time (t − V_c),
which only grows while the core is oversubscribed: at full speed a batch then
finishes at exactly its start plus its service time, as on dedicated hardware. A
stage with ``demand[s] == 0`` has dedicated hardware (a GPU, another host) and
its completions are ordinary events.

Queue keys: EDF orders by the query's pipeline deadline (arrival + SLO, i.e. by
arrival time since the SLO is common); FIFO by the time the query reached the
stage. Ties break on query index, so every run is deterministic.

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

Event heap entries are (time, sequence, code): 0 ≤ code < R is a batch
completion of replica ``code``; code < 0 the activation of replica ``-code - 1``;
code ≥ R the balancing check of run queue ``code - R`` (one pending per queue).

Implementation notes (speed only; the semantics above are the contract):
arrivals are sorted, so EDF's (arrival time, query) order is plain query-index
order and the EDF heap compares integers only; a FIFO key is the time the
query reached the stage, which is also its enqueue time. Only stages whose
queue grew or whose replica came free at an instant are considered for
dispatch (the order in which stages dispatch within an instant cannot change
any result: queue order depends only on the queued keys, and batches finishing
at the same instant are all routed before any dispatch). ``advance`` allocates
nothing and is compiled without reference counting (``_nrt=False``), so the
inlined heap helpers (``_heaps.py``) cost what written-out code would.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from inferline.estimator._heaps import _U, event_pop, event_push, queue_pop, queue_push

# replica slot status
OFF = 0
STARTING = 1
ACTIVE = 2
DRAINING = 3
CANCELLED = 4

# indices into the int64 scalar-state array
AI = 0  # next arrival to admit
ESIZE = 1  # events in the heap
SEQ = 2  # next event sequence number
MISSES = 3  # queries finished later than slo_s
STOPPED = 4  # 1 once more than max_misses queries missed
VSIZE = 5  # batches in the shared-core run queues, all together
N_SCALARS = 6

# indices into the float64 shared-core state array
LAG_AT = 0  # the real time the run queues' lags were last brought up to
N_FSCALARS = 1


@njit(cache=True, inline="always")
def _mark_ready(ready, is_ready, n_ready, s):  # type: ignore[no-untyped-def]
    """Note that stage ``s`` may start a batch at this instant; returns the new count."""
    if not is_ready[_U(s)]:
        is_ready[_U(s)] = True
        ready[_U(n_ready)] = s
        n_ready += 1
    return n_ready


# _nrt=False: no reference counting (numba accepts it; its type stubs do not list it)
@njit(cache=True, _nrt=False)  # type: ignore[call-overload]
def advance(  # type: ignore[no-untyped-def]
    t_stop,  # process every event strictly before this time
    arrival,  # float64[n], sorted
    visit_mask,  # int64[n], bit s set = the query visits stage s
    pending,  # int8[n * S] (mutated): visited predecessors not finished, entry q * S + s
    succ_ptr,  # int64[S + 1]
    succ_idx,  # int64[E]
    heap_base,  # int64[S]: stage s's queue in [heap_base[s], ...) of hq/ht
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
    log_scale,  # float64[n * S] or empty: per-(query, stage) log service-time multipliers
    sigma,  # float64[S, bmax + 1]: spread applied to log_scale (batch b at stage s)
    fifo,  # bool
    slo_s,  # float, for counting misses (inf = none)
    max_misses,  # int, stop once more queries than this missed (-1 = never stop)
    finish,  # float64[n] (mutated)
    remaining,  # int8[n] (mutated): visited stages not finished yet (<= 62)
    busy_s,  # float64[S]
    wait_s,  # float64[S]
    visits,  # int64[S]
    batches,  # int64[S]
    scal,  # int64[N_SCALARS]
    ready,  # int64[S]: stages that may start a batch at this instant
    is_ready,  # bool[S]
    cores,  # float: cores the shared-core stages share (inf: none shared)
    demand,  # float64[S]: cores a busy batch of stage s asks for (0: dedicated hardware)
    vt,  # float64[C * R]: run queues (virtual finish time), queue c at c * R
    vs,  # int64[C * R]
    vr,  # int64[C * R]
    csize,  # int64[C]: batches in each run queue
    clag,  # float64[C]: each queue's real time minus its virtual time
    cdemand,  # float64[C]: cores the batches of each queue ask for
    crate,  # float64[C]: scratch, each queue's current rate
    cbalance,  # int64[C]: 0, or 1 while a balancing check is pending, 2 once it found the core idle
    balance_s,  # float: how long a core stays idle before it takes a waiting batch
    fscal,  # float64[N_FSCALARS]
):
    n = arrival.shape[0]
    S = qsize.shape[0]
    R = status.shape[0]
    C = clag.shape[0]
    per_core = C > 1
    cap = 1.0 if per_core else cores  # cores one run queue has
    bmax = latency.shape[1] - 1
    scaled = log_scale.shape[0] > 0
    inf = np.inf
    ai = scal[AI]
    esize = scal[ESIZE]
    seq = scal[SEQ]
    misses = scal[MISSES]
    vsize = scal[VSIZE]
    lag_at = fscal[LAG_AT]
    n_ready = 0
    while True:
        ta = arrival[_U(ai)] if ai < n else inf
        te = et[_U(0)] if esize > 0 else inf
        t = ta if ta < te else te
        tv = inf
        vcore = -1  # the run queue whose next completion is the earliest
        if vsize > 0:
            share = 1.0  # per core, while every core is busy: the front-end takes the rest
            if per_core and cores < C:
                busy_cores = 0
                for c in range(C):
                    if csize[_U(c)] > 0:
                        busy_cores += 1
                if busy_cores == C:
                    share = cores / C
            for c in range(C):
                if csize[_U(c)] == 0:
                    continue
                d = cdemand[_U(c)]
                rate = share * (cap / d if d > cap else 1.0)
                crate[_U(c)] = rate
                root = vt[_U(c * R)]
                if rate == 1.0:  # full speed: exact, so ample cores reproduce dedicated ones
                    tc = root + clag[_U(c)]
                else:
                    tc = lag_at + (root + clag[_U(c)] - lag_at) / rate
                if tc < tv:
                    tv = tc
                    vcore = c
            if tv < t:
                t = tv
        if t >= t_stop or t == inf:
            break
        if vsize > 0:
            for c in range(C):
                if csize[_U(c)] > 0 and crate[_U(c)] != 1.0:
                    clag[_U(c)] += (t - lag_at) * (1.0 - crate[_U(c)])
        lag_at = t
        # the batch whose completion set t finishes now, whatever the rounding of the lag
        vdue = vt[_U(vcore * R)] if vcore >= 0 and t == tv else -inf
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
                        queue_push(hq, ht, heap_base[_U(s)], qsize[_U(s)], fifo, t, q)
                        qsize[_U(s)] += 1
                        n_ready = _mark_ready(ready, is_ready, n_ready, s)
                m >>= 1
                s += 1
            remaining[_U(q)] = count
            ai += 1
        # 2. activations and batch completions at t
        while True:
            if esize > 0 and et[_U(0)] == t:
                code = er[_U(0)]
                esize = event_pop(et, es, er, 0, esize)
                if code >= R:  # a balancing check: still idle, the core takes a batch
                    c = code - R
                    cbalance[_U(c)] = 2 if csize[_U(c)] == 0 else 0
                    continue
            else:
                done = -1  # a run queue whose first batch's work is done
                if vsize > 0:
                    for c in range(C):
                        if csize[_U(c)] > 0:
                            root = vt[_U(c * R)]
                            if (c == vcore and root <= vdue) or root + clag[_U(c)] <= t:
                                done = c
                                break
                if done < 0:
                    break
                base = done * R
                code = vr[_U(base)]
                csize[_U(done)] = event_pop(vt, vs, vr, base, csize[_U(done)])
                vsize -= 1
                cdemand[_U(done)] -= demand[_U(slot_stage[_U(code)])]
                if csize[_U(done)] == 0:
                    cdemand[_U(done)] = 0.0  # no rounding left over once nothing runs
            if code < 0:  # activation
                rg = -code - 1
                s = slot_stage[_U(rg)]
                if status[_U(rg)] == STARTING:
                    status[_U(rg)] = ACTIVE
                    free_stack[_U(slot_base[_U(s)] + free_count[_U(s)])] = rg
                    free_count[_U(s)] += 1
                    n_ready = _mark_ready(ready, is_ready, n_ready, s)
                else:  # cancelled while starting
                    status[_U(rg)] = OFF
                continue
            rg = code
            s = slot_stage[_U(rg)]
            if status[_U(rg)] == DRAINING:
                status[_U(rg)] = OFF
                drain_billed_s[_U(s)] += t - removed_at[_U(rg)]
            else:
                free_stack[_U(slot_base[_U(s)] + free_count[_U(s)])] = rg
                free_count[_U(s)] += 1
                n_ready = _mark_ready(ready, is_ready, n_ready, s)
            # route the batch's queries on
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
                            queue_push(hq, ht, heap_base[_U(x)], qsize[_U(x)], fifo, t, q)
                            qsize[_U(x)] += 1
                            n_ready = _mark_ready(ready, is_ready, n_ready, x)
            batch_n[_U(rg)] = 0
        if max_misses >= 0 and misses > max_misses:
            scal[STOPPED] = 1
            break
        # 3. idle replicas pull up to max_batch queued queries
        for j in range(n_ready):
            s = ready[_U(j)]
            is_ready[_U(s)] = False
            base = heap_base[_U(s)]
            size = qsize[_U(s)]
            while free_count[_U(s)] > 0 and size > 0:
                free_count[_U(s)] -= 1
                rg = free_stack[_U(slot_base[_U(s)] + free_count[_U(s)])]
                b = size if size < max_batch[_U(s)] else max_batch[_U(s)]
                off = rg * bmax
                for k in range(b):
                    batch_q[_U(off + k)] = hq[_U(base)]
                    wait_s[_U(s)] += t - ht[_U(base)]
                    size = queue_pop(hq, ht, base, size, fifo)
                batch_n[_U(rg)] = b
                service = latency[_U(s), _U(b)]
                if scaled:  # variable service time, drawn for the batch's first query
                    service *= np.exp(sigma[_U(s), _U(b)] * log_scale[_U(batch_q[_U(off)] * S + s)])
                busy_s[_U(s)] += service
                visits[_U(s)] += b
                batches[_U(s)] += 1
                if demand[_U(s)] > 0.0:  # shared cores: finishes after `service` of work
                    c = 0
                    for x in range(1, C):  # the run queue with the fewest batches
                        if csize[_U(x)] < csize[_U(c)]:
                            c = x
                    event_push(
                        vt, vs, vr, c * R, csize[_U(c)], (t - clag[_U(c)]) + service, seq, rg
                    )
                    csize[_U(c)] += 1
                    vsize += 1
                    cdemand[_U(c)] += demand[_U(s)]
                    if cbalance[_U(c)] == 2:  # busy again: a later idle spell waits anew
                        cbalance[_U(c)] = 0
                else:
                    event_push(et, es, er, 0, esize, t + service, seq, rg)
                    esize += 1
                seq += 1
            qsize[_U(s)] = size
        n_ready = 0
        # 4. an idle core takes a batch from the longest run queue (per-core sharing)
        while per_core and vsize > 0:
            idle = -1
            longest = 0
            for c in range(C):
                if csize[_U(c)] == 0 and idle < 0 and (balance_s == 0.0 or cbalance[_U(c)] != 1):
                    idle = c
                if csize[_U(c)] > csize[_U(longest)]:
                    longest = c
            if idle < 0 or csize[_U(longest)] < 2:
                break
            if balance_s > 0.0 and cbalance[_U(idle)] == 0:  # look again once it stayed idle
                event_push(et, es, er, 0, esize, t + balance_s, seq, R + idle)
                esize += 1
                seq += 1
                cbalance[_U(idle)] = 1
                continue
            cbalance[_U(idle)] = 0
            base = longest * R
            code = vr[_U(base)]
            left = vt[_U(base)] - (t - clag[_U(longest)])  # work still to do
            moved_seq = vs[_U(base)]
            csize[_U(longest)] = event_pop(vt, vs, vr, base, csize[_U(longest)])
            event_push(vt, vs, vr, idle * R, 0, (t - clag[_U(idle)]) + left, moved_seq, code)
            csize[_U(idle)] = 1
            moved = demand[_U(slot_stage[_U(code)])]
            cdemand[_U(longest)] -= moved
            cdemand[_U(idle)] = moved
    scal[AI] = ai
    scal[ESIZE] = esize
    scal[SEQ] = seq
    scal[MISSES] = misses
    scal[VSIZE] = vsize
    fscal[LAG_AT] = lag_at


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
        event_push(et, es, er, 0, scal[ESIZE], t + activation_s, scal[SEQ], -slot - 1)
        scal[ESIZE] += 1
        scal[SEQ] += 1
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
