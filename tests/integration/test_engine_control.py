"""A new plan applied while traffic flows: replicas added, removed, re-hardwared, batch sizes
changed, and not one query failed or lost."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from inferline.engine._replay import ReplayResult, replay
from inferline.engine.testing import served_engine, write_bundle

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

ECHO = "inferline.engine.testing:Echo"
BODY = json.dumps(
    {"inputs": [{"name": "sleep_s", "shape": [1], "datatype": "FP64", "data": [0.003]}]}
).encode()


def plan(a: tuple[str, int, int], b: tuple[str, int, int]) -> str:
    entry = lambda hw, batch, n: {"hardware": hw, "batch_size": batch, "replicas": n}  # noqa: E731
    return json.dumps({"stages": {"a": entry(*a), "b": entry(*b)}})


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_plan_changes_under_load_lose_no_query(tmp_path: Path) -> None:
    pipeline, plan_file = write_bundle(
        tmp_path,
        "two-echo",
        {"a": ECHO, "b": ECHO},
        [("a", "b")],
        {
            "a": {"hardware": "cpu-1", "batch_size": 4, "replicas": 1},
            "b": {"hardware": "cpu-1", "batch_size": 4, "replicas": 1},
        },
    )
    rate_qps, duration_s = 150.0, 5.0
    arrivals = np.cumsum(
        np.random.default_rng(1).exponential(1 / rate_qps, int(rate_qps * duration_s))
    )
    with served_engine(pipeline, plan_file) as engine:
        first_pids = engine.replica_pids("a") + engine.replica_pids("b")
        results: list[ReplayResult] = []
        load = threading.Thread(
            target=lambda: results.append(
                replay(engine.url, arrivals, [BODY], slo_s=1.0, model="two-echo")
            )
        )
        load.start()
        try:
            time.sleep(0.7)
            # grow a and change its batch size; move b to 2-thread hardware with 2 replicas
            code, status = engine.request(
                "POST", "/v2/control/plan", plan(("cpu-1", 8, 2), ("cpu-2", 4, 2))
            )
            assert code == 200, status
            assert status["stages"]["a"]["ready"] == 2 and status["stages"]["a"]["batch_size"] == 8
            serving = [r for r in status["stages"]["b"]["replica_list"] if r["state"] == "ready"]
            assert len(serving) == 2  # the old cpu-1 replica may still finish its batch
            assert all(r["hardware"] == "cpu-2" and r["threads"] == 2 for r in serving)
            time.sleep(0.7)
            # shrink both back: removed replicas drain their batch first
            code, status = engine.request(
                "POST", "/v2/control/plan", plan(("cpu-1", 2, 1), ("cpu-1", 1, 1))
            )
            assert code == 200, status
            assert status["stages"]["a"]["ready"] == 1 and status["stages"]["b"]["batch_size"] == 1
            time.sleep(0.5)
            code, status = engine.request(
                "POST", "/v2/control/plan", plan(("cpu-1", 4, 2), ("cpu-1", 4, 1))
            )
            assert code == 200, status
        finally:
            load.join(timeout=60)
        assert not load.is_alive()
        result = results[0]
        assert result.status.size == arrivals.size
        bad = {
            i: (int(result.status[i]), result.errors.get(i))
            for i in np.flatnonzero(result.status != 200)
        }
        assert not bad, f"{len(bad)} queries failed: {list(bad.items())[:5]}"
        status = engine.status()
        assert status["in_flight"] == 0
        assert (status["stages"]["a"]["ready"], status["stages"]["b"]["ready"]) == (2, 1)
        code, metrics = engine.request("GET", "/metrics")
        assert f'inferline_requests_total{{code="200"}} {float(arrivals.size)}' in metrics
        # b's original replica was replaced when its hardware changed: it drained and exited
        current = set(engine.replica_pids("a") + engine.replica_pids("b"))
        gone = [pid for pid in first_pids if pid not in current]
        assert gone and not any(alive(pid) for pid in gone)
