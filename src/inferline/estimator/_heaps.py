"""The simulator's two binary heaps, written once: stage queues and the event heap.

Every function here is compiled inline into its caller (``inline="always"``). The
kernel that calls them in its hot loop is compiled without numba's reference counting
(``_nrt=False``): numba would otherwise add atomic reference-count updates for every
array passed to an inlined helper, which costs more than the heap work itself.

Stage queues are binary heaps of (query, enqueue time) pairs, stage s in its own slice
``[heap_base[s], heap_base[s] + stage_capacity[s])`` of two shared arrays ``hq``/``ht``;
their order is :func:`_before`. The event heap holds (time, sequence, code) triples
ordered by time, then sequence (so events at one instant fire in creation order).

Array indices are cast to unsigned (``_U``): numba then omits the negative-index
wraparound it emits for signed ones, which frees registers in the large loops (~15 %).
"""

from __future__ import annotations

import numpy as np
from numba import njit

_U = np.uint64


@njit(cache=True, inline="always")
def _before(fifo: bool, t_a: float, q_a: int, t_b: float, q_b: int) -> bool:
    """Queue order of (enqueue time, query) entries: EDF by query index, FIFO by time then index."""
    if fifo:
        return t_a < t_b or (t_a == t_b and q_a < q_b)
    return q_a < q_b


@njit(cache=True, inline="always")
def queue_push(hq, ht, base, size, fifo, t, q):  # type: ignore[no-untyped-def]
    """Add (q, t) to the queue of ``size`` entries at ``base`` (the caller counts it)."""
    i = size
    while i > 0:
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


@njit(cache=True, inline="always")
def queue_pop(hq, ht, base, size, fifo):  # type: ignore[no-untyped-def]
    """Remove the head of the queue of ``size`` entries at ``base``; returns the new size."""
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
    return size


@njit(cache=True, inline="always")
def event_push(et, es, er, size, t, seq, code):  # type: ignore[no-untyped-def]
    """Add event (t, seq, code) to the event heap of ``size`` entries (the caller counts it)."""
    i = size
    while i > 0:
        parent = (i - 1) >> 1
        if not (t < et[_U(parent)] or (t == et[_U(parent)] and seq < es[_U(parent)])):
            break
        et[_U(i)] = et[_U(parent)]
        es[_U(i)] = es[_U(parent)]
        er[_U(i)] = er[_U(parent)]
        i = parent
    et[_U(i)] = t
    es[_U(i)] = seq
    er[_U(i)] = code


@njit(cache=True, inline="always")
def event_pop(et, es, er, size):  # type: ignore[no-untyped-def]
    """Remove the earliest event from the event heap of ``size`` entries; returns the new size."""
    size -= 1
    if size > 0:  # move the last event to the root and sift it down
        lt = et[_U(size)]
        ls = es[_U(size)]
        lr = er[_U(size)]
        i = 0
        while True:
            child = 2 * i + 1
            if child >= size:
                break
            if child + 1 < size and (
                et[_U(child + 1)] < et[_U(child)]
                or (et[_U(child + 1)] == et[_U(child)] and es[_U(child + 1)] < es[_U(child)])
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
    return size
