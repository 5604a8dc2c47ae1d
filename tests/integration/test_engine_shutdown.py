"""Graceful shutdown: SIGINT stops listening, answers every query in flight, then stops
the replicas."""

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

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


def test_shutdown_drains_in_flight_work(tmp_path: Path) -> None:
    pipeline, plan = write_bundle(
        tmp_path,
        "drain",
        {"a": "inferline.engine.testing:Echo", "b": "inferline.engine.testing:NoOp"},
        [("a", "b")],
        {
            "a": {"hardware": "cpu-1", "batch_size": 2, "replicas": 1},
            "b": {"hardware": "cpu-1", "batch_size": 2, "replicas": 1},
        },
    )
    body = json.dumps(
        {"inputs": [{"name": "sleep_s", "shape": [1], "datatype": "FP64", "data": [0.25]}]}
    ).encode()
    with served_engine(pipeline, plan) as engine:
        replicas = engine.replica_pids("a") + engine.replica_pids("b")
        results: list[ReplayResult] = []
        load = threading.Thread(
            target=lambda: results.append(
                replay(engine.url, np.zeros(6), [body], slo_s=5.0, model="drain")
            )
        )
        load.start()
        deadline = time.monotonic() + 10
        while engine.status()["in_flight"] < 6 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert engine.status()["in_flight"] == 6
        started = time.monotonic()
        engine.process.send_signal(2)  # SIGINT, as Ctrl-C
        time.sleep(0.2)
        with pytest.raises(ConnectionRefusedError):  # no longer listening
            engine.request("GET", "/v2/health/live", timeout_s=2)
        load.join(timeout=20)
        assert engine.process.wait(timeout=20) == 0, engine.log()
        # 6 queries of 0.25 s in batches of 2 on one replica: about 0.75 s of drain
        assert time.monotonic() - started > 0.4
        assert results[0].status.tolist() == [200] * 6, results[0].errors
        for pid in replicas:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
        assert "draining" in engine.log()
