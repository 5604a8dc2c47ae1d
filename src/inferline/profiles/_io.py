"""The hardware catalogue and profile files; formats in docs/bundles.md."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from inferline._files import load_yaml_mapping, parse_model
from inferline.errors import ProfileError
from inferline.profiles._machine import MAX_THREADS_PER_CORE, MachinePool, machine_from_fields
from inferline.profiles._model import (
    BatchProfile,
    EngineOverhead,
    HardwareCatalogue,
    HardwareType,
    ProfilePoint,
    Profiles,
)

__all__ = [
    "hardware_from_mapping",
    "hardware_to_mapping",
    "load_hardware",
    "load_profiles",
    "profiles_from_mapping",
    "profiles_to_mapping",
]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class _HardwareEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    price_per_hour: float = Field(ge=0)
    accelerator: bool = False
    max_units: int | None = Field(default=None, ge=0)
    description: str = ""
    source: str = ""


class _MachineEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    cores: int | str
    memory_gb: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    gpus: int = Field(default=0, ge=0)
    fit: Literal["busy", "shared", "threads"] = "shared"
    max_busy_fraction: float | None = Field(default=None, gt=0, le=1)
    threads_per_core: float | None = Field(default=None, gt=0, le=MAX_THREADS_PER_CORE / 2)
    sharing: Literal["per-core", "fair"] = "fair"
    threads_per_replica: int | None = Field(default=None, ge=1)

    @field_validator("cores")
    @classmethod
    def _cores(cls, value: int | str) -> int | str:
        if isinstance(value, str) and value != "local":
            raise ValueError("cores is a number of cores or 'local' (this host)")
        if isinstance(value, int) and value < 1:
            raise ValueError("a machine has at least 1 core")
        return value


class _HardwareFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    hardware: list[_HardwareEntry]
    machine: _MachineEntry | None = None

    @field_validator("machine", mode="before")
    @classmethod
    def _local(cls, value: object) -> object:
        return {"cores": "local"} if value == "local" else value


def _machine(entry: _MachineEntry | None, path: str | Path) -> MachinePool | None:
    if entry is None:
        return None
    if entry.cores == "local" and (entry.memory_gb is not None or entry.gpus):
        raise ProfileError(
            "a 'local' machine reads its memory and GPUs from the host; give cores as a "
            "number to describe another machine",
            source=path,
            field="machine",
        )
    try:
        return machine_from_fields(
            cores=entry.cores if isinstance(entry.cores, int) else None,
            memory_bytes=None if entry.memory_gb is None else int(entry.memory_gb * (1 << 30)),
            gpus=entry.gpus,
            threads_per_core=entry.threads_per_core,
            fit=entry.fit,
            max_busy_fraction=entry.max_busy_fraction,
            sharing=entry.sharing,
            threads_per_replica=entry.threads_per_replica,
            label="local" if entry.cores == "local" else f"{Path(path).name} machine",
        )
    except ValueError as exc:  # a figure of the other fit rule
        raise ProfileError(str(exc), source=path, field="machine") from None


class _Point(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    batch_size: int = Field(ge=1)
    median_s: float = Field(gt=0, allow_inf_nan=False)
    p99_s: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    predict_median_s: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    reps: int | None = Field(default=None, ge=1)
    mean_s: float | None = Field(default=None, gt=0, allow_inf_nan=False)


class _ProfileEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    stage: str
    hardware: str
    source: str = ""
    measured_on: str | None = None
    code_hash: str | None = None
    machine: str | None = None
    points: list[_Point] = Field(min_length=1)


class _OverheadAtRate(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    rate_qps: float = Field(gt=0, allow_inf_nan=False)
    percentiles_s: list[float]


class _Overhead(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    per_batch_s: float = Field(ge=0, allow_inf_nan=False)
    per_query_s: float = Field(ge=0, allow_inf_nan=False)
    per_query_p99_s: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    per_query_percentiles: list[float] = []
    per_query_percentiles_s: list[float] = []
    per_query_by_rate: list[_OverheadAtRate] = []
    frontend_cpu_s_per_query: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    source: str = ""
    measured_on: str | None = None
    key: str = ""


class _ProfilesFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    engine_overhead: _Overhead | None = None
    profiles: list[_ProfileEntry]


def load_hardware(path: str | Path) -> HardwareCatalogue:
    return hardware_from_mapping(load_yaml_mapping(path, ProfileError), path)


def hardware_from_mapping(data: object, path: str | Path = "<hardware>") -> HardwareCatalogue:
    """A catalogue from hardware.yaml's content (``path`` names it in errors)."""
    spec = parse_model(_HardwareFile, data, source=path, error=ProfileError)
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
        types=tuple(HardwareType(**h.model_dump()) for h in spec.hardware),
        source=str(path),
        machine=_machine(spec.machine, path),
    )


