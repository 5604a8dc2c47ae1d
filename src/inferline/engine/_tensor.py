"""Open Inference Protocol V2 JSON: parse and check infer requests, convert outputs to tensors.

Parsing runs in the front-end so a bad request gets its 400 before it is queued;
output conversion runs in the replica process, off the front-end's event loop.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from inferline.engine._binary import decode_tensor
from inferline.engine._errors import RequestError
from inferline.engine._stage import DATATYPES, Tensor, TensorSpec

__all__ = [
    "MAX_ELEMENTS",
    "MAX_JSON_DEPTH",
    "MAX_RANK",
    "MAX_TENSOR_BYTES",
    "InferRequest",
    "parse_infer_request",
    "value_to_tensors",
]

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
    """A checked infer request: tensors by input name, echoed id, requested output names.

    ``binary_outputs`` names the outputs to answer as binary data (binary tensor data
    extension): ``None`` none, an empty tuple all of them (``binary_data_output``).
    """

    inputs: dict[str, Tensor]
    id: str | None = None
    outputs: tuple[str, ...] | None = None
    binary_outputs: tuple[str, ...] | None = None


#: Deepest JSON nesting a request body may have (a tensor's nested ``data`` included).
MAX_JSON_DEPTH = 64
#: Most dimensions a tensor's shape may have.
MAX_RANK = 16
#: Most elements one input tensor may hold (answered 413 above it).
MAX_ELEMENTS = 1 << 24
#: Most bytes of binary data one input tensor may have (answered 413 above it).
MAX_TENSOR_BYTES = 64 << 20

_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)


def _bad(message: str) -> RequestError:
    return RequestError(400, message)


def _show(value: Any) -> str:
    """A short, never recursive description of a JSON value for an error message."""
    if isinstance(value, list | dict):
        if (
            isinstance(value, list)
            and len(value) <= 8
            and not any(isinstance(x, list | dict) for x in value)
        ):
            text = repr(value)
        else:
            return f"{'an array' if isinstance(value, list) else 'an object'} of {len(value)}"
    else:
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _kind(value: Any) -> str:
    """The JSON kind of a parsed value, as named in error messages."""
    if value is None:
        return "null"
    return {
        bool: "boolean",
        int: "number",
        float: "number",
        str: "string",
        list: "array",
        dict: "object",
    }.get(type(value), type(value).__name__)


def _check_depth(body: bytes, limit: int = MAX_JSON_DEPTH) -> None:
    """400 if the body's JSON nests deeper than ``limit`` (checked before parsing it)."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return  # cannot nest deeper: the common, cheap case
    depth = 0
    for match in _TOKENS.finditer(body):
        token = match.group()
        if token in (b"[", b"{"):
            depth += 1
            if depth > limit:
                raise _bad(f"the request body nests JSON more than {limit} levels deep")
        elif token in (b"]", b"}"):
            depth -= 1


def _flatten(data: Any, shape: tuple[int, ...], where: str) -> list[Any]:
    """Row-major flat data; nested lists must follow ``shape`` exactly."""
    if not isinstance(data, list):
        raise _bad(f"{where}: 'data' must be a JSON array, got {_kind(data)}")
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
        raise _bad(
            f"{where}: datatype {datatype} needs {need}; element {bad} is {_show(data[bad])}"
        )


def _parse_shape(raw: Any, where: str) -> tuple[int, ...]:
    if not isinstance(raw, list) or not all(type(d) is int and d >= 0 for d in raw):
        raise _bad(f"{where}: 'shape' must be an array of non-negative integers, got {_show(raw)}")
    if len(raw) > MAX_RANK:
        raise _bad(f"{where}: 'shape' has {len(raw)} dimensions; the limit is {MAX_RANK}")
    shape = tuple(raw)
    count = math.prod(shape)
    if count > MAX_ELEMENTS:
        raise RequestError(
            413, f"{where}: shape {list(shape)} holds {count} elements; the limit is {MAX_ELEMENTS}"
        )
    return shape


def _binary_size(parameters: Any, where: str) -> int | None:
    """The input's ``binary_data_size`` parameter, checked; ``None`` when absent."""
    if parameters is None:
        return None
    if not isinstance(parameters, dict):
        raise _bad(f"{where}.parameters must be an object, got {_kind(parameters)}")
    size = parameters.get("binary_data_size")
    if size is None:
        return None
    if type(size) is not int or size < 0:
        raise _bad(
            f"{where}.parameters.binary_data_size must be a non-negative integer, got {_show(size)}"
        )
    if size > MAX_TENSOR_BYTES:
        raise RequestError(
            413,
            f"{where}.parameters.binary_data_size is {size} bytes; the limit is "
            f"{MAX_TENSOR_BYTES} bytes",
        )
    return size


