"""The Trace value: sorted arrival times, optionally with the path each query took.

Every consumer (estimator, planner, tuner, load generator) relies on the same
invariants, so they are checked once here and the arrays are made read-only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from inferline.errors import TraceError

__all__ = ["PATH_SEPARATOR", "Trace", "arrival_problem", "normalise_path"]

#: Joins the stage names of one path in trace files ("langid+translate_de").
PATH_SEPARATOR = "+"

# Characters a stage name cannot hold and still round-trip through a trace file.
_FORBIDDEN_IN_NAME = (PATH_SEPARATOR, ",", "\n", "\r")


def arrival_problem(arrival_s: npt.NDArray[np.float64]) -> tuple[int, str] | None:
    """Return ``(index, problem)`` for the first invalid arrival, or None if all are valid.

    Shared by :class:`Trace` and the file loader so both report the same
    problems; the loader turns the index into a line number.
    """
    if arrival_s.size == 0:
        return (0, "the trace holds no arrivals; it needs at least one")
    bad = ~np.isfinite(arrival_s)
    if bad.any():
        i = int(np.argmax(bad))
        return (i, f"arrival time {float(arrival_s[i])!r} is not a finite number of seconds")
    negative = arrival_s < 0.0
    if negative.any():
        i = int(np.argmax(negative))
        return (i, f"arrival time {float(arrival_s[i])!r} is negative; times are seconds >= 0")
    if arrival_s.size > 1:
        down = arrival_s[1:] < arrival_s[:-1]
        if down.any():
            i = int(np.argmax(down)) + 1
            return (
                i,
                f"arrival time {float(arrival_s[i])!r} is earlier than the one before it "
                f"({float(arrival_s[i - 1])!r}); arrival times must be sorted (non-decreasing)",
            )
    return None


def normalise_path(stages: Sequence[str] | str, *, source: str, field: str) -> tuple[str, ...]:
    """Sort and de-duplicate one query's visited stages, rejecting unusable names."""
    if isinstance(stages, str):
        raise TraceError(
            f"a path must be a sequence of stage names, got the string {stages!r}; "
            f"wrap it in a list or split it on {PATH_SEPARATOR!r}",
            source=source,
            field=field,
        )
    names = set()
    for name in stages:
        if not isinstance(name, str) or not name or name != name.strip():
            raise TraceError(
                f"stage name {name!r} is not a non-empty string without surrounding spaces",
                source=source,
                field=field,
            )
        if any(ch in name for ch in _FORBIDDEN_IN_NAME):
            raise TraceError(
                f"stage name {name!r} contains one of {_FORBIDDEN_IN_NAME!r}, "
                "which trace files use as separators; rename the stage",
                source=source,
                field=field,
            )
        names.add(name)
    if not names:
        raise TraceError(
            "a path is empty; every query visits at least one stage",
            source=source,
            field=field,
        )
    return tuple(sorted(names))


