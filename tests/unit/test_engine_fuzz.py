"""Property: no request, however malformed, gets a 5xx from the HTTP front-end.

The engine runs in this process with one no-op replica on the event loop
(:class:`~inferline.engine.testing.InMemoryReplicaFactory`: the stage is loaded and its
batches run with the same :mod:`inferline.engine.batching` code a worker process uses);
requests go straight into the ASGI app.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inferline.bench.fuzz import FUZZ_MODEL, FuzzCase, malformed_case, valid_body
from inferline.engine import Engine, EngineApp
from inferline.engine.testing import InMemoryReplicaFactory, write_bundle
from inferline.pipeline import load_config, load_pipeline

pytestmark = pytest.mark.timeout(120)

INFER = f"/v2/models/{FUZZ_MODEL}/infer"
MAX_BODY_BYTES = 1 << 20


class Harness:
    """An engine on its own event loop and the ASGI app in front of it."""

    def __init__(self, folder: Path) -> None:
        pipeline_file, plan_file = write_bundle(
            folder,
            FUZZ_MODEL,
            {"echo": "inferline.engine.testing:NoOp"},
            [],
            {"echo": {"hardware": "cpu-1", "batch_size": 4, "replicas": 1}},
        )
        self.loop = asyncio.new_event_loop()
        self.engine = self.loop.run_until_complete(
            self._start(load_pipeline(pipeline_file), load_config(plan_file))
        )
        self.app = EngineApp(self.engine, max_body_bytes=MAX_BODY_BYTES)

    @staticmethod
    async def _start(pipeline: Any, plan: Any) -> Engine:
        engine = Engine(pipeline, plan, replica_factory=InMemoryReplicaFactory())
        await engine.start()
        return engine

    def request(self, case: FuzzCase) -> tuple[int, bytes]:
        return self.loop.run_until_complete(asyncio.wait_for(self._call(case), 30))

    async def _call(self, case: FuzzCase) -> tuple[int, bytes]:
        headers = [(k.lower().encode(), v.encode()) for k, v in case.headers]
        if not any(k == b"content-length" for k, _ in headers):
            headers.append((b"content-length", str(len(case.body)).encode()))
        scope = {
            "type": "http",
            "method": case.method,
            "path": case.path,
            "raw_path": case.path.encode(),
            "query_string": b"",
            "headers": headers,
        }
        chunks = [case.body[i : i + 65536] for i in range(0, len(case.body), 65536)] or [b""]
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            if chunks:
                chunk = chunks.pop(0)
                return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}
            await asyncio.sleep(3600)  # a real server would report a disconnect later
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await self.app(scope, receive, send)
        assert sent and sent[0]["type"] == "http.response.start", "no answer was sent"
        return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])

    def close(self) -> None:
        self.loop.run_until_complete(self.engine.stop())
        self.loop.close()


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    h = Harness(tmp_path_factory.mktemp("fuzz"))
    yield h
    h.close()


def check(harness: Harness, case: FuzzCase) -> None:
    status, body = harness.request(case)
    assert status < 500, f"{case.kind}: {status} {body[:300]!r} for {case.body[:300]!r}"
    if status >= 400:
        assert "error" in json.loads(body)


FUZZ = settings(
    max_examples=1600,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@FUZZ
@given(rng=st.randoms(use_true_random=False))
def test_generated_malformed_requests_get_no_5xx(harness: Harness, rng: random.Random) -> None:
    check(harness, malformed_case(rng))


def _containers_of(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    _containers_of,
    max_leaves=20,
)
_FIELDS = ("name", "shape", "datatype", "data", "parameters")


@settings(FUZZ, max_examples=500)
@given(
    field=st.sampled_from((*_FIELDS, "inputs", "outputs", "id", "parameters!")),
    value=_json,
    binary_header=st.none() | st.integers(min_value=-5, max_value=4000),
)
def test_any_json_value_in_any_field_gets_no_5xx(
    harness: Harness, field: str, value: Any, binary_header: int | None
) -> None:
    doc = valid_body(random.Random(0))
    if field in _FIELDS:
        doc["inputs"][0][field] = value
    else:
        doc[field.rstrip("!")] = value
    headers = (
        () if binary_header is None else (("Inference-Header-Content-Length", str(binary_header)),)
    )
    check(harness, FuzzCase("json", "POST", INFER, json.dumps(doc).encode(), headers))


def test_a_valid_request_is_answered_200_after_the_fuzzing(harness: Harness) -> None:
    body = json.dumps(valid_body(random.Random(1))).encode()
    status, answer = harness.request(FuzzCase("valid", "POST", INFER, body))
    assert status == 200, answer
    assert json.loads(answer)["outputs"][0]["name"] == "x"


@pytest.mark.parametrize(
    ("doc", "status", "message"),
    [
        (
            {"inputs": [{"name": "x", "shape": [1], "datatype": ["FP32"], "data": [1]}]},
            400,
            "inputs[0].datatype must be a string, got array",
        ),
        (
            {"inputs": [{"name": "x", "shape": [1], "datatype": None, "data": [1]}]},
            400,
            "inputs[0].datatype must be a string, got null",
        ),
        (
            {
                "inputs": [
                    {"name": "x", "shape": [1 << 13, 1 << 13], "datatype": "FP32", "data": []}
                ]
            },
            413,
            "holds 67108864 elements; the limit is 16777216",
        ),
        (
            {"inputs": [{"name": "x", "shape": [1] * 17, "datatype": "FP32", "data": [1]}]},
            400,
            "'shape' has 17 dimensions; the limit is 16",
        ),
    ],
)
def test_bad_fields_are_named(harness: Harness, doc: Any, status: int, message: str) -> None:
    got, body = harness.request(FuzzCase("named", "POST", INFER, json.dumps(doc).encode()))
    assert got == status and message in json.loads(body)["error"]


def test_deep_nesting_is_refused_before_parsing(harness: Harness) -> None:
    body = b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    status, answer = harness.request(FuzzCase("deep", "POST", INFER, body))
    assert status == 400 and "more than 64 levels deep" in json.loads(answer)["error"]


@pytest.mark.parametrize(
    ("data", "datatype"),
    [(["\ud800"], "BYTES"), ([1e308], "FP16"), ([-1e308], "FP32")],
)
def test_odd_valid_values_come_back_as_binary(harness: Harness, data: Any, datatype: str) -> None:
    doc = {
        "inputs": [{"name": "x", "shape": [1], "datatype": datatype, "data": data}],
        "parameters": {"binary_data_output": True},
    }
    status, answer = harness.request(FuzzCase("odd", "POST", INFER, json.dumps(doc).encode()))
    assert status == 200, answer


def test_invalid_utf8_in_a_string_is_400(harness: Harness) -> None:
    body = json.dumps(valid_body(random.Random(0))).encode().replace(b"hello", b"he\xed\xa0\x80o")
    status, answer = harness.request(FuzzCase("utf8", "POST", INFER, body))
    assert status == 400 and "malformed JSON" in json.loads(answer)["error"]