def _parse_tensor(entry: Any, k: int, binary: _BinaryReader) -> Tensor:
    where = f"inputs[{k}]"
    if not isinstance(entry, dict):
        raise _bad(f"{where} must be an object with name, shape, datatype and data")
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        raise _bad(f"{where}.name must be a non-empty string, got {_show(name)}")
    if "datatype" not in entry:
        raise _bad(f"input '{name}': 'datatype' is missing")
    datatype = entry["datatype"]
    if not isinstance(datatype, str):
        raise _bad(f"{where}.datatype must be a string, got {_kind(datatype)}")
    if datatype not in DATATYPES:
        raise _bad(
            f"{where}.datatype: unknown datatype {_show(datatype)}; "
            f"use one of {', '.join(sorted(DATATYPES))}"
        )
    if "shape" not in entry:
        raise _bad(f"input '{name}': 'shape' is missing")
    shape = _parse_shape(entry["shape"], f"input '{name}'")
    expected = math.prod(shape)
    size = _binary_size(entry.get("parameters"), where)
    if size is not None:
        if "data" in entry:
            raise _bad(f"{where} has both 'data' and parameters.binary_data_size; give one")
        raw = binary.take(size, where)
        return Tensor(name, datatype, shape, decode_tensor(raw, datatype, expected, where))
    if "data" not in entry:
        raise _bad(f"input '{name}': 'data' is missing")
    where = f"input '{name}'"
    data = _flatten(entry["data"], shape, where)
    if len(data) != expected:
        raise _bad(
            f"{where}: shape {list(shape)} holds {expected} element(s) but 'data' has {len(data)}"
        )
    _check_elements(data, datatype, where)
    return Tensor(name, datatype, shape, data)


class _BinaryReader:
    """Hands out consecutive slices of a body's binary part, one per binary input."""

    __slots__ = ("data", "offset")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.offset = 0

    def take(self, size: int, where: str) -> bytes:
        left = len(self.data) - self.offset
        if size > left:
            raise _bad(
                f"{where}.parameters.binary_data_size is {size} bytes but only {left} bytes of "
                "binary data are left after the JSON part (Inference-Header-Content-Length)"
            )
        chunk = self.data[self.offset : self.offset + size]
        self.offset += size
        return chunk


def parse_infer_request(
    body: bytes, declared: Mapping[str, TensorSpec], json_length: int | None = None
) -> InferRequest:
    """Parse and check one request body; raise RequestError(400/413) saying what is wrong.

    ``declared`` are the model's declared inputs (empty: any named tensors are accepted).
    ``json_length`` is the ``Inference-Header-Content-Length`` header's value, when sent:
    the body's first ``json_length`` bytes are JSON and the rest the inputs' binary data.
    """
    if json_length is not None:
        if not 0 <= json_length <= len(body):
            raise _bad(
                f"the Inference-Header-Content-Length header ({json_length}) must be between "
                f"0 and the body's length ({len(body)})"
            )
        head, binary = body[:json_length], _BinaryReader(body[json_length:])
    else:
        head, binary = body, _BinaryReader(b"")
    _check_depth(head)
    try:
        doc = json.loads(head.decode("utf-8"))  # strict: json.loads(bytes) passes surrogates
    except (ValueError, UnicodeDecodeError) as exc:
        raise _bad(f"malformed JSON in the request body: {exc}") from None
    except RecursionError:  # pragma: no cover - _check_depth stops such bodies first
        raise _bad("the request body nests JSON too deeply") from None
    if not isinstance(doc, dict):
        raise _bad("the request body must be a JSON object with an 'inputs' array")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise _bad("'inputs' must be a non-empty array of tensors {name, shape, datatype, data}")
    inputs: dict[str, Tensor] = {}
    for k, entry in enumerate(raw_inputs):
        tensor = _parse_tensor(entry, k, binary)
        if tensor.name in inputs:
            raise _bad(f"input '{tensor.name}' appears twice")
        inputs[tensor.name] = tensor
    left = len(binary.data) - binary.offset
    if left:
        raise _bad(
            f"{left} bytes of binary data after the JSON part are not claimed by any input's "
            "parameters.binary_data_size"
        )
    if declared:
        _check_declared(inputs, declared)
    request_id = doc.get("id")
    if request_id is not None and (type(request_id) is not str and type(request_id) is not int):
        raise _bad(f"'id' must be a string, got {_kind(request_id)}")
    outputs, binary_outputs = _parse_outputs(doc.get("outputs"))
    parameters = doc.get("parameters")
    if parameters is not None:
        if not isinstance(parameters, dict):
            raise _bad(f"'parameters' must be an object, got {_kind(parameters)}")
        if _flag(parameters, "binary_data_output", "parameters"):
            binary_outputs = ()
    return InferRequest(
        inputs, None if request_id is None else str(request_id), outputs, binary_outputs
    )


def _flag(parameters: dict[str, Any], key: str, where: str) -> bool:
    value = parameters.get(key, False)
    if type(value) is not bool:
        raise _bad(f"{where}.{key} must be true or false, got {_show(value)}")
    return value


def _check_declared(inputs: Mapping[str, Tensor], declared: Mapping[str, TensorSpec]) -> None:
    for name, tensor in inputs.items():
        spec = declared.get(name)
        if spec is None:
            raise _bad(f"unknown input {_show(name)}; the model's inputs are {', '.join(declared)}")
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


def _parse_outputs(raw: Any) -> tuple[tuple[str, ...] | None, tuple[str, ...] | None]:
    """Requested output names, and those asked for as binary data (``None``: none)."""
    if raw is None:
        return None, None
    if not isinstance(raw, list):
        raise _bad(f"'outputs' must be an array of objects with a 'name', got {_kind(raw)}")
    names: list[str] = []
    binary: list[str] = []
    for k, entry in enumerate(raw):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise _bad(f"outputs[{k}] must be an object with a string 'name'")
        names.append(entry["name"])
        parameters = entry.get("parameters")
        if parameters is None:
            continue
        if not isinstance(parameters, dict):
            raise _bad(f"outputs[{k}].parameters must be an object, got {_kind(parameters)}")
        if _flag(parameters, "binary_data", f"outputs[{k}].parameters"):
            binary.append(entry["name"])
    return tuple(names), tuple(binary) if binary else None


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
