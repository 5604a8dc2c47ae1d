"""One stage's central queue and its dispatch decisions, free of I/O and of the wall clock.

The Estimator's semantics (docs/estimator.md) hold here: one queue shared by all of a
stage's replicas, earliest deadline first (deadline = pipeline arrival + SLO; ties by
arrival order), and an idle replica takes up to ``batch_size`` queued queries at once
without waiting for a batch to fill. The clock is injected so tests need no sleeps.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from inferline.engine._admission import BatchTimes

__all__ = ["Assignment", "StageDispatcher", "StageQueue"]

T = TypeVar("T")
R = TypeVar("R", bound=Hashable)


class StageQueue(Generic[T]):
    """Bounded EDF queue: pops the smallest (deadline, arrival sequence) first."""

    __slots__ = ("_heap", "_tiebreak", "max_length")

    def __init__(self, max_length: int) -> None:
        if max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length}")
        self.max_length = max_length
        self._heap: list[tuple[float, int, int, T]] = []
        self._tiebreak = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, item: T, deadline_s: float, seq: int) -> bool:
        """Queue ``item``; False (and nothing queued) when the queue is full."""
        if len(self._heap) >= self.max_length:
            return False
        heapq.heappush(self._heap, (deadline_s, seq, next(self._tiebreak), item))
        return True

    def count_ahead(self, deadline_s: float, seq: int) -> int:
        """Queued items that leave before one keyed (``deadline_s``, ``seq``) would."""
        key = (deadline_s, seq)
        return sum(1 for entry in self._heap if (entry[0], entry[1]) < key)

    def pop(self) -> tuple[float, T]:
        deadline_s, _, _, item = heapq.heappop(self._heap)
        return deadline_s, item

    def drain(self) -> list[T]:
        """Remove and return everything, in queue order."""
        items = [entry[3] for entry in sorted(self._heap)]
        self._heap.clear()
        return items


@dataclass(frozen=True, slots=True)
class Assignment(Generic[T, R]):
    """What one dispatch round decided: batches per replica, and queries shed."""

    batches: list[tuple[R, list[T]]] = field(default_factory=list)
    shed: list[T] = field(default_factory=list)


class StageDispatcher(Generic[T, R]):
    """Hands queued queries to idle replicas of one stage.

    Replicas are opaque hashable handles. ``alive(item)`` drops queries already answered
    elsewhere (another branch failed) without dispatching them. With ``shed_late`` a query
    that would finish after its deadline even if served now (now + the observed time of a
    batch of the size being formed + ``path_s``, the rest of its path) is returned in
    ``shed`` instead of being dispatched. ``times`` holds the observed batch times.
    """

    def __init__(
        self,
        batch_size: int,
        max_queue: int,
        clock: Callable[[], float],
        *,
        shed_late: bool = False,
        alive: Callable[[T], bool] = lambda _item: True,
        service_smoothing: float = 0.2,
    ) -> None:
        self.queue: StageQueue[T] = StageQueue(max_queue)
        self.batch_size = batch_size
        self.shed_late = shed_late
        self._clock = clock
        self._alive = alive
        self._idle: deque[R] = deque()
        self.times = BatchTimes(service_smoothing)

    @property
    def batch_size(self) -> int:
        return self._batch_size

    @batch_size.setter
    def batch_size(self, value: int) -> None:
        if value < 1:
            raise ValueError(f"batch_size must be >= 1, got {value}")
        self._batch_size = value

    @property
    def idle(self) -> tuple[R, ...]:
        return tuple(self._idle)

    def enqueue(self, item: T, deadline_s: float, seq: int) -> bool:
        return self.queue.push(item, deadline_s, seq)

    def replica_idle(self, replica: R) -> None:
        """``replica`` can take a batch (it just started or finished one)."""
        if replica not in self._idle:
            self._idle.append(replica)

    def remove_replica(self, replica: R) -> bool:
        """Stop dispatching to ``replica``; True if it was idle."""
        try:
            self._idle.remove(replica)
        except ValueError:
            return False
        return True

    def record_service(self, service_s: float, batch_size: int = 1) -> None:
        """Feed a measured batch time into the shedding estimates (exponential averages)."""
        self.times.record(batch_size, service_s)

    @property
    def service_estimate_s(self) -> float:
        """The recent batch time, whatever the batch size (0.0 before any batch)."""
        return self.times.typical_s

    def assign(self, path_s: float = 0.0) -> Assignment[T, R]:
        """Fill every idle replica with up to ``batch_size`` queries, in EDF order.

        ``path_s``: the expected service of the stages after this one on a query's path.
        """
        result: Assignment[T, R] = Assignment()
        queue = self.queue
        if not queue or not self._idle:
            return result
        now = self._clock()
        while self._idle and queue:
            limit = None
            if self.shed_late:
                limit = now + self.times.estimate_s(min(len(queue), self._batch_size)) + path_s
            batch: list[T] = []
            while queue and len(batch) < self._batch_size:
                deadline_s, item = queue.pop()
                if not self._alive(item):
                    continue
                if limit is not None and limit > deadline_s:
                    result.shed.append(item)
                    continue
                batch.append(item)
            if batch:
                result.batches.append((self._idle.popleft(), batch))
        return result
