"""Failed batches in the server log, at most one line per stage per interval.

A stage that fails every batch under load would otherwise write hundreds of lines a
second; the limiter writes the first failure, counts the ones it holds back, and
reports that count with the next line it writes. The clock is injected (unit tests).
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["FailureLog"]


class FailureLog:
    """Decides which failure lines to write: ``line()`` returns one, or ``None`` (held back)."""

    __slots__ = ("_clock", "_held", "_last_s", "interval_s")

    def __init__(self, interval_s: float = 1.0, clock: Callable[[], float] = time.monotonic):
        if interval_s < 0:
            raise ValueError(f"interval_s must be >= 0, got {interval_s}")
        self.interval_s = interval_s
        self._clock = clock
        self._last_s: dict[str, float] = {}
        self._held: dict[str, tuple[int, int]] = {}  # stage -> (batches, queries) held back

    def line(self, stage: str, kind: str, error: str, n_queries: int) -> str | None:
        """The log line for a failure of ``n_queries`` queries at ``stage``, or ``None``."""
        now = self._clock()
        last = self._last_s.get(stage)
        if last is not None and now - last < self.interval_s:
            batches, queries = self._held.get(stage, (0, 0))
            self._held[stage] = (batches + 1, queries + n_queries)
            return None
        self._last_s[stage] = now
        text = (
            f"stage '{stage}' failed {n_queries} "
            f"quer{'y' if n_queries == 1 else 'ies'} ({kind}): {error}"
        )
        batches, queries = self._held.pop(stage, (0, 0))
        if batches:
            text += (
                f" [{batches} more failure{'s' if batches != 1 else ''} of this stage "
                f"({queries} quer{'y' if queries == 1 else 'ies'}) not logged since the last line]"
            )
        return text
