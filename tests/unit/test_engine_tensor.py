"""Open Inference Protocol parsing and output conversion (no processes)."""

from __future__ import annotations

import json
import pickle
import re

import numpy as np
import pytest

from inferline.engine import RequestError, Tensor, TensorSpec
from inferline.engine._hardware import resources_for
from inferline.engine._tensor import parse_infer_request, value_to_tensors
from inferline.engine._wire import FrameReader, pack


def body(*inputs: dict[str, object], **extra: object) -> bytes:
    return json.dumps({"inputs": list(inputs), **extra}).encode()


def x(shape: list[int], datatype: str, data: object, name: str = "x") -> dict[str, object]:
    return {"name": name, "shape": shape, "datatype": datatype, "data": data}


def test_a_valid_request_becomes_flat_tensors() -> None:
    req = parse_infer_request(
        body(x([2, 2], "INT32", [[1, 2], [3, 4]]), id="7", outputs=[{"name": "y"}]), {}
    )
    assert req.inputs["x"] == Tensor("x", "INT32", (2, 2), [1, 2, 3, 4])
    assert req.id == "7" and req.outputs == ("y",)
    assert req.inputs["x"].to_numpy().tolist() == [[1, 2], [3, 4]]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{not json", "malformed JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"inputs": []}', "non-empty array"),
        (body(x([3], "FP32", [1.0, 2.0])), "holds 3 element(s) but 'data' has 2"),
        (body(x([2, 2], "FP32", [[1.0], [2.0, 3.0]])), "does not follow shape"),
        (body(x([1], "FLOAT", [1.0])), "unknown datatype 'FLOAT'"),
        (body(x([1], "INT8", [300])), "INT8 needs integers"),
        (body(x([1], "FP32", ["a"])), "FP32 needs numbers"),
        (body(x([1], "BYTES", [1])), "BYTES needs strings"),
        (body(x([1], "BOOL", [1])), "BOOL needs true/false"),
        (body(x([-1], "FP32", [])), "non-negative integers"),
        (body(x([1], "FP32", [1.0]), x([1], "FP32", [2.0])), "appears twice"),
        (body({"name": "x", "shape": [1], "data": [1]}), "'datatype' is missing"),
    ],
)
def test_bad_requests_are_400_with_a_clear_message(raw: bytes, message: str) -> None:
    with pytest.raises(RequestError, match=re.escape(message)) as info:
        parse_infer_request(raw, {})
    assert info.value.status == 400


def test_declared_inputs_are_enforced() -> None:
    declared = {"text": TensorSpec("text", "BYTES", (-1,))}
    assert parse_infer_request(body(x([2], "BYTES", ["a", "b"], "text")), declared)
    for raw, message in [
        (body(x([1], "FP32", [1.0], "text")), "expects BYTES"),
        (body(x([1, 1], "BYTES", [["a"]], "text")), r"expects \[-1\]"),
        (body(x([1], "BYTES", ["a"], "other")), "unknown input 'other'"),
    ]:
        with pytest.raises(RequestError, match=message):
            parse_infer_request(raw, declared)


def test_outputs_convert_to_tensors() -> None:
    assert value_to_tensors("s", 3) == [
        {"name": "s", "datatype": "INT64", "shape": [1], "data": [3]}
    ]
    assert value_to_tensors("s", {"a": 1.5, "b": "hi"}) == [
        {"name": "a", "datatype": "FP64", "shape": [1], "data": [1.5]},
        {"name": "b", "datatype": "BYTES", "shape": [1], "data": ["hi"]},
    ]
    assert value_to_tensors("s", [[True, False]])[0]["shape"] == [1, 2]
    array = value_to_tensors("s", np.arange(6, dtype=np.float32).reshape(2, 3))[0]
    assert array["datatype"] == "FP32" and array["shape"] == [2, 3] and array["data"][-1] == 5.0
    named = value_to_tensors("s", 1, (TensorSpec("score", "INT64", (1,)),))
    assert named[0]["name"] == "score"
    with pytest.raises(TypeError, match="holds object"):
        value_to_tensors("s", [object()])


def test_tensors_and_frames_round_trip() -> None:
    tensor = Tensor("x", "FP32", (1,), [1.0])
    assert pickle.loads(pickle.dumps(tensor)) == tensor
    reader = FrameReader()
    stream = pack(("batch", 1, [tensor])) + pack(("stop",))
    assert reader.feed(stream[:5]) == []
    assert reader.feed(stream[5:]) == [("batch", 1, [tensor]), ("stop",)]


@pytest.mark.parametrize(
    ("hardware", "threads", "device"),
    [
        ("cpu-1", 1, "cpu"),
        ("cpu-2", 2, "cpu"),
        ("c5-1vcpu", 1, "cpu"),
        ("c5.2xlarge", 2, "cpu"),
        ("v100", 1, "cuda"),
        ("mystery", 1, "cpu"),
    ],
)
def test_hardware_names_set_threads_and_device(hardware: str, threads: int, device: str) -> None:
    resources = resources_for(hardware, cores=2)
    assert (resources.threads, resources.device) == (threads, device)
