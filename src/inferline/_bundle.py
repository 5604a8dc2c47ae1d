"""A bundle: a folder holding pipeline.yaml plus the hardware, profile and paths files it names."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from inferline._files import load_yaml_mapping
from inferline.errors import ConfigError, PipelineError
from inferline.pipeline import (
    MeasuredPaths,
    Pipeline,
    PipelineConfig,
    PipelineFile,
    apply_measured_paths,
    check_config,
    load_config,
    load_measured_paths,
    pipeline_from_mapping,
)
from inferline.profiles import Profiles, load_hardware, load_profiles

__all__ = [
    "Bundle",
    "BundleFiles",
    "check_config_for",
    "load_bundle",
    "load_plan_for",
    "read_bundle_files",
]


@dataclass(frozen=True)
class Bundle:
    """A loaded bundle. With a measured paths file (``paths:`` in pipeline.yaml) the
    pipeline's edge probabilities are the measured ones and ``paths`` holds the file."""

    root: Path
    pipeline: Pipeline
    profiles: Profiles
    paths: MeasuredPaths | None = None
    samples: str | None = None


@dataclass(frozen=True)
class BundleFiles:
    """pipeline.yaml as declared (probabilities as written) and where the files it names are."""

    root: Path
    pipeline_file: Path
    pipeline: Pipeline
    spec: PipelineFile

    @property
    def hardware_file(self) -> Path:
        return self.root / self.spec.hardware

    @property
    def profiles_file(self) -> Path:
        return self.root / self.spec.profiles

    @property
    def paths_file(self) -> Path | None:
        return self.root / self.spec.paths if self.spec.paths is not None else None


def read_bundle_files(root: str | Path) -> BundleFiles:
    """Read pipeline.yaml of a bundle folder (or the file itself) without the files it names."""
    root = Path(root)
    pipeline_file = root if root.is_file() else root / "pipeline.yaml"
    if not pipeline_file.exists():
        raise ConfigError(
            "no pipeline.yaml here; a bundle folder holds pipeline.yaml, hardware.yaml and "
            "profiles.yaml (docs/bundles.md)",
            source=root,
        )
    pipeline, spec = pipeline_from_mapping(
        load_yaml_mapping(pipeline_file, PipelineError), pipeline_file
    )
    return BundleFiles(pipeline_file.parent, pipeline_file, pipeline, spec)


def load_bundle(root: str | Path) -> Bundle:
    """Load and cross-check a bundle folder (or a path to its pipeline.yaml)."""
    files = read_bundle_files(root)
    folder, spec = files.root, files.spec
    pipeline = files.pipeline
    paths = None
    if files.paths_file is not None:
        paths = load_measured_paths(files.paths_file, pipeline)
        pipeline = apply_measured_paths(pipeline, paths)
    hardware = load_hardware(files.hardware_file)
    profiles = load_profiles(files.profiles_file, hardware, pipeline.stage_names)
    for stage in pipeline.stage_names:
        if not profiles.hardware_for(stage):
            raise ConfigError(
                f"stage '{stage}' has no profile on any hardware; add one to {spec.profiles}",
                source=files.profiles_file,
                field="profiles",
            )
    return Bundle(
        root=folder, pipeline=pipeline, profiles=profiles, paths=paths, samples=spec.samples
    )


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


def load_plan_for(path: str | Path, bundle: Bundle) -> PipelineConfig:
    """The plan or configuration file at ``path``, checked against ``bundle`` (errors name
    ``path``)."""
    config = load_config(path)
    check_config_for(config, bundle.pipeline, bundle.profiles, str(path))
    return config
