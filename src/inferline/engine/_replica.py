"""A replica: one worker OS process and the front-end's end of its socketpair."""

from __future__ import annotations

import asyncio
import enum
import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from inferline.engine._hardware import ReplicaResources, thread_environment
from inferline.engine._wire import FrameReader, pack

__all__ = ["Batch", "Replica", "ReplicaState"]

# Runs the worker without executing inferline/__init__.py, which imports the estimator
# (numba) and costs ~1 s and ~100 MB per replica. The stub package runs the real
# __init__ on the first attribute a stage asks of it, so `import inferline` still works.
_BOOTSTRAP = """\
import sys, types
root = {root!r}
pkg = types.ModuleType("inferline")
pkg.__path__ = [root]
pkg.__file__ = root + "/__init__.py"
def _full(name):
    del pkg.__getattr__
    with open(pkg.__file__, encoding="utf-8") as f:
        exec(compile(f.read(), pkg.__file__, "exec"), pkg.__dict__)
    return getattr(pkg, name)
pkg.__getattr__ = _full
sys.modules["inferline"] = pkg
from inferline.engine._worker import main
sys.exit(main(sys.argv[1:]))
"""
_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)


class ReplicaState(enum.Enum):
    STARTING = "starting"  # process launched, setup() running
    READY = "ready"  # takes batches
    DRAINING = "draining"  # finishes its batch, then stops
    STOPPING = "stopping"  # told to exit
    EXITED = "exited"


@dataclass(slots=True)
class Batch:
    id: int
    visits: list[Any]
    sent_s: float


class Replica(asyncio.Protocol):
    """Owns the process; forwards each decoded message and the end of the stream."""

    def __init__(
        self,
        replica_id: int,
        stage: str,
        hardware: str,
        resources: ReplicaResources,
        on_message: Callable[[Replica, Any], None],
        on_lost: Callable[[Replica], None],
    ) -> None:
        self.id = replica_id
        self.stage = stage
        self.hardware = hardware
        self.resources = resources
        self.state = ReplicaState.STARTING
        self.batch: Batch | None = None
        self.pid: int | None = None
        self.exit_code: int | None = None
        self.fatal: str | None = None
        self.info: dict[str, Any] = {}
        self.batches_done = 0
        self.ready: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._on_message = on_message
        self._on_lost = on_lost
        self._reader = FrameReader()
        self._transport: asyncio.Transport | None = None
        self._process: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"<replica {self.id} of {self.stage} pid={self.pid} {self.state.value}>"

    def __hash__(self) -> int:
        return self.id

    async def launch(self, spec: dict[str, Any]) -> None:
        """Start the process; it inherits one end of a socketpair as a file descriptor."""
        parent, child = socket.socketpair()
        try:
            env = dict(os.environ)
            env.update(thread_environment(self.resources.threads))
            body = dict(spec, fd=child.fileno())
            self._process = subprocess.Popen(
                [sys.executable, "-c", _BOOTSTRAP.format(root=_PACKAGE_ROOT), json.dumps(body)],
                pass_fds=(child.fileno(),),
                env=env,
                stdin=subprocess.DEVNULL,
            )
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()
        self.pid = self._process.pid
        parent.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.create_unix_connection(lambda: self, sock=parent)

    # --- asyncio.Protocol ----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        for message in self._reader.feed(data):
            self._on_message(self, message)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._on_lost(self)

    # --- commands --------------------------------------------------------------------------
    def send(self, message: Any) -> None:
        if self._transport is not None:
            self._transport.write(pack(message))

    def terminate(self) -> None:
        """Kill the process (a replica still in setup, or one that will not stop)."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()

    async def wait_exit(self, timeout_s: float) -> int | None:
        """Reap the process (off the event loop); kill it if it outlives ``timeout_s``."""
        process = self._process
        if process is None:
            return None
        try:
            self.exit_code = await asyncio.to_thread(process.wait, timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            self.exit_code = await asyncio.to_thread(process.wait)
        return self.exit_code
