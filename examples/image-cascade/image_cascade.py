"""The image cascade's stages, its data split and its two cached CNNs.

    preprocess ──> small_cnn ──(confidence < CASCADE_THRESHOLD)──> large_cnn

``preprocess`` upscales an 8x8 digit (scikit-learn's bundled ``load_digits``) to 32x32 by
bilinear interpolation and normalises it; ``small_cnn`` classifies it with a tiny CNN and
answers when its softmax confidence is high enough; otherwise (``SmallCnn.route``) the
query goes on to ``large_cnn``, a deeper and slower CNN. Both CNNs are trained on the
digits' training split the first time a replica needs them (fixed seeds) and cached in
``.models/``; the test split supplies the sample queries.

torch is imported inside the functions and stages that need it, so that ``preprocess``
and the sample generator do not pay for it.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import numpy as np

from inferline.engine import StageModel, TensorSpec

HERE = Path(__file__).resolve().parent
MODELS = HERE / ".models"

SIZE = 32  # side of the upscaled image the CNNs see
#: small_cnn answers itself when its softmax confidence is at least this; below it the
#: query goes to large_cnn. Chosen so that about a quarter of the test images escalate.
CASCADE_THRESHOLD = 0.9
SPLIT_SEED = 0
TEST_FRACTION = 0.25
SAMPLE_SEED = 0

#: Per model: training settings and an architecture version (bump it when build_cnn
#: changes). They are part of the cache key, so a stale cached model is not used.
TRAINING: dict[str, dict[str, Any]] = {
    "small_cnn": {"version": 3, "epochs": 3, "batch": 64, "lr": 0.01, "seed": 0},
    "large_cnn": {"version": 3, "epochs": 4, "batch": 64, "lr": 0.005, "seed": 0},
}

# --- data ------------------------------------------------------------------------------------


class Split(NamedTuple):
    x_train: np.ndarray  # (n, 8, 8) float32, values 0..16
    y_train: np.ndarray  # (n,) int64
    x_test: np.ndarray
    y_test: np.ndarray


@functools.cache
def digits_split() -> Split:
    """scikit-learn's 1,797 bundled digits, split 75/25, stratified, fixed seed."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = digits.images.astype(np.float32)
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=y
    )
    return Split(x_train, y_train, x_test, y_test)


@functools.cache
def _interpolation_matrix(n_in: int = 8, n_out: int = SIZE) -> np.ndarray:
    """``A`` with ``A @ img @ A.T`` = bilinear resize (half-pixel centres, edges clamped)."""
    a = np.zeros((n_out, n_in), dtype=np.float32)
    centres = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
    for i, c in enumerate(np.clip(centres, 0, n_in - 1)):
        lo = int(np.floor(c))
        hi = min(lo + 1, n_in - 1)
        a[i, lo] += 1 - (c - lo)
        a[i, hi] += c - lo
    return a


def _upscale(images: np.ndarray) -> np.ndarray:
    a = _interpolation_matrix()
    return np.einsum("ij,njk,lk->nil", a, images / 16.0, a, optimize=True).astype(np.float32)


@functools.cache
def normalisation() -> tuple[float, float]:
    """Mean and standard deviation of the upscaled training images."""
    up = _upscale(digits_split().x_train)
    return float(up.mean()), float(up.std())


def preprocess(images: np.ndarray) -> np.ndarray:
    """(n, 8, 8) digits (0..16) -> (n, 1, 32, 32) float32, normalised like the training set."""
    mean, std = normalisation()
    up = _upscale(np.asarray(images, dtype=np.float32).reshape(-1, 8, 8))
    return ((up - mean) / std)[:, None, :, :]


class Sample(NamedTuple):
    """A sample query's image (8x8, 0..16) and its true digit."""

    image: np.ndarray
    label: int


def samples(n: int, seed: int = SAMPLE_SEED) -> list[Sample]:
    """``n`` test-split digits in a seeded random order (cycling when ``n`` > 450)."""
    split = digits_split()
    order = np.random.default_rng(seed).permutation(len(split.y_test))
    return [
        Sample(split.x_test[k], int(split.y_test[k]))
        for k in (order[i % len(order)] for i in range(n))
    ]


