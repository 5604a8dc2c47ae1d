"""Hardware types with prices, and per-(stage, hardware) batch latency profiles."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

import numpy as np

from inferline.errors import ProfileError

__all__ = [
    "BatchProfile",
    "HardwareCatalogue",
    "HardwareType",
    "LatencyStat",
    "ProfilePoint",
    "Profiles",
]

LatencyStat = Literal["median", "p99"]


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
    types: tuple[HardwareType, ...]
    source: str = field(default="<python>", compare=False)

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
    batch_size: int
    median_s: float
    p99_s: float

    def latency_s(self, stat: LatencyStat) -> float:
        return self.median_s if stat == "median" else self.p99_s


@dataclass(frozen=True)
class BatchProfile:
    """Latency of one batch against batch size, for one stage on one hardware type."""

    stage: str
    hardware: str
    points: tuple[ProfilePoint, ...]
    source: str = ""
    measured_on: str | None = None

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
                return point.latency_s(stat)
            if point.batch_size > batch_size:
                upper = point.latency_s(stat)
                return upper if below is None else max(upper, below.latency_s(stat))
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
    """The hardware catalogue plus every profile, keyed by (stage, hardware)."""

    hardware: HardwareCatalogue
    entries: Mapping[tuple[str, str], BatchProfile]
    source: str = field(default="<python>", compare=False)

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
