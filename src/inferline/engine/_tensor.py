"""Open Inference Protocol V2 JSON: parse and check infer requests, convert outputs to tensors.

Parsing runs in the front-end so a bad request gets its 400 before it is queued;
output conversion runs in the replica process, off the front-end's event loop.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from inferline.engine._errors import RequestError
from inferline.engine._stage import DATATYPES, Tensor, TensorSpec

__all__ = ["InferRequest", "parse_infer_request", "value_to_tensors"]

_INT_RANGES = {
    "INT8": (-(2**7), 2**7),
    "INT16": (-(2**15), 2**15),
    "INT32": (-(2**31), 2**31),
    "INT64": (-(2**63), 2**63),
    "UINT8": (0, 2**8),
    "UINT16": (0, 2**16),
    "UINT32": (0, 2**32),
    "UINT64": (0, 2**64),
}
_FLOATS = frozenset({"FP16", "FP32", "FP64"})


@dataclass(frozen=True, slots=True)
class InferRequest:
    """A checked infer request: tensors by input name, echoed id, requested output names."""

    inputs: dict[str, Tensor]
    id: str | None = None
    outputs: tuple[str, ...] | None = None


def _bad(message: str) -> RequestError:
    return RequestError(400, message)


def _flatten(data: Any, shape: tuple[int, ...], where: str) -> list[Any]:
    """Row-major flat data; nested lists must follow ``shape`` exactly."""
    if not isinstance(data, list):
        raise _bad(f"{where}: 'data' must be a JSON array, got {type(data).__name__}")
    if not data or not isinstance(data[0], list):
        if any(isinstance(x, list) for x in data):
            raise _bad(f"{where}: 'data' mixes arrays and scalars")
        return data
    flat: list[Any] = []

    def walk(node: Any, depth: int) -> None:
        if isinstance(node, list):
            if depth >= len(shape) or len(node) != shape[depth]:
                want = shape[depth] if depth < len(shape) else "a scalar"
                raise _bad(
                    f"{where}: nested 'data' does not follow shape {list(shape)} "
                    f"(dimension {depth} has {len(node)} entries, expected {want})"
                )
            for child in node:
                walk(child, depth + 1)
        else:
            if depth != len(shape):
                raise _bad(f"{where}: nested 'data' does not follow shape {list(shape)}")
            flat.append(node)

    walk(data, 0)
    return flat


def _check_elements(data: list[Any], datatype: str, where: str) -> None:
    if datatype == "BYTES":
        bad = next((i for i, x in enumerate(data) if type(x) is not str), None)
        need = "strings"
    elif datatype == "BOOL":
        bad = next((i for i, x in enumerate(data) if type(x) is not bool), None)
        need = "true/false"
    elif datatype in _FLOATS:
        bad = next(
            (i for i, x in enumerate(data) if type(x) is not float and type(x) is not int), None
        )
        need = "numbers"
    else:
        low, high = _INT_RANGES[datatype]
        bad = next(
            (i for i, x in enumerate(data) if type(x) is not int or not low <= x < high), None
        )
        need = f"integers in [{low}, {high})"
    if bad is not None:
        raise _bad(f"{where}: datatype {datatype} needs {need}; element {bad} is {data[bad]!r}")


def _parse_tensor(entry: Any, k: int) -> Tensor:
    where = f"inputs[{k}]"
    if not isinstance(entry, dict):
        raise _bad(f"{where} must be an object with name, shape, datatype and data")
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        raise _bad(f"{where}: 'name' must be a non-empty string")
    where = f"input '{name}'"
    for key in ("shape", "datatype", "data"):
        if key not in entry:
            raise _bad(f"{where}: '{key}' is missing")
    datatype = entry["datatype"]
    if datatype not in DATATYPES:
        raise _bad(
            f"{where}: unknown datatype {datatype!r}; use one of {', '.join(sorted(DATATYPES))}"
        )
    raw_shape = entry["shape"]
    if not isinstance(raw_shape, list) or not all(type(d) is int and d >= 0 for d in raw_shape):
        raise _bad(f"{where}: 'shape' must be an array of non-negative integers, got {raw_shape!r}")
    shape = tuple(raw_shape)
    data = _flatten(entry["data"], shape, where)
    expected = math.prod(shape)
    if len(data) != expected:
        raise _bad(
            f"{where}: shape {list(shape)} holds {expected} element(s) but 'data' has {len(data)}"
        )
    _check_elements(data, datatype, where)
    return Tensor(name, datatype, shape, data)


def parse_infer_request(body: bytes, declared: Mapping[str, TensorSpec]) -> InferRequest:
    """Parse and check one request body; raise RequestError(400) saying what is wrong.

    ``declared`` are the model's declared inputs (empty: any named tensors are accepted).
    """
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _bad(f"malformed JSON in the request body: {exc}") from None
    if not isinstance(doc, dict):
        raise _bad("the request body must be a JSON object with an 'inputs' array")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise _bad("'inputs' must be a non-empty array of tensors {name, shape, datatype, data}")
    inputs: dict[str, Tensor] = {}
    for k, entry in enumerate(raw_inputs):
        tensor = _parse_tensor(entry, k)
        if tensor.name in inputs:
            raise _bad(f"input '{tensor.name}' appears twice")
        inputs[tensor.name] = tensor
    if declared:
        _check_declared(inputs, declared)
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str | int):
        raise _bad("'id' must be a string")
    outputs = _parse_outputs(doc.get("outputs"))
    parameters = doc.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise _bad("'parameters' must be an object")
    return InferRequest(inputs, None if request_id is None else str(request_id), outputs)


def _check_declared(inputs: Mapping[str, Tensor], declared: Mapping[str, TensorSpec]) -> None:
    for name, tensor in inputs.items():
        spec = declared.get(name)
        if spec is None:
            raise _bad(f"unknown input '{name}'; the model's inputs are {', '.join(declared)}")
        if tensor.datatype != spec.datatype:
            raise _bad(
                f"input '{name}' has datatype {tensor.datatype}; the model expects {spec.datatype}"
            )
        if not spec.matches_shape(tensor.shape):
            raise _bad(
                f"input '{name}' has shape {list(tensor.shape)}; the model expects "
                f"{list(spec.shape)} (-1 = any length)"
            )
    missing = [name for name in declared if name not in inputs]
    if missing:
        raise _bad(f"missing input(s) {', '.join(repr(m) for m in missing)}")


def _parse_outputs(raw: Any) -> tuple[str, ...] | None:
    if raw is None:
        return None
    if not isinstance(raw, list) or not all(
        isinstance(o, dict) and isinstance(o.get("name"), str) for o in raw
    ):
        raise _bad("'outputs' must be an array of objects with a 'name'")
    return tuple(o["name"] for o in raw)


# --- outputs (run in the replica) ----------------------------------------------------------


def value_to_tensors(
    stage: str, value: Any, declared: Sequence[TensorSpec] = ()
) -> list[dict[str, Any]]:
    """A stage's final output as OIP output tensors (JSON-ready dicts).

    A dict gives one tensor per key; anything else one tensor named after the single
    declared output, or after the stage.
    """
    if isinstance(value, dict):
        return [_tensor_json(str(key), item) for key, item in value.items()]
    name = declared[0].name if len(declared) == 1 else stage
    return [_tensor_json(name, value)]


def _tensor_json(name: str, value: Any) -> dict[str, Any]:
    if isinstance(value, Tensor):
        return {
            "name": name,
            "datatype": value.datatype,
            "shape": list(value.shape),
            "data": value.data,
        }
    if hasattr(value, "dtype") and hasattr(value, "tolist") and hasattr(value, "shape"):
        return _array_json(name, value)
    if isinstance(value, list | tuple):
        shape, flat = _nested(value)
        return {"name": name, "datatype": _infer(flat, name), "shape": shape, "data": flat}
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    return {"name": name, "datatype": _infer([value], name), "shape": [1], "data": [value]}


def _array_json(name: str, array: Any) -> dict[str, Any]:
    kind, bits = array.dtype.kind, array.dtype.itemsize * 8
    if kind == "b":
        datatype = "BOOL"
    elif kind in "iu":
        datatype = f"{'U' if kind == 'u' else ''}INT{bits}"
    elif kind == "f":
        datatype = f"FP{bits}"
    elif kind in "USO":
        datatype = "BYTES"
    else:
        raise TypeError(f"output '{name}': numpy dtype {array.dtype} has no tensor datatype")
    flat = array.reshape(-1).tolist()
    if datatype == "BYTES":
        flat = [x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x) for x in flat]
    return {"name": name, "datatype": datatype, "shape": list(array.shape), "data": flat}


def _nested(value: Sequence[Any]) -> tuple[list[int], list[Any]]:
    shape: list[int] = []
    node: Any = value
    while isinstance(node, list | tuple):
        shape.append(len(node))
        node = node[0] if node else None
    flat: list[Any] = []

    def walk(item: Any, depth: int) -> None:
        if depth < len(shape):
            if not isinstance(item, list | tuple) or len(item) != shape[depth]:
                raise TypeError("ragged nested list: rows must have equal lengths")
            for child in item:
                walk(child, depth + 1)
        else:
            flat.append(item.decode("utf-8", "replace") if isinstance(item, bytes) else item)

    walk(value, 0)
    return shape, flat


def _infer(flat: Sequence[Any], name: str) -> str:
    if all(type(x) is bool for x in flat):
        return "BOOL"
    if all(type(x) is int for x in flat):
        return "INT64"
    if all(type(x) in (int, float) for x in flat):
        return "FP64"
    if all(type(x) is str for x in flat):
        return "BYTES"
    kinds = sorted({type(x).__name__ for x in flat})
    raise TypeError(
        f"output '{name}' holds {', '.join(kinds)}; a tensor holds numbers, bools or strings "
        "(return those, lists of them, a numpy array, a Tensor or a dict of these)"
    )
