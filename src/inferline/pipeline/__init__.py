"""Pipelines: the DAG of stages, its file format, and per-stage configurations."""

from inferline.pipeline._config import (
    PipelineConfig,
    StageConfig,
    check_stage_names,
    load_config,
    save_config,
)
from inferline.pipeline._graph import Edge, Pipeline, Stage
from inferline.pipeline._io import load_pipeline

__all__ = [
    "Edge",
    "Pipeline",
    "PipelineConfig",
    "Stage",
    "StageConfig",
    "check_stage_names",
    "load_config",
    "load_pipeline",
    "save_config",
]
