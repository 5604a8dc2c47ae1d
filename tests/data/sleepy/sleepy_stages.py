"""A pipeline whose "models" wait instead of compute, for a CI-stable ``inferline validate``.

parse ──> model ──(hard queries)──> fallback

``model`` takes 12 ms plus 2 ms per query of a batch, ``fallback`` 24 ms plus 4 ms per
query, in ``time.sleep``: their service times do not depend on how busy the CPU is, so a
short validation on a shared 2-core machine tests the Estimator's queueing, batching and
overhead model rather than the machine's speed. ``parse`` is real (cheap) work; a query
is "hard" (goes on to ``fallback``) when its number is above ``HARD``, a third of them.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any, ClassVar

from inferline.engine import StageModel, TensorSpec

HARD = 0.6667


class Parse(StageModel):
    inputs: ClassVar[tuple[TensorSpec, ...]] = (TensorSpec("x", "FP64", (1,)),)

    def predict(self, inputs: list[Any]) -> list[Any]:
        return [float(t["x"].scalar()) for t in inputs]


class Model(StageModel):
    def predict(self, inputs: list[Any]) -> list[Any]:
        time.sleep(0.012 + 0.002 * len(inputs))
        return [round(x * 10) for x in inputs]

    def route(self, output: Any) -> Iterable[str]:
        return ("fallback",) if output > HARD * 10 else ()


class Fallback(StageModel):
    def predict(self, inputs: list[Any]) -> list[Any]:
        time.sleep(0.024 + 0.004 * len(inputs))
        return [-x for x in inputs]


def samples(n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` requests with one number each, uniform in [0, 1) (a seeded LCG, no numpy)."""
    state = seed * 7919 + 17
    out = []
    for _ in range(n):
        state = (state * 6364136223846793005 + 1442695040888963407) % 2**64
        x = (state >> 11) / 2**53
        out.append({"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [x]}]})
    return out
