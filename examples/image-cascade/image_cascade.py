"""The image cascade's stages, its data split and its two cached CNNs.

    preprocess ──> small_cnn ──(confidence < CASCADE_THRESHOLD)──> large_cnn

``preprocess`` upscales an 8x8 digit (scikit-learn's bundled ``load_digits``) to 64x64 by
bilinear interpolation and normalises it; ``small_cnn``, a five-layer CNN, classifies it
and answers when its softmax confidence is high enough; otherwise (``SmallCnn.route``)
the query goes on to ``large_cnn``, a snapshot ensemble of five small ResNets (about 20x
slower). Both are trained on the digits' training split the first time a replica needs
them (fixed seeds, one thread) and cached in ``.models/``; the test split supplies the
sample queries.

torch is imported inside the functions and stages that need it, so that ``preprocess``
and the sample generator do not pay for it.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import itertools
import json
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import numpy as np

from inferline.engine import StageModel, TensorSpec

HERE = Path(__file__).resolve().parent
MODELS = HERE / ".models"

SIZE = 64  # side of the upscaled image the CNNs see
#: small_cnn answers itself when its softmax confidence is at least this; below it the
#: query goes to large_cnn. Chosen so that about 45 % of the test images escalate.
CASCADE_THRESHOLD = 0.98
SPLIT_SEED = 0
TEST_FRACTION = 0.25
SAMPLE_SEED = 0

#: Per model: training settings and an architecture version (bump it when build_cnn
#: changes). They are part of the cache key, so a stale cached model is not used.
#: ``steps`` are optimiser steps of ``batch`` images (1,347 training images: 22 steps per
#: epoch). large_cnn: ``snapshots`` ensemble members, the last ones after short cycles of
#: ``cycle_steps`` restarting at ``restart`` x ``lr``; training images shifted by up to
#: ``shift`` pixels.
TRAINING: dict[str, dict[str, Any]] = {
    "small_cnn": {"version": 4, "steps": 33, "batch": 64, "lr": 0.01, "seed": 0},
    "large_cnn": {
        "version": 4,
        "steps": 66,
        "batch": 64,
        "lr": 0.005,
        "seed": 0,
        "snapshots": 5,
        "cycle_steps": 6,
        "restart": 0.2,
        "shift": 4,
        "bn_momentum": 0.3,
    },
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
    up: np.ndarray = np.einsum("ij,njk,lk->nil", a, images / 16.0, a, optimize=True)
    return up.astype(np.float32)


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


def _conv_bn(c_in: int, c_out: int, stride: int = 1) -> list[Any]:
    """3x3 convolution (no bias) + BatchNorm + ReLU."""
    from torch import nn

    return [
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(),
    ]


def _residual_block(c_in: int, c_out: int, stride: int) -> Any:
    """ResNet basic block: two 3x3 conv-BN, identity (or strided 1x1 conv-BN) shortcut."""
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(
                *_conv_bn(c_in, c_out, stride),
                nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
            )
            self.shortcut = (
                nn.Identity()
                if c_in == c_out and stride == 1
                else nn.Sequential(
                    nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
                )
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(self.body(x) + self.shortcut(x))

    return Block()


def _resnet() -> Any:
    """One large_cnn member: a ResNet-10-style net for 64x64 inputs (49 M multiply-adds).

    Stem conv (stride 2) and max-pool to 16x16, then four basic blocks of 64, 128, 256 and
    256 channels at 16x16, 8x8, 4x4 and 2x2, global average pool, linear 256 -> 10.
    """
    from torch import nn

    return nn.Sequential(
        *_conv_bn(1, 32, stride=2),  # 32 x 32 x 32
        nn.MaxPool2d(2),  # 32 x 16 x 16
        _residual_block(32, 64, 1),
        _residual_block(64, 128, 2),  # 128 x 8 x 8
        _residual_block(128, 256, 2),  # 256 x 4 x 4
        _residual_block(256, 256, 2),  # 256 x 2 x 2
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(256, 10),
    )


def _snapshot_ensemble(members: int) -> Any:
    """``members`` copies of the ResNet; the output is the log of their mean softmax, so
    that ``softmax(output)`` is the ensemble's averaged probability."""
    import math

    import torch
    from torch import nn

    class SnapshotEnsemble(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.members = nn.ModuleList(_resnet() for _ in range(members))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            log_p = torch.stack([torch.log_softmax(m(x), dim=1) for m in self.members])
            return torch.logsumexp(log_p, dim=0) - math.log(len(self.members))

    return SnapshotEnsemble()


def build_cnn(kind: str) -> Any:
    """``small_cnn``: five conv-BN-ReLU layers (19 M multiply-adds, 0.4 M parameters);
    ``large_cnn``: a snapshot ensemble of five ResNets (5 x 49 M multiply-adds, 12.3 M
    parameters). Bump TRAINING[kind]["version"] when this changes."""
    from torch import nn

    if kind == "small_cnn":
        return nn.Sequential(
            *_conv_bn(1, 16, stride=2),  # 16 x 32 x 32
            *_conv_bn(16, 32),
            nn.MaxPool2d(2),  # 32 x 16 x 16
            *_conv_bn(32, 64),
            nn.MaxPool2d(2),  # 64 x 8 x 8
            *_conv_bn(64, 128),
            nn.MaxPool2d(2),  # 128 x 4 x 4
            *_conv_bn(128, 256),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(256, 10),
        )
    if kind == "large_cnn":
        return _snapshot_ensemble(TRAINING[kind]["snapshots"])
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


def snapshot_cycles(steps: int, snapshots: int, cycle_steps: int) -> list[int]:
    """Steps per learning-rate cycle: one long cycle from scratch, then ``snapshots`` - 1
    short ones of ``cycle_steps`` (each ends with a snapshot)."""
    return [steps - cycle_steps * (snapshots - 1)] + [cycle_steps] * (snapshots - 1)


def lr_factors(cycles: list[int], restart: float = 0.0) -> list[float]:
    """Learning rate per step, as a fraction of the maximum. The first cycle warms up
    linearly over 30 % of its steps and anneals (cosine) to zero; each later cycle starts
    again at ``restart`` and anneals to zero (fast geometric ensembling, Garipov et al.,
    NeurIPS 2018: short cycles near the first solution)."""
    factors = []
    for i, n in enumerate(cycles):
        warm = max(1, round(0.3 * n)) if i == 0 else 0
        top = 1.0 if i == 0 else restart
        for t in range(n):
            if t < warm:
                factors.append(0.04 + 0.96 * t / warm)
            else:
                factors.append(top * 0.5 * (1 + math.cos(math.pi * (t - warm) / (n - warm))))
    return factors


def random_shift(images: Any, pixels: int, generator: Any) -> Any:
    """Each (1, SIZE, SIZE) image moved by up to ``pixels`` in x and y (background fill)."""
    import torch
    from torch.nn import functional

    if pixels == 0:
        return images
    n, size = len(images), images.shape[-1]
    background = float(images.min())
    padded = functional.pad(images, (pixels,) * 4, value=background)
    offsets = torch.randint(0, 2 * pixels + 1, (n, 2), generator=generator).tolist()
    return torch.stack(
        [padded[i, :, r : r + size, c : c + size] for i, (r, c) in enumerate(offsets)]
    )


def _train(kind: str, target: Path) -> None:
    """Adam on the training split; saves the weights, test accuracies and training time.

    ``small_cnn``: one learning-rate cycle. ``large_cnn``: one ResNet trained on randomly
    shifted images through a long cycle and then short ones; its weights at the end of
    each cycle become one member of the ensemble (a snapshot), so the ensemble costs one
    training run but ``snapshots`` forward passes per query. Always on one thread,
    whatever the replica's hardware, so that the cached weights (and with them the share
    of queries that escalate) do not depend on who trained them.
    """
    import torch
    from torch import nn
    from torch.nn import functional

    settings = TRAINING[kind]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(settings["seed"])
        split = digits_split()
        x = torch.from_numpy(preprocess(split.x_train))
        y = torch.from_numpy(split.y_train)
        model = build_cnn(kind)
        # large_cnn: a separate ResNet is trained; snapshots of it are copied into members.
        members = list(model.members) if kind == "large_cnn" else []
        net = _resnet() if members else model
        for module in net.modules():
            if isinstance(module, nn.BatchNorm2d):  # running statistics follow the
                module.momentum = settings.get("bn_momentum", 0.1)  # short cycles
        cycles = (
            snapshot_cycles(settings["steps"], len(members), settings["cycle_steps"])
            if members
            else [settings["steps"]]
        )
        factors = lr_factors(cycles, settings.get("restart", 0.0))
        snapshot_at = dict(zip(itertools.accumulate(cycles), members, strict=False))
        optimiser = torch.optim.Adam(net.parameters(), lr=settings["lr"])
        generator = torch.Generator().manual_seed(settings["seed"])
        started = time.perf_counter()
        net.train()
        step = 0
        while step < settings["steps"]:  # epochs over the shuffled training split
            order = torch.randperm(len(y), generator=generator)
            for batch in torch.split(order, settings["batch"]):
                for group in optimiser.param_groups:
                    group["lr"] = settings["lr"] * factors[step]
                images = random_shift(x[batch], settings.get("shift", 0), generator)
                optimiser.zero_grad()
                torch.autograd.backward(functional.cross_entropy(net(images), y[batch]))
                optimiser.step()
                step += 1
                if step in snapshot_at:
                    snapshot_at[step].load_state_dict(net.state_dict())
                if step == settings["steps"]:
                    break
        train_s = time.perf_counter() - started
        model.eval()
        images = preprocess(split.x_test)
        member_proba = [probabilities(m, images) for m in members or [model]]
        digit = np.mean(member_proba, axis=0).argmax(axis=1)  # what model(images) answers
        member_accuracy = [float(np.mean(p.argmax(axis=1) == split.y_test)) for p in member_proba]
    finally:
        torch.set_num_threads(threads)
    torch.save(
        {
            "state_dict": model.state_dict(),
            "test_accuracy": float(np.mean(digit == split.y_test)),
            "member_accuracy": member_accuracy,
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


def probabilities(net: Any, images: np.ndarray) -> np.ndarray:
    """Softmax probabilities (n, 10) for preprocessed (n, 1, SIZE, SIZE) images."""
    import torch

    with torch.inference_mode():
        return torch.softmax(net(torch.from_numpy(np.ascontiguousarray(images))), dim=1).numpy()


def classify(net: Any, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Predicted digit and softmax confidence for preprocessed (n, 1, SIZE, SIZE) images."""
    proba = probabilities(net, images)
    return proba.argmax(axis=1), proba.max(axis=1).astype(np.float64)


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
    """8x8 digit -> normalised 64x64 image (numpy only), one vectorised call per batch."""

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

    @classmethod
    def preload(cls) -> None:
        """Only the import (about 2 s): replicas fork from a process that has run this;
        threads, weights and training are ``setup``'s, in each replica."""
        import torch  # noqa: F401

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
        members = ", ".join(f"{a:.4f}" for a in record["member_accuracy"])
        yield (
            f"{kind}: test accuracy {record['test_accuracy']:.4f} (members {members}; "
            f"trained in {record['train_s']:.1f} s on one thread)"
        )
    digit, confidence = classify(small, images)
    large_digit, _ = classify(large, images)
    right = digit == split.y_test
    for threshold in sorted({0.9, 0.95, 0.97, 0.98, 0.99, CASCADE_THRESHOLD}):
        escalated = confidence < threshold
        answer = np.where(escalated, large_digit, digit)
        yield (
            f"threshold {threshold}: {escalated.mean():.4f} escalated "
            f"({escalated.sum()} / {len(escalated)}), small_cnn right on the rest "
            f"{right[~escalated].mean():.4f}, cascade accuracy "
            f"{np.mean(answer == split.y_test):.4f}"
            + ("  <- CASCADE_THRESHOLD" if threshold == CASCADE_THRESHOLD else "")
        )
    x = torch.from_numpy(images)
    for kind, net in (("small_cnn", small), ("large_cnn", large)):
        for b in (1, 8, 16):
            times = []
            with torch.inference_mode():
                net(x[:b])
                for _ in range(max(5, 40 // b)):
                    t0 = time.perf_counter()
                    net(x[:b])
                    times.append(time.perf_counter() - t0)
            ms = float(np.median(times)) * 1e3
            yield f"{kind} batch {b}: median {ms:.1f} ms ({ms / b:.1f} per image)"


if __name__ == "__main__":
    for line in _report():
        print(line)
