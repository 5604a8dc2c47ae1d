"""Pipelines: the DAG of stages, its file format, and per-stage configurations."""

from inferline.pipeline._config import (
    PipelineConfig,
    StageConfig,
    check_config,
    check_stage_names,
    load_config,
    save_config,
)
from inferline.pipeline._graph import Edge, Pipeline, Stage
from inferline.pipeline._io import (
    MeasuredPaths,
    PipelineFile,
    apply_measured_paths,
    load_measured_paths,
    load_pipeline,
    measured_paths_to_mapping,
    pipeline_from_mapping,
)

__all__ = [
    "Edge",
    "MeasuredPaths",
    "Pipeline",
    "PipelineConfig",
    "PipelineFile",
    "Stage",
    "StageConfig",
    "apply_measured_paths",
    "check_config",
    "check_stage_names",
    "load_config",
    "load_measured_paths",
    "load_pipeline",
    "measured_paths_to_mapping",
    "pipeline_from_mapping",
    "save_config",
]
