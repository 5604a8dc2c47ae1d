"""The declarative pipeline file (``pipeline.yaml``); format in docs/bundles.md."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from inferline._files import load_yaml_mapping, parse_model
from inferline.errors import PipelineError
from inferline.pipeline._graph import Edge, Pipeline, Stage

__all__ = ["PipelineFile", "load_pipeline", "pipeline_from_mapping"]


class _StageEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    description: str = ""
    model: str | None = None


class _EdgeEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    source: str = Field(alias="from")
    target: str = Field(alias="to")
    probability: float = 1.0


class PipelineFile(BaseModel):
    """Schema of pipeline.yaml; ``hardware`` and ``profiles`` name sibling files."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    description: str = ""
    hardware: str = "hardware.yaml"
    profiles: str = "profiles.yaml"
    stages: list[_StageEntry]
    edges: list[_EdgeEntry] = []


def pipeline_from_mapping(data: object, source: str | Path) -> tuple[Pipeline, PipelineFile]:
    spec = parse_model(PipelineFile, data, source=source, error=PipelineError)
    pipeline = Pipeline(
        name=spec.name,
        description=spec.description,
        stages=tuple(Stage(s.name, s.description, s.model) for s in spec.stages),
        edges=tuple(Edge(e.source, e.target, e.probability) for e in spec.edges),
        source=str(source),
    )
    return pipeline, spec


def load_pipeline(path: str | Path) -> Pipeline:
    """Load and validate a pipeline file."""
    return pipeline_from_mapping(load_yaml_mapping(path, PipelineError), path)[0]
