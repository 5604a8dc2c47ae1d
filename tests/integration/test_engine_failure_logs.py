"""A stage that fails its batches: the client gets 500, the server log says which stage
failed how many queries and why (rate-limited), and /metrics counts them by stage and kind."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from inferline.engine._replay import replay
from inferline.engine.testing import served_engine, write_bundle

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

SHORT_STAGE = '''
from inferline.engine import StageModel


class Short(StageModel):
    """Returns one output too few: the batch fails as a whole."""

    def predict(self, inputs):
        return inputs[:-1]
'''

LINE = re.compile(
    r"stage 'short' failed (\d+) quer(?:y|ies) \(batch\): TypeError: predict returned"
)
HELD = re.compile(r"\((\d+) quer(?:y|ies)\) not logged since the last line")
X = {"name": "x", "shape": [1], "datatype": "FP64", "data": [1.0]}
METRIC = re.compile(r'inferline_failed_queries_total\{kind="batch",stage="short"\} (\S+)')


def accounted(text: str) -> int:
    """Failed queries the log accounts for: in its lines and in their held-back counts."""
    return sum(int(n) for n in LINE.findall(text)) + sum(int(n) for n in HELD.findall(text))


def wait_for_log(read: Callable[[], str], queries: int) -> str:
    deadline = time.monotonic() + 10.0
    while True:
        text = read()
        if accounted(text) >= queries or time.monotonic() > deadline:
            return text
        time.sleep(0.05)


def test_failed_batches_are_logged_rate_limited_and_counted(tmp_path: Path) -> None:
    (tmp_path / "short_stage.py").write_text(SHORT_STAGE)
    pipeline, plan = write_bundle(
        tmp_path,
        "short",
        {"short": "short_stage:Short"},
        [],
        {"short": {"hardware": "cpu-1", "batch_size": 4, "replicas": 1}},
    )
    with served_engine(pipeline, plan) as engine:
        code, body = engine.infer("short", [X])
        assert code == 500 and "predict returned 0 outputs for a batch of 1" in body["error"], body
        first = wait_for_log(engine.log, 1)
        assert LINE.search(first), first

        burst = replay(engine.url, np.zeros(12), slo_s=5.0, model="short")
        assert (burst.status == 500).all(), burst.status
        # past the limiter's interval, the next failure is logged, with the count of
        # what was held back since the previous line
        time.sleep(1.2)
        code, _ = engine.infer("short", [X])
        assert code == 500
        text = wait_for_log(engine.log, 14)
        _, metrics = engine.request("GET", "/metrics")

    assert accounted(text) == 14, text  # every failed query in a line or a held-back count
    # first, final, and at most one for the burst (its batches take milliseconds)
    assert len(LINE.findall(text)) <= 3, text
    match = METRIC.search(metrics)
    assert match is not None and float(match.group(1)) == 14.0, metrics
