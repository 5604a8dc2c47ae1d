"""The simulator's two binary heaps, written once: stage queues and the event heap.

Every function here is compiled inline into its caller (``inline="always"``). The
kernel that calls them in its hot loop is compiled without numba's reference counting
(``_nrt=False``): numba would otherwise add atomic reference-count updates for every
array passed to an inlined helper, which costs more than the heap work itself.

Stage queues are binary heaps of (query, enqueue time) pairs, stage s in its own slice
``[heap_base[s], heap_base[s] + stage_capacity[s])`` of two shared arrays ``hq``/``ht``;
their order is :func:`_before`. The event heap holds (time, sequence, code) triples
ordered by time, then sequence (so events at one instant fire in creation order); the
shared cores' run queues are event heaps too, one slice ``[c * R, c * R + size)`` per core.

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
def event_push(et, es, er, base, size, t, seq, code):  # type: ignore[no-untyped-def]
    """Add event (t, seq, code) to the event heap of ``size`` entries at ``base`` (the caller
    counts it)."""
    i = size
    while i > 0:
        parent = (i - 1) >> 1
        pt = et[_U(base + parent)]
        if not (t < pt or (t == pt and seq < es[_U(base + parent)])):
            break
        et[_U(base + i)] = pt
        es[_U(base + i)] = es[_U(base + parent)]
        er[_U(base + i)] = er[_U(base + parent)]
        i = parent
    et[_U(base + i)] = t
    es[_U(base + i)] = seq
    er[_U(base + i)] = code


@njit(cache=True, inline="always")
def event_pop(et, es, er, base, size):  # type: ignore[no-untyped-def]
    """Remove the earliest event from the event heap of ``size`` entries at ``base``; returns
    the new size."""
    size -= 1
    if size > 0:  # move the last event to the root and sift it down
        lt = et[_U(base + size)]
        ls = es[_U(base + size)]
        lr = er[_U(base + size)]
        i = 0
        while True:
            child = 2 * i + 1
            if child >= size:
                break
            ct = et[_U(base + child)]
            cs = es[_U(base + child)]
            if child + 1 < size:
                rt = et[_U(base + child + 1)]
                rs = es[_U(base + child + 1)]
                if rt < ct or (rt == ct and rs < cs):
                    child += 1
                    ct = rt
                    cs = rs
            if not (ct < lt or (ct == lt and cs < ls)):
                break
            et[_U(base + i)] = ct
            es[_U(base + i)] = cs
            er[_U(base + i)] = er[_U(base + child)]
            i = child
        et[_U(base + i)] = lt
        es[_U(base + i)] = ls
        er[_U(base + i)] = lr
    return size
