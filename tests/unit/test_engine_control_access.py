"""The control plane's guard (engine/_control.py), in process: token, listener, exposure.

The engine behind the ASGI app is never started and its replica factory refuses to be
called, so a refused control request provably starts nothing.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from inferline.engine import Engine, EngineApp, RequestError
from inferline.engine._control import (
    ControlAccess,
    ControlOptions,
    check_exposure,
    is_loopback,
    resolve_token,
)
from inferline.engine.testing import write_bundle
from inferline.errors import ConfigError
from inferline.pipeline import load_config, load_pipeline
from inferline.profiles import MachinePool

TOKEN = "s3cret-token-0123456789"
DATA, CONTROL = 8000, 9000
PLAN = json.dumps({"stages": {"a": {"hardware": "cpu-1", "batch_size": 2, "replicas": 1}}})


def no_replicas(*_: Any) -> Any:
    raise AssertionError("a refused request must not start a replica")


def call(
    app: EngineApp,
    method: str,
    path: str,
    *,
    port: int = DATA,
    body: str = "",
    authorization: str | None = None,
) -> tuple[int, dict[bytes, bytes], dict[str, Any]]:
    headers = [(b"content-length", str(len(body)).encode())]
    if authorization is not None:
        headers.append((b"authorization", authorization.encode()))
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "headers": headers,
        "server": ("127.0.0.1", port),
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body.encode(), "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    start, payload = sent[0], sent[1]["body"]
    return start["status"], dict(start["headers"]), json.loads(payload) if payload else {}


def app_for(tmp_path: Path, access: ControlAccess, machine: MachinePool | None = None) -> EngineApp:
    pipeline_file, plan_file = write_bundle(
        tmp_path,
        "one",
        {"a": "inferline.engine.testing:NoOp"},
        [],
        {"a": {"hardware": "cpu-1", "batch_size": 2, "replicas": 1}},
    )
    engine = Engine(
        load_pipeline(pipeline_file),
        load_config(plan_file),
        replica_factory=no_replicas,
        machine=machine,
    )
    return EngineApp(engine, access=access)


def test_with_a_token_changes_need_it_and_reads_do_not(tmp_path: Path) -> None:
    app = app_for(tmp_path, ControlAccess(token=TOKEN))
    code, headers, body = call(app, "POST", "/v2/control/plan", body=PLAN)
    assert code == 401 and "Bearer" in body["error"]
    assert headers[b"www-authenticate"].startswith(b"Bearer")
    code, _, body = call(app, "POST", "/v2/control/plan", body=PLAN, authorization="Bearer nope")
    assert code == 403 and "token" in body["error"]
    code, _, _ = call(app, "DELETE", "/v2/control/stats", authorization=f"Basic {TOKEN}")
    assert code == 401
    code, _, _ = call(app, "DELETE", "/v2/control/stats", authorization=f"bearer {TOKEN}")
    assert code == 200  # the scheme is case-insensitive
    for path in ("/v2/control/status", "/v2/control/plan", "/v2/control/stats"):
        assert call(app, "GET", path)[0] == 200, path


def test_with_a_control_listener_changes_are_served_there_only(tmp_path: Path) -> None:
    app = app_for(tmp_path, ControlAccess(control_port=CONTROL))
    code, _, body = call(app, "POST", "/v2/control/plan", body=PLAN, port=DATA)
    assert code == 404 and "control listener" in body["error"]
    assert call(app, "DELETE", "/v2/control/stats", port=DATA)[0] == 404
    assert call(app, "DELETE", "/v2/control/stats", port=CONTROL)[0] == 200
    assert call(app, "GET", "/v2/control/status", port=DATA)[0] == 200
    # the control listener serves control, health and metrics; not inference
    assert call(app, "GET", "/v2/health/live", port=CONTROL)[0] == 200
    code, _, body = call(app, "POST", "/v2/models/one/infer", body="{}", port=CONTROL)
    assert code == 404 and "data port" in body["error"]


def test_a_control_listener_with_a_token_needs_both(tmp_path: Path) -> None:
    app = app_for(tmp_path, ControlAccess(token=TOKEN, control_port=CONTROL))
    assert call(app, "DELETE", "/v2/control/stats", port=CONTROL)[0] == 401
    auth = f"Bearer {TOKEN}"
    assert call(app, "DELETE", "/v2/control/stats", port=DATA, authorization=auth)[0] == 404
    assert call(app, "DELETE", "/v2/control/stats", port=CONTROL, authorization=auth)[0] == 200


def test_a_plan_beyond_the_machine_is_409_and_starts_nothing(tmp_path: Path) -> None:
    two_cores = MachinePool(cores=2, memory_bytes=8 << 30)
    app = app_for(tmp_path, ControlAccess(token=TOKEN), machine=two_cores)
    huge = json.dumps(
        {"stages": {"a": {"hardware": "cpu-1", "batch_size": 2, "replicas": 100_000}}}
    )
    code, _, body = call(
        app, "POST", "/v2/control/plan", body=huge, authorization=f"Bearer {TOKEN}"
    )
    assert code == 409, body
    assert "stage 'a'" in body["error"] and "threads" in body["error"]
    assert app.engine.config.stages["a"].replicas == 1
    big_batch = json.dumps(
        {"stages": {"a": {"hardware": "cpu-1", "batch_size": 10**6, "replicas": 1}}}
    )
    code, _, body = call(
        app, "POST", "/v2/control/plan", body=big_batch, authorization=f"Bearer {TOKEN}"
    )
    assert code == 409 and "batch_size" in body["error"], body
    status = call(app, "GET", "/v2/control/status")[2]
    assert status["machine"]["max_threads"] == 8 and status["machine"]["planned_threads"] == 1


def test_without_a_token_or_listener_control_is_open_on_the_data_port() -> None:
    ControlAccess().check("POST", "plan", {"headers": [], "server": ("127.0.0.1", DATA)})
    with pytest.raises(RequestError) as caught:
        ControlAccess(token=TOKEN).check("POST", "plan", {"headers": []})
    assert caught.value.status == 401


def test_loopback_addresses() -> None:
    for host in ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "::", "10.1.2.3", "example.org", ""):
        assert not is_loopback(host), host


def test_control_reachable_from_a_network_needs_a_token() -> None:
    with pytest.raises(ConfigError, match=r"--host 0\.0\.0\.0 would open the control API"):
        check_exposure("0.0.0.0", "127.0.0.1", None, None)
    with pytest.raises(ConfigError, match="--control-host"):
        check_exposure("127.0.0.1", "0.0.0.0", 9000, None)
    check_exposure("0.0.0.0", "127.0.0.1", 9000, None)  # control stays on loopback
    check_exposure("0.0.0.0", "0.0.0.0", None, TOKEN)
    check_exposure("127.0.0.1", "127.0.0.1", None, None)


def test_the_token_comes_from_the_flag_or_the_environment() -> None:
    env = {"INFERLINE_CONTROL_TOKEN": TOKEN}
    assert resolve_token(None, env) == TOKEN
    assert resolve_token("another-long-token-xyz", env) == "another-long-token-xyz"
    assert resolve_token(None, {}) is None
    assert resolve_token(None, {"INFERLINE_CONTROL_TOKEN": ""}) is None
    for bad in ("short", "has a space in it 12345", "naïve-token-123456789"):
        with pytest.raises(ConfigError, match="at least 16"):
            resolve_token(bad, {})
    with pytest.raises(ConfigError, match="--control-port"):
        ControlOptions(port=70000)