@dataclass(frozen=True, eq=False)
class Trace:
    """Arrival times in seconds (sorted, finite, >= 0), optionally with recorded paths.

    ``path_ids[i]`` indexes ``path_table``, whose entries are the sorted names of
    the stages query ``i`` visited. Arrays are copied and made read-only, so a
    Trace never changes after construction. Equality compares arrivals and
    per-query paths (not ``source``); traces are not hashable.
    """

    arrival_s: npt.NDArray[np.float64]
    path_ids: npt.NDArray[np.int32] | None = None
    path_table: tuple[tuple[str, ...], ...] = ()
    source: str = "<memory>"

    def __post_init__(self) -> None:
        try:
            arrival_s = np.array(self.arrival_s, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise TraceError(
                f"arrival times are not numbers ({exc})", source=self.source, field="arrival_s"
            ) from None
        if arrival_s.ndim != 1:
            raise TraceError(
                f"arrival times must be a 1-D array, got shape {arrival_s.shape}",
                source=self.source,
                field="arrival_s",
            )
        problem = arrival_problem(arrival_s)
        if problem is not None:
            index, text = problem
            where = f"query {index}: " if arrival_s.size else ""
            raise TraceError(where + text, source=self.source, field="arrival_s")
        arrival_s.setflags(write=False)
        object.__setattr__(self, "arrival_s", arrival_s)
        table = tuple(tuple(entry) for entry in self.path_table)
        object.__setattr__(self, "path_table", table)
        self._check_paths(arrival_s.size, table)

    def _check_paths(self, n_queries: int, table: tuple[tuple[str, ...], ...]) -> None:
        """Validate and freeze ``path_ids`` against ``path_table``."""
        for k, entry in enumerate(table):
            if normalise_path(entry, source=self.source, field=f"path_table[{k}]") != entry:
                raise TraceError(
                    f"path {entry!r} must list distinct stage names in sorted order; "
                    "build traces with Trace.from_arrivals to normalise paths",
                    source=self.source,
                    field=f"path_table[{k}]",
                )
        if len(set(table)) != len(table):
            raise TraceError(
                "path_table lists the same path twice; each path must appear once",
                source=self.source,
                field="path_table",
            )
        if self.path_ids is None:
            if table:
                raise TraceError(
                    "path_table is given without path_ids; pass both or neither",
                    source=self.source,
                    field="path_ids",
                )
            return
        ids = np.asarray(self.path_ids)
        if ids.ndim != 1 or ids.size != n_queries:
            raise TraceError(
                f"path_ids must hold one entry per query ({n_queries}), got shape {ids.shape}",
                source=self.source,
                field="path_ids",
            )
        if not np.issubdtype(ids.dtype, np.integer):
            raise TraceError(
                f"path_ids must be integers, got dtype {ids.dtype}",
                source=self.source,
                field="path_ids",
            )
        out_of_range = (ids < 0) | (ids >= len(table))
        if out_of_range.any():
            i = int(np.argmax(out_of_range))
            raise TraceError(
                f"query {i}: path id {int(ids[i])} is outside path_table "
                f"(which has {len(table)} entries)",
                source=self.source,
                field="path_ids",
            )
        frozen = ids.astype(np.int32, copy=True)
        frozen.setflags(write=False)
        object.__setattr__(self, "path_ids", frozen)

    @classmethod
    def from_arrivals(
        cls,
        arrival_s: npt.ArrayLike,
        paths: Sequence[Sequence[str]] | None = None,
        source: str = "<memory>",
    ) -> Trace:
        """Build a trace from arrival times and, optionally, each query's visited stages.

        Paths are sorted and de-duplicated, and identical paths share one
        ``path_table`` entry (in order of first appearance).
        """
        arrivals = np.asarray(arrival_s, dtype=np.float64)
        if paths is None:
            return cls(arrivals, source=source)
        if len(paths) != arrivals.size:
            raise TraceError(
                f"got {len(paths)} paths for {arrivals.size} arrivals; give one path per query",
                source=source,
                field="paths",
            )
        # Normalise each distinct path once: a million queries share a handful of paths.
        seen: dict[tuple[str, ...], int] = {}
        table: dict[tuple[str, ...], int] = {}
        ids = np.empty(arrivals.size, dtype=np.int32)
        for i, stages in enumerate(paths):
            raw = stages if isinstance(stages, tuple) else tuple(stages)
            path_id = seen.get(raw)
            if path_id is None:
                key = normalise_path(stages, source=source, field=f"paths[{i}]")
                path_id = seen[raw] = table.setdefault(key, len(table))
            ids[i] = path_id
        return cls(arrivals, path_ids=ids, path_table=tuple(table), source=source)

    @property
    def n_queries(self) -> int:
        """Number of arrivals."""
        return int(self.arrival_s.size)

    @property
    def duration_s(self) -> float:
        """Time from the first to the last arrival (0 for a single arrival)."""
        return float(self.arrival_s[-1] - self.arrival_s[0])

    @property
    def mean_rate_qps(self) -> float:
        """Reciprocal of the mean gap: (n - 1) / duration_s.

        Counting gaps rather than arrivals makes the rate of a generated trace
        match the generator's rate and lets rescaling hit a target exactly.
        0.0 for a single arrival, inf if all arrivals share one instant.
        """
        if self.n_queries < 2:
            return 0.0
        duration_s = self.duration_s
        return (self.n_queries - 1) / duration_s if duration_s > 0 else math.inf

    def paths(self) -> list[tuple[str, ...]] | None:
        """Each query's visited stages, or None when the trace records no paths."""
        if self.path_ids is None:
            return None
        table = self.path_table
        return [table[i] for i in self.path_ids.tolist()]

    def window(self, start_s: float, end_s: float) -> Trace:
        """Queries with ``start_s <= t < end_s``, shifted so the window starts at 0.

        ``end_s`` may be ``math.inf``. Paths are kept. An empty window is a
        TraceError because a Trace always holds at least one arrival.
        """
        if not math.isfinite(start_s) or not end_s > start_s:
            raise TraceError(
                f"window [{start_s}, {end_s}) is not a finite start before a later end",
                source=self.source,
                field="window",
            )
        lo = int(np.searchsorted(self.arrival_s, start_s, side="left"))
        hi = int(np.searchsorted(self.arrival_s, end_s, side="left"))
        if hi <= lo:
            raise TraceError(
                f"window [{start_s:g}, {end_s:g}) s holds no arrivals "
                f"(the trace spans {self.arrival_s[0]:g} to {self.arrival_s[-1]:g} s); "
                "choose a window that overlaps it",
                source=self.source,
                field="window",
            )
        ids = None if self.path_ids is None else self.path_ids[lo:hi]
        return Trace(
            self.arrival_s[lo:hi] - start_s,
            ids,
            self.path_table,
            f"{self.source} [{start_s:g}, {end_s:g}) s",
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Trace):
            return NotImplemented
        if not np.array_equal(self.arrival_s, other.arrival_s):
            return False
        if self.path_ids is None or other.path_ids is None:
            return self.path_ids is None and other.path_ids is None
        if self.path_table == other.path_table:
            return bool(np.array_equal(self.path_ids, other.path_ids))
        return self.paths() == other.paths()

    def __repr__(self) -> str:
        paths = "none" if self.path_ids is None else f"{len(self.path_table)} distinct"
        return (
            f"Trace(n_queries={self.n_queries}, duration_s={self.duration_s:.6g}, "
            f"mean_rate_qps={self.mean_rate_qps:.6g}, paths={paths}, source={self.source!r})"
        )
