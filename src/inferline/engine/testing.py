"""Test support: stages that obey instructions, and a served engine in a child process.

Stages (a no-op, and an echo that obeys instructions) for tests, benchmarks and examples.

``Echo`` reads optional control tensors from its input (a source stage's request
tensors, or a predecessor's output that passed them on):

- ``sleep_s`` (FP64 [1]): the batch takes the largest requested time, as a model would;
- ``crash`` (BOOL [1], true): the replica process exits at once, mid-batch;
- ``fail`` (BOOL [1], true): ``predict`` raises, so the batch's queries get a 500.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from inferline.engine._stage import StageModel, Tensor

__all__ = ["Echo", "NoOp", "ServedEngine", "free_port", "served_engine", "write_bundle"]


class NoOp(StageModel):
    """Returns its input unchanged: measures the engine's own overhead."""

    def predict(self, inputs: list[Any]) -> list[Any]:
        return inputs


def _flag(value: Any, name: str) -> Any:
    if isinstance(value, dict):
        tensor = value.get(name)
        if isinstance(tensor, Tensor) and tensor.data:
            return tensor.data[0]
    return None


class Echo(StageModel):
    """Returns its input unchanged after obeying ``sleep_s``, ``crash`` and ``fail``."""

    def predict(self, inputs: list[Any]) -> list[Any]:
        if any(_flag(x, "crash") is True for x in inputs):
            os._exit(17)
        if any(_flag(x, "fail") is True for x in inputs):
            raise RuntimeError("asked to fail by the 'fail' input")
        sleep_s = max((float(_flag(x, "sleep_s") or 0.0) for x in inputs), default=0.0)
        if sleep_s > 0:
            time.sleep(sleep_s)
        return inputs


# --- a served engine in a child process (tests, benchmark) -----------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_bundle(
    folder: Path,
    name: str,
    stages: Mapping[str, str],
    edges: Sequence[tuple[str, str]],
    plan: Mapping[str, Mapping[str, Any]],
) -> tuple[Path, Path]:
    """Write pipeline.yaml (stage -> import path) and plan.yaml; return both paths."""
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    pipeline = {
        "name": name,
        "stages": [{"name": n, "model": m} for n, m in stages.items()],
        "edges": [{"from": a, "to": b} for a, b in edges],
    }
    (folder / "pipeline.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))
    (folder / "plan.yaml").write_text(
        yaml.safe_dump({"stages": {k: dict(v) for k, v in plan.items()}})
    )
    return folder / "pipeline.yaml", folder / "plan.yaml"


class ServedEngine:
    """An ``inferline serve`` child process (its own session, so its replicas go with it).

    ``control_token``: the bearer token its control endpoints need (sent with every
    ``/v2/control/`` request); ``control_port``: its control listener, where those
    requests go, or ``None`` when control is on the data port.
    """

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        port: int,
        log_path: Path,
        *,
        control_token: str | None = None,
        control_port: int | None = None,
    ) -> None:
        self.process = process
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self.control_token = control_token
        self.control_port = control_port

    def request(
        self,
        method: str,
        path: str,
        body: bytes | str | None = None,
        timeout_s: float = 30.0,
        *,
        authorize: bool = True,
        port: int | None = None,
    ) -> tuple[int, Any]:
        """One HTTP request; returns (status, parsed JSON body or raw text).

        A ``/v2/control/`` request goes to the control listener if there is one and
        carries the token (unless ``authorize=False``); ``port`` overrides where it goes.
        """
        control = path.startswith("/v2/control/")
        if port is None:
            port = self.control_port if control and self.control_port else self.port
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
        try:
            payload = body.encode() if isinstance(body, str) else body
            headers = {"Content-Type": "application/json"} if payload is not None else {}
            if control and authorize and self.control_token is not None:
                headers["Authorization"] = f"Bearer {self.control_token}"
            conn.request(method, path, body=payload, headers=headers)
            response = conn.getresponse()
            raw = response.read()
        finally:
            conn.close()
        try:
            return response.status, json.loads(raw)
        except ValueError:
            return response.status, raw.decode(errors="replace")

    def infer(self, model: str, inputs: list[dict[str, Any]], **extra: Any) -> tuple[int, Any]:
        body = json.dumps({"inputs": inputs, **extra})
        return self.request("POST", f"/v2/models/{model}/infer", body)

    def status(self) -> dict[str, Any]:
        code, body = self.request("GET", "/v2/control/status")
        assert code == 200, body
        return dict(body)

    def replica_pids(self, stage: str) -> list[int]:
        """Process ids of the stage's replicas; one still being started has none yet."""
        replicas = self.status()["stages"][stage]["replica_list"]
        return [int(r["pid"]) for r in replicas if r["pid"] is not None]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the engine exited ({self.process.returncode}):\n{self.log()}")
            with contextlib.suppress(OSError):
                if self.request("GET", "/v2/health/ready", timeout_s=2.0)[0] == 200:
                    return
            time.sleep(0.05)
        raise TimeoutError(f"the engine was not ready within {timeout_s} s:\n{self.log()}")

    def shutdown(self, timeout_s: float = 30.0) -> int:
        """SIGINT (graceful drain) and wait; kill the whole session if it takes too long."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
        return int(self.process.wait())

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM (a graceful drain) if the test process dies."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


@contextlib.contextmanager
def served_engine(
    bundle: str | Path,
    plan: str | Path,
    *args: str,
    start_timeout_s: float = 60.0,
    control_token: str | bool = True,
    control_port: bool = False,
) -> Iterator[ServedEngine]:
    """Run ``inferline serve BUNDLE --config PLAN ARGS`` on a free port until the block ends.

    ``control_token``: the control token the server is given (in its environment, not
    on its command line): ``True`` a random one, ``False`` none. ``control_port``: serve
    control on its own loopback listener (a second free port). :meth:`ServedEngine.request`
    sends control requests there, with the token. On exit the engine is shut down
    gracefully; whatever is left of its session (replicas included) is killed, even
    when the block raised.
    """
    from inferline.engine._control import TOKEN_ENV

    port = free_port()
    token: str | None = None
    if control_token is True:
        token = secrets.token_urlsafe(24)
    elif isinstance(control_token, str):
        token = control_token
    env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
    if token is not None:
        env[TOKEN_ENV] = token
    control_args: list[str] = []
    cport: int | None = None
    if control_port:
        cport = free_port()
        while cport == port:
            cport = free_port()
        control_args = ["--control-port", str(cport)]
    with tempfile.TemporaryDirectory(prefix="inferline-serve-") as tmp:
        log_path = Path(tmp) / "serve.log"
        command = [
            sys.executable,
            "-c",
            "from inferline.cli import main; main()",
            "serve",
            str(bundle),
            "--config",
            str(plan),
            "--port",
            str(port),
            *control_args,
            *args,
        ]
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
                env=env,
            )
        served = ServedEngine(process, port, log_path, control_token=token, control_port=cport)
        try:
            served.wait_ready(start_timeout_s)
            yield served
        finally:
            with contextlib.suppress(Exception):
                served.shutdown(timeout_s=20.0)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # stragglers of the session
