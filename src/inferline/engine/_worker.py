"""A replica process: import the stage class, run setup(), then serve batches until told to stop.

Started by the front-end as ``python -m inferline.engine._worker SPEC_JSON`` with one end
of a socketpair inherited as file descriptor ``SPEC_JSON["fd"]``, or forked from a stage
template (``_launcher``) that has already imported the stage, which then calls ``serve``.
It ignores SIGINT (a Ctrl-C in the terminal reaches the whole process group; the
front-end decides when replicas stop) and exits on ``("stop",)`` or when the front-end's end closes.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import signal
import socket
import sys
import time
import traceback
from collections.abc import Sequence
from typing import Any

from inferline.engine._stage import TensorSpec
from inferline.engine._tensor import value_to_tensors
from inferline.engine._wire import SocketReader, pack

__all__ = ["add_import_path", "import_stage", "main", "serve"]


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


def _specs(value: Any) -> list[tuple[str, str, tuple[int, ...]]]:
    specs = value if isinstance(value, list | tuple) else ()
    return [(s.name, s.datatype, tuple(s.shape)) for s in specs if isinstance(s, TensorSpec)]


def _load(spec: dict[str, Any]) -> Any:
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


def _run_batch(
    model: Any,
    stage: str,
    items: list[Any],
    successors: Sequence[str],
    declared: Sequence[TensorSpec],
) -> tuple[list[tuple[Any, Any, Any, str | None]], float]:
    started = time.perf_counter()
    outputs = model.predict(items)
    predict_s = time.perf_counter() - started
    if not isinstance(outputs, list | tuple) or len(outputs) != len(items):
        got = len(outputs) if isinstance(outputs, list | tuple) else type(outputs).__name__
        raise TypeError(f"predict returned {got} outputs for a batch of {len(items)}")
    route = getattr(model, "route", None)
    results: list[tuple[Any, Any, Any, str | None]] = []
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
    return results, predict_s


def main(argv: Sequence[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    spec = json.loads(argv[0])
    add_import_path(spec.get("sys_path", []))
    return serve(spec)


def add_import_path(folders: Sequence[str]) -> None:
    for folder in reversed(folders):
        if folder not in sys.path:
            sys.path.insert(0, folder)


def serve(spec: dict[str, Any]) -> int:
    """Load the stage and answer batches on the socket ``spec["fd"]`` until told to stop."""
    sock = socket.socket(fileno=spec["fd"])
    stage: str = spec["stage"]
    successors: tuple[str, ...] = tuple(spec["successors"])
    try:
        model = _load(spec)
    except BaseException as exc:
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        sock.sendall(pack(("fatal", f"{detail} (while loading {spec['model']})")))
        return 2
    declared_out = tuple(s for s in getattr(model, "outputs", ()) if isinstance(s, TensorSpec))
    info = {
        "pid": os.getpid(),
        "inputs": _specs(getattr(model, "inputs", ())),
        "outputs": _specs(declared_out),
    }
    sock.sendall(pack(("ready", info)))
    reader = SocketReader(sock)
    while True:
        message = reader.next()
        if message is None or message[0] == "stop":
            return 0
        _, batch_id, items = message
        try:
            results, predict_s = _run_batch(model, stage, items, successors, declared_out)
            reply = pack(("done", batch_id, results, predict_s))
        except Exception as exc:
            reply = pack(("failed", batch_id, f"{type(exc).__name__}: {exc}"))
        sock.sendall(reply)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
