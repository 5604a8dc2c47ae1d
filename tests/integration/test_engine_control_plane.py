"""The control plane of a served engine (127.0.0.1 only): a plan beyond the machine is 409
and starts no process; control needs the token on the data port, or lives on its own
listener."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from inferline.engine.testing import ServedEngine, served_engine, write_bundle

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

NOOP = "inferline.engine.testing:NoOp"


def plan(replicas: int, batch_size: int = 4) -> str:
    stage = {"hardware": "cpu-1", "batch_size": batch_size, "replicas": replicas}
    return json.dumps({"stages": {"a": stage}})


@pytest.fixture
def bundle(tmp_path: Path) -> tuple[Path, Path]:
    return write_bundle(
        tmp_path,
        "one",
        {"a": NOOP},
        [],
        {"a": {"hardware": "cpu-1", "batch_size": 4, "replicas": 1}},
    )


def session_processes(engine: ServedEngine) -> set[int]:
    """Processes in the server's session: the server, its replica templates and replicas."""
    session = engine.process.pid  # served_engine starts it as a session leader
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[3]) == session and fields[0] != "Z":
            found.add(int(entry))
    return found


def test_a_plan_of_100000_replicas_is_409_and_starts_nothing(bundle: tuple[Path, Path]) -> None:
    with served_engine(*bundle) as engine:
        before = session_processes(engine)
        assert engine.process.pid in before and len(before) >= 2  # server + a replica
        code, body = engine.request("POST", "/v2/control/plan", plan(100_000))
        assert code == 409, body
        assert "stage 'a' exceeds the machine's cpu threads" in body["error"]
        assert "100000 replica threads" in body["error"]
        code, body = engine.request("POST", "/v2/control/plan", plan(1, batch_size=10**6))
        assert code == 409 and "batch_size" in body["error"], body
        time.sleep(1.0)  # a fork started by the request would show up by now
        assert session_processes(engine) == before
        status = engine.status()
        assert status["stages"]["a"]["replicas"] == 1 and status["stages"]["a"]["starting"] == 0
        assert status["machine"]["planned_threads"] == 1


def test_control_on_the_data_port_needs_the_token(bundle: tuple[Path, Path]) -> None:
    with served_engine(*bundle) as engine:  # given a random token
        assert engine.control_token is not None
        code, body = engine.request("POST", "/v2/control/plan", plan(2), authorize=False)
        assert code == 401 and "Bearer" in body["error"], body
        code, _ = engine.request("DELETE", "/v2/control/stats", authorize=False)
        assert code == 401
        token, engine.control_token = engine.control_token, "x" * 32
        assert engine.request("POST", "/v2/control/plan", plan(2))[0] == 403
        engine.control_token = token
        assert engine.status()["stages"]["a"]["replicas"] == 1  # nothing changed
        code, body = engine.request("POST", "/v2/control/plan", plan(2))
        assert code == 200 and body["stages"]["a"]["ready"] == 2, body
        assert engine.request("DELETE", "/v2/control/stats")[0] == 200
        # reads stay open
        assert engine.request("GET", "/v2/control/stats", authorize=False)[0] == 200
        assert engine.request("GET", "/metrics")[0] == 200
        assert "bearer token required" in engine.log()


def test_control_on_its_own_listener(bundle: tuple[Path, Path]) -> None:
    with served_engine(*bundle, control_port=True) as engine:
        assert engine.control_port is not None
        code, body = engine.request("POST", "/v2/control/plan", plan(2), port=engine.port)
        assert code == 404 and "control listener" in body["error"], body
        code, body = engine.request("POST", "/v2/control/plan", plan(2), authorize=False)
        assert code == 401, body  # the token still applies there
        code, body = engine.request("POST", "/v2/control/plan", plan(2))
        assert code == 200 and body["stages"]["a"]["ready"] == 2, body
        assert engine.request("GET", "/v2/control/status", port=engine.port)[0] == 200
        code, body = engine.infer(
            "one", [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]
        )
        assert code == 200, body
        inference = json.dumps({"inputs": []})
        code, _ = engine.request(
            "POST", "/v2/models/one/infer", inference, port=engine.control_port
        )
        assert code == 404
        assert f"127.0.0.1:{engine.control_port}" in engine.log()
