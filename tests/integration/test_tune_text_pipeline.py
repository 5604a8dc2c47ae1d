"""The live Tuner on a real pipeline: langid → MiniLM → scikit-learn, with real payloads.

The plan is one replica per stage for 2 q/s. The replay steps up to 12 q/s (six
times the planned envelope), then down to 1 q/s. The engine must decide to add
replicas within seconds of the step up, answer every query, and remove replicas
only after the step down and the hold-off.
"""

from __future__ import annotations

import json
import shutil
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import yaml

from inferline.engine._replay import ReplayResult, replay, replay_summary
from inferline.engine.testing import served_engine

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]

BUNDLE = Path(__file__).resolve().parents[2] / "examples" / "text-pipeline"
HOLDOFF_S = 4.0


def poisson(rate: float, start: float, end: float, rng: np.random.Generator) -> np.ndarray:
    gaps = rng.exponential(1 / rate, int(rate * (end - start) * 2) + 10)
    t = start + np.cumsum(gaps)
    return t[t < end]


def bodies(n: int) -> list[bytes]:
    sys.path.insert(0, str(BUNDLE))
    try:
        from samples import sample_requests  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(BUNDLE))
    return [json.dumps(b).encode() for b in sample_requests(n, 11)]


def test_text_pipeline_scales_up_on_a_step_and_down_after_the_holdoff(tmp_path: Path) -> None:
    bundle = tmp_path / "text-pipeline"
    shutil.copytree(BUNDLE, bundle, ignore=shutil.ignore_patterns("__pycache__"))
    plan = tmp_path / "plan.yaml"
    stages = ("langid", "embed", "topic", "lang_stats")
    plan.write_text(
        yaml.safe_dump(
            {"stages": {s: {"hardware": "cpu-1", "batch_size": 4, "replicas": 1} for s in stages}}
        )
    )
    rng = np.random.default_rng(5)
    up_at, down_at, end = 5.0, 15.0, 32.0
    arrivals = np.concatenate(
        [poisson(2, 0, up_at, rng), poisson(12, up_at, down_at, rng), poisson(1, down_at, end, rng)]
    )
    args = (
        "--tune",
        "--policy",
        "inferline",
        "--planning-rate",
        "2",
        "--holdoff-s",
        str(HOLDOFF_S),
        "--lookback-s",
        "5",
        "--slo-s",
        "2",
    )
    payloads = bodies(64)
    with served_engine(bundle, plan, *args, start_timeout_s=180.0) as engine:
        results: list[ReplayResult] = []
        load = threading.Thread(
            target=lambda: results.append(
                replay(engine.url, arrivals, payloads, slo_s=2.0, model="text-pipeline")
            )
        )
        before = engine.status()
        replay_start = before["uptime_s"] - float(arrivals[0])
        load.start()
        load.join(timeout=150)
        assert not load.is_alive()
        status = engine.status()
        log = engine.log()
    summary = replay_summary(results[0])
    changes = status["tuner"]["changes"]
    print(f"\nmiss rate {summary['miss_rate']:.3f}, activation {status.get('activation_s')}")
    ups = [c for c in changes if c["to"] > c["from"]]
    downs = [c for c in changes if c["to"] < c["from"]]
    assert ups, (changes, log)

    def embed_replicas_at(t: float) -> int:
        n = 1
        for c in changes:
            if c["stage"] == "embed" and c["time_s"] <= replay_start + t:
                n = c["to"]
        return n

    # the decision to add replicas comes within seconds of the step up
    assert embed_replicas_at(up_at + 5.0) >= 2, changes
    # after the step down (and the hold-off) replicas go away again
    assert downs, changes
    # no replica is removed while the high rate lasts; each removal waits the hold-off
    assert all(c["time_s"] >= replay_start + down_at for c in downs), changes
    ticks = sorted({c["time_s"] for c in changes})  # one tick may change several stages
    for c in downs:
        previous = max(t for t in ticks if t < c["time_s"])
        assert c["time_s"] - previous >= HOLDOFF_S - 0.01, changes
    # every query answered; the step costs few deadlines
    assert summary["errors"] == 0, summary
    # new embed replicas fork from a process that has imported torch and transformers, so
    # a scale-up costs ~1 s of CPU instead of ~10 s taken from the replicas serving; seen
    # here: 0 misses in 4 runs (the bound leaves room for slower CI machines)
    assert summary["miss_rate"] <= 0.10, summary
