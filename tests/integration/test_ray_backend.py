"""The Ray backend on a real 2-node Ray cluster started with ``ray start`` on this machine.

One cluster for the module (head 3 CPUs, worker 4 CPUs; each node its own count) and
one served text demo (examples/engine-demo/text: tokenize → length/sentiment →
long_note → merge) on it: replicas land on both nodes, every query of a replayed trace
gets the right answer, replica counts change under load without losing or repeating a
query, and plans the cluster cannot host fail before anything is deployed.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

pytest.importorskip("ray")

from inferline.engine._replay import ReplayResult, replay
from inferline.engine._stage import Tensor
from inferline.engine.testing import ServedEngine, free_port, served_engine
from inferline.ray_backend.testing import LocalRayCluster

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]
TEXT = ROOT / "examples" / "engine-demo" / "text"
TEXT_PIPELINE = ROOT / "examples" / "text-pipeline"
MODEL = "text-demo"
HEAD_CPUS, WORKER_CPUS = 3, 4

_WORDS = [
    "good",
    "great",
    "bad",
    "awful",
    "day",
    "weather",
    "food",
    "service",
    "fast",
    "slow",
    "it",
    "was",
    "the",
    "a",
    "very",
    "and",
    "but",
    "nice",
    "terrible",
    "love",
    "hate",
    "fine",
    "broken",
    "table",
    "chair",
]


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalRayCluster]:
    ray_cluster = LocalRayCluster((HEAD_CPUS, WORKER_CPUS))
    try:
        ray_cluster.start()
        yield ray_cluster
    finally:
        ray_cluster.stop()
        assert not ray_cluster.alive_groups(), "Ray processes of the test cluster survived"


@pytest.fixture(scope="module")
def text_engine(cluster: LocalRayCluster) -> Iterator[ServedEngine]:
    with served_engine(
        TEXT,
        TEXT / "plan.yaml",
        "--backend",
        "ray",
        "--address",
        cluster.address,
        "--slo-s",
        "2",
        start_timeout_s=180,
    ) as engine:
        yield engine
        log = engine.log()  # the log goes with the engine's temporary folder
    assert "Traceback" not in log, log
    assert cluster.query()["alive_actors"] == []  # a graceful shutdown leaves no actor


# --- helpers -------------------------------------------------------------------------------


def texts(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(_WORDS, size=int(rng.integers(1, 14))).tolist()) for _ in range(n)]


def body(text: str, query_id: int) -> bytes:
    return json.dumps(
        {
            "id": str(query_id),
            "inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [text]}],
        }
    ).encode()


def expected(text: str) -> dict[str, Any]:
    """The answer, computed in this process by the demo's own stage classes."""
    sys.path.insert(0, str(TEXT))
    try:
        stages = importlib.import_module("text_stages")
    finally:
        sys.path.remove(str(TEXT))
    words = stages.Tokenize().predict([{"text": Tensor("text", "BYTES", (1,), [text])}])[0]
    n = stages.Length().predict([words])[0]
    branches = {"length": n, "sentiment": stages.Sentiment().predict([words])[0]}
    if n >= stages.LONG_TEXT_WORDS:
        branches["long_note"] = stages.LongNote().predict([n])[0]
    merged: dict[str, Any] = stages.Merge().predict([branches])[0]
    return merged


async def _post(port: int, payload: bytes) -> tuple[int, Any]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        head = (
            f"POST /v2/models/{MODEL}/infer HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
        writer.write(head + payload)
        await writer.drain()
        raw = await reader.read()
    finally:
        writer.close()
    header, _, content = raw.partition(b"\r\n\r\n")
    return int(header.split()[1]), json.loads(content)


def send_open_loop(port: int, payloads: list[bytes], arrivals: np.ndarray) -> list[Any]:
    """Send payload i at arrivals[i] (never waiting for answers); return every answer."""

    async def main() -> list[Any]:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        tasks = []
        for payload, at in zip(payloads, arrivals, strict=True):
            delay = t0 + float(at) - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(_post(port, payload)))
        return list(await asyncio.gather(*tasks))

    return asyncio.run(main())


def poisson(rate_qps: float, duration_s: float, seed: int) -> np.ndarray:
    gaps = np.random.default_rng(seed).exponential(1 / rate_qps, int(rate_qps * duration_s * 2))
    arrivals = np.cumsum(gaps)
    return arrivals[arrivals < duration_s]


