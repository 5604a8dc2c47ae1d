"""Stages of the text demo: real computations whose outputs decide the path.

tokenize ─┬─> length ──┬──────────────> merge
          │            └─> long_note ──> merge   (only when the text has >= 8 words)
          └─> sentiment ──────────────> merge

``length.route`` reads the word count it just computed and sends the query to
``long_note`` only for long texts; ``merge`` joins whichever branches ran.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, ClassVar

from inferline.engine import StageModel, Tensor, TensorSpec

LONG_TEXT_WORDS = 8

_POSITIVE = frozenset(
    ["good", "great", "excellent", "happy", "love", "like", "nice", "fast", "wonderful", "fine"]
)
_NEGATIVE = frozenset(
    ["bad", "awful", "terrible", "sad", "hate", "slow", "poor", "wrong", "broken", "ugly"]
)
_WORD = re.compile(r"[a-z']+")


class Tokenize(StageModel):
    """Lower-cased words of the request's ``text`` input."""

    inputs: ClassVar[tuple[TensorSpec, ...]] = (TensorSpec("text", "BYTES", (1,)),)

    def predict(self, inputs: list[Any]) -> list[Any]:
        out = []
        for tensors in inputs:
            text: Tensor = tensors["text"]
            out.append(_WORD.findall(str(text.scalar()).lower()))
        return out


class Length(StageModel):
    """Number of words; long texts also visit ``long_note``."""

    def predict(self, inputs: list[Any]) -> list[Any]:
        return [len(words) for words in inputs]

    def route(self, output: Any) -> Iterable[str]:
        return ("merge", "long_note") if output >= LONG_TEXT_WORDS else ("merge",)


class Sentiment(StageModel):
    """(positive − negative words) / words, in [-1, 1]."""

    def predict(self, inputs: list[Any]) -> list[Any]:
        scores = []
        for words in inputs:
            pos = sum(w in _POSITIVE for w in words)
            neg = sum(w in _NEGATIVE for w in words)
            scores.append((pos - neg) / max(1, len(words)))
        return scores


class LongNote(StageModel):
    """A note for long texts, built from the word count."""

    def predict(self, inputs: list[Any]) -> list[Any]:
        return [f"long text: {n} words" for n in inputs]


class Merge(StageModel):
    """Joins the branches a query took into the response's three outputs."""

    outputs: ClassVar[tuple[TensorSpec, ...]] = (
        TensorSpec("words", "INT64", (1,)),
        TensorSpec("sentiment", "FP64", (1,)),
        TensorSpec("note", "BYTES", (1,)),
    )

    def predict(self, inputs: list[Any]) -> list[Any]:
        return [
            {
                "words": branches["length"],
                "sentiment": round(branches["sentiment"], 4),
                "note": branches.get("long_note", ""),
            }
            for branches in inputs
        ]
