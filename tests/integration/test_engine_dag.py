"""A real DAG served by real processes: fan-out, a join, and a branch decided by outputs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from inferline.engine.testing import ServedEngine, served_engine

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

DEMO = Path(__file__).resolve().parents[2] / "examples" / "engine-demo" / "text"
MODEL = "text-demo"


@pytest.fixture(scope="module")
def engine() -> Iterator[ServedEngine]:
    with served_engine(DEMO, DEMO / "plan.yaml") as served:
        yield served


def text(value: str) -> list[dict[str, object]]:
    return [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [value]}]


def outputs(body: dict[str, object]) -> dict[str, object]:
    return {o["name"]: o["data"][0] for o in body["outputs"]}  # type: ignore[attr-defined, index]


def test_short_text_skips_the_conditional_branch(engine: ServedEngine) -> None:
    code, body = engine.infer(MODEL, text("A good day"), id="q1")
    assert code == 200, body
    assert body["id"] == "q1" and body["model_name"] == MODEL
    assert body["parameters"]["path"] == "tokenize+length+sentiment+merge"
    assert outputs(body) == {"words": 3, "sentiment": round(1 / 3, 4), "note": ""}


def test_long_text_takes_the_conditional_branch_into_the_join(engine: ServedEngine) -> None:
    sentence = "this slow broken thing is bad but the staff were nice"
    code, body = engine.infer(MODEL, text(sentence))
    assert code == 200, body
    assert body["parameters"]["path"] == "tokenize+length+sentiment+long_note+merge"
    assert outputs(body) == {
        "words": 11,
        "sentiment": round(-2 / 11, 4),
        "note": "long text: 11 words",
    }


def test_concurrent_queries_each_get_their_own_answer(engine: ServedEngine) -> None:
    """Batching mixes queries with different paths; each answer matches its own input."""
    texts = [" ".join(["good"] * n + ["bad"] * (n % 3)) for n in range(1, 61)]

    def ask(t: str) -> tuple[int, dict[str, object]]:
        return engine.infer(MODEL, text(t))  # type: ignore[return-value]

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(ask, texts))
    for t, (code, body) in zip(texts, answers, strict=True):
        assert code == 200, body
        words = len(t.split())
        got = outputs(body)
        assert got["words"] == words
        assert got["note"] == (f"long text: {words} words" if words >= 8 else "")
        assert ("long_note" in body["parameters"]["path"]) == (words >= 8)  # type: ignore[index]


def test_requested_outputs_are_filtered(engine: ServedEngine) -> None:
    code, body = engine.infer(MODEL, text("fine"), outputs=[{"name": "words"}])
    assert code == 200 and [o["name"] for o in body["outputs"]] == ["words"]


def test_health_metadata_and_readiness_follow_the_protocol(engine: ServedEngine) -> None:
    assert engine.request("GET", "/v2/health/live")[0] == 200
    assert engine.request("GET", "/v2/health/ready")[0] == 200
    code, ready = engine.request("GET", f"/v2/models/{MODEL}/ready")
    assert code == 200 and ready == {"name": MODEL, "ready": True}
    code, meta = engine.request("GET", f"/v2/models/{MODEL}/versions/1")
    assert code == 200
    assert meta["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [1]}]
    assert {o["name"] for o in meta["outputs"]} == {"words", "sentiment", "note"}
    code, server = engine.request("GET", "/v2")
    assert code == 200 and server["name"] == "inferline"


def test_status_and_metrics_report_stages(engine: ServedEngine) -> None:
    status = engine.status()
    assert status["model"] == MODEL and status["in_flight"] == 0
    assert status["stages"]["tokenize"]["ready"] == 2
    assert all(s["queue_length"] == 0 for s in status["stages"].values())
    code, metrics = engine.request("GET", "/metrics")
    assert code == 200
    for name in (
        'inferline_stage_queue_length{stage="merge"}',
        'inferline_stage_replicas{stage="tokenize",state="ready"} 2.0',
        'inferline_stage_batch_size_bucket{le="1.0",stage="tokenize"}',
        "inferline_request_latency_seconds_bucket",
        "inferline_slo_misses_total",
        'inferline_requests_total{code="200"}',
    ):
        assert name in metrics, name


def test_per_stage_overhead_is_measured(engine: ServedEngine) -> None:
    engine.infer(MODEL, text("good"))
    code, stats = engine.request("GET", "/v2/control/stats")
    assert code == 200
    merge = stats["stages"]["merge"]
    assert merge["visits"] >= 1
    assert 0 <= merge["overhead_s"]["p50"] < 1.0
    assert engine.request("DELETE", "/v2/control/stats")[0] == 200
    assert json.dumps(engine.request("GET", "/v2/control/stats")[1]).count('"visits": 0') == 5