def request_body(image: np.ndarray) -> dict[str, Any]:
    """The OIP V2 infer request for one 8x8 image (FP32, flat row-major data)."""
    data = [float(v) for v in np.asarray(image, dtype=np.float32).reshape(-1)]
    return {"inputs": [{"name": "image", "shape": [8, 8], "datatype": "FP32", "data": data}]}


# --- the CNNs and their cache ----------------------------------------------------------------


def build_cnn(kind: str) -> Any:
    """``small_cnn``: one 4-channel conv (~0.04 M MACs); ``large_cnn``: five convs (~16 M)."""
    from torch import nn

    if kind == "small_cnn":
        return nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(4),  # 4 x 8 x 8
            nn.Flatten(),
            nn.Linear(4 * 8 * 8, 10),
        )
    if kind == "large_cnn":

        def conv(c_in: int, c_out: int) -> list[nn.Module]:
            return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]

        return nn.Sequential(
            *conv(1, 24),
            *conv(24, 24),
            nn.MaxPool2d(2),  # 24 x 16 x 16
            *conv(24, 48),
            *conv(48, 48),
            nn.MaxPool2d(2),  # 48 x 8 x 8
            *conv(48, 96),
            nn.MaxPool2d(2),  # 96 x 4 x 4
            nn.Flatten(),
            nn.Linear(96 * 4 * 4, 128),
            nn.ReLU(),
            nn.Linear(128, 10),
        )
    raise ValueError(f"unknown model {kind!r}")


def cached(path: Path, build: Callable[[Path], None]) -> Path:
    """Build ``path`` once even when several replica processes start together.

    The first process to take the lock builds into a temporary file and renames it into
    place (atomic), so the others, waiting on the lock, find a complete file.
    """
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not path.exists():
                tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
                try:
                    build(tmp)
                    os.replace(tmp, path)
                finally:
                    with contextlib.suppress(FileNotFoundError):
                        tmp.unlink()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return path


def _model_path(kind: str) -> Path:
    import torch

    key = json.dumps([TRAINING[kind], SPLIT_SEED, TEST_FRACTION, torch.__version__])
    return MODELS / f"{kind}-{hashlib.sha256(key.encode()).hexdigest()[:12]}.pt"


def _train(kind: str, target: Path) -> None:
    """Adam with a one-cycle learning rate on the training split; saves weights and accuracy.

    Always on one thread, whatever the replica's hardware, so that the cached weights (and
    with them the share of queries that escalate) do not depend on who trained them.
    """
    import torch
    from torch.nn import functional

    settings = TRAINING[kind]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(settings["seed"])
        split = digits_split()
        x = torch.from_numpy(preprocess(split.x_train))
        y = torch.from_numpy(split.y_train)
        net = build_cnn(kind)
        optimiser = torch.optim.Adam(net.parameters())
        steps = settings["epochs"] * -(-len(y) // settings["batch"])
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, settings["lr"], total_steps=steps)
        generator = torch.Generator().manual_seed(settings["seed"])
        started = time.perf_counter()
        net.train()
        for _ in range(settings["epochs"]):
            for batch in torch.randperm(len(y), generator=generator).split(settings["batch"]):
                optimiser.zero_grad()
                functional.cross_entropy(net(x[batch]), y[batch]).backward()
                optimiser.step()
                schedule.step()
        train_s = time.perf_counter() - started
        net.eval()
        digit, _ = classify(net, preprocess(split.x_test))
    finally:
        torch.set_num_threads(threads)
    torch.save(
        {
            "state_dict": net.state_dict(),
            "test_accuracy": float(np.mean(digit == split.y_test)),
            "train_s": train_s,
        },
        target,
    )


def load_cnn(kind: str) -> tuple[Any, dict[str, Any]]:
    """The trained network (eval mode) and its record (test accuracy, training time)."""
    import torch

    path = cached(_model_path(kind), lambda tmp: _train(kind, tmp))
    record = torch.load(path, weights_only=True)
    net = build_cnn(kind)
    net.load_state_dict(record.pop("state_dict"))
    net.eval()
    return net, record


