"""Sample queries: the bundle's ``samples: "module:function"`` and the requests it returns.

The function is ``f(n: int, seed: int) -> list[dict]``: ``n`` Open Inference Protocol V2
request bodies (``{"inputs": [{"name", "shape", "datatype", "data"}, ...]}``), the same
ones for the same arguments. Its module is found in the bundle folder first, as a stage's
``model`` is.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from inferline.engine import RequestError, Tensor, TensorSpec, parse_infer_request
from inferline.profiler._errors import ProfilerError
from inferline.profiler._stats import digest

__all__ = [
    "bundle_imports",
    "encode_bodies",
    "load_samples",
    "module_source_hash",
    "parse_requests",
    "split_import_path",
]


def split_import_path(path: str) -> tuple[str, str]:
    """``module:attr`` (or ``module.attr``) → (module, attr)."""
    module, sep, attr = path.partition(":")
    if not sep:
        module, _, attr = path.rpartition(".")
    if not module or not attr:
        raise ImportError(f"{path!r} is not an import path of the form 'module:name'")
    return module, attr


@contextlib.contextmanager
def bundle_imports(root: Path) -> Iterator[None]:
    """Put ``root`` first on ``sys.path`` for the block; afterwards forget the modules
    imported from it, so that another bundle's module of the same name loads afresh."""
    folder = str(root.resolve())
    before = set(sys.modules)
    sys.path.insert(0, folder)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(folder)
        for name in set(sys.modules) - before:
            origin = getattr(sys.modules.get(name), "__file__", None) or ""
            if origin.startswith(folder):
                del sys.modules[name]


def module_source_hash(import_path: str, root: Path) -> str:
    """Hash of the source file of the module ``import_path`` names (not imported)."""
    module_name, _ = split_import_path(import_path)
    with bundle_imports(root):
        try:
            spec = importlib.util.find_spec(module_name)
        except (ImportError, ValueError):
            spec = None
    origin = spec.origin if spec is not None else None
    if origin is None or not Path(origin).is_file():
        return digest(["unresolved", import_path])
    return digest([Path(origin).read_bytes()])


def load_samples(root: Path, import_path: str, n: int, seed: int) -> list[dict[str, Any]]:
    """Call the bundle's samples function; check it returned ``n`` JSON request bodies."""
    where = f"samples function '{import_path}'"
    with bundle_imports(root):
        try:
            module_name, attr = split_import_path(import_path)
            function: Any = importlib.import_module(module_name)
            for part in attr.split("."):
                function = getattr(function, part)
        except Exception as exc:
            raise ProfilerError(
                f"{where} cannot be imported: {type(exc).__name__}: {exc} (the module is looked "
                f"up in {root} first; pipeline.yaml's 'samples' is 'module:function')"
            ) from None
        if not callable(function):
            raise ProfilerError(f"{where} is not callable")
        try:
            bodies = function(n, seed)
        except Exception as exc:
            raise ProfilerError(
                f"{where} raised {type(exc).__name__}: {exc} when called with n={n}, seed={seed}"
            ) from None
    if not isinstance(bodies, list | tuple):
        raise ProfilerError(
            f"{where} returned {type(bodies).__name__}; it must return a list of request bodies"
        )
    if len(bodies) != n:
        raise ProfilerError(f"{where} returned {len(bodies)} request bodies for n={n}")
    for i, body in enumerate(bodies):
        if not isinstance(body, dict) or not isinstance(body.get("inputs"), list):
            raise ProfilerError(
                f"{where}: body {i} is not an infer request (a dict with an 'inputs' list)"
            )
        try:
            json.dumps(body)
        except (TypeError, ValueError) as exc:
            raise ProfilerError(f"{where}: body {i} is not JSON-serialisable ({exc})") from None
    return list(bodies)


def encode_bodies(bodies: Sequence[dict[str, Any]]) -> list[bytes]:
    """The bodies as the bytes an HTTP client sends."""
    return [json.dumps(body, separators=(",", ":")).encode() for body in bodies]


def parse_requests(
    bodies: Sequence[bytes], declared: dict[str, TensorSpec], where: str
) -> list[dict[str, Tensor]]:
    """Each body as the engine parses it: the tensors a source stage receives."""
    out = []
    for i, body in enumerate(bodies):
        try:
            out.append(parse_infer_request(body, declared).inputs)
        except RequestError as exc:
            raise ProfilerError(
                f"{where}: body {i} would be rejected by the engine: {exc}"
            ) from None
    return out
