"""The hardware catalogue and profile files; formats in docs/bundles.md."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from inferline._files import load_yaml_mapping, parse_model
from inferline.errors import ProfileError
from inferline.profiles._model import (
    BatchProfile,
    HardwareCatalogue,
    HardwareType,
    ProfilePoint,
    Profiles,
)

__all__ = ["load_hardware", "load_profiles", "profiles_to_mapping"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class _HardwareEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    price_per_hour: float = Field(ge=0)
    accelerator: bool = False
    max_units: int | None = Field(default=None, ge=0)
    description: str = ""
    source: str = ""


class _HardwareFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    hardware: list[_HardwareEntry]


class _Point(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    batch_size: int = Field(ge=1)
    median_s: float = Field(gt=0, allow_inf_nan=False)
    p99_s: float | None = Field(default=None, gt=0, allow_inf_nan=False)


class _ProfileEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    stage: str
    hardware: str
    source: str = ""
    measured_on: str | None = None
    points: list[_Point] = Field(min_length=1)


class _ProfilesFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    profiles: list[_ProfileEntry]


def load_hardware(path: str | Path) -> HardwareCatalogue:
    spec = parse_model(
        _HardwareFile, load_yaml_mapping(path, ProfileError), source=path, error=ProfileError
    )
    if not spec.hardware:
        raise ProfileError("the catalogue lists no hardware", source=path, field="hardware")
    seen: set[str] = set()
    for i, h in enumerate(spec.hardware):
        if not _NAME.match(h.name):
            raise ProfileError(
                f"hardware name {h.name!r} must be letters, digits, '_', '.', '-'",
                source=path,
                field=f"hardware[{i}].name",
            )
        if h.name in seen:
            raise ProfileError(
                f"hardware '{h.name}' is listed twice", source=path, field=f"hardware[{i}].name"
            )
        seen.add(h.name)
    return HardwareCatalogue(
        types=tuple(HardwareType(**h.model_dump()) for h in spec.hardware), source=str(path)
    )


def load_profiles(
    path: str | Path, hardware: HardwareCatalogue, stage_names: tuple[str, ...] | None = None
) -> Profiles:
    """Load profiles, checking every entry names a known stage and hardware type."""
    spec = parse_model(
        _ProfilesFile, load_yaml_mapping(path, ProfileError), source=path, error=ProfileError
    )
    entries: dict[tuple[str, str], BatchProfile] = {}
    for i, entry in enumerate(spec.profiles):
        where = f"profiles[{i}]"
        if stage_names is not None and entry.stage not in stage_names:
            raise ProfileError(
                f"unknown stage '{entry.stage}'; the pipeline has {', '.join(stage_names)}",
                source=path,
                field=f"{where}.stage",
            )
        if entry.hardware not in hardware.names:
            raise ProfileError(
                f"unknown hardware '{entry.hardware}'; the catalogue has "
                f"{', '.join(hardware.names)}",
                source=path,
                field=f"{where}.hardware",
            )
        key = (entry.stage, entry.hardware)
        if key in entries:
            raise ProfileError(
                f"a second profile for stage '{entry.stage}' on '{entry.hardware}'",
                source=path,
                field=where,
            )
        sizes = [p.batch_size for p in entry.points]
        for j in range(1, len(sizes)):
            if sizes[j] <= sizes[j - 1]:
                raise ProfileError(
                    f"batch sizes must ascend; {sizes[j]} follows {sizes[j - 1]}",
                    source=path,
                    field=f"{where}.points[{j}].batch_size",
                )
        for j, p in enumerate(entry.points):
            if p.p99_s is not None and p.p99_s < p.median_s:
                raise ProfileError(
                    f"p99_s {p.p99_s} is below median_s {p.median_s}",
                    source=path,
                    field=f"{where}.points[{j}].p99_s",
                )
        entries[key] = BatchProfile(
            stage=entry.stage,
            hardware=entry.hardware,
            points=tuple(
                ProfilePoint(
                    p.batch_size, p.median_s, p.p99_s if p.p99_s is not None else p.median_s
                )
                for p in entry.points
            ),
            source=entry.source,
            measured_on=entry.measured_on,
        )
    return Profiles(hardware=hardware, entries=entries, source=str(path))


def profiles_to_mapping(profiles: Profiles) -> dict[str, object]:
    """The inverse of load_profiles' parsing, for writing measured profiles."""
    return {
        "profiles": [
            {
                "stage": p.stage,
                "hardware": p.hardware,
                "source": p.source,
                "measured_on": p.measured_on,
                "points": [
                    {"batch_size": q.batch_size, "median_s": q.median_s, "p99_s": q.p99_s}
                    for q in p.points
                ],
            }
            for p in profiles.entries.values()
        ]
    }