def classify(net: Any, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Predicted digit and softmax confidence for preprocessed (n, 1, 32, 32) images."""
    import torch

    with torch.inference_mode():
        proba = torch.softmax(net(torch.from_numpy(np.ascontiguousarray(images))), dim=1)
        confidence, digit = proba.max(dim=1)
    return digit.numpy(), confidence.numpy().astype(np.float64)


# --- the stages ------------------------------------------------------------------------------


def escalates(confidence: float) -> bool:
    """The cascade's rule: large_cnn looks again at what small_cnn is unsure of."""
    return confidence < CASCADE_THRESHOLD


def _threads(default: int) -> int:
    """The replica's thread count: the engine sets OMP_NUM_THREADS from its hardware."""
    try:
        return max(1, int(os.environ.get("OMP_NUM_THREADS", default)))
    except ValueError:
        return max(1, default)


class Preprocess(StageModel):
    """8x8 digit -> normalised 32x32 image (numpy only), one vectorised call per batch."""

    inputs: ClassVar[tuple[TensorSpec, ...]] = (TensorSpec("image", "FP32", (8, 8)),)

    def setup(self) -> None:
        normalisation()  # loads the digits once, before the first batch

    def predict(self, inputs: list[Any]) -> list[Any]:
        batch = np.stack([tensors["image"].to_numpy() for tensors in inputs])
        return list(preprocess(batch))


_OUTPUTS = (
    TensorSpec("digit", "INT64", (1,)),
    TensorSpec("confidence", "FP64", (1,)),
    TensorSpec("model", "BYTES", (1,)),
)


class _Cnn(StageModel):
    kind: ClassVar[str] = ""
    outputs: ClassVar[tuple[TensorSpec, ...]] = _OUTPUTS

    def setup(self) -> None:
        import torch

        torch.set_num_threads(_threads(self.threads))
        self._net, self.record = load_cnn(self.kind)
        classify(self._net, np.zeros((2, 1, SIZE, SIZE), dtype=np.float32))  # warm up

    def _answers(self, images: list[Any]) -> list[dict[str, Any]]:
        digit, confidence = classify(self._net, np.stack(images))
        return [
            {"digit": int(d), "confidence": round(float(c), 6), "model": self.kind}
            for d, c in zip(digit.tolist(), confidence.tolist(), strict=True)
        ]


class SmallCnn(_Cnn):
    """The cheap first look; unsure answers carry the image on to large_cnn."""

    kind = "small_cnn"

    def predict(self, inputs: list[Any]) -> list[Any]:
        answers = self._answers(inputs)
        for answer, image in zip(answers, inputs, strict=True):
            if escalates(answer["confidence"]):
                answer["image"] = image
        return answers

    def route(self, output: Any) -> Iterable[str]:
        return ("large_cnn",) if escalates(output["confidence"]) else ()


class LargeCnn(_Cnn):
    """The slower, more accurate model; its answer replaces small_cnn's."""

    kind = "large_cnn"

    def predict(self, inputs: list[Any]) -> list[Any]:
        return self._answers([x["image"] for x in inputs])


# --- python image_cascade.py: the numbers in README.md ----------------------------------------


def _report() -> Iterator[str]:
    import torch

    torch.set_num_threads(_threads(1))
    split = digits_split()
    images = preprocess(split.x_test)
    small, small_record = load_cnn("small_cnn")
    large, large_record = load_cnn("large_cnn")
    for kind, record in (("small_cnn", small_record), ("large_cnn", large_record)):
        yield (
            f"{kind}: test accuracy {record['test_accuracy']:.4f} "
            f"(trained in {record['train_s']:.1f} s on one thread)"
        )
    digit, confidence = classify(small, images)
    escalated = confidence < CASCADE_THRESHOLD
    large_digit, _ = classify(large, images)
    answer = np.where(escalated, large_digit, digit)
    yield f"test images escalated to large_cnn: {escalated.mean():.4f} of {len(escalated)}"
    yield f"cascade accuracy: {np.mean(answer == split.y_test):.4f}"
    kept = (digit == split.y_test)[~escalated]
    yield f"small_cnn accuracy on the images it answers itself: {kept.mean():.4f}"
    for kind, net in (("small_cnn", small), ("large_cnn", large)):
        for b in (1, 8, 32):
            batch = images[:b]
            classify(net, batch)
            times = []
            for _ in range(50):
                t0 = time.perf_counter()
                classify(net, batch)
                times.append(time.perf_counter() - t0)
            yield f"{kind} batch {b}: median {np.median(times) * 1e3:.2f} ms"


if __name__ == "__main__":
    for line in _report():
        print(line)
