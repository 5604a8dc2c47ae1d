"""Queue-aware admission: when would a query finish, given the work queued ahead of it?

Pure and clock-free (the engine passes ``now``), so the estimate is unit-tested on
made-up numbers. The engine sheds a query (503) when the estimate lands after its
deadline: at admission to each stage's queue (docs/engine.md, "Failures and overload").
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence

__all__ = ["BatchTimes", "EstimateError", "completion_estimate_s"]


class BatchTimes:
    """Rolling observed time of one stage's batches (dispatch to result), per batch size.

    Each batch size keeps an exponential average of its own observations, so the estimate
    follows the machine (a busy CPU, a profile that was off) within a few batches. A size
    not observed yet takes the nearest observed size's time (the larger on a tie).
    ``typical_s`` averages every batch whatever its size: the stage's current batch time.
    """

    __slots__ = ("_by_size", "_smoothing", "typical_s")

    def __init__(self, smoothing: float = 0.2) -> None:
        if not 0.0 < smoothing <= 1.0:
            raise ValueError(f"smoothing must be in (0, 1], got {smoothing}")
        self._smoothing = smoothing
        self._by_size: dict[int, float] = {}
        self.typical_s = 0.0

    def __bool__(self) -> bool:
        return bool(self._by_size)

    def record(self, batch_size: int, seconds: float) -> None:
        a = self._smoothing
        old = self._by_size.get(batch_size)
        self._by_size[batch_size] = seconds if old is None else (1 - a) * old + a * seconds
        self.typical_s = (
            seconds if self.typical_s == 0.0 else (1 - a) * self.typical_s + a * seconds
        )

    def estimate_s(self, batch_size: int) -> float:
        """Expected time of a batch of ``batch_size``; 0.0 before any observation."""
        known = self._by_size.get(batch_size)
        if known is not None:
            return known
        if not self._by_size:
            return 0.0
        nearest = min(self._by_size, key=lambda size: (abs(size - batch_size), -size))
        return self._by_size[nearest]


def completion_estimate_s(
    now_s: float,
    ahead: int,
    batch_size: int,
    free_at_s: Sequence[float],
    batch_s: Callable[[int], float],
    path_s: float = 0.0,
) -> float | None:
    """When a query with ``ahead`` queries before it (in EDF order) leaves the stage and
    the rest of its path; ``None`` when no replica can take it (nothing to estimate).

    ``free_at_s`` holds, per replica taking batches, when it can take its next one (now
    for an idle replica, the expected end of its batch for a busy one). The queue ahead
    leaves in full batches of ``batch_size``: batch ``k`` (the query's is ``ahead //
    batch_size``) goes to the replica free the ``k mod c``-th earliest, after ``k // c``
    full batches there. The query's own batch holds itself and the queries ahead of it
    that do not fill a batch. ``path_s`` adds the expected service of the stages still
    ahead on its path (their queues are not known yet, so they count as empty).
    """
    if not free_at_s:
        return None
    if ahead < 0 or batch_size < 1:
        raise ValueError(f"ahead must be >= 0 and batch_size >= 1, got {ahead}, {batch_size}")
    k, own = divmod(ahead, batch_size)
    rounds, slot = divmod(k, len(free_at_s))
    starts = sorted(max(now_s, f) for f in free_at_s)
    start_s = starts[slot] + rounds * batch_s(batch_size)
    return start_s + batch_s(own + 1) + path_s


class EstimateError:
    """How late answers came compared with their admission estimate: a margin to add.

    Keeps the last ``window`` errors (answer time − estimated finish, seconds) and, every
    ``every`` of them, sets ``margin_s`` to their ``quantile`` (never below 0). What the
    estimate misses (a batch slower than its average, a replica descheduled on a busy
    machine, the front-end's own delays) then shortens the queue admission allows.
    """

    __slots__ = ("_errors", "_every", "_quantile", "_since", "margin_s")

    def __init__(self, window: int = 500, every: int = 50, quantile: float = 0.95) -> None:
        if window < 1 or every < 1 or not 0.0 <= quantile <= 1.0:
            raise ValueError("window and every must be >= 1 and quantile in [0, 1]")
        self._errors: deque[float] = deque(maxlen=window)
        self._every = every
        self._quantile = quantile
        self._since = 0
        self.margin_s = 0.0

    def record(self, error_s: float) -> None:
        self._errors.append(error_s)
        self._since += 1
        if self._since >= self._every:
            self._since = 0
            ordered = sorted(self._errors)
            k = min(len(ordered) - 1, int(self._quantile * len(ordered)))
            self.margin_s = max(0.0, ordered[k])
