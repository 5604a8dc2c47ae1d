"""A replica: one worker OS process and the front-end's end of its socketpair."""

from __future__ import annotations

import asyncio
import enum
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from inferline.engine._hardware import ReplicaResources
from inferline.engine._launcher import WorkerLauncher, WorkerProcess, spawn_worker
from inferline.engine._wire import FrameReader, pack

__all__ = ["Batch", "Replica", "ReplicaState"]


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
        launcher: WorkerLauncher | None = None,
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
        self._launcher = launcher
        self._process: WorkerProcess | None = None

    def __repr__(self) -> str:
        return f"<replica {self.id} of {self.stage} pid={self.pid} {self.state.value}>"

    def __hash__(self) -> int:
        return self.id

    async def launch(self, spec: dict[str, Any]) -> None:
        """Start the process: it gets one end of a socketpair (forked or inherited)."""
        parent, child = socket.socketpair()
        try:
            threads = self.resources.threads
            if self._launcher is not None:
                self._process = await self._launcher.launch(spec, threads, child.fileno())
            else:
                self._process = spawn_worker(spec, threads, child.fileno())
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
        if self._process is not None:
            self._process.kill()

    async def wait_exit(self, timeout_s: float) -> int | None:
        """Wait for the process to end; kill it if it outlives ``timeout_s``."""
        if self._process is None:
            return None
        self.exit_code = await self._process.wait(timeout_s)
        return self.exit_code
