"""Hardware types with prices, and per-(stage, hardware) batch latency profiles."""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

import numpy as np

from inferline.errors import ProfileError
from inferline.profiles._machine import MachinePool

__all__ = [
    "OVERHEAD_PERCENTILES",
    "BatchProfile",
    "EngineOverhead",
    "HardwareCatalogue",
    "HardwareType",
    "LatencyStat",
    "ProfilePoint",
    "Profiles",
]

LatencyStat = Literal["median", "p99"]

#: Percentiles at which a per-query overhead distribution is recorded (finer in the tail).
OVERHEAD_PERCENTILES: tuple[float, ...] = (
    *(float(q) for q in range(0, 95, 5)),
    *(float(q) for q in range(95, 100)),
    99.5,
    99.9,
    100.0,
)


@dataclass(frozen=True)
class HardwareType:
    """One kind of unit a replica occupies, priced per unit-hour."""

    name: str
    price_per_hour: float
    accelerator: bool = False
    max_units: int | None = None
    description: str = ""
    source: str = ""


@dataclass(frozen=True)
class HardwareCatalogue:
    """The hardware types with prices; ``machine``, the machine to plan for when the file has
    a ``machine`` section (``inferline plan --machine`` overrides it)."""

    types: tuple[HardwareType, ...]
    source: str = field(default="<python>", compare=False)
    machine: MachinePool | None = None

    def __iter__(self) -> Iterator[HardwareType]:
        return iter(self.types)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.types)

    def get(self, name: str) -> HardwareType:
        for t in self.types:
            if t.name == name:
                return t
        raise ProfileError(
            f"unknown hardware '{name}'; the catalogue has {', '.join(self.names)}",
            source=self.source,
        )

    @property
    def price_per_hour(self) -> dict[str, float]:
        return {t.name: t.price_per_hour for t in self.types}


@dataclass(frozen=True)
class ProfilePoint:
    """One batch size's measured latency; ``mean_s``, ``predict_median_s`` and ``reps`` are
    informational (the Profiler records the mean, the part of the median spent in
    ``predict`` and how many batches it timed)."""

    batch_size: int
    median_s: float
    p99_s: float
    predict_median_s: float | None = None
    reps: int | None = None
    mean_s: float | None = None

    def latency_s(self, stat: LatencyStat) -> float:
        return self.median_s if stat == "median" else self.p99_s


