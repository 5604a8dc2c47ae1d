"""Bad input gets a clear 4xx, in the protocol's {"error": ...} shape, and disturbs nothing."""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from inferline.engine.testing import ServedEngine, served_engine

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

DEMO = Path(__file__).resolve().parents[2] / "examples" / "engine-demo" / "text"
INFER = "/v2/models/text-demo/infer"
MAX_BODY_BYTES = 4096


@pytest.fixture(scope="module")
def engine() -> Iterator[ServedEngine]:
    with served_engine(DEMO, DEMO / "plan.yaml", "--max-body-bytes", str(MAX_BODY_BYTES)) as served:
        yield served


def good(engine: ServedEngine) -> None:
    code, body = engine.request(
        "POST",
        INFER,
        json.dumps(
            {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["ok"]}]}
        ),
    )
    assert code == 200, body


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        (INFER, '{"inputs": [', 400, "malformed JSON"),
        (
            INFER,
            '{"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["a"]}]}',
            400,
            "shape [2] holds 2 element(s) but 'data' has 1",
        ),
        (
            INFER,
            '{"inputs": [{"name": "text", "shape": [1, 1], "datatype": "BYTES", "data": [["a"]]}]}',
            400,
            "the model expects [1]",
        ),
        (
            INFER,
            '{"inputs": [{"name": "text", "shape": [1], "datatype": "FP32", "data": [1.5]}]}',
            400,
            "has datatype FP32; the model expects BYTES",
        ),
        (
            INFER,
            '{"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [7]}]}',
            400,
            "BYTES needs strings",
        ),
        (
            INFER,
            '{"inputs": [{"name": "text", "shape": [1], "datatype": "STRING", "data": ["a"]}]}',
            400,
            "unknown datatype 'STRING'",
        ),
        (
            INFER,
            '{"inputs": [{"name": "txt", "shape": [1], "datatype": "BYTES", "data": ["a"]}]}',
            400,
            "unknown input 'txt'",
        ),
        ("/v2/models/no-such-model/infer", "{}", 404, "unknown model 'no-such-model'"),
        ("/v2/models/text-demo/versions/2/infer", "{}", 404, "no version '2'"),
        ("/v2/nothing-here", "{}", 404, "no such endpoint"),
        (
            INFER,
            '{"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["'
            + "x" * MAX_BODY_BYTES
            + '"]}]}',
            413,
            f"exceeds the limit of {MAX_BODY_BYTES} bytes",
        ),
    ],
)
def test_bad_input_gets_the_right_status_and_message(
    engine: ServedEngine, path: str, body: str, status: int, message: str
) -> None:
    code, answer = engine.request("POST", path, body)
    assert code == status, answer
    assert set(answer) == {"error"} and message in answer["error"], answer
    good(engine)  # nothing else disturbed


def test_oversized_chunked_body_is_413(engine: ServedEngine) -> None:
    """Without a Content-Length the limit is enforced while reading."""
    chunk = b"x" * 1024
    body = b"".join(b"400\r\n" + chunk + b"\r\n" for _ in range(5)) + b"0\r\n\r\n"
    request = (
        f"POST {INFER} HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
        "Connection: close\r\n"
        "Content-Type: application/json\r\n\r\n"
    ).encode() + body
    with socket.create_connection(("127.0.0.1", engine.port), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), answer
    assert "exceeds the limit" in json.loads(payload)["error"]
    good(engine)


def test_connection_stays_usable_after_a_413(engine: ServedEngine) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", engine.port, timeout=10)
    try:
        conn.request("POST", INFER, body=b"{" + b" " * MAX_BODY_BYTES + b"}")
        response = conn.getresponse()
        assert response.status == 413 and b"exceeds the limit" in response.read()
        ok = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["ok"]}]}
        conn.request("POST", INFER, body=json.dumps(ok))
        response = conn.getresponse()
        assert response.status == 200, response.read()
        response.read()
    finally:
        conn.close()


def test_wrong_method_is_405(engine: ServedEngine) -> None:
    code, answer = engine.request("GET", INFER)
    assert code == 405 and "use POST" in answer["error"]


def test_bad_plans_are_400_and_change_nothing(engine: ServedEngine) -> None:
    before = engine.status()["stages"]
    for body, message in [
        (
            '{"stages": {"tokenize": {"hardware": "cpu-1", "batch_size": 0, "replicas": 1}}}',
            "batch_size",
        ),
        (
            '{"stages": {"nope": {"hardware": "cpu-1", "batch_size": 1, "replicas": 1}}}',
            "unknown stage",
        ),
        ("[1]", "JSON object"),
        ("{", "malformed JSON"),
    ]:
        code, answer = engine.request("POST", "/v2/control/plan", body)
        assert code == 400 and message in answer["error"], answer
    after = engine.status()["stages"]
    assert {k: (v["batch_size"], v["replicas"]) for k, v in after.items()} == {
        k: (v["batch_size"], v["replicas"]) for k, v in before.items()
    }
    good(engine)
