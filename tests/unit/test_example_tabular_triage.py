"""The tabular triage example without an engine: data, routing rule, triage rule, and each
stage's ``predict`` on real sample rows with tiny models trained into a temporary cache
(well under a second). The full-size models run in
tests/integration/test_tabular_triage_served.py.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import inferline as il
from inferline.engine import StageModel, Tensor
from inferline.engine._tensor import parse_infer_request, value_to_tensors

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / "examples" / "tabular-triage"
TINY = {
    "pca_components": 8,
    "trees": {"n_estimators": 10, "max_depth": 2, "learning_rate": 0.3, "subsample": 0.8},
    "mlp": {"hidden": 16, "layers": 2, "dropout": 0.3, "epochs": 5, "lr": 0.01},
}


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


@pytest.fixture
def tiny(
    triage: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ModuleType]:
    """The module with small models trained into ``tmp_path`` (never the user's cache)."""
    pytest.importorskip("torch")
    training = copy.deepcopy(triage.TRAINING)
    for key, value in TINY.items():
        training[key] = {**training[key], **value} if isinstance(value, dict) else value
    monkeypatch.setattr(triage, "TRAINING", training)
    monkeypatch.setattr(triage, "CACHE", tmp_path / "cache")
    triage.load_models.cache_clear()
    yield triage
    triage.load_models.cache_clear()


def stage(cls: type[StageModel]) -> Any:
    model = cls()
    model.threads = 1
    model.setup()
    return model


def measurements(rows: list[np.ndarray]) -> list[dict[str, Tensor]]:
    return [
        {"measurements": Tensor("measurements", "FP64", (30,), [float(v) for v in row])}
        for row in rows
    ]


# --- the bundle and its data -----------------------------------------------------------------


def test_bundle_loads_with_a_join_and_a_conditional_branch() -> None:
    bundle = il.load_bundle(BUNDLE)
    pipeline = bundle.pipeline
    assert set(pipeline.stage_names) == {"features", "risk", "mc_mlp", "explain", "combine"}
    assert set(pipeline.predecessors("combine")) == {"risk", "mc_mlp", "explain"}
    assert set(pipeline.successors("features")) == {"risk", "explain"}
    scale = pipeline.scale_factors
    assert scale["features"] == scale["risk"] == scale["explain"] == scale["combine"] == 1.0
    assert 0.1 <= scale["mc_mlp"] <= 0.3  # measured routing (paths.yaml), about 19 %
    assert bundle.samples == "samples:sample_requests"
    for name in pipeline.stage_names:  # profiled by `inferline profile` on cpu-1
        assert "cpu-1" in bundle.profiles.hardware_for(name)


def test_samples_are_test_rows_in_a_seeded_order(triage: ModuleType) -> None:
    split = triage.data_split()
    assert split.x_train.shape == (426, 30) and split.x_test.shape == (143, 30)
    samples = triage.samples(200)
    assert [s.malignant for s in samples] == [s.malignant for s in triage.samples(200)]
    assert [s.malignant for s in samples[:40]] != [s.malignant for s in triage.samples(40, 1)]
    test_rows = {row.tobytes(): int(y) for row, y in zip(split.x_test, split.y_test, strict=True)}
    assert all(test_rows[s.row.tobytes()] == s.malignant for s in samples)
    assert len({s.row.tobytes() for s in samples[:143]}) == 143  # every test row once
    assert 0.3 < np.mean([s.malignant for s in samples[:143]]) < 0.45  # 53 of 143 malignant


def test_request_bodies_parse_against_the_declared_input(triage: ModuleType) -> None:
    bodies = load_module("samples", "tabular_triage_samples").sample_requests(4, 0)
    spec = {s.name: s for s in triage.Features.inputs}
    for body, sample in zip(bodies, triage.samples(4, 0), strict=True):
        tensor = parse_infer_request(json.dumps(body).encode(), spec).inputs["measurements"]
        np.testing.assert_array_equal(tensor.to_numpy(), sample.row)


def test_samples_script_writes_json_lines(tmp_path: Path) -> None:
    samples = load_module("samples", "tabular_triage_samples")
    out = tmp_path / "requests.jsonl"
    samples.main(["-n", "5", "-o", str(out)])
    lines = out.read_text().splitlines()
    assert [json.loads(line) for line in lines] == samples.sample_requests(5)


def test_default_cache_is_outside_the_checkout(triage: ModuleType) -> None:
    assert not triage.CACHE.resolve().is_relative_to(ROOT)


# --- the rules -------------------------------------------------------------------------------


@given(st.floats(0.0, 1.0))
def test_unsure_is_symmetric_and_banded(risk: float) -> None:
    triage = load_module("tabular_triage", "tabular_triage")
    assume(abs(max(risk, 1.0 - risk) - triage.UNSURE_BELOW) > 1e-9)  # float rounding at the edge
    assert triage.is_unsure(risk) == triage.is_unsure(1.0 - risk)
    assert triage.is_unsure(risk) == (1 - triage.UNSURE_BELOW < risk < triage.UNSURE_BELOW)


@given(st.floats(0.0, 1.0), st.floats(0.0, 0.5), st.booleans())
def test_only_a_second_opinion_can_ask_for_review(risk: float, spread: float, second: bool) -> None:
    triage = load_module("tabular_triage", "tabular_triage")
    decision = triage.triage(risk, spread, second)
    if decision == "review":
        assert second
    else:
        assert decision == ("refer" if risk >= triage.REFER_AT else "routine")


# --- the stages, with tiny models ------------------------------------------------------------


def test_models_are_trained_once_into_the_cache(tiny: ModuleType) -> None:
    first = tiny.load_models()
    files = list(tiny.CACHE.glob("models-*.pkl"))
    assert len(files) == 1
    stamp = files[0].stat().st_mtime_ns
    tiny.load_models.cache_clear()
    assert tiny.load_models()["train_s"] == first["train_s"]  # loaded, not trained again
    assert files[0].stat().st_mtime_ns == stamp
    assert set(first["test_accuracy"]) == {"trees", "linear"}


def test_training_is_deterministic(
    tiny: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every replica that trains (any cache folder, any machine load) gets the same models."""
    first = tiny.load_models()
    monkeypatch.setattr(tiny, "CACHE", tmp_path / "elsewhere")
    tiny.load_models.cache_clear()
    second = tiny.load_models()
    assert first is not second
    for a, b in zip(first["mlp"], second["mlp"], strict=True):
        np.testing.assert_array_equal(a, b)
    rows = tiny.data_split().x_test[:20]
    z = first["pca"].transform(first["scaler"].transform(rows))
    np.testing.assert_array_equal(z, second["pca"].transform(second["scaler"].transform(rows)))
    np.testing.assert_array_equal(first["trees"].predict_proba(z), second["trees"].predict_proba(z))
    np.testing.assert_array_equal(first["linear"].coef_, second["linear"].coef_)


def test_preload_shares_cached_models_but_never_trains(tiny: ModuleType) -> None:
    """A template must not train (torch's thread pool would be inherited by forks)."""
    tiny.Features.preload()
    assert not tiny.models_path().exists()
    assert tiny.load_models.cache_info().currsize == 0
    tiny.load_models()  # what a replica's setup() does: trains into the cache
    tiny.load_models.cache_clear()
    tiny.RiskTrees.preload()  # a later template finds the file and loads it for its forks
    assert tiny.load_models.cache_info().currsize == 1


def test_replicas_starting_together_build_the_cache_once(
    triage: ModuleType, tmp_path: Path
) -> None:
    """The first builder writes in two steps; the others block on the lock meanwhile and
    must read the finished file, never the half-written one."""
    target = tmp_path / "cache" / "models-x.pkl"
    builds: list[Path] = []
    halfway, finish = threading.Event(), threading.Event()

    def build(tmp: Path) -> None:
        builds.append(tmp)
        tmp.write_bytes(b"half")
        halfway.set()
        finish.wait(10)
        with tmp.open("ab") as f:
            f.write(b"+whole")

    seen: list[bytes] = []
    first = threading.Thread(target=lambda: seen.append(triage.cached(target, build).read_bytes()))
    first.start()
    assert halfway.wait(10)
    others = [
        threading.Thread(target=lambda: seen.append(triage.cached(target, build).read_bytes()))
        for _ in range(3)
    ]
    for thread in others:
        thread.start()
    finish.set()
    for thread in [first, *others]:
        thread.join(10)
    assert seen == [b"half+whole"] * 4
    assert len(builds) == 1
    assert sorted(p.name for p in target.parent.iterdir()) == ["models-x.pkl", "models-x.pkl.lock"]


def test_each_stage_answers_once_per_input_with_the_declared_shapes(tiny: ModuleType) -> None:
    samples = tiny.samples(12)
    features = stage(tiny.Features).predict(measurements([s.row for s in samples]))
    assert len(features) == 12
    assert all(f["x"].shape == (30,) and f["z"].shape == (8,) for f in features)

    risk_stage = stage(tiny.RiskTrees)
    risks = risk_stage.predict(features)
    explanations = stage(tiny.Explain).predict(features)
    assert len(risks) == len(explanations) == 12
    names = set(tiny.data_split().feature_names)
    for explanation in explanations:
        assert len(explanation["features"]) == tiny.TOP_FEATURES
        assert set(explanation["features"]) <= names
        sizes = [abs(c) for c in explanation["contributions"]]
        assert sizes == sorted(sizes, reverse=True)

    mlp = stage(tiny.McDropoutMlp)
    second = mlp.predict(risks)
    assert len(second) == 12
    assert all(0.0 <= s["risk"] <= 1.0 and s["spread"] >= 0.0 for s in second)

    joined = [
        {"risk": r, "explain": e, **({"mc_mlp": m} if tiny.is_unsure(r["risk"]) else {})}
        for r, e, m in zip(risks, explanations, second, strict=True)
    ]
    combine = tiny.Combine()
    answers = combine.predict(joined)
    declared = {s.name: s for s in tiny.Combine.outputs}
    for parts, answer in zip(joined, answers, strict=True):
        tensors = value_to_tensors("combine", answer, tiny.Combine.outputs)
        assert [t["name"] for t in tensors] == list(declared)
        for tensor in tensors:
            spec = declared[tensor["name"]]
            assert (tensor["datatype"], tuple(tensor["shape"])) == (spec.datatype, spec.shape)
        expected = "trees+mc_mlp" if "mc_mlp" in parts else "trees"
        assert answer["model"] == expected


def test_the_trees_route_to_the_mlp_only_when_unsure(tiny: ModuleType) -> None:
    risk_stage = stage(tiny.RiskTrees)
    assert tuple(risk_stage.route({"risk": 0.5})) == ("mc_mlp", "combine")
    assert tuple(risk_stage.route({"risk": 0.99})) == ("combine",)
    assert tuple(risk_stage.route({"risk": 0.01})) == ("combine",)


def test_mc_dropout_spreads_and_is_seeded(tiny: ModuleType) -> None:
    torch = pytest.importorskip("torch")
    net = tiny.build_mlp(tiny.load_models()["mlp"])
    x = np.random.default_rng(0).normal(size=(4, 30))
    torch.manual_seed(1)
    mean, spread = tiny.mc_dropout(net, x, 64)
    torch.manual_seed(1)
    again, _ = tiny.mc_dropout(net, x, 64)
    assert mean.shape == spread.shape == (4,)
    np.testing.assert_array_equal(mean, again)
    assert np.all(spread > 0.0)  # dropout on: every pass draws another sub-network
