"""Pure helpers of the Profiler: batch sizes, latency statistics, repetition policy, cache keys.

Nothing here starts a process or reads the clock, so all of it is unit-tested directly.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import math
import os
import platform
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from inferline.errors import ConfigError
from inferline.profiles import BatchProfile, ProfilePoint

__all__ = [
    "LatencySummary",
    "RepetitionPolicy",
    "batch_sizes",
    "cached_points",
    "code_key",
    "digest",
    "machine_fingerprint",
    "measured_on",
    "measurement_key",
    "scheduling_priority",
    "summarise",
]


def batch_sizes(max_batch: int) -> tuple[int, ...]:
    """1, 2, 4, … up to ``max_batch``, plus ``max_batch`` itself when it is not a power of 2."""
    if max_batch < 1:
        raise ConfigError(
            f"must be at least 1, got {max_batch}", source="<argument>", field="--max-batch"
        )
    sizes = []
    b = 1
    while b <= max_batch:
        sizes.append(b)
        b *= 2
    if sizes[-1] != max_batch:
        sizes.append(max_batch)
    return tuple(sizes)


@dataclass(frozen=True, slots=True)
class LatencySummary:
    """Median and 99th percentile of repeated timings of one batch size (seconds)."""

    median_s: float
    p99_s: float
    reps: int
    predict_median_s: float | None = None
    mean_s: float | None = None

    def point(self, batch_size: int) -> ProfilePoint:
        median = round(self.median_s, 9)
        predict = None if self.predict_median_s is None else round(self.predict_median_s, 9)
        mean = None if self.mean_s is None else round(self.mean_s, 9)
        return ProfilePoint(
            batch_size, median, max(round(self.p99_s, 9), median), predict, self.reps, mean
        )


def summarise(
    round_trip_s: Sequence[float], predict_s: Sequence[float] | None = None
) -> LatencySummary:
    """Median and P99 (linear interpolation) of the timings; P99 is never below the median."""
    if not round_trip_s:
        raise ValueError("no timings to summarise")
    values = np.asarray(round_trip_s, dtype=np.float64)
    if not np.all(np.isfinite(values)) or np.any(values < 0):
        raise ValueError("timings must be finite and non-negative")
    median = float(np.median(values))
    p99 = max(float(np.percentile(values, 99)), median)
    predict = float(np.median(np.asarray(predict_s))) if predict_s else None
    return LatencySummary(median, p99, int(values.size), predict, float(values.mean()))


@dataclass(frozen=True, slots=True)
class RepetitionPolicy:
    """How many batches of one size to time: at least ``min_reps``, then more until
    ``min_time_s`` of timed work, never more than ``max_reps``; ``warmup`` untimed first.

    Each timed batch follows ``idle_s`` of idleness: in the engine a replica sleeps in
    ``recv`` between batches while other processes run, and a batch that starts on a
    cold process and caches is slower than one timed back to back (docs/profiler.md).
    """

    min_reps: int = 20
    max_reps: int = 200
    min_time_s: float = 0.5
    warmup: int = 3
    idle_s: float = 0.002

    def __post_init__(self) -> None:
        if self.min_reps < 1 or self.max_reps < self.min_reps or self.warmup < 0:
            raise ConfigError(
                f"repetitions need 1 <= min_reps <= max_reps and warmup >= 0, got "
                f"min_reps={self.min_reps}, max_reps={self.max_reps}, warmup={self.warmup}",
                source="<argument>",
                field="--reps",
            )
        if not (math.isfinite(self.min_time_s) and self.min_time_s >= 0):
            raise ConfigError(
                f"must be >= 0 s, got {self.min_time_s}", source="<argument>", field="min_time_s"
            )
        if not (math.isfinite(self.idle_s) and 0 <= self.idle_s <= 1.0):
            raise ConfigError(
                f"must be between 0 and 1 s, got {self.idle_s}", source="<argument>", field="idle_s"
            )

    def more(self, reps: int, elapsed_s: float) -> bool:
        """Whether to time another batch after ``reps`` taking ``elapsed_s`` in all."""
        if reps < self.min_reps:
            return True
        return reps < self.max_reps and elapsed_s < self.min_time_s


def digest(parts: Iterable[str | bytes]) -> str:
    """A short stable hash of the given parts (``sha256:`` + 16 hex digits)."""
    h = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        h.update(len(data).to_bytes(8, "big"))
        h.update(data)
    return "sha256:" + h.hexdigest()[:16]


def json_digest(value: Any) -> str:
    return digest([json.dumps(value, sort_keys=True, separators=(",", ":"))])


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


#: Bump when the way a batch is timed changes: cached profile points are then redone.
PROFILE_METHOD = "rounds-idle-1"


def machine_fingerprint() -> str:
    """What a cached measurement depends on besides the code: CPU, cores, Python, libraries
    (and the Profiler's timing method)."""
    libs = {name: _version(name) for name in ("numpy", "torch", "scikit-learn")}
    return digest(
        [
            PROFILE_METHOD,
            _cpu_model(),
            str(os.cpu_count()),
            platform.machine(),
            platform.python_version(),
            json.dumps(libs, sort_keys=True),
        ]
    )


def measured_on(threads: int | None = None, today: _dt.date | None = None) -> str:
    """CPU model, cores, OS, Python and library versions, threads and date, as one line."""
    libs = ", ".join(
        f"{name} {v}"
        for name in ("numpy", "torch", "scikit-learn")
        if (v := _version(name)) is not None
    )
    thread_part = f"; {threads} thread{'s' if threads != 1 else ''}" if threads else ""
    day = (today or _dt.date.today()).isoformat()
    return (
        f"{_cpu_model()}, os.cpu_count()={os.cpu_count()}, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}, {libs}{thread_part}; {day}"
    )


def code_key(import_path: str, source_hash: str) -> str:
    """What a stage's code is: the class its import path names and its module's source."""
    return digest(["code", import_path, source_hash])


def measurement_key(
    code: str, samples_hash: str, threads: int, device: str, idle_s: float, version: str
) -> str:
    """Everything besides the machine a measured point depends on: the stage's code
    (:func:`code_key`), the sample bodies its inputs come from, the replica's threads and
    device, the idle time before each timed batch and the inferline version."""
    return digest(["point", code, samples_hash, str(threads), device, repr(idle_s), version])


def cached_points(
    existing: BatchProfile | None, key: str, machine: str, sizes: Sequence[int]
) -> dict[int, ProfilePoint]:
    """Points of ``existing`` the Profiler may reuse: same key (``code_hash``, see
    :func:`measurement_key`) and machine, wanted size."""
    if existing is None or existing.code_hash != key or existing.machine != machine:
        return {}
    wanted = set(sizes)
    return {p.batch_size: p for p in existing.points if p.batch_size in wanted}


def edge_counts(
    edges: Sequence[tuple[str, str]],
    visited: Sequence[frozenset[str]],
    routed: Mapping[tuple[str, str], int],
) -> dict[tuple[str, str], tuple[int, int]]:
    """(taken, visits of the source) per edge from per-query visited sets and route counts."""
    out = {}
    for a, b in edges:
        visits = sum(1 for v in visited if a in v)
        out[(a, b)] = (int(routed.get((a, b), 0)), visits)
    return out


@contextlib.contextmanager
def scheduling_priority(nice: int | None) -> Iterator[None]:
    """Run the block (and every process started in it, which inherits it) at ``nice``.

    A negative value needs root or CAP_SYS_NICE; on a machine shared with other jobs it
    keeps their bursts from stretching the timed batches (docs/profiler.md).
    """
    if nice is None:
        yield
        return
    before = os.getpriority(os.PRIO_PROCESS, 0)
    try:
        os.setpriority(os.PRIO_PROCESS, 0, nice)
    except PermissionError:
        raise ConfigError(
            f"cannot set the scheduling priority to {nice}: a negative nice value needs root "
            "or CAP_SYS_NICE (leave --nice out to run at the normal priority)",
            source="<argument>",
            field="--nice",
        ) from None
    try:
        yield
    finally:
        with contextlib.suppress(PermissionError):
            os.setpriority(os.PRIO_PROCESS, 0, before)