def plan_body(**replicas: int) -> str:
    stages = yaml.safe_load((TEXT / "plan.yaml").read_text())["stages"]
    for name, count in replicas.items():
        stages[name]["replicas"] = count
    return json.dumps({"stages": stages})


def run_serve(*args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from inferline.cli import main; main()", "serve", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
        env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"},
    )


# --- tests -----------------------------------------------------------------------------------


@pytest.mark.skipif(
    not (TEXT_PIPELINE / "pipeline.yaml").exists(), reason="examples/text-pipeline not built yet"
)
def test_text_pipeline_example_serves_on_ray(cluster: LocalRayCluster) -> None:
    # first in the module: it needs CPUs the shared text demo would hold
    plans = sorted(TEXT_PIPELINE.glob("plan*.yaml"))
    if not plans:
        pytest.skip("examples/text-pipeline has no plan file")
    requests = TEXT_PIPELINE / "requests.jsonl"
    payloads = (
        [line.encode() for line in requests.read_text().splitlines() if line.strip()]
        if requests.exists()
        else [body("what a wonderful day", 0)]
    )
    with served_engine(
        TEXT_PIPELINE,
        plans[0],
        "--backend",
        "ray",
        "--address",
        cluster.address,
        "--slo-s",
        "5",
        start_timeout_s=240,
    ) as engine:
        result = replay(engine.url, poisson(5.0, 4.0, seed=9), payloads, slo_s=5.0)
        assert (result.status == 200).all(), result.errors


def test_a_killed_front_end_leaves_no_actor(cluster: LocalRayCluster, tmp_path: Path) -> None:
    plan = {"stages": yaml.safe_load((TEXT / "plan.yaml").read_text())["stages"]}
    for stage in plan["stages"].values():
        stage["replicas"] = 1
    plan_file = tmp_path / "plan.yaml"
    plan_file.write_text(yaml.safe_dump(plan))
    # before the shared text demo starts: it would hold 6 of the cluster's 7 CPUs
    before = len(cluster.query()["alive_actors"])
    engine = served_engine(
        TEXT, plan_file, "--backend", "ray", "--address", cluster.address, start_timeout_s=180
    )
    with engine as served:
        assert len(cluster.query()["alive_actors"]) == before + 5
        os.kill(served.process.pid, signal.SIGKILL)  # no drain, no goodbye
        served.process.wait(10)
        deadline = time.monotonic() + 60
        while len(cluster.query()["alive_actors"]) > before and time.monotonic() < deadline:
            time.sleep(1.0)
        assert len(cluster.query()["alive_actors"]) == before  # Ray ends a dead driver's actors


def test_replicas_span_both_nodes_and_every_answer_is_right(
    cluster: LocalRayCluster, text_engine: ServedEngine
) -> None:
    status = text_engine.status()
    ray_status = status["ray"]
    nodes = {n["node_id"] for n in ray_status["nodes"]}
    assert len(nodes) == 2
    placed = [r for rs in ray_status["replicas"].values() for r in rs]
    assert len(placed) == 6 and all(r["state"] == "ready" for r in placed)
    assert {r["node_id"] for r in placed} == nodes  # replicas on two distinct nodes
    assert status["activation_s"]["count"] >= 6 and status["activation_s"]["median"] > 0

    # open loop, 40 q/s for 6 s: every query answered, with the right outputs and path
    arrivals = poisson(40.0, 6.0, seed=3)
    inputs = texts(arrivals.size, seed=4)
    text_engine.request("DELETE", "/v2/control/stats")
    answers = send_open_loop(text_engine.port, [body(t, i) for i, t in enumerate(inputs)], arrivals)
    assert len(answers) == len(inputs) > 150
    for i, (text, (code, answer)) in enumerate(zip(inputs, answers, strict=True)):
        assert code == 200, (i, answer)
        assert answer["id"] == str(i)
        got = {o["name"]: o["data"][0] for o in answer["outputs"]}
        assert got == expected(text), (text, answer)
        long_text = got["words"] >= 8
        assert ("long_note" in answer["parameters"]["path"]) == long_text
    stats = text_engine.request("GET", "/v2/control/stats")[1]["stages"]
    assert stats["tokenize"]["visits"] == stats["merge"]["visits"] == len(inputs)

    # the standard replayer works unchanged against the Ray front-end
    result = replay(
        text_engine.url,
        poisson(30.0, 3.0, seed=5),
        [body(t, i) for i, t in enumerate(texts(20, seed=6))],
        slo_s=2.0,
    )
    assert (result.status == 200).all(), result.errors


