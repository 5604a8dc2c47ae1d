"""Replica processes that die: detected, replaced, their queries retried once or answered 5xx
— every query gets exactly one answer."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

from inferline.engine._replay import ReplayResult, replay
from inferline.engine.testing import ServedEngine, served_engine, write_bundle

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

ECHO = "inferline.engine.testing:Echo"
MODEL = "fragile"


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedEngine]:
    folder = tmp_path_factory.mktemp("fragile")
    pipeline, plan = write_bundle(
        folder,
        MODEL,
        {"a": ECHO, "b": ECHO},
        [("a", "b")],
        {
            "a": {"hardware": "cpu-1", "batch_size": 4, "replicas": 2},
            "b": {"hardware": "cpu-1", "batch_size": 4, "replicas": 2},
        },
    )
    with served_engine(pipeline, plan) as served:
        yield served


def inputs(sleep_s: float = 0.0, **flags: bool) -> list[dict[str, object]]:
    tensors: list[dict[str, object]] = [
        {"name": "sleep_s", "shape": [1], "datatype": "FP64", "data": [sleep_s]}
    ]
    tensors += [
        {"name": k, "shape": [1], "datatype": "BOOL", "data": [v]} for k, v in flags.items()
    ]
    return tensors


def wait_for_replicas(engine: ServedEngine, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        stages = engine.status()["stages"]
        if all(s["ready"] == 2 and s["starting"] == 0 for s in stages.values()):
            return
        time.sleep(0.05)
    raise AssertionError(f"replicas not replaced: {engine.status()}")


def test_killed_mid_batch_the_query_is_retried_on_another_replica(engine: ServedEngine) -> None:
    answers: list[tuple[int, object]] = []
    asker = threading.Thread(target=lambda: answers.append(engine.infer(MODEL, inputs(0.8))))
    asker.start()
    busy: list[int] = []
    deadline = time.monotonic() + 5
    while not busy and time.monotonic() < deadline:
        busy = [r["pid"] for r in engine.status()["stages"]["a"]["replica_list"] if r["busy"]]
        time.sleep(0.01)
    assert busy, "the slow query never reached a replica"
    os.kill(busy[0], signal.SIGKILL)
    asker.join(timeout=20)
    code, body = answers[0]
    assert code == 200, body
    assert body["parameters"]["path"] == "a+b"  # type: ignore[index]
    wait_for_replicas(engine)
    assert busy[0] not in engine.replica_pids("a")


def test_kills_under_load_every_query_answered_exactly_once(engine: ServedEngine) -> None:
    rate_qps, duration_s = 120.0, 3.0
    arrivals = np.cumsum(
        np.random.default_rng(2).exponential(1 / rate_qps, int(rate_qps * duration_s))
    )
    body = json.dumps({"inputs": inputs(0.01)}).encode()
    _, metrics_before = engine.request("GET", "/metrics")
    results: list[ReplayResult] = []
    load = threading.Thread(
        target=lambda: results.append(replay(engine.url, arrivals, [body], slo_s=2.0, model=MODEL))
    )
    load.start()
    try:
        for stage in ("a", "b", "a"):  # at about 0.7, 1.4 and 2.1 s into the load
            time.sleep(0.7)
            os.kill(engine.replica_pids(stage)[0], signal.SIGKILL)
    finally:
        load.join(timeout=60)
    result = results[0]
    assert result.status.size == arrivals.size
    codes = dict(zip(*np.unique(result.status, return_counts=True), strict=True))
    # a query is retried once; it fails only if its retry's replica died too
    assert set(codes) <= {200, 500}, (codes, list(result.errors.values())[:3])
    assert codes.get(200, 0) >= arrivals.size - 5, codes
    for message in result.errors.values():
        assert "died while running this query" in message, message
    status = engine.status()
    assert status["in_flight"] == 0
    _, metrics = engine.request("GET", "/metrics")
    answered = sum(
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("inferline_requests_total{")
    ) - sum(
        float(line.split()[-1])
        for line in metrics_before.splitlines()
        if line.startswith("inferline_requests_total{")
    )
    assert answered == arrivals.size  # one answer per query, server side too
    assert 'inferline_replica_failures_total{stage="a"}' in metrics
    wait_for_replicas(engine)


def test_query_that_crashes_its_replica_is_retried_once_then_500(engine: ServedEngine) -> None:
    before = set(engine.replica_pids("a"))
    code, body = engine.infer(MODEL, inputs(crash=True))
    assert code == 500, body
    assert "died while running this query and the retry failed too" in body["error"]  # type: ignore[index]
    wait_for_replicas(engine)
    assert not before & set(engine.replica_pids("a"))  # both replicas it visited were replaced
    code, body = engine.infer(MODEL, inputs())
    assert code == 200, body


def test_predict_raising_answers_500_and_keeps_the_replica(engine: ServedEngine) -> None:
    before = engine.replica_pids("a")
    code, body = engine.infer(MODEL, inputs(fail=True))
    assert code == 500 and "asked to fail" in body["error"], body  # type: ignore[index]
    assert engine.replica_pids("a") == before
