"""Sample queries for the text demo: what `inferline profile` and `inferline validate` send.

``samples(n, seed)`` returns ``n`` Open Inference Protocol V2 request bodies, each one
sentence in the ``text`` input. Sentences mix positive, negative and neutral words; their
lengths are drawn so that about 30 % have 8 words or more (and so visit ``long_note``),
the share the pipeline file assumes. The same ``n`` and ``seed`` give the same bodies.
"""

from __future__ import annotations

import random
from typing import Any

_POSITIVE = ["good", "great", "excellent", "happy", "love", "like", "nice", "fast", "fine"]
_NEGATIVE = ["bad", "awful", "terrible", "sad", "hate", "slow", "poor", "wrong", "broken"]
_NEUTRAL = [
    "the", "a", "service", "food", "day", "staff", "was", "and", "but", "this", "tool",
    "is", "today", "little", "were", "how", "very", "quite", "it", "our", "delivery",
]  # fmt: skip
# words per sentence: 1..7 (short) with 70 % of the weight, 8..16 (long) with 30 %
_SHORT = list(range(1, 8))
_LONG = list(range(8, 17))


def _sentence(rng: random.Random) -> str:
    words = rng.choice(_SHORT) if rng.random() < 0.7 else rng.choice(_LONG)
    pool = rng.choices((_POSITIVE, _NEGATIVE, _NEUTRAL), weights=(2, 2, 6), k=words)
    return " ".join(rng.choice(group) for group in pool)


def samples(n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` infer request bodies (OIP V2 JSON as dicts), reproducible from ``seed``."""
    rng = random.Random(seed)
    return [
        {
            "id": f"sample-{i}",
            "inputs": [
                {"name": "text", "shape": [1], "datatype": "BYTES", "data": [_sentence(rng)]}
            ],
        }
        for i in range(n)
    ]
