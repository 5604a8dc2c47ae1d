"""The Ray actor behind one replica: the embedded engine's worker loop, as actor methods.

The actor runs exactly the code of an embedded replica process
(:mod:`inferline.engine.batching`): ``setup`` imports the stage class and runs its
``setup()`` (answering ``("ready", info)`` or ``("fatal", message)``, as the worker's
first message does), and ``run`` runs one batch (``("done", ...)`` / ``("failed", ...)``).
Its default concurrency group has one thread, so batches run one at a time, as on a
worker process. ``watch`` runs in a group of its own and never returns: the front-end
keeps one call pending per actor and learns of the actor's death the moment that call
fails (the embedded engine's EOF on the socket).

Start-up cost: this module is shipped to the workers *by value* (cloudpickle) and imports
nothing of InferLine at module level, so that unpickling the class does not run
``inferline/__init__.py`` (the estimator, numba, the planner: ~0.8 s of CPU and ~50 MB per
actor). ``setup`` first installs the same lazy ``inferline`` package stub the embedded
engine's replicas use, then imports only the batch-running code.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import threading
import traceback
import types
from typing import Any

import ray
from ray import cloudpickle as _cloudpickle

__all__ = ["StageActor"]

_ray: Any = ray  # ray's annotations are partial; calls go through Any
_pickle: Any = _cloudpickle


def _install_package_stub() -> None:
    """Make ``import inferline.x`` skip ``inferline/__init__.py`` until an attribute of the
    package itself is asked for (then the real ``__init__`` runs), as engine/_replica.py."""
    if "inferline" in sys.modules:
        return
    spec = importlib.util.find_spec("inferline")
    if spec is None or not spec.submodule_search_locations:
        return  # not installed here: the import in setup() reports it
    root = next(iter(spec.submodule_search_locations))
    package = types.ModuleType("inferline")
    package.__path__ = [root]
    package.__file__ = os.path.join(root, "__init__.py")

    def full(name: str) -> Any:
        del package.__dict__["__getattr__"]
        with open(package.__file__ or "", encoding="utf-8") as f:
            exec(compile(f.read(), package.__file__ or "", "exec"), package.__dict__)
        return getattr(package, name)

    package.__dict__["__getattr__"] = full  # PEP 562: looked up in the module's dict
    sys.modules["inferline"] = package


class _StageActor:
    """One replica of one stage (created with the stage's resources by the front-end)."""

    def __init__(self) -> None:
        self._model: Any = None
        self._stage = ""
        self._successors: tuple[str, ...] = ()
        self._declared: tuple[Any, ...] = ()
        self._run_batch: Any = None
        self._forever = threading.Event()

    def setup(self, spec: dict[str, Any]) -> tuple[str, Any]:
        for folder in reversed(spec.get("sys_path", [])):
            if folder not in sys.path and os.path.isdir(folder):
                sys.path.insert(0, folder)
        self._stage = spec["stage"]
        self._successors = tuple(spec["successors"])
        try:
            _install_package_stub()
            from inferline.engine.batching import (
                declared_outputs,
                load_stage,
                run_batch,
                stage_specs,
            )

            self._run_batch = run_batch
            model = load_stage(spec)
        except BaseException as exc:
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            return ("fatal", f"{detail} (while loading {spec['model']})")
        self._model = model
        self._declared = declared_outputs(model)
        context = _ray.get_runtime_context()
        return (
            "ready",
            {
                "pid": os.getpid(),
                "node_id": context.get_node_id(),
                "node_ip": _ray.util.get_node_ip_address(),
                "inputs": stage_specs(getattr(model, "inputs", ())),
                "outputs": stage_specs(self._declared),
            },
        )

    def run(self, batch_id: int, items: list[Any]) -> tuple[Any, ...]:
        try:
            results, predict_s, cpu_s = self._run_batch(
                self._model, self._stage, items, self._successors, self._declared
            )
        except Exception as exc:
            return ("failed", batch_id, f"{type(exc).__name__}: {exc}")
        return ("done", batch_id, results, predict_s, cpu_s)

    @_ray.method(concurrency_group="watch")  # type: ignore[untyped-decorator]
    def watch(self) -> None:
        self._forever.wait()


# Ship this module's code by value: unpickling the class on a worker must not import the
# ``inferline`` package (module docstring).
_pickle.register_pickle_by_value(sys.modules[__name__])

#: The actor class (``StageActor.options(...).remote()``).
StageActor: Any = _ray.remote(concurrency_groups={"watch": 1})(_StageActor)