@dataclass(frozen=True)
class EngineOverhead:
    """The serving engine's own time, beyond the profiled batch latencies (docs/profiler.md).

    ``per_batch_s`` is added to every batch's service time (the replica is not free to take
    the next batch until the front-end has handled the result). The per-query part is added
    once to every query's end-to-end latency (HTTP parsing and answer, admission, loopback,
    and the jitter of the process wake-ups along the query's path): drawn from the measured
    distribution when ``per_query_percentiles_s`` (the values at ``per_query_percentiles``,
    ascending percentages from 0 to 100) is given, otherwise the constant ``per_query_s``
    (the median).

    The front-end is one process, so the per-query part grows with the rate it serves:
    ``per_query_by_rate`` holds the distribution (values at ``per_query_percentiles``)
    measured at several arrival rates, ascending; a trace's mean rate picks it, linearly
    interpolated between the two nearest rates and clamped outside them.

    ``frontend_cpu_s_per_query`` is the CPU the front-end process spent per query (not a
    latency): the share of the machine a Planner keeps for it at a given rate.
    """

    per_batch_s: float = 0.0
    per_query_s: float = 0.0
    per_query_p99_s: float | None = None
    per_query_percentiles: tuple[float, ...] = ()
    per_query_percentiles_s: tuple[float, ...] = ()
    per_query_by_rate: tuple[tuple[float, tuple[float, ...]], ...] = ()
    frontend_cpu_s_per_query: float | None = None
    source: str = ""
    measured_on: str | None = None
    key: str = ""

    def __post_init__(self) -> None:
        for name in ("per_batch_s", "per_query_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0.0):
                raise ProfileError(f"engine overhead {name} must be >= 0 s, got {value!r}")
        cpu = self.frontend_cpu_s_per_query
        if cpu is not None and not (math.isfinite(cpu) and cpu >= 0.0):
            raise ProfileError(
                f"must be >= 0 s, got {cpu!r}", field="engine_overhead.frontend_cpu_s_per_query"
            )
        grid = tuple(float(q) for q in self.per_query_percentiles)
        values = tuple(float(v) for v in self.per_query_percentiles_s)
        object.__setattr__(self, "per_query_percentiles", grid)
        object.__setattr__(self, "per_query_percentiles_s", values)
        if len(grid) != len(values):
            raise ProfileError(
                f"engine overhead: {len(grid)} percentiles but {len(values)} values",
                field="engine_overhead.per_query_percentiles_s",
            )
        if grid:
            if len(grid) < 2 or grid[0] != 0.0 or grid[-1] != 100.0:
                raise ProfileError(
                    "engine overhead percentiles must run from 0 to 100",
                    field="engine_overhead.per_query_percentiles",
                )
            if any(b <= a for a, b in itertools.pairwise(grid)):
                raise ProfileError(
                    "engine overhead percentiles must ascend strictly",
                    field="engine_overhead.per_query_percentiles",
                )
            if any(b < a for a, b in itertools.pairwise(values)) or not all(
                math.isfinite(v) and v >= 0.0 for v in values
            ):
                raise ProfileError(
                    "engine overhead per-query values must be finite, >= 0 and non-decreasing",
                    field="engine_overhead.per_query_percentiles_s",
                )
        by_rate = tuple((float(r), tuple(float(v) for v in vs)) for r, vs in self.per_query_by_rate)
        object.__setattr__(self, "per_query_by_rate", by_rate)
        where = "engine_overhead.per_query_by_rate"
        if by_rate and not grid:
            raise ProfileError("per_query_by_rate needs per_query_percentiles", field=where)
        for k, (rate, vs) in enumerate(by_rate):
            if not (math.isfinite(rate) and rate > 0):
                raise ProfileError(f"rate {rate} is not positive", field=f"{where}[{k}]")
            if k and rate <= by_rate[k - 1][0]:
                raise ProfileError("rates must ascend strictly", field=f"{where}[{k}]")
            if len(vs) != len(grid) or any(b < a for a, b in itertools.pairwise(vs)):
                raise ProfileError(
                    f"needs {len(grid)} non-decreasing values, one per percentile",
                    field=f"{where}[{k}]",
                )
            if not all(math.isfinite(v) and v >= 0.0 for v in vs):
                raise ProfileError("values must be finite and >= 0", field=f"{where}[{k}]")

    @property
    def per_query_min_s(self) -> float:
        """The smallest per-query overhead a query can get (at any rate)."""
        if not self.per_query_percentiles_s:
            return self.per_query_s
        return min([self.per_query_percentiles_s[0], *(vs[0] for _, vs in self.per_query_by_rate)])

    def per_query_values_at(self, rate_qps: float | None) -> tuple[float, ...]:
        """The per-query distribution (at ``per_query_percentiles``) for this arrival rate."""
        by_rate = self.per_query_by_rate
        if not by_rate or rate_qps is None or not math.isfinite(rate_qps):
            return self.per_query_percentiles_s
        rates = [r for r, _ in by_rate]
        if rate_qps <= rates[0]:
            return by_rate[0][1]
        if rate_qps >= rates[-1]:
            return by_rate[-1][1]
        k = int(np.searchsorted(rates, rate_qps))
        (r0, v0), (r1, v1) = by_rate[k - 1], by_rate[k]
        w = (rate_qps - r0) / (r1 - r0)
        return tuple((1 - w) * a + w * b for a, b in zip(v0, v1, strict=True))

    def per_query_draws(
        self, n: int, rng: np.random.Generator, rate_qps: float | None = None
    ) -> np.ndarray:
        """``n`` per-query overheads: inverse-CDF draws from the distribution for the rate
        (see ``per_query_by_rate``), or the median when no distribution is recorded."""
        if not self.per_query_percentiles_s:
            return np.full(n, self.per_query_s)
        u = rng.random(n) * 100.0
        return np.interp(u, self.per_query_percentiles, self.per_query_values_at(rate_qps))


@dataclass(frozen=True)
class BatchProfile:
    """Latency of one batch against batch size, for one stage on one hardware type.

    ``overhead_s`` (the engine's per-batch overhead, 0 unless the profiles file records
    one) is added to every latency this profile reports; ``points`` stay as measured.
    ``code_hash`` and ``machine`` identify what the Profiler measured (its cache key).
    """

    stage: str
    hardware: str
    points: tuple[ProfilePoint, ...]
    source: str = ""
    measured_on: str | None = None
    overhead_s: float = 0.0
    code_hash: str | None = None
    machine: str | None = None

    @property
    def batch_sizes(self) -> tuple[int, ...]:
        return tuple(p.batch_size for p in self.points)

    @property
    def max_batch_size(self) -> int:
        return self.points[-1].batch_size

    def latency_s(self, batch_size: int, stat: LatencyStat = "median") -> float:
        """Latency of a batch of this size; between profiled sizes, the higher neighbour."""
        if batch_size < 1 or batch_size > self.max_batch_size:
            raise ProfileError(
                f"batch size {batch_size} is outside the profiled range 1..{self.max_batch_size} "
                f"for stage '{self.stage}' on '{self.hardware}'"
            )
        below: ProfilePoint | None = None
        for point in self.points:
            if point.batch_size == batch_size:
                return point.latency_s(stat) + self.overhead_s
            if point.batch_size > batch_size:
                upper = point.latency_s(stat)
                latency = upper if below is None else max(upper, below.latency_s(stat))
                return latency + self.overhead_s
            below = point
        raise AssertionError("unreachable: batch_size <= max_batch_size")

    def latency_table(self, max_batch: int, stat: LatencyStat = "median") -> np.ndarray:
        """float64[max_batch + 1]; entry b = latency of a batch of b (entry 0 unused)."""
        table = np.zeros(max_batch + 1, dtype=np.float64)
        for b in range(1, max_batch + 1):
            table[b] = self.latency_s(b, stat)
        return table

    def throughput_qps(self, batch_size: int, stat: LatencyStat = "median") -> float:
        """Queries per second of one replica that always runs full batches."""
        return batch_size / self.latency_s(batch_size, stat)


@dataclass(frozen=True)
class Profiles:
    """The hardware catalogue plus every profile, keyed by (stage, hardware).

    ``overhead`` is the engine's measured overhead, if the profiles file records one; its
    per-batch part is already inside every entry's latencies (``BatchProfile.overhead_s``).
    """

    hardware: HardwareCatalogue
    entries: Mapping[tuple[str, str], BatchProfile]
    source: str = field(default="<python>", compare=False)
    overhead: EngineOverhead | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "entries", MappingProxyType(dict(self.entries)))

    def get(self, stage: str, hardware: str) -> BatchProfile:
        try:
            return self.entries[(stage, hardware)]
        except KeyError:
            have = ", ".join(self.hardware_for(stage)) or "none"
            raise ProfileError(
                f"no profile for stage '{stage}' on hardware '{hardware}' "
                f"(profiled hardware for this stage: {have})",
                source=self.source,
            ) from None

    def hardware_for(self, stage: str) -> tuple[str, ...]:
        """Hardware types this stage has profiles for, in catalogue order."""
        return tuple(h for h in self.hardware.names if (stage, h) in self.entries)

    @property
    def max_batch_sizes(self) -> dict[tuple[str, str], int]:
        return {key: p.max_batch_size for key, p in self.entries.items()}

    @property
    def per_query_overhead_s(self) -> float:
        """The engine's per-query overhead (0 without a measured one)."""
        return self.overhead.per_query_s if self.overhead is not None else 0.0

    def with_overhead(self, overhead: EngineOverhead | None) -> Profiles:
        """The same profiles with ``overhead`` (None: none) applied to every entry."""
        per_batch = overhead.per_batch_s if overhead is not None else 0.0
        entries = {
            key: dataclasses.replace(p, overhead_s=per_batch) for key, p in self.entries.items()
        }
        return Profiles(self.hardware, entries, self.source, overhead)
