"""A small numpy cascade for the Profiler's tests: cheap model first, expensive one if unsure.

featurize ──> small ──(not confident)──> large

``small`` is a one-layer softmax classifier over 10 classes; a query whose top class
probability is below ``CONFIDENCE`` (about half of the samples) goes on to ``large``,
1024 tanh layers of 256x256 (8 weight matrices applied 128 times, so they stay in the
CPU caches: compute, not memory bandwidth) that cost a few milliseconds per batch on
one thread. Weights are fixed random
matrices (seeded), so outputs and routing are the same on every run.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import numpy as np

from inferline.engine import StageModel, Tensor, TensorSpec

FEATURES = 64
HIDDEN = 256
LAYERS = 8
REPEATS = 128  # large applies its LAYERS this many times
CLASSES = 10
CONFIDENCE = 0.47  # about half the samples go on to large


def _weights(seed: int, *shape: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32)


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class Featurize(StageModel):
    """Projects the 64 input numbers to 256 features."""

    inputs: ClassVar[tuple[TensorSpec, ...]] = (TensorSpec("x", "FP32", (FEATURES,)),)

    def setup(self) -> None:
        self.w = _weights(1, FEATURES, HIDDEN)

    def predict(self, inputs: list[Any]) -> list[Any]:
        x = np.stack([np.asarray(t["x"].data, dtype=np.float32) for t in inputs])
        return list(np.tanh(x @ self.w))


class Small(StageModel):
    """Cheap classifier; unsure queries (top probability < CONFIDENCE) go on to ``large``."""

    def setup(self) -> None:
        self.w = _weights(2, HIDDEN, CLASSES) * 3.0

    def predict(self, inputs: list[Any]) -> list[Any]:
        h = np.stack(inputs)
        p = _softmax(h @ self.w)
        return [
            {"label": int(p[i].argmax()), "confidence": float(p[i].max()), "features": h[i]}
            for i in range(len(inputs))
        ]

    def route(self, output: Any) -> Iterable[str]:
        return ("large",) if output["confidence"] < CONFIDENCE else ()


class Large(StageModel):
    """A deep stack of tanh layers: a few milliseconds per batch on one thread."""

    outputs: ClassVar[tuple[TensorSpec, ...]] = (TensorSpec("label", "INT64", (1,)),)

    def setup(self) -> None:
        self.layers = [_weights(10 + k, HIDDEN, HIDDEN) for k in range(LAYERS)]
        self.head = _weights(5, HIDDEN, CLASSES)

    def predict(self, inputs: list[Any]) -> list[Any]:
        h = np.stack([x["features"] for x in inputs])
        for _ in range(REPEATS):
            for w in self.layers:
                h = np.tanh(h @ w)
        return [int(k) for k in (h @ self.head).argmax(axis=1)]


def samples(n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` requests of 64 random numbers each (OIP V2 bodies)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, FEATURES)).astype(np.float32)
    return [
        {"inputs": [{"name": "x", "shape": [FEATURES], "datatype": "FP32", "data": row.tolist()}]}
        for row in x
    ]


__all__ = ["Featurize", "Large", "Small", "Tensor", "samples"]
