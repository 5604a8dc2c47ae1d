"""An engine served in a child process: ``inferline serve`` started, driven and stopped from Python.

The profiler (engine overhead, ``validate``) and the benchmarks measure the engine as a
user runs it: a separate ``inferline serve`` process with its own replicas, reached over
HTTP on 127.0.0.1. :func:`start_engine` runs one for the length of a ``with`` block;
the :class:`EngineProcess` it yields knows the URL and wraps the control API
(``apply_plan``, ``status``, ``stats``). Nothing of the engine is imported here: the
child is the real CLI, so what is measured is what ships.
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
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inferline.engine._errors import EngineError

if TYPE_CHECKING:
    from inferline.pipeline import PipelineConfig

__all__ = ["EngineProcess", "free_port", "start_engine"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EngineProcess:
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

    def _control(self, method: str, action: str, body: Any = None) -> dict[str, Any]:
        payload = None if body is None else json.dumps(body)
        code, answer = self.request(method, f"/v2/control/{action}", payload)
        if code != 200:
            error = answer.get("error") if isinstance(answer, dict) else answer
            raise EngineError(f"{method} /v2/control/{action} answered {code}: {error}")
        return dict(answer)

    def infer(self, model: str, inputs: list[dict[str, Any]], **extra: Any) -> tuple[int, Any]:
        """POST one OIP inference request; returns (status, parsed body)."""
        body = json.dumps({"inputs": inputs, **extra})
        return self.request("POST", f"/v2/models/{model}/infer", body)

    def status(self) -> dict[str, Any]:
        """The control API's status: replicas per stage and state, queues, in-flight."""
        return self._control("GET", "status")

    def stats(self) -> dict[str, Any]:
        """Per-stage time split of recent visits (queue wait, residence, predict, overhead)."""
        return self._control("GET", "stats")

    def reset_stats(self) -> None:
        """Forget the visits measured so far (so :meth:`stats` covers what follows)."""
        self._control("DELETE", "stats")

    def apply_plan(self, plan: PipelineConfig | Mapping[str, Any]) -> dict[str, Any]:
        """Switch the engine to ``plan`` and return its status once the plan is in force.

        ``plan``: a :class:`~inferline.pipeline.PipelineConfig` or the plan file's mapping
        (``{"stages": {...}}``). Raises :class:`EngineError` with the engine's message when
        it refuses the plan or cannot start its replicas.
        """
        if isinstance(plan, Mapping):
            body: dict[str, Any] = dict(plan)
        else:
            body = {"stages": {k: v.model_dump() for k, v in plan.stages.items()}}
        return self._control("POST", "plan", body)

    def replica_pids(self, stage: str) -> list[int]:
        """Process ids of the stage's replicas; one still being started has none yet."""
        replicas = self.status()["stages"][stage]["replica_list"]
        return [int(r["pid"]) for r in replicas if r["pid"] is not None]

    def log(self) -> str:
        """Everything the engine printed so far (stdout and stderr)."""
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout_s: float) -> None:
        """Block until /v2/health/ready answers 200; RuntimeError if the engine exits first,
        TimeoutError if it is not ready in time (both carry its log)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the engine exited ({self.process.returncode}):\n{self.log()}")
            with contextlib.suppress(OSError):
                if self.request("GET", "/v2/health/ready", timeout_s=2.0)[0] == 200:
                    return
            time.sleep(0.05)
        raise TimeoutError(f"the engine was not ready within {timeout_s} s:\n{self.log()}")

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGINT (graceful drain) and wait; kill the whole session if it takes too long.
        Returns the engine's exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
        return int(self.process.wait())

    def kill(self) -> None:
        """SIGKILL the engine's whole session (front-end and replicas) at once."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM (a graceful drain) if the parent process dies."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


@contextlib.contextmanager
def start_engine(
    bundle: str | Path,
    plan: str | Path,
    *serve_args: str,
    start_timeout_s: float = 60.0,
    control_token: str | bool = True,
    control_port: bool = False,
) -> Iterator[EngineProcess]:
    """Run ``inferline serve BUNDLE --config PLAN SERVE_ARGS`` on a free port until the
    block ends; yields once the engine is ready.

    ``serve_args`` are further ``inferline serve`` options, e.g. ``("--slo-s", "0.5")``.
    The child runs this interpreter with this ``sys.path`` (``PYTHONPATH`` is inherited),
    in a session of its own, and gets SIGTERM if this process dies. On exit the engine
    is stopped gracefully; whatever is left of its session (replicas included) is killed,
    even when the block raised.

    ``control_token``: the control token the server is given (in its environment, not
    on its command line): ``True`` a random one, ``False`` none. ``control_port``: serve
    control on its own loopback listener (a second free port). :meth:`EngineProcess.request`
    sends control requests there, with the token.
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
            *serve_args,
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
        served = EngineProcess(process, port, log_path, control_token=token, control_port=cport)
        try:
            served.wait_ready(start_timeout_s)
            yield served
        finally:
            with contextlib.suppress(Exception):
                served.stop(timeout_s=20.0)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # stragglers of the session
