"""Overload: bounded queues and deadline-aware shedding answer 503 instead of dragging
every query past the SLO."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from inferline.engine._replay import replay
from inferline.engine.testing import served_engine, write_bundle

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

SLOW = json.dumps(
    {"inputs": [{"name": "sleep_s", "shape": [1], "datatype": "FP64", "data": [0.05]}]}
).encode()


def one_slow_stage(folder: Path) -> tuple[Path, Path]:
    return write_bundle(
        folder,
        "slow",
        {"only": "inferline.engine.testing:Echo"},
        [],
        {"only": {"hardware": "cpu-1", "batch_size": 1, "replicas": 1}},
    )


def test_deadline_aware_shedding(tmp_path: Path) -> None:
    """40 queries at once, 50 ms each, one replica, SLO 300 ms: serving all would take 2 s."""
    pipeline, plan = one_slow_stage(tmp_path)
    with served_engine(pipeline, plan, "--shed", "--slo-s", "0.3") as engine:
        engine.infer("slow", json.loads(SLOW)["inputs"])  # measure the service time once
        result = replay(engine.url, np.zeros(40), [SLOW], slo_s=0.3, model="slow")
        ok = result.status == 200
        shed = result.status == 503
        assert ok.sum() >= 3 and shed.sum() >= 20, np.unique(result.status, return_counts=True)
        assert (ok | shed).all()
        assert all(
            "shed" in result.errors[i] and "deadline" in result.errors[i]
            for i in np.flatnonzero(shed)
        )
        # what was served met the SLO, with room for process scheduling on a busy machine
        assert result.latency_s[ok].max() < 0.3 + 0.2
        _, metrics = engine.request("GET", "/metrics")
        assert 'inferline_requests_total{code="503"}' in metrics


def test_bounded_queue_rejects_with_503(tmp_path: Path) -> None:
    pipeline, plan = one_slow_stage(tmp_path)
    with served_engine(pipeline, plan, "--max-queue", "5") as engine:
        result = replay(engine.url, np.zeros(30), [SLOW], slo_s=5.0, model="slow")
        codes = dict(zip(*np.unique(result.status, return_counts=True), strict=True))
        assert set(codes) == {200, 503}, codes
        assert 5 <= codes[200] <= 10, codes  # 1 running + 5 queued (+ a few freed slots)
        message = next(iter(result.errors.values()))
        assert "overloaded" in message and "limit" in message
        assert engine.status()["in_flight"] == 0
