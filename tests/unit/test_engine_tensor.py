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


# --- binary tensor data extension ----------------------------------------------------------


def binary_body(
    inputs: list[tuple[dict[str, object], bytes]], **extra: object
) -> tuple[bytes, int]:
    head = json.dumps({"inputs": [meta for meta, _ in inputs], **extra}).encode()
    return head + b"".join(raw for _, raw in inputs), len(head)


def bin_input(
    name: str, shape: list[int], datatype: str, raw: bytes
) -> tuple[dict[str, object], bytes]:
    meta = {"name": name, "shape": shape, "datatype": datatype}
    return {**meta, "parameters": {"binary_data_size": len(raw)}}, raw


def length_prefixed(*items: bytes) -> bytes:
    return b"".join(len(item).to_bytes(4, "little") + item for item in items)


def test_binary_inputs_decode_in_order() -> None:
    image = np.arange(6, dtype="<f4").reshape(2, 3)
    raw, n = binary_body(
        [
            bin_input("image", [2, 3], "FP32", image.tobytes()),
            bin_input("words", [2], "BYTES", length_prefixed(b"ab", "é".encode())),
            bin_input("flags", [2], "BOOL", b"\x01\x00"),
        ],
        outputs=[{"name": "image", "parameters": {"binary_data": True}}, {"name": "words"}],
    )
    req = parse_infer_request(raw, {}, n)
    assert req.inputs["image"] == Tensor("image", "FP32", (2, 3), image.reshape(-1).tolist())
    assert req.inputs["words"].data == ["ab", "é"]
    assert req.inputs["flags"].data == [True, False]
    assert req.outputs == ("image", "words") and req.binary_outputs == ("image",)


def test_binary_data_output_asks_for_every_output() -> None:
    raw, n = binary_body(
        [bin_input("x", [1], "INT64", (7).to_bytes(8, "little"))],
        parameters={"binary_data_output": True},
    )
    req = parse_infer_request(raw, {}, n)
    assert req.inputs["x"].data == [7] and req.binary_outputs == ()


@pytest.mark.parametrize(
    ("inputs", "header_delta", "tail", "message"),
    [
        ([bin_input("x", [3], "FP32", b"\0" * 8)], 0, b"", "binary_data_size is 8 bytes but"),
        ([bin_input("x", [1], "FP32", b"\0" * 4)], 0, b"\0", "1 bytes of binary data"),
        ([bin_input("x", [2], "BYTES", length_prefixed(b"a"))], 0, b"", "holds 1"),
        ([bin_input("x", [1], "BYTES", b"\x09\0\0\0ab")], 0, b"", "says 9 bytes"),
        ([bin_input("x", [1], "BYTES", length_prefixed(b"\xff"))], 0, b"", "not UTF-8"),
        ([bin_input("x", [1], "FP32", b"\0" * 4)], 10**6, b"", "Inference-Header-Content-Length"),
        ([bin_input("x", [1], "FP32", b"\0" * 4)], -1, b"", "malformed JSON"),
    ],
)
def test_bad_binary_requests_say_what_is_wrong(
    inputs: list[tuple[dict[str, object], bytes]], header_delta: int, tail: bytes, message: str
) -> None:
    raw, n = binary_body(inputs)
    with pytest.raises(RequestError, match=re.escape(message)) as err:
        parse_infer_request(raw + tail, {}, n + header_delta)
    assert err.value.status == 400


def test_binary_size_over_the_limit_is_413() -> None:
    meta = {
        "name": "x",
        "shape": [1],
        "datatype": "FP32",
        "parameters": {"binary_data_size": 1 << 40},
    }
    head = json.dumps({"inputs": [meta]}).encode()
    with pytest.raises(RequestError, match="binary_data_size is 1099511627776 bytes") as err:
        parse_infer_request(head, {}, len(head))
    assert err.value.status == 413


def test_binary_response_puts_chosen_outputs_after_the_json() -> None:
    from inferline.engine._binary import encode_response

    response = {
        "model_name": "m",
        "outputs": [
            {"name": "a", "datatype": "INT32", "shape": [2], "data": [1, 2]},
            {"name": "s", "datatype": "BYTES", "shape": [1], "data": ["hé"]},
        ],
    }
    body, n = encode_response(response, None)
    assert n is not None
    head = json.loads(body[:n])
    sizes = [o["parameters"]["binary_data_size"] for o in head["outputs"]]
    assert sizes == [8, 7] and all("data" not in o for o in head["outputs"])
    assert body[n:] == np.array([1, 2], "<i4").tobytes() + length_prefixed("hé".encode())
    body, n = encode_response(response, ("s",))
    assert n is not None and json.loads(body[:n])["outputs"][0]["data"] == [1, 2]
    assert encode_response(response, ())[1] is None  # nothing asked: plain JSON
