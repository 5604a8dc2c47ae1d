"""``inferline serve --tune``: the live Tuner follows a step up and a step down in the load.

One Echo stage with a known service time (50 ms per query, batch 1: 20 qps per
replica), planned with one replica for 5 qps. The replay runs 5 qps, then 30 qps
(more than one replica can serve), then 2 qps. The engine must add replicas within
a few seconds of the step up, miss few deadlines, and remove replicas only after
the hold-off.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from inferline.cli import app
from inferline.engine._replay import ReplayResult, replay, replay_summary
from inferline.engine.testing import served_engine, write_bundle

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

ECHO = "inferline.engine.testing:Echo"
SERVICE_S = 0.05
BODY = json.dumps(
    {"inputs": [{"name": "sleep_s", "shape": [1], "datatype": "FP64", "data": [SERVICE_S]}]}
).encode()
HOLDOFF_S = 3.0


def tuned_bundle(folder: Path) -> tuple[Path, Path]:
    pipeline, plan = write_bundle(
        folder,
        "tuned-echo",
        {"a": ECHO},
        [],
        {"a": {"hardware": "cpu-1", "batch_size": 1, "replicas": 1}},
    )
    (folder / "hardware.yaml").write_text(
        yaml.safe_dump(
            {
                "hardware": [
                    {"name": "cpu-1", "price_per_hour": 0.05, "accelerator": False, "max_units": 6}
                ]
            }
        )
    )
    points = [{"batch_size": b, "median_s": SERVICE_S, "p99_s": SERVICE_S} for b in (1, 2)]
    (folder / "profiles.yaml").write_text(
        yaml.safe_dump({"profiles": [{"stage": "a", "hardware": "cpu-1", "points": points}]})
    )
    return pipeline, plan


def poisson(rate: float, start: float, end: float, rng: np.random.Generator) -> np.ndarray:
    gaps = rng.exponential(1 / rate, int(rate * (end - start) * 2) + 10)
    t = start + np.cumsum(gaps)
    return t[t < end]


@pytest.mark.parametrize("policy", ["inferline", "simulate"])
def test_tune_scales_up_on_a_step_and_down_after_the_holdoff(tmp_path: Path, policy: str) -> None:
    pipeline, plan = tuned_bundle(tmp_path)
    rng = np.random.default_rng(3)
    up_at, down_at, end = 4.0, 11.0, 26.0
    arrivals = np.concatenate(
        [poisson(5, 0, up_at, rng), poisson(30, up_at, down_at, rng), poisson(2, down_at, end, rng)]
    )
    # simulate: its SLO, and 5-s buckets, the shortest lookback there is, so two of them
    holdoff_s = HOLDOFF_S if policy == "inferline" else 6.0
    args = ("--tune", "--policy", policy, "--planning-rate", "5", "--holdoff-s", str(holdoff_s))
    args += (
        ("--lookback-s", "5") if policy == "inferline" else ("--lookback-s", "10", "--slo-s", "1")
    )
    started = time.monotonic()
    with served_engine(pipeline, plan, *args) as engine:
        results: list[ReplayResult] = []
        load = threading.Thread(
            target=lambda: results.append(
                replay(engine.url, arrivals, [BODY], slo_s=1.0, model="tuned-echo")
            )
        )
        before = engine.status()  # the tuner runs before any load
        assert before["tuner"]["policy"] == policy and before["tuner"]["n_changes"] == 0
        # engine clock at the trace's time zero (the replay sends its first query at once)
        replay_start = before["uptime_s"] - float(arrivals[0])
        load.start()
        load.join(timeout=60)
        assert not load.is_alive()
        status = engine.status()
        _, metrics = engine.request("GET", "/metrics")
        log = engine.log()
    result = results[0]
    summary = replay_summary(result)
    changes = status["tuner"]["changes"]
    ups = [c for c in changes if c["to"] > c["from"]]
    downs = [c for c in changes if c["to"] < c["from"]]
    assert ups and downs, (changes, log)

    # times are on the engine's clock, from its start; the replay began at replay_start
    def replicas_at(t: float) -> int:
        n = 1
        for c in changes:
            if c["time_s"] <= replay_start + t:
                n = c["to"]
        return n

    peak = max(c["to"] for c in ups)
    # the step up: within 3 s the stage runs more replicas than one can serve (30 > 20 qps)
    assert replicas_at(up_at + 3.0) >= 2, changes
    # the envelope rule keeps the plan's headroom (3 for 30 qps); the simulation may find 2
    # replicas keep the SLO
    most = max(replicas_at(t) for t in np.arange(up_at, down_at, 0.25))
    assert most >= (3 if policy == "inferline" else 2), changes
    assert any(replay_start + up_at <= c["time_s"] <= replay_start + up_at + 3.0 for c in ups)
    # the step down: no scale-down during the high phase, and each comes at least the
    # hold-off after the change before it (the policy may scale up again in between)
    assert all(c["time_s"] >= replay_start + down_at for c in downs), changes
    for before_c, c in itertools.pairwise(changes):
        if c["to"] < c["from"]:
            assert c["time_s"] - before_c["time_s"] >= HOLDOFF_S - 0.01, changes
    assert replicas_at(end) < peak, changes
    assert summary["miss_rate"] <= 0.05, (summary, changes)
    activation = status["activation_s"]
    assert activation["count"] >= 2 and 0 < activation["median"] < 30
    # the tuner's figure is the measured median as of its last tick (a replica that became
    # ready since then can move the median: forked replicas are ready within milliseconds)
    assert 0 < status["tuner"]["activation_s"] < 30
    assert "inferline_tuner_changes" in metrics
    # each change is printed once (it was printed twice: logged and announced)
    printed = [line.split("tuner: ", 1)[1] for line in log.splitlines() if "tuner: t=" in line]
    assert printed and len(printed) == len(set(printed)), log
    assert time.monotonic() - started < 60


def test_tune_without_profiles_fails_with_exit_2(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    _, plan = write_bundle(
        tmp_path,
        "bare",
        {"a": ECHO},
        [],
        {"a": {"hardware": "cpu-1", "batch_size": 1, "replicas": 1}},
    )
    result = CliRunner().invoke(
        app, ["serve", str(tmp_path), "--config", str(plan), "--tune", "--planning-rate", "5"]
    )
    assert result.exit_code == 2
    assert "hardware.yaml" in result.output and "profiles.yaml" in result.output