def load_profiles(
    path: str | Path, hardware: HardwareCatalogue, stage_names: tuple[str, ...] | None = None
) -> Profiles:
    """Load profiles, checking every entry names a known stage and hardware type."""
    return profiles_from_mapping(load_yaml_mapping(path, ProfileError), hardware, stage_names, path)


def profiles_from_mapping(
    data: object,
    hardware: HardwareCatalogue,
    stage_names: tuple[str, ...] | None = None,
    path: str | Path = "<profiles>",
) -> Profiles:
    """Profiles from profiles.yaml's content, checked as :func:`load_profiles` does."""
    spec = parse_model(_ProfilesFile, data, source=path, error=ProfileError)
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
                    p.batch_size,
                    p.median_s,
                    p.p99_s if p.p99_s is not None else p.median_s,
                    p.predict_median_s,
                    p.reps,
                    p.mean_s,
                )
                for p in entry.points
            ),
            source=entry.source,
            measured_on=entry.measured_on,
            code_hash=entry.code_hash,
            machine=entry.machine,
        )
    overhead = None
    if spec.engine_overhead is not None:
        fields = spec.engine_overhead.model_dump()
        fields["per_query_by_rate"] = tuple(
            (entry["rate_qps"], tuple(entry["percentiles_s"]))
            for entry in fields["per_query_by_rate"]
        )
        try:
            overhead = EngineOverhead(**fields)
        except ProfileError as exc:
            raise ProfileError(exc.problem, source=path, field=exc.field) from None
    return Profiles(hardware=hardware, entries=entries, source=str(path)).with_overhead(overhead)


def hardware_to_mapping(catalogue: HardwareCatalogue) -> dict[str, object]:
    """hardware.yaml's content for ``catalogue`` (the inverse of :func:`load_hardware`)."""
    return {"hardware": [dataclasses.asdict(t) for t in catalogue.types]}


def _point_mapping(q: ProfilePoint) -> dict[str, object]:
    out: dict[str, object] = {"batch_size": q.batch_size, "median_s": q.median_s, "p99_s": q.p99_s}
    if q.mean_s is not None:
        out["mean_s"] = q.mean_s
    if q.predict_median_s is not None:
        out["predict_median_s"] = q.predict_median_s
    if q.reps is not None:
        out["reps"] = q.reps
    return out


def profiles_to_mapping(profiles: Profiles) -> dict[str, object]:
    """The inverse of load_profiles' parsing, for writing measured profiles.

    Points are written as measured (without the engine's per-batch overhead, which the
    ``engine_overhead`` section carries once for all of them).
    """
    body: dict[str, object] = {}
    if profiles.overhead is not None:
        o = profiles.overhead
        section: dict[str, object] = {
            "per_batch_s": o.per_batch_s,
            "per_query_s": o.per_query_s,
            "per_query_p99_s": o.per_query_p99_s,
            "per_query_percentiles": list(o.per_query_percentiles),
            "per_query_percentiles_s": list(o.per_query_percentiles_s),
            "per_query_by_rate": [
                {"rate_qps": rate, "percentiles_s": list(values)}
                for rate, values in o.per_query_by_rate
            ],
        }
        if o.frontend_cpu_s_per_query is not None:
            section["frontend_cpu_s_per_query"] = o.frontend_cpu_s_per_query
        section |= {"source": o.source, "measured_on": o.measured_on, "key": o.key}
        body["engine_overhead"] = section
    entries = []
    for p in profiles.entries.values():
        entry: dict[str, object] = {
            "stage": p.stage,
            "hardware": p.hardware,
            "source": p.source,
            "measured_on": p.measured_on,
        }
        if p.code_hash is not None:
            entry["code_hash"] = p.code_hash
        if p.machine is not None:
            entry["machine"] = p.machine
        entry["points"] = [_point_mapping(q) for q in p.points]
        entries.append(entry)
    body["profiles"] = entries
    return body
