"""Time one stage on one hardware type across batch sizes, in its replica worker."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from inferline.profiler._errors import ProfilerError
from inferline.profiler._harness import StageWorker
from inferline.profiler._stats import LatencySummary, RepetitionPolicy, summarise

__all__ = ["measure_batch_size", "measure_stage"]


class _Pool:
    """Captured inputs handed out in turn, so consecutive batches hold different queries."""

    def __init__(self, items: Sequence[Any]) -> None:
        if not items:
            raise ValueError("no captured inputs")
        self._items = list(items)
        self._next = 0

    def take(self, count: int) -> list[Any]:
        n = len(self._items)
        out = [self._items[(self._next + k) % n] for k in range(count)]
        self._next = (self._next + count) % n
        return out


async def measure_batch_size(
    worker: StageWorker,
    pool: _Pool,
    batch_size: int,
    policy: RepetitionPolicy,
    *,
    timeout_s: float = 300.0,
    on_rep: Callable[[], None] | None = None,
) -> LatencySummary:
    """Warm up, then time batches of ``batch_size`` back to back as ``policy`` says."""
    for _ in range(policy.warmup):
        await _checked(worker, pool.take(batch_size), timeout_s)
    round_trips: list[float] = []
    predicts: list[float] = []
    timed_s = 0.0
    while policy.more(len(round_trips), timed_s):
        if policy.idle_s > 0:
            await asyncio.sleep(policy.idle_s)
        run = await _checked(worker, pool.take(batch_size), timeout_s)
        timed_s += run.round_trip_s
        round_trips.append(run.round_trip_s)
        predicts.append(run.predict_s)
        if on_rep is not None:
            on_rep()
    return summarise(round_trips, predicts)


async def _checked(worker: StageWorker, items: list[Any], timeout_s: float) -> Any:
    run = await worker.run(items, timeout_s)
    errors = [e for _, _, _, e in run.results if e is not None]
    if errors:
        raise ProfilerError(
            f"stage '{worker.stage}' ({worker.model}) failed on a captured input while being "
            f"timed: {errors[0]}",
            stage=worker.stage,
        )
    return run


async def measure_stage(
    worker: StageWorker,
    inputs: Sequence[Any],
    batch_sizes: Sequence[int],
    policy: RepetitionPolicy,
    *,
    timeout_s: float = 300.0,
    on_size: Callable[[int, LatencySummary], None] | None = None,
) -> dict[int, LatencySummary]:
    """All batch sizes, timed in rounds (one batch of each size per round, each size until
    ``policy`` is satisfied), with inputs drawn from ``inputs``.

    Rounds spread every size's repetitions over the whole measurement, so a slow spell of
    the machine (other jobs, a busy memory bus) weighs on all sizes alike instead of
    distorting the one that happened to be timed then.
    """
    pool = _Pool(inputs)
    for b in batch_sizes:
        for _ in range(policy.warmup):
            await _checked(worker, pool.take(b), timeout_s)
    round_trips: dict[int, list[float]] = {b: [] for b in batch_sizes}
    predicts: dict[int, list[float]] = {b: [] for b in batch_sizes}
    timed_s = dict.fromkeys(batch_sizes, 0.0)
    out: dict[int, LatencySummary] = {}
    active = list(batch_sizes)
    while active:
        for b in list(active):
            if not policy.more(len(round_trips[b]), timed_s[b]):
                active.remove(b)
                out[b] = summarise(round_trips[b], predicts[b])
                if on_size is not None:
                    on_size(b, out[b])
                continue
            if policy.idle_s > 0:
                await asyncio.sleep(policy.idle_s)
            run = await _checked(worker, pool.take(b), timeout_s)
            round_trips[b].append(run.round_trip_s)
            predicts[b].append(run.predict_s)
            timed_s[b] += run.round_trip_s
    return {b: out[b] for b in batch_sizes}
