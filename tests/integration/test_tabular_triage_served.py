"""The tabular triage example served by the real engine: the trees' real answer decides
whether the MC-dropout MLP runs, and the join waits for every branch a case took.

The first run trains the models (seconds; cached in the user cache folder, outside the
checkout), later runs only load them.
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

BUNDLE = Path(__file__).resolve().parents[2] / "examples" / "tabular-triage"
N_QUERIES = 60
START_TIMEOUT_S = 180.0  # a first start trains the models (about 15 s on a busy machine)
SHORT = "features+risk+explain+combine"
LONG = "features+risk+explain+mc_mlp+combine"  # topological order


def load_module(name: str, alias: str) -> ModuleType:
    if alias in sys.modules:
        return sys.modules[alias]
    spec = importlib.util.spec_from_file_location(alias, BUNDLE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[alias] = module
    sys.path.insert(0, str(BUNDLE))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BUNDLE))
    return module


@pytest.fixture(scope="module")
def triage() -> ModuleType:
    return load_module("tabular_triage", "tabular_triage")


@pytest.fixture(scope="module")
def engine() -> Iterator[ServedEngine]:
    with served_engine(BUNDLE, BUNDLE / "plan.yaml", start_timeout_s=START_TIMEOUT_S) as served:
        yield served


def ask_all(engine: ServedEngine, bodies: list[dict[str, Any]]) -> list[Any]:
    """Every body at once from 8 threads, so that batches mix both branches."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(lambda b: engine.infer("tabular-triage", b["inputs"]), bodies))


def outputs(body: dict[str, Any]) -> dict[str, Any]:
    return {o["name"]: o["data"] if len(o["data"]) > 1 else o["data"][0] for o in body["outputs"]}


def test_unsure_cases_get_the_mlp_and_every_case_an_explanation(
    engine: ServedEngine, triage: ModuleType
) -> None:
    samples = triage.samples(N_QUERIES)
    answers = ask_all(engine, [triage.request_body(s.row) for s in samples])
    names = set(triage.data_split().feature_names)
    right = 0
    spreads = []
    for sample, (code, body) in zip(samples, answers, strict=True):
        assert code == 200, body
        out = outputs(body)
        path = body["parameters"]["path"]
        right += (out["risk"] >= triage.REFER_AT) == bool(sample.malignant)
        assert 0.0 <= out["risk"] <= 1.0
        assert out["triage"] in {"refer", "review", "routine"}
        assert len(out["top_features"]) == triage.TOP_FEATURES
        assert set(out["top_features"]) <= names
        magnitudes = [abs(c) for c in out["contributions"]]
        assert magnitudes == sorted(magnitudes, reverse=True)
        if out["model"] == "trees+mc_mlp":  # the join got the MLP's second opinion
            assert path == LONG, body
            spreads.append(out["uncertainty"])
        else:  # the trees were sure, so the MLP never saw the case
            assert (out["model"], path) == ("trees", SHORT), body
            assert not triage.is_unsure(out["risk"])
            assert out["uncertainty"] == 0.0
            assert out["triage"] != "review"
    assert right >= 0.9 * N_QUERIES
    assert 0.05 * N_QUERIES <= len(spreads) <= 0.45 * N_QUERIES  # ~19 % of test rows (README.md)
    assert all(u >= 0.0 for u in spreads)
    assert max(spreads) > 0.01  # dropout on: the passes disagree on the hard cases


def test_metadata_declares_the_measurements_and_the_joined_outputs(engine: ServedEngine) -> None:
    code, meta = engine.request("GET", "/v2/models/tabular-triage")
    assert code == 200, meta
    assert meta["inputs"] == [{"name": "measurements", "datatype": "FP64", "shape": [30]}]
    assert [o["name"] for o in meta["outputs"]] == [
        "risk",
        "uncertainty",
        "triage",
        "model",
        "top_features",
        "contributions",
    ]


def test_samples_function_bodies_are_served(engine: ServedEngine) -> None:
    """The bodies the Profiler and `validate` get from pipeline.yaml's `samples:`."""
    samples = load_module("samples", "tabular_triage_samples")
    answers = ask_all(engine, samples.sample_requests(8, 7))
    assert all(code == 200 for code, _ in answers), answers


def test_a_row_with_missing_measurements_is_refused(engine: ServedEngine) -> None:
    code, body = engine.infer(
        "tabular-triage",
        [{"name": "measurements", "shape": [29], "datatype": "FP64", "data": [1.0] * 29}],
    )
    assert code == 400, body
    assert "measurements" in body["error"]
