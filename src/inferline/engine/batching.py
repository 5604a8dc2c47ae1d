"""Run a stage's batches: the one code path every kind of replica shares.

A replica, whatever carries its messages, does the same three things: import and set up
the stage class (:func:`load_stage`), describe its declared tensors to the front-end
(:func:`stage_specs`, :func:`declared_outputs`), and turn one batch of inputs into one
result per query (:func:`run_batch`: ``predict``, the stage's ``route``, and the tensors
that end a branch). The embedded engine's worker process (``_worker``), the Ray actor and
Ray Serve deployment (``inferline.ray_backend``) and the in-memory replicas of the unit
tests (``inferline.engine.testing``) all call these, so a stage behaves the same on each.

Kept free of the front-end's imports (uvicorn, pydantic): a replica process loads only
this, the stage API and the tensor codec.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
import time
from collections.abc import Sequence
from typing import Any

from inferline.engine._stage import TensorSpec
from inferline.engine._tensor import value_to_tensors

__all__ = [
    "ItemResult",
    "add_import_path",
    "declared_outputs",
    "import_stage",
    "load_stage",
    "run_batch",
    "stage_specs",
]

#: One query's result at a stage: ``(value, successors, tensors, error)``. ``value`` goes on
#: to the chosen ``successors``; when none is chosen the branch ends and ``tensors`` are its
#: outputs (OIP JSON); ``error`` fails this query alone.
ItemResult = tuple[Any, tuple[str, ...], list[dict[str, Any]] | None, str | None]


def import_stage(path: str) -> Any:
    """Import ``module:Class`` (or ``module.Class``)."""
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise ImportError(f"{path!r} is not an import path of the form 'module:Class'")
    module = importlib.import_module(module_name)
    obj = module
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def add_import_path(folders: Sequence[str]) -> None:
    """Put the bundle's folders first on ``sys.path`` so its stage modules import."""
    for folder in reversed(folders):
        if folder not in sys.path:
            sys.path.insert(0, folder)


def load_stage(spec: dict[str, Any]) -> Any:
    """Build the stage object ``spec["model"]`` names and run its ``setup()``.

    ``spec`` is what the front-end sends a new replica: ``model`` (import path),
    ``hardware``, ``threads`` and ``device`` (set on the object before ``setup``, so the
    stage can size itself). Raises whatever the import, constructor or setup raises.
    """
    cls = import_stage(spec["model"])
    model = cls()
    for attr in ("hardware", "threads", "device"):
        with contextlib.suppress(AttributeError):  # __slots__ or read-only properties
            setattr(model, attr, spec[attr])
    if not callable(getattr(model, "predict", None)):
        raise TypeError(f"{spec['model']} has no predict(inputs) method")
    setup = getattr(model, "setup", None)
    if callable(setup):
        setup()
    torch = sys.modules.get("torch")
    if torch is not None:  # libraries read their thread settings at import; torch needs a call
        torch.set_num_threads(spec["threads"])
    return model


def declared_outputs(model: Any) -> tuple[TensorSpec, ...]:
    """The output tensors the stage declares (its ``outputs``), used to encode end results."""
    return tuple(s for s in getattr(model, "outputs", ()) if isinstance(s, TensorSpec))


def stage_specs(value: Any) -> list[tuple[str, str, tuple[int, ...]]]:
    """Declared tensors as plain ``(name, datatype, shape)`` tuples: what a replica's
    ``ready`` message carries to the front-end (no classes cross the wire)."""
    specs = value if isinstance(value, list | tuple) else ()
    return [(s.name, s.datatype, tuple(s.shape)) for s in specs if isinstance(s, TensorSpec)]


def run_batch(
    model: Any,
    stage: str,
    items: list[Any],
    successors: Sequence[str],
    declared: Sequence[TensorSpec],
) -> tuple[list[ItemResult], float, float]:
    """One batch through ``model``: a result per item, the seconds ``predict`` took and
    the CPU seconds the replica's process spent in it (every thread: the work the batch
    asked of the cores, without the time it waited for one).

    Raises when the batch as a whole fails (``predict`` raised or returned the wrong
    number of outputs); a problem with one output (a bad ``route`` choice, an output
    that is not a tensor) fails only that item's query.
    """
    started = time.perf_counter()
    cpu_started = time.process_time()
    outputs = model.predict(items)
    predict_s = time.perf_counter() - started
    predict_cpu_s = time.process_time() - cpu_started
    if not isinstance(outputs, list | tuple) or len(outputs) != len(items):
        got = len(outputs) if isinstance(outputs, list | tuple) else type(outputs).__name__
        raise TypeError(f"predict returned {got} outputs for a batch of {len(items)}")
    route = getattr(model, "route", None)
    results: list[ItemResult] = []
    for output in outputs:
        try:
            chosen: tuple[str, ...] = tuple(successors)
            if successors and callable(route):
                picked = route(output)
                if picked is not None:
                    picked = (picked,) if isinstance(picked, str) else tuple(picked)
                    unknown = [name for name in picked if name not in successors]
                    if unknown:
                        raise ValueError(
                            f"route() named {', '.join(map(repr, unknown))}, which "
                            f"{'is' if len(unknown) == 1 else 'are'} not a successor of "
                            f"'{stage}' ({', '.join(successors) or 'none'})"
                        )
                    chosen = tuple(name for name in successors if name in picked)
            if chosen:
                results.append((output, chosen, None, None))
            else:
                results.append((None, (), value_to_tensors(stage, output, declared), None))
        except Exception as exc:  # one bad output fails its query, not the batch
            results.append((None, (), None, f"{type(exc).__name__}: {exc}"))
    return results, predict_s, predict_cpu_s