def test_replica_counts_change_under_load_without_losing_a_query(
    cluster: LocalRayCluster, text_engine: ServedEngine
) -> None:
    arrivals = poisson(40.0, 14.0, seed=7)
    payloads = [body(t, i) for i, t in enumerate(texts(64, seed=8))]
    text_engine.request("DELETE", "/v2/control/stats")
    results: list[ReplayResult] = []
    load = threading.Thread(
        target=lambda: results.append(
            replay(text_engine.url, arrivals, payloads, slo_s=2.0, model=MODEL, timeout_s=60)
        )
    )
    load.start()
    try:
        time.sleep(1.0)
        # 7 CPUs in the cluster: shrink tokenize to grow sentiment, then the other way round
        steps = [
            {"tokenize": 1, "sentiment": 2},  # 6 CPUs
            {"tokenize": 3, "sentiment": 1},  # 7 CPUs
            {"tokenize": 2, "sentiment": 1},  # the plan's 6 again
        ]
        for step in steps:
            code, status = text_engine.request(
                "POST", "/v2/control/plan", plan_body(**step), timeout_s=120
            )
            assert code == 200, status
            for name, count in step.items():
                assert status["stages"][name]["ready"] == count, status["stages"][name]
            time.sleep(1.0)
        # more than the cluster has is refused (409) before any actor is created
        code, refused = text_engine.request("POST", "/v2/control/plan", plan_body(tokenize=4))
        assert code == 409, refused
        assert "tokenize" in refused["error"] and "CPU" in refused["error"], refused
    finally:
        load.join(120)
    (result,) = results
    assert result.status.size == arrivals.size
    assert (result.status == 200).all(), {
        k: v for k, v in result.errors.items() if k < 5
    }  # every query answered, none lost
    stats = text_engine.request("GET", "/v2/control/stats")[1]["stages"]
    # each query ran once through the pipeline: no stage saw a query twice
    assert stats["tokenize"]["visits"] == stats["merge"]["visits"] == arrivals.size
    assert stats["sentiment"]["visits"] == arrivals.size
    status = text_engine.status()
    assert {n: s["ready"] for n, s in status["stages"].items()} == {
        "tokenize": 2,
        "length": 1,
        "sentiment": 1,
        "long_note": 1,
        "merge": 1,
    }


@pytest.mark.parametrize(
    ("change", "stage", "words"),
    [
        ({"sentiment": {"hardware": "v100", "batch_size": 8, "replicas": 2}}, "sentiment", "V100"),
        ({"merge": {"hardware": "cpu-1", "batch_size": 8, "replicas": 9}}, "merge", "CPU"),
        ({"length": {"hardware": "cpu-8", "batch_size": 8, "replicas": 1}}, "length", "CPU"),
    ],
    ids=["missing-gpu-type", "too-many-cpus", "replica-larger-than-any-node"],
)
def test_a_plan_the_cluster_cannot_host_fails_before_deploying(
    cluster: LocalRayCluster,
    tmp_path: Path,
    change: dict[str, Any],
    stage: str,
    words: str,
) -> None:
    plan = yaml.safe_load((TEXT / "plan.yaml").read_text())
    plan["stages"].update(change)
    plan_file = tmp_path / "plan.yaml"
    plan_file.write_text(yaml.safe_dump(plan))
    before = cluster.query()
    done = run_serve(
        str(TEXT),
        "--config",
        str(plan_file),
        "--backend",
        "ray",
        "--address",
        cluster.address,
        "--port",
        str(free_port()),
    )
    assert done.returncode == 2, done.stderr
    message = " ".join(done.stderr.split())
    assert f"stage '{stage}'" in message and words in message, message
    assert "missing" in message and "Traceback" not in done.stderr
    after = cluster.query()
    assert after["available"].get("CPU") == before["available"].get("CPU")
    assert after["alive_actors"] == before["alive_actors"]  # no actor was created


def test_an_unreachable_cluster_is_a_clear_error() -> None:
    port = free_port()
    started = time.monotonic()
    done = run_serve(
        str(TEXT),
        "--config",
        str(TEXT / "plan.yaml"),
        "--backend",
        "ray",
        "--address",
        f"127.0.0.1:{port}",
        timeout_s=60,
    )
    assert done.returncode == 2, done.stderr
    message = " ".join(done.stderr.split())
    assert f"cannot reach the Ray cluster at 127.0.0.1:{port}" in message, message
    assert "Traceback" not in done.stderr
    assert time.monotonic() - started < 30
