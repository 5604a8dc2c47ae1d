"""The example pipelines' generators, routing rules and model cache, without an engine.

Nothing here loads or trains a model (the CNNs are only built, untrained): langid,
MiniLM and the trained CNNs run in tests/integration/test_example_pipelines.py.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from inferline.engine import Tensor
from inferline.engine._tensor import parse_infer_request

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TEXT = EXAMPLES / "text-pipeline"
IMAGE = EXAMPLES / "image-cascade"


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


@pytest.fixture(scope="module")
def text() -> ModuleType:
    return load_module(TEXT, "text_pipeline")


@pytest.fixture(scope="module")
def image() -> ModuleType:
    return load_module(IMAGE, "image_cascade")


# --- text pipeline ---------------------------------------------------------------------------


def test_text_samples_are_deterministic_and_follow_the_language_mix(text: ModuleType) -> None:
    samples = text.samples(2000)
    assert samples == text.samples(2000)
    assert samples[:50] != text.samples(50, seed=1)
    langs = Counter(s.lang for s in samples)
    for lang, share in text.LANGUAGE_MIX.items():
        assert abs(langs[lang] / 2000 - share) < 0.04, (lang, langs)
    english = [s for s in samples if s.lang == "en"]
    assert {s.topic for s in english} == set(text.TOPICS)
    assert all(s.topic == "" for s in samples if s.lang != "en")
    assert len({s.text for s in samples}) > 1500  # varied, not a handful of sentences


def test_text_corpus_is_balanced_and_separate_from_the_samples(text: ModuleType) -> None:
    train = text.topic_corpus(text.TRAIN_PER_TOPIC, text.TRAIN_SEED)
    test = text.topic_corpus(text.TEST_PER_TOPIC, text.TEST_SEED)
    assert Counter(t for _, t in train) == dict.fromkeys(text.TOPICS, text.TRAIN_PER_TOPIC)
    assert train == text.topic_corpus(text.TRAIN_PER_TOPIC, text.TRAIN_SEED)
    assert [s for s, _ in train[:20]] != [s for s, _ in test[:20]]
    samples = {s.text for s in text.samples(200, seed=text.TRAIN_SEED)}
    assert samples != {s for s, _ in train}


def test_text_request_bodies_are_valid_oip_requests(text: ModuleType) -> None:
    samples_module = load_module(TEXT, "samples", "text_pipeline_samples")
    bodies = samples_module.sample_requests(5, 0)
    assert bodies == samples_module.sample_requests(5, 0)
    assert [b["inputs"][0]["data"][0] for b in bodies] == [s.text for s in text.samples(5, 0)]
    for body in bodies:
        tensors = parse_infer_request(json.dumps(body).encode(), {}).inputs
        assert tensors["text"].datatype == "BYTES" and tensors["text"].shape == (1,)


def test_text_samples_script_writes_json_lines(tmp_path: Path) -> None:
    samples_module = load_module(TEXT, "samples", "text_pipeline_samples")
    out = tmp_path / "requests.jsonl"
    samples_module.main(["-n", "7", "-o", str(out)])
    lines = out.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == samples_module.sample_requests(7, 0)


def test_langid_routes_only_english_to_the_embedding(text: ModuleType) -> None:
    stage = text.LangId()
    out = {"text": "x", "lang_confidence": 0.99}
    assert tuple(stage.route({**out, "lang": "en"})) == ("embed",)
    for lang in ("de", "fr", "es", "it"):
        assert tuple(stage.route({**out, "lang": lang})) == ("lang_stats",)


def test_lang_stats_answers_without_a_topic(text: ModuleType) -> None:
    stage = text.LangStats()
    (answer,) = stage.predict([{"text": "Der Hund ist müde", "lang": "de", "lang_confidence": 1}])
    assert answer == {"lang": "de", "topic": "", "confidence": 1.0, "words": 4}


def test_text_of_accepts_strings_and_bytes(text: ModuleType) -> None:
    assert text._text_of({"text": Tensor("text", "BYTES", (1,), ["héllo"])}) == "héllo"
    assert text._text_of({"text": Tensor("text", "BYTES", (1,), ["héllo".encode()])}) == "héllo"


# --- the model cache -------------------------------------------------------------------------


@pytest.mark.parametrize("bundle", [TEXT, IMAGE], ids=["text", "image"])
def test_cache_builds_once_under_concurrent_starts(bundle: Path, tmp_path: Path) -> None:
    """Replicas that start together: one builds, the others wait and load the same file."""
    module = load_module(bundle, bundle.name.replace("-", "_"))
    target = tmp_path / "models" / "artefact.bin"
    builds = []

    def build(tmp: Path) -> None:
        builds.append(tmp)
        tmp.write_bytes(b"part")
        time.sleep(0.2)  # others arrive while the file is half written
        with tmp.open("ab") as f:
            f.write(b"ial+whole")

    seen = []
    threads = [
        threading.Thread(target=lambda: seen.append(module.cached(target, build).read_bytes()))
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(builds) == 1
    assert seen == [b"partial+whole"] * 4
    assert sorted(p.name for p in target.parent.iterdir()) == ["artefact.bin", "artefact.bin.lock"]


def test_cache_leaves_nothing_behind_when_the_build_fails(
    image: ModuleType, tmp_path: Path
) -> None:
    target = tmp_path / "artefact.bin"

    def build(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        raise RuntimeError("training diverged")

    with pytest.raises(RuntimeError, match="diverged"):
        image.cached(target, build)
    assert not target.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["artefact.bin.lock"]
    image.cached(target, lambda tmp: tmp.write_bytes(b"ok"))  # a later start retries
    assert target.read_bytes() == b"ok"


# --- image cascade ---------------------------------------------------------------------------


def test_bilinear_matrix_keeps_constants_and_the_mean(image: ModuleType) -> None:
    a = image._interpolation_matrix()
    assert a.shape == (image.SIZE, 8)
    np.testing.assert_allclose(a.sum(axis=1), 1.0, rtol=1e-6)
    flat = np.full((1, 8, 8), 16.0, dtype=np.float32)
    np.testing.assert_allclose(image._upscale(flat), 1.0, rtol=1e-6)
    ramp = np.tile(np.arange(8, dtype=np.float32) * 2, (8, 1))[None]
    up = image._upscale(ramp)[0]
    assert np.all(np.diff(up[0]) >= 0)  # a ramp stays a ramp
    assert up.mean() == pytest.approx(ramp.mean() / 16, rel=0.02)


def test_preprocess_normalises_like_the_training_set(image: ModuleType) -> None:
    split = image.digits_split()
    assert len(split.y_train) + len(split.y_test) == 1797
    x = image.preprocess(split.x_train)
    assert x.shape == (len(split.y_train), 1, image.SIZE, image.SIZE) and x.dtype == np.float32
    assert float(x.mean()) == pytest.approx(0.0, abs=1e-4)
    assert float(x.std()) == pytest.approx(1.0, abs=1e-3)
    np.testing.assert_allclose(image.preprocess(split.x_train[0].reshape(64)), x[:1], rtol=1e-6)


def test_preprocess_stage_batches_request_tensors(image: ModuleType) -> None:
    stage = image.Preprocess()
    stage.setup()
    samples = image.samples(3)
    inputs = [
        {"image": Tensor("image", "FP32", (8, 8), [float(v) for v in s.image.reshape(-1)])}
        for s in samples
    ]
    out = stage.predict(inputs)
    assert len(out) == 3
    np.testing.assert_allclose(
        np.stack(out), image.preprocess(np.stack([s.image for s in samples])), rtol=1e-6
    )


def test_image_samples_are_test_digits_in_a_seeded_order(image: ModuleType) -> None:
    split = image.digits_split()
    samples = image.samples(500)
    assert len(samples) == 500
    assert [s.label for s in samples] == [s.label for s in image.samples(500)]
    assert [s.label for s in samples[:30]] != [s.label for s in image.samples(30, seed=1)]
    test_images = {split.x_test[i].tobytes(): int(split.y_test[i]) for i in range(450)}
    for s in samples:
        assert test_images[s.image.tobytes()] == s.label
    assert len({s.image.tobytes() for s in samples[:450]}) == len(test_images)


def test_image_request_bodies_are_valid_oip_requests(image: ModuleType) -> None:
    samples_module = load_module(IMAGE, "samples", "image_cascade_samples")
    bodies = samples_module.sample_requests(4, 0)
    spec = {s.name: s for s in image.Preprocess.inputs}
    for body, sample in zip(bodies, image.samples(4, 0), strict=True):
        tensor = parse_infer_request(json.dumps(body).encode(), spec).inputs["image"]
        np.testing.assert_array_equal(tensor.to_numpy(), sample.image)


def test_small_cnn_escalates_only_unsure_answers(image: ModuleType) -> None:
    stage = image.SmallCnn()
    threshold = image.CASCADE_THRESHOLD
    assert tuple(stage.route({"digit": 3, "confidence": threshold - 1e-6})) == ("large_cnn",)
    assert tuple(stage.route({"digit": 3, "confidence": threshold})) == ()
    assert tuple(stage.route({"digit": 3, "confidence": 0.999})) == ()
    assert 0.5 < threshold < 1.0


def test_snapshot_schedule_has_one_long_cycle_then_short_restarts(image: ModuleType) -> None:
    settings = image.TRAINING["large_cnn"]
    cycles = image.snapshot_cycles(settings["steps"], settings["snapshots"], 6)
    assert sum(cycles) == settings["steps"] and len(cycles) == settings["snapshots"]
    assert cycles[1:] == [6] * (settings["snapshots"] - 1) and cycles[0] > 6
    factors = image.lr_factors(cycles, restart=0.2)
    assert len(factors) == settings["steps"]
    assert factors[0] == pytest.approx(0.04) and max(factors) == pytest.approx(1.0)
    starts = list(itertools.accumulate(cycles))[:-1]  # first step of each later cycle
    assert [factors[s] for s in starts] == pytest.approx([0.2] * len(starts))
    tops = [1.0] + [0.2] * (len(cycles) - 1)
    for end, top in zip(itertools.accumulate(cycles), tops, strict=True):
        assert 0 <= factors[end - 1] < 0.1 * top  # each cycle anneals towards zero
    assert image.lr_factors([10]) == image.lr_factors([10], restart=0.5)  # one cycle


def test_random_shift_moves_the_digit_within_the_border(image: ModuleType) -> None:
    torch = pytest.importorskip("torch")
    images = torch.full((32, 1, image.SIZE, image.SIZE), -1.0)
    images[:, :, 30:34, 28:36] = 2.0  # a bright blob, well inside the border
    shifted = image.random_shift(images, 4, torch.Generator().manual_seed(0))
    assert shifted.shape == images.shape
    assert torch.equal(image.random_shift(images, 0, torch.Generator()), images)
    assert torch.equal(shifted.sum(dim=(1, 2, 3)), images.sum(dim=(1, 2, 3)))  # nothing lost
    rows = [int(torch.nonzero(s[0] == 2.0)[:, 0].min()) - 30 for s in shifted]
    cols = [int(torch.nonzero(s[0] == 2.0)[:, 1].min()) - 28 for s in shifted]
    assert set(rows) | set(cols) <= set(range(-4, 5)) and len(set(zip(rows, cols, strict=True))) > 5


def test_cnns_classify_64x64_images_and_the_ensemble_averages(image: ModuleType) -> None:
    """Untrained networks: shapes, and large_cnn = the mean of its members' softmax."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    x = np.random.default_rng(0).standard_normal((3, 1, image.SIZE, image.SIZE))
    x = x.astype(np.float32)
    small, large = image.build_cnn("small_cnn").eval(), image.build_cnn("large_cnn").eval()
    assert image.probabilities(small, x).shape == (3, 10)
    assert len(large.members) == image.TRAINING["large_cnn"]["snapshots"] >= 3
    members = np.mean([image.probabilities(m, x) for m in large.members], axis=0)
    np.testing.assert_allclose(image.probabilities(large, x), members, rtol=1e-4, atol=1e-6)
    digit, confidence = image.classify(large, x)
    np.testing.assert_array_equal(digit, members.argmax(axis=1))
    assert confidence.dtype == np.float64 and np.all((confidence > 0.1) & (confidence <= 1))
    with pytest.raises(ValueError, match="unknown model"):
        image.build_cnn("medium_cnn")


def test_cnn_stages_preload_only_imports(image: ModuleType) -> None:
    """preload runs in the template process replicas fork from: no weights, no training."""
    before = sorted(image.MODELS.glob("*.pt")) if image.MODELS.exists() else []
    for stage in (image.SmallCnn, image.LargeCnn):
        stage.preload()
        assert not hasattr(stage, "_net")
    assert "torch" in sys.modules
    assert (sorted(image.MODELS.glob("*.pt")) if image.MODELS.exists() else []) == before
