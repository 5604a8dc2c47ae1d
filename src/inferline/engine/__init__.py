"""The serving engine: run a planned pipeline for real on one machine (SPEC §2.8, §3).

A front-end process (asyncio + uvicorn) keeps one EDF queue per stage and routes
queries through the DAG; one worker process per replica runs the stage's
:class:`StageModel`. HTTP API: Open Inference Protocol V2, a control API and
Prometheus metrics. Architecture and semantics: docs/engine.md.

The stage API is imported eagerly (replica processes import it); the front-end
pieces load on first use so a replica does not pay for uvicorn and pydantic.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from inferline.engine._errors import EngineError, RequestError, StageLoadError
from inferline.engine._stage import DATATYPES, StageModel, Tensor, TensorSpec

if TYPE_CHECKING:
    from inferline.engine._bench import run_engine_benchmark
    from inferline.engine._control import ControlOptions
    from inferline.engine._engine import Answer, Engine, EngineOptions
    from inferline.engine._http import EngineApp
    from inferline.engine._replay import ReplayResult, replay, replay_summary
    from inferline.engine._server import serve

__all__ = [
    "DATATYPES",
    "Answer",
    "ControlOptions",
    "Engine",
    "EngineApp",
    "EngineError",
    "EngineOptions",
    "ReplayResult",
    "RequestError",
    "StageLoadError",
    "StageModel",
    "Tensor",
    "TensorSpec",
    "replay",
    "replay_summary",
    "run_engine_benchmark",
    "serve",
]

_LAZY = {
    "Answer": "inferline.engine._engine",
    "ControlOptions": "inferline.engine._control",
    "Engine": "inferline.engine._engine",
    "EngineOptions": "inferline.engine._engine",
    "EngineApp": "inferline.engine._http",
    "ReplayResult": "inferline.engine._replay",
    "replay": "inferline.engine._replay",
    "replay_summary": "inferline.engine._replay",
    "run_engine_benchmark": "inferline.engine._bench",
    "serve": "inferline.engine._server",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'inferline.engine' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
