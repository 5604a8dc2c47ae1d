"""Configurations: per stage the hardware, maximum batch size and replica count."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from inferline._files import load_yaml_mapping, parse_model
from inferline.errors import ConfigError, ProfileError

__all__ = [
    "PipelineConfig",
    "StageConfig",
    "check_config",
    "check_stage_names",
    "load_config",
    "save_config",
]


class StageConfig(BaseModel):
    """How one stage is provisioned."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    hardware: str = Field(description="hardware type name from the catalogue")
    batch_size: int = Field(ge=1, description="maximum batch size a replica pulls")
    replicas: int = Field(ge=1, description="number of replicas (units of hardware)")


class PipelineConfig(BaseModel):
    """A whole pipeline's configuration (what the Planner outputs and the Estimator runs)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    stages: dict[str, StageConfig]

    def with_stage(self, stage: str, **changes: Any) -> PipelineConfig:
        updated = dict(self.stages)
        updated[stage] = self.stages[stage].model_copy(update=changes)
        return PipelineConfig(stages=updated)

    def cost_per_hour(self, price_per_hour: Mapping[str, float]) -> float:
        """Σ replicas × unit price (SPEC §2.2)."""
        return float(sum(c.replicas * price_per_hour[c.hardware] for c in self.stages.values()))


def load_config(path: str | Path) -> PipelineConfig:
    """Load a configuration or plan file; keys other than ``stages`` are ignored."""
    data = load_yaml_mapping(path, ConfigError)
    if "stages" not in data:
        raise ConfigError(
            "required field is missing; a configuration maps each stage to "
            "{hardware, batch_size, replicas}",
            source=path,
            field="stages",
        )
    return parse_model(PipelineConfig, {"stages": data["stages"]}, source=path)


def save_config(
    config: PipelineConfig, path: str | Path, extra: Mapping[str, Any] | None = None
) -> None:
    """Write a configuration (plus optional plan metadata) that load_config reads back."""
    body: dict[str, Any] = {"stages": {k: v.model_dump() for k, v in config.stages.items()}}
    if extra:
        body.update(extra)
    Path(path).write_text(yaml.safe_dump(body, sort_keys=False), encoding="utf-8")


def check_stage_names(config: PipelineConfig, stage_names: tuple[str, ...], source: str) -> None:
    """Every stage of the pipeline configured and no other. An unknown name is reported
    first (with the known ones): a misspelt stage also leaves the real one unconfigured."""
    unknown = [name for name in config.stages if name not in stage_names]
    if unknown:
        close = difflib.get_close_matches(unknown[0], stage_names, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(
            f"unknown stage '{unknown[0]}'{hint}; the pipeline has {', '.join(stage_names)}",
            source=source,
            field=f"stages.{unknown[0]}",
        )
    for name in stage_names:
        if name not in config.stages:
            raise ConfigError(
                f"stage '{name}' is not configured; give it hardware, batch_size and replicas",
                source=source,
                field=f"stages.{name}",
            )


def check_config(
    config: PipelineConfig,
    stage_names: tuple[str, ...],
    max_batch: Mapping[tuple[str, str], int],
    max_units: Mapping[str, int | None],
    source: str,
) -> None:
    """Every stage configured, on profiled hardware, within profiled batch sizes and limits."""
    check_stage_names(config, stage_names, source)
    units: dict[str, int] = {}
    for name, stage in config.stages.items():
        if stage.hardware not in max_units:
            raise ProfileError(
                f"unknown hardware '{stage.hardware}'; the catalogue has "
                f"{', '.join(sorted(max_units))}",
                source=source,
                field=f"stages.{name}.hardware",
            )
        largest = max_batch.get((name, stage.hardware))
        if largest is None:
            profiled = sorted(hw for (s, hw) in max_batch if s == name)
            raise ProfileError(
                f"no profile for stage '{name}' on hardware '{stage.hardware}'; profiled "
                f"hardware for this stage: {', '.join(profiled) or 'none'} (profile it or "
                "choose one of those)",
                source=source,
                field=f"stages.{name}.hardware",
            )
        if stage.batch_size > largest:
            raise ConfigError(
                f"batch_size {stage.batch_size} exceeds the largest profiled batch size "
                f"{largest} for '{name}' on '{stage.hardware}'",
                source=source,
                field=f"stages.{name}.batch_size",
            )
        units[stage.hardware] = units.get(stage.hardware, 0) + stage.replicas
    for hw, used in units.items():
        limit = max_units[hw]
        if limit is not None and used > limit:
            raise ConfigError(
                f"the configuration uses {used} units of '{hw}' but only {limit} exist",
                source=source,
                field="stages",
            )
