"""The real example pipelines served by the real engine: real models decide the routes.

Each bundle is served with its own plan; sample queries from its ``samples.py`` go over
HTTP, concurrently so that batches mix both branches. The first run trains the models
(cached in the bundle's ``.models/``), later runs only load them.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from inferline.engine.testing import ServedEngine, served_engine

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TEXT = EXAMPLES / "text-pipeline"
IMAGE = EXAMPLES / "image-cascade"
N_QUERIES = 40
# First start trains the models: MiniLM embeddings + a logistic regression; two CNNs
# (about a minute on one thread of a 2-core machine, image-cascade/README.md).
START_TIMEOUT_S = 240.0


def load_module(folder: Path, name: str, alias: str | None = None) -> ModuleType:
    """A bundle's module by file path, registered as ``alias`` (both bundles have a
    ``samples``); the folder is on the import path only while it loads."""
    key = alias or name
    if key in sys.modules:
        return sys.modules[key]
    spec = importlib.util.spec_from_file_location(key, folder / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module
    sys.path.insert(0, str(folder))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(folder))
    return module


def ask_all(engine: ServedEngine, model: str, bodies: list[dict[str, Any]]) -> list[Any]:
    """Send every body at once from 8 threads; return each (status, body) in order."""

    def ask(body: dict[str, Any]) -> Any:
        return engine.infer(model, body["inputs"])

    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(ask, bodies))


def outputs(body: dict[str, Any]) -> dict[str, Any]:
    return {o["name"]: o["data"][0] for o in body["outputs"]}


@pytest.fixture(scope="module")
def text_engine() -> Iterator[ServedEngine]:
    with served_engine(TEXT, TEXT / "plan.yaml", start_timeout_s=START_TIMEOUT_S) as served:
        yield served


@pytest.fixture(scope="module")
def image_engine() -> Iterator[ServedEngine]:
    with served_engine(IMAGE, IMAGE / "plan.yaml", start_timeout_s=START_TIMEOUT_S) as served:
        yield served


def test_text_pipeline_routes_by_the_language_langid_finds(text_engine: ServedEngine) -> None:
    pipeline = load_module(TEXT, "text_pipeline")
    samples = pipeline.samples(N_QUERIES)
    answers = ask_all(
        text_engine, "text-pipeline", [pipeline.request_body(s.text) for s in samples]
    )

    lang_right = topic_right = english = 0
    paths = set()
    for sample, (code, body) in zip(samples, answers, strict=True):
        assert code == 200, body
        out = outputs(body)
        path = body["parameters"]["path"]
        paths.add(path)
        lang_right += out["lang"] == sample.lang
        assert 0.0 <= out["confidence"] <= 1.0
        assert out["words"] == len(sample.text.split())
        if out["lang"] == "en":  # the route follows langid's real answer, right or wrong
            english += 1
            assert path == "langid+embed+topic", (sample, body)
            assert out["topic"] in pipeline.TOPICS
            topic_right += out["topic"] == sample.topic
        else:
            assert path == "langid+lang_stats", (sample, body)
            assert out["topic"] == ""
    assert lang_right >= 0.9 * N_QUERIES
    assert topic_right >= 0.85 * english
    assert paths == {"langid+embed+topic", "langid+lang_stats"}
    assert 0.3 * N_QUERIES <= english <= 0.85 * N_QUERIES


def test_text_pipeline_declares_its_input(text_engine: ServedEngine) -> None:
    code, meta = text_engine.request("GET", "/v2/models/text-pipeline")
    assert code == 200, meta
    assert meta["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [1]}]
    # both end stages (topic, lang_stats) declare the same four outputs: listed once each
    assert [o["name"] for o in meta["outputs"]] == ["lang", "topic", "confidence", "words"]


def test_text_pipeline_samples_function_bodies_are_served(text_engine: ServedEngine) -> None:
    """The bodies the Profiler gets from pipeline.yaml's `samples:` are accepted as they are."""
    samples = load_module(TEXT, "samples", "text_pipeline_samples")
    answers = ask_all(text_engine, "text-pipeline", samples.sample_requests(8, 7))
    assert all(code == 200 for code, _ in answers), answers


def test_image_cascade_escalates_unsure_digits(image_engine: ServedEngine) -> None:
    cascade = load_module(IMAGE, "image_cascade")
    samples = cascade.samples(N_QUERIES)
    answers = ask_all(
        image_engine, "image-cascade", [cascade.request_body(s.image) for s in samples]
    )

    right = escalated = 0
    for sample, (code, body) in zip(samples, answers, strict=True):
        assert code == 200, body
        out = outputs(body)
        path = body["parameters"]["path"]
        right += out["digit"] == sample.label
        assert 0.0 <= out["confidence"] <= 1.0
        if out["model"] == "large_cnn":
            escalated += 1
            assert path == "preprocess+small_cnn+large_cnn"
        else:  # small_cnn answered itself, so it was confident
            assert out["model"] == "small_cnn"
            assert path == "preprocess+small_cnn"
            assert out["confidence"] >= cascade.CASCADE_THRESHOLD
    assert right >= 0.9 * N_QUERIES
    # CASCADE_THRESHOLD sends about 45 % of the test digits on (README.md)
    assert 0.2 * N_QUERIES <= escalated <= 0.7 * N_QUERIES


def test_image_cascade_models_trained_at_start_are_accurate(image_engine: ServedEngine) -> None:
    """The replicas trained (or found) the cached CNNs, both accurate. Training at first
    start is not bit-for-bit the same on every CPU: the ensemble came out 2 points ahead of
    the small CNN on one VM and 0.9 behind (4 of the 450 test digits) on another, so only
    "not worse by more than 1.5 points" is asked of it."""
    cascade = load_module(IMAGE, "image_cascade")
    records = {kind: cascade.load_cnn(kind)[1] for kind in ("small_cnn", "large_cnn")}
    small, large = (records[k]["test_accuracy"] for k in ("small_cnn", "large_cnn"))
    assert small >= 0.9 and large >= small - 0.015
    assert large >= 0.975
    members = records["large_cnn"]["member_accuracy"]
    assert len(members) == cascade.TRAINING["large_cnn"]["snapshots"]
    assert min(members) >= 0.95


def test_image_cascade_rejects_a_wrongly_shaped_image(image_engine: ServedEngine) -> None:
    code, body = image_engine.infer(
        "image-cascade", [{"name": "image", "shape": [4], "datatype": "FP32", "data": [0.0] * 4}]
    )
    assert code == 400, body
    assert "image" in body["error"]
