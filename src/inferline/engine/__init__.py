"""The serving engine: run a planned pipeline for real on one machine (SPEC §2.8, §3).

A front-end process (asyncio + uvicorn) keeps one EDF queue per stage and routes
queries through the DAG; one worker process per replica runs the stage's
:class:`StageModel`. HTTP API: Open Inference Protocol V2, a control API and
Prometheus metrics. Architecture and semantics: docs/engine.md.

The stage API is imported eagerly (replica processes import it); the front-end
pieces load on first use so a replica does not pay for uvicorn and pydantic.

Other packages use the engine only through the names below and its public modules:
:mod:`inferline.engine.batching` (running a stage's batches: the worker process, the Ray
actor and in-memory test replicas share it), :mod:`inferline.engine.process` (an engine
served in a child process: the profiler and the benchmarks) and
:mod:`inferline.engine.testing` (test stages and in-memory replicas).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from inferline.engine._errors import EngineError, RequestError, StageLoadError, UnreachableError
from inferline.engine._stage import DATATYPES, StageModel, Tensor, TensorSpec

if TYPE_CHECKING:
    from inferline.engine._calibration import CalibrationOptions
    from inferline.engine._calibration_client import CalibrationReport, fetch_calibration
    from inferline.engine._control import ControlOptions, check_exposure, resolve_token
    from inferline.engine._engine import Answer, Engine, EngineOptions, ReplicaFactory
    from inferline.engine._hardware import (
        REPLICA_NICE,
        ReplicaResources,
        resources_for,
        thread_environment,
    )
    from inferline.engine._http import EngineApp
    from inferline.engine._replay import (
        ReplayResult,
        answered_path,
        default_body,
        parse_input_option,
        replay,
        replay_summary,
    )
    from inferline.engine._replica import Replica, ReplicaState
    from inferline.engine._server import (
        load_serving_inputs,
        load_serving_profiles,
        run_loop,
        serve,
        serve_async,
    )
    from inferline.engine._tensor import InferRequest, parse_infer_request
    from inferline.engine.process import EngineProcess, free_port, start_engine

__all__ = [
    "DATATYPES",
    "REPLICA_NICE",
    "Answer",
    "CalibrationOptions",
    "CalibrationReport",
    "ControlOptions",
    "Engine",
    "EngineApp",
    "EngineError",
    "EngineOptions",
    "EngineProcess",
    "InferRequest",
    "ReplayResult",
    "Replica",
    "ReplicaFactory",
    "ReplicaResources",
    "ReplicaState",
    "RequestError",
    "StageLoadError",
    "StageModel",
    "Tensor",
    "TensorSpec",
    "UnreachableError",
    "answered_path",
    "check_exposure",
    "default_body",
    "fetch_calibration",
    "free_port",
    "load_serving_inputs",
    "load_serving_profiles",
    "parse_infer_request",
    "parse_input_option",
    "replay",
    "replay_summary",
    "resolve_token",
    "resources_for",
    "run_loop",
    "serve",
    "serve_async",
    "start_engine",
    "thread_environment",
]

_LAZY = {
    "CalibrationOptions": "inferline.engine._calibration",
    "CalibrationReport": "inferline.engine._calibration_client",
    "fetch_calibration": "inferline.engine._calibration_client",
    "Answer": "inferline.engine._engine",
    "ControlOptions": "inferline.engine._control",
    "check_exposure": "inferline.engine._control",
    "resolve_token": "inferline.engine._control",
    "Engine": "inferline.engine._engine",
    "EngineOptions": "inferline.engine._engine",
    "ReplicaFactory": "inferline.engine._engine",
    "REPLICA_NICE": "inferline.engine._hardware",
    "ReplicaResources": "inferline.engine._hardware",
    "resources_for": "inferline.engine._hardware",
    "thread_environment": "inferline.engine._hardware",
    "EngineApp": "inferline.engine._http",
    "ReplayResult": "inferline.engine._replay",
    "answered_path": "inferline.engine._replay",
    "default_body": "inferline.engine._replay",
    "parse_input_option": "inferline.engine._replay",
    "replay": "inferline.engine._replay",
    "replay_summary": "inferline.engine._replay",
    "Replica": "inferline.engine._replica",
    "ReplicaState": "inferline.engine._replica",
    "load_serving_inputs": "inferline.engine._server",
    "load_serving_profiles": "inferline.engine._server",
    "run_loop": "inferline.engine._server",
    "serve": "inferline.engine._server",
    "serve_async": "inferline.engine._server",
    "InferRequest": "inferline.engine._tensor",
    "parse_infer_request": "inferline.engine._tensor",
    "EngineProcess": "inferline.engine.process",
    "free_port": "inferline.engine.process",
    "start_engine": "inferline.engine.process",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'inferline.engine' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
