"""A bundle: a folder holding pipeline.yaml plus the hardware and profile files it names."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from inferline._files import load_yaml_mapping
from inferline.errors import ConfigError, PipelineError
from inferline.pipeline import Pipeline, PipelineConfig
from inferline.pipeline._config import check_config
from inferline.pipeline._io import pipeline_from_mapping
from inferline.profiles import Profiles, load_hardware, load_profiles

__all__ = ["Bundle", "check_config_for", "load_bundle"]


@dataclass(frozen=True)
class Bundle:
    root: Path
    pipeline: Pipeline
    profiles: Profiles


def load_bundle(root: str | Path) -> Bundle:
    """Load and cross-check a bundle folder (or a path to its pipeline.yaml)."""
    root = Path(root)
    pipeline_file = root if root.is_file() else root / "pipeline.yaml"
    if not pipeline_file.exists():
        raise ConfigError(
            "no pipeline.yaml here; a bundle folder holds pipeline.yaml, hardware.yaml and "
            "profiles.yaml (docs/bundles.md)",
            source=root,
        )
    folder = pipeline_file.parent
    pipeline, spec = pipeline_from_mapping(
        load_yaml_mapping(pipeline_file, PipelineError), pipeline_file
    )
    hardware = load_hardware(folder / spec.hardware)
    profiles = load_profiles(folder / spec.profiles, hardware, pipeline.stage_names)
    for stage in pipeline.stage_names:
        if not profiles.hardware_for(stage):
            raise ConfigError(
                f"stage '{stage}' has no profile on any hardware; add one to {spec.profiles}",
                source=folder / spec.profiles,
                field="profiles",
            )
    return Bundle(root=folder, pipeline=pipeline, profiles=profiles)


def check_config_for(
    config: PipelineConfig, pipeline: Pipeline, profiles: Profiles, source: str = "<config>"
) -> None:
    """Raise a ConfigError/ProfileError if ``config`` cannot run on this pipeline."""
    check_config(
        config,
        pipeline.stage_names,
        profiles.max_batch_sizes,
        {h.name: h.max_units for h in profiles.hardware},
        source,
    )
