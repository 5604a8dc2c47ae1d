"""The declarative pipeline file (``pipeline.yaml``) and the measured-paths file it may name.

Formats in docs/bundles.md (pipeline) and docs/profiler.md (paths).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from inferline._files import load_yaml_mapping, parse_model
from inferline.errors import PipelineError
from inferline.pipeline._graph import Edge, Pipeline, Stage

__all__ = [
    "MeasuredPaths",
    "PipelineFile",
    "apply_measured_paths",
    "load_measured_paths",
    "load_pipeline",
    "measured_paths_to_mapping",
    "pipeline_from_mapping",
]


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
    """Schema of pipeline.yaml; ``hardware``, ``profiles`` and ``paths`` name sibling files.

    ``samples`` is the import path (``module:function``, the module found in the bundle
    folder like a stage's ``model``) of ``f(n, seed) -> list[request body]`` that the
    Profiler and ``inferline validate`` use for realistic queries.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    description: str = ""
    hardware: str = "hardware.yaml"
    profiles: str = "profiles.yaml"
    samples: str | None = None
    paths: str | None = None
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


# --- measured paths (written by the Profiler) ---------------------------------------------


class _MeasuredEdge(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    source: str = Field(alias="from")
    target: str = Field(alias="to")
    probability: float = Field(ge=0.0, le=1.0, allow_inf_nan=False)
    taken: int = Field(ge=0)
    visits: int = Field(ge=0)


class _MeasuredStage(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    scale_factor: float = Field(ge=0.0, le=1.0, allow_inf_nan=False)
    visits: int = Field(ge=0)


class _MeasuredPath(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    stages: list[str] = Field(min_length=1)
    count: int = Field(ge=1)


class _PathsFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    samples: int = Field(ge=1)
    seed: int
    samples_function: str = ""
    code_hash: str = ""
    samples_hash: str = ""
    measured_on: str = ""
    edges: list[_MeasuredEdge]
    stages: dict[str, _MeasuredStage]
    paths: list[_MeasuredPath] = Field(min_length=1)
    sample_paths: list[int] = Field(min_length=1)


@dataclass(frozen=True)
class MeasuredPaths:
    """Routing measured by running sample queries through the real stages.

    ``edge_probability[(a, b)]`` = taken / visits of ``a``; ``path_table[k]`` lists the
    stages one distinct path visits (sorted), ``sample_path[i]`` the path of sample ``i``.
    """

    samples: int
    seed: int
    edge_probability: dict[tuple[str, str], float]
    edge_counts: dict[tuple[str, str], tuple[int, int]]  # (taken, visits of the source)
    scale_factors: dict[str, float]
    stage_visits: dict[str, int]
    path_table: tuple[tuple[str, ...], ...]
    sample_path: tuple[int, ...]
    samples_function: str = ""
    code_hash: str = ""
    samples_hash: str = ""
    measured_on: str = ""
    source: str = "<memory>"

    def path_of(self, sample: int) -> tuple[str, ...]:
        return self.path_table[self.sample_path[sample % self.samples]]


def load_measured_paths(path: str | Path, pipeline: Pipeline) -> MeasuredPaths:
    """Read a paths file and check it against ``pipeline`` (every edge, stage and path)."""
    spec = parse_model(
        _PathsFile, load_yaml_mapping(path, PipelineError), source=path, error=PipelineError
    )
    names = set(pipeline.stage_names)
    declared = {(e.source, e.target) for e in pipeline.edges}
    measured: dict[tuple[str, str], _MeasuredEdge] = {}
    for i, e in enumerate(spec.edges):
        key = (e.source, e.target)
        if key not in declared:
            raise PipelineError(
                f"edge {e.source} -> {e.target} is not an edge of pipeline '{pipeline.name}'; "
                "re-run `inferline profile` after changing the pipeline",
                source=path,
                field=f"edges[{i}]",
            )
        if key in measured:
            raise PipelineError(
                f"edge {e.source} -> {e.target} appears twice", source=path, field=f"edges[{i}]"
            )
        if e.taken > e.visits:
            raise PipelineError(
                f"taken ({e.taken}) exceeds visits ({e.visits})", source=path, field=f"edges[{i}]"
            )
        measured[key] = e
    missing = sorted(declared - set(measured))
    if missing:
        a, b = missing[0]
        raise PipelineError(
            f"edge {a} -> {b} of the pipeline has no measured probability; re-run "
            "`inferline profile`",
            source=path,
            field="edges",
        )
    for name in spec.stages:
        if name not in names:
            raise PipelineError(
                f"unknown stage '{name}'; the pipeline has {', '.join(pipeline.stage_names)}",
                source=path,
                field=f"stages.{name}",
            )
    table: list[tuple[str, ...]] = []
    for k, entry in enumerate(spec.paths):
        unknown = [s for s in entry.stages if s not in names]
        if unknown:
            raise PipelineError(
                f"path names unknown stage '{unknown[0]}'", source=path, field=f"paths[{k}]"
            )
        table.append(tuple(sorted(set(entry.stages))))
    pipeline.paths_to_masks(table, source=str(path))
    if len(spec.sample_paths) != spec.samples:
        raise PipelineError(
            f"{len(spec.sample_paths)} entries for {spec.samples} samples",
            source=path,
            field="sample_paths",
        )
    for i, k in enumerate(spec.sample_paths):
        if not 0 <= k < len(table):
            raise PipelineError(
                f"path index {k} is outside paths (which has {len(table)} entries)",
                source=path,
                field=f"sample_paths[{i}]",
            )
    return MeasuredPaths(
        samples=spec.samples,
        seed=spec.seed,
        edge_probability={k: e.probability for k, e in measured.items()},
        edge_counts={k: (e.taken, e.visits) for k, e in measured.items()},
        scale_factors={n: s.scale_factor for n, s in spec.stages.items()},
        stage_visits={n: s.visits for n, s in spec.stages.items()},
        path_table=tuple(table),
        sample_path=tuple(spec.sample_paths),
        samples_function=spec.samples_function,
        code_hash=spec.code_hash,
        samples_hash=spec.samples_hash,
        measured_on=spec.measured_on,
        source=str(path),
    )


def measured_paths_to_mapping(paths: MeasuredPaths, pipeline: Pipeline) -> dict[str, Any]:
    """The paths file's content (edges in the pipeline's order, stages in its order)."""
    return {
        "samples": paths.samples,
        "seed": paths.seed,
        "samples_function": paths.samples_function,
        "code_hash": paths.code_hash,
        "samples_hash": paths.samples_hash,
        "measured_on": paths.measured_on,
        "edges": [
            {
                "from": e.source,
                "to": e.target,
                "probability": paths.edge_probability[(e.source, e.target)],
                "taken": paths.edge_counts[(e.source, e.target)][0],
                "visits": paths.edge_counts[(e.source, e.target)][1],
            }
            for e in pipeline.edges
        ],
        "stages": {
            n: {"scale_factor": paths.scale_factors[n], "visits": paths.stage_visits[n]}
            for n in pipeline.stage_names
        },
        "paths": [
            {"stages": list(stages), "count": paths.sample_path.count(k)}
            for k, stages in enumerate(paths.path_table)
        ],
        "sample_paths": list(paths.sample_path),
    }


def apply_measured_paths(pipeline: Pipeline, paths: MeasuredPaths) -> Pipeline:
    """The same pipeline with each edge's probability replaced by the measured one.

    A measured probability of 0 that would leave a stage unreachable is an error naming
    the stage: the samples never exercised it, so neither its profile nor its share of
    the load is known.
    """
    edges = tuple(
        Edge(e.source, e.target, paths.edge_probability[(e.source, e.target)])
        for e in pipeline.edges
    )
    never = [n for n in pipeline.stage_names if paths.stage_visits.get(n, 0) == 0]
    if never:
        raise PipelineError(
            f"no sample query reached stage(s) {', '.join(never)}; make the samples "
            "function produce queries that take every branch, then re-run `inferline profile`",
            source=paths.source,
            field="stages",
        )
    return Pipeline(
        name=pipeline.name,
        stages=pipeline.stages,
        edges=edges,
        description=pipeline.description,
        source=pipeline.source,
    )
