"""The engine driven by tritonclient.http, unmodified, as a third-party client speaks OIP.

tritonclient sends inputs as binary tensor data by default (``set_data_from_numpy``) and
asks for binary outputs; its ``get_inference_statistics`` reads the statistics extension.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from inferline.engine.testing import ServedEngine, served_engine, write_bundle

httpclient = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

MODEL = "tc"


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedEngine]:
    pipeline, plan = write_bundle(
        tmp_path_factory.mktemp("tritonclient"),
        MODEL,
        {"echo": "inferline.engine.testing:NoOp"},
        [],
        {"echo": {"hardware": "cpu-1", "batch_size": 4, "replicas": 1}},
    )
    with served_engine(pipeline, plan) as served:
        yield served


@pytest.fixture
def client(engine: ServedEngine) -> Iterator[httpclient.InferenceServerClient]:
    c = httpclient.InferenceServerClient(f"127.0.0.1:{engine.port}", concurrency=2)
    yield c
    c.close()


def image_input(arr: np.ndarray, binary: bool = True) -> httpclient.InferInput:
    tensor = httpclient.InferInput("image", list(arr.shape), "FP32")
    tensor.set_data_from_numpy(arr, binary_data=binary)
    return tensor


def test_health_and_metadata(client: httpclient.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(MODEL)
    server = client.get_server_metadata()
    assert {"binary_tensor_data", "statistics"} <= set(server["extensions"])
    assert client.get_model_metadata(MODEL)["name"] == MODEL


@pytest.mark.parametrize("binary_in", [True, False])
@pytest.mark.parametrize("binary_out", [True, False])
def test_infer_binary_and_json_round_trip(
    client: httpclient.InferenceServerClient, binary_in: bool, binary_out: bool
) -> None:
    arr = np.random.default_rng(0).random((2, 3, 4), dtype=np.float32)
    words = np.array([b"ab", "é".encode(), b""], dtype=np.object_)
    text = httpclient.InferInput("text", [3], "BYTES")
    text.set_data_from_numpy(words, binary_data=binary_in)
    flags = httpclient.InferInput("flags", [2], "BOOL")
    flags.set_data_from_numpy(np.array([True, False]), binary_data=binary_in)
    outputs = [
        httpclient.InferRequestedOutput(name, binary_data=binary_out)
        for name in ("image", "text", "flags")
    ]
    result = client.infer(
        MODEL, [image_input(arr, binary_in), text, flags], outputs=outputs, request_id="42"
    )
    np.testing.assert_array_equal(result.as_numpy("image"), arr)
    # binary BYTES come back as bytes; JSON ones as str (tritonclient's own choice)
    text_out = [x.decode() if isinstance(x, bytes) else x for x in result.as_numpy("text")]
    assert text_out == ["ab", "é", ""]
    assert result.as_numpy("flags").tolist() == [True, False]
    assert result.get_response()["id"] == "42"


def test_default_request_is_binary_both_ways(client: httpclient.InferenceServerClient) -> None:
    arr = np.arange(6, dtype=np.int64).reshape(2, 3)
    tensor = httpclient.InferInput("x", [2, 3], "INT64")
    tensor.set_data_from_numpy(arr)  # binary by default; no outputs: binary_data_output
    result = client.infer(MODEL, [tensor])
    out = result.get_output("x")
    assert "data" not in out and out["parameters"]["binary_data_size"] == 48
    np.testing.assert_array_equal(result.as_numpy("x"), arr)


def test_requested_outputs_only(client: httpclient.InferenceServerClient) -> None:
    a = httpclient.InferInput("a", [1], "INT32")
    a.set_data_from_numpy(np.array([1], dtype=np.int32))
    b = httpclient.InferInput("b", [1], "INT32")
    b.set_data_from_numpy(np.array([2], dtype=np.int32))
    result = client.infer(MODEL, [a, b], outputs=[httpclient.InferRequestedOutput("b")])
    assert [o["name"] for o in result.get_response()["outputs"]] == ["b"]
    assert result.as_numpy("b").tolist() == [2]


def test_async_infer(client: httpclient.InferenceServerClient) -> None:
    arrays = [np.full((4,), i, dtype=np.float64) for i in range(6)]
    pending = []
    for arr in arrays:
        tensor = httpclient.InferInput("v", [4], "FP64")
        tensor.set_data_from_numpy(arr)
        pending.append(client.async_infer(MODEL, [tensor]))
    for arr, handle in zip(arrays, pending, strict=True):
        np.testing.assert_array_equal(handle.get_result().as_numpy("v"), arr)


def test_statistics(client: httpclient.InferenceServerClient) -> None:
    tensor = httpclient.InferInput("x", [1], "INT64")
    tensor.set_data_from_numpy(np.array([1], dtype=np.int64))
    client.infer(MODEL, [tensor])
    stats = client.get_inference_statistics(MODEL)
    (model,) = stats["model_stats"]
    assert model["name"] == MODEL and model["version"] == "1"
    assert model["inference_count"] >= 1 and model["execution_count"] >= 1
    assert model["last_inference"] > 0
    inference = model["inference_stats"]
    assert inference["success"]["count"] == model["inference_count"]
    for key in ("success", "queue", "compute_input", "compute_infer", "compute_output"):
        assert inference[key]["ns"] > 0, key
    assert client.get_inference_statistics(MODEL, "1")["model_stats"][0]["name"] == MODEL
    assert client.get_inference_statistics()["model_stats"][0]["name"] == MODEL


def test_errors_are_exceptions_with_the_servers_message(
    client: httpclient.InferenceServerClient,
) -> None:
    with pytest.raises(InferenceServerException, match="unknown model 'nope'"):
        client.get_inference_statistics("nope")
    tensor = httpclient.InferInput("x", [3], "FP32")
    tensor.set_data_from_numpy(np.zeros(3, dtype=np.float32))
    tensor._parameters["binary_data_size"] = 8  # claims fewer bytes than the shape needs
    with pytest.raises(InferenceServerException, match="binary_data_size"):
        client.infer(MODEL, [tensor])
    with pytest.raises(InferenceServerException, match="unknown model"):
        client.infer("nope", [tensor])
    # and the server still answers
    good = httpclient.InferInput("x", [1], "FP32")
    good.set_data_from_numpy(np.ones(1, dtype=np.float32))
    assert client.infer(MODEL, [good]).as_numpy("x").tolist() == [1.0]
