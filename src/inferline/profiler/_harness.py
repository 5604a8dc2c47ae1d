"""Drive one engine replica worker from the Profiler, as the engine's front-end does.

A :class:`StageWorker` starts the engine's own replica process (``engine/_worker.py``,
same bootstrap, same thread limits from the hardware name) over the same socketpair
and framing, sends it batches and times each round trip from handing the batch to the
socket until the result has been read and decoded: what a replica is busy for in the
engine, with IPC and (de)serialisation included.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inferline.engine import Replica, ReplicaResources
from inferline.profiler._errors import ProfilerError

__all__ = ["BatchRun", "StageWorker"]


@dataclass(frozen=True, slots=True)
class BatchRun:
    """One batch's results (``(value, routes, tensors, error)`` per item) and timings."""

    results: list[tuple[Any, Any, Any, str | None]]
    predict_s: float
    round_trip_s: float


class StageWorker:
    """One replica process of ``stage`` on ``hardware``: ``start()``, ``run()``, ``close()``."""

    _ids = 0

    def __init__(
        self,
        stage: str,
        model: str,
        hardware: str,
        resources: ReplicaResources,
        successors: tuple[str, ...],
        bundle_root: Path,
        *,
        start_timeout_s: float = 300.0,
    ) -> None:
        self.stage = stage
        self.model = model
        self.hardware = hardware
        self.resources = resources
        self.successors = successors
        self.start_timeout_s = start_timeout_s
        self._root = bundle_root
        StageWorker._ids += 1
        self._replica = Replica(
            StageWorker._ids, stage, hardware, resources, self._on_message, self._on_lost
        )
        self._ready: asyncio.Future[dict[str, Any]] = self._replica.ready
        self._pending: asyncio.Future[tuple[Any, float, float]] | None = None
        self._batch_ids = 0
        self._fatal: str | None = None
        self._lost = False

    @property
    def pid(self) -> int | None:
        return self._replica.pid

    @property
    def info(self) -> dict[str, Any]:
        return self._replica.info

    def _where(self) -> str:
        return f"stage '{self.stage}' ({self.model}) on {self.hardware}"

    # --- replica callbacks --------------------------------------------------------------------
    def _on_message(self, replica: Replica, message: Any) -> None:
        kind = message[0]
        if kind == "ready":
            replica.info = message[1]
            if not self._ready.done():
                self._ready.set_result(message[1])
        elif kind == "fatal":
            self._fatal = str(message[1])
        elif kind in ("done", "failed"):
            now = time.perf_counter()
            pending, self._pending = self._pending, None
            if pending is not None and not pending.done():
                if kind == "done":
                    pending.set_result((message[2], float(message[3]), now))
                else:
                    pending.set_exception(
                        ProfilerError(
                            f"{self._where()}: predict failed on a batch of sample inputs: "
                            f"{message[2]}",
                            stage=self.stage,
                        )
                    )

    def _on_lost(self, replica: Replica) -> None:
        self._lost = True
        reason = self._fatal or "the replica process exited"
        if not self._ready.done():
            self._ready.set_exception(
                ProfilerError(f"{self._where()} cannot start: {reason}", stage=self.stage)
            )
        pending, self._pending = self._pending, None
        if pending is not None and not pending.done():
            pending.set_exception(
                ProfilerError(
                    f"{self._where()}: the replica process died while running a batch ({reason})",
                    stage=self.stage,
                )
            )

    # --- commands -------------------------------------------------------------------------------
    async def start(self) -> dict[str, Any]:
        """Launch the process and wait for its ``setup()``; ProfilerError naming the stage."""
        spec = {
            "stage": self.stage,
            "model": self.model,
            "hardware": self.hardware,
            "threads": self.resources.threads,
            "device": self.resources.device,
            "successors": list(self.successors),
            "sys_path": [str(self._root.resolve())],
        }
        await self._replica.launch(spec)
        try:
            return await asyncio.wait_for(asyncio.shield(self._ready), self.start_timeout_s)
        except TimeoutError:
            raise ProfilerError(
                f"{self._where()}: setup() did not finish within {self.start_timeout_s:g} s",
                stage=self.stage,
            ) from None

    async def run(self, items: list[Any], timeout_s: float = 300.0) -> BatchRun:
        """Send one batch and wait for its results; the round trip is timed here."""
        if self._lost:
            raise ProfilerError(f"{self._where()}: the replica process is gone", stage=self.stage)
        loop = asyncio.get_running_loop()
        self._pending = loop.create_future()
        future = self._pending
        self._batch_ids += 1
        started = time.perf_counter()
        self._replica.send(("batch", self._batch_ids, items))
        try:
            results, predict_s, done = await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            raise ProfilerError(
                f"{self._where()}: a batch of {len(items)} did not finish within {timeout_s:g} s",
                stage=self.stage,
            ) from None
        return BatchRun(results, predict_s, done - started)

    async def close(self) -> None:
        """Ask the process to stop, and kill it if it does not within a few seconds."""
        replica = self._replica
        if not self._lost:
            replica.send(("stop",))
        if not self._ready.done():
            replica.terminate()
            self._ready.cancel()
        await replica.wait_exit(5.0)
        if self._ready.done() and not self._ready.cancelled():
            self._ready.exception()  # retrieved: never awaited when start() was not called
