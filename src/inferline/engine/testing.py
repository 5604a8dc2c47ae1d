"""Test support: stages that obey instructions, in-memory replicas, bundles on disk.

Stages (a no-op, and an echo that obeys instructions) for tests, benchmarks and examples.

``Echo`` reads optional control tensors from its input (a source stage's request
tensors, or a predecessor's output that passed them on):

- ``sleep_s`` (FP64 [1]): the batch takes the largest requested time, as a model would;
- ``crash`` (BOOL [1], true): the replica process exits at once, mid-batch;
- ``fail`` (BOOL [1], true): ``predict`` raises, so the batch's queries get a 500.

:class:`InMemoryReplicaFactory` makes an :class:`~inferline.engine.Engine`'s replicas
inside the test's own event loop (no processes), so routing, retries and the HTTP API
can be tested in the unit tier. ``served_engine``/``ServedEngine``/``free_port`` are the
names tests use for :mod:`inferline.engine.process`'s ``start_engine``, ``EngineProcess``
and ``free_port``.
"""

from __future__ import annotations

import asyncio
import os
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from inferline.engine._hardware import resources_for
from inferline.engine._replica import Replica
from inferline.engine._stage import StageModel, Tensor
from inferline.engine._wire import FrameReader, pack
from inferline.engine.batching import (
    add_import_path,
    declared_outputs,
    load_stage,
    run_batch,
    stage_specs,
)
from inferline.engine.process import EngineProcess, free_port, start_engine

__all__ = [
    "Echo",
    "InMemoryReplica",
    "InMemoryReplicaFactory",
    "NoOp",
    "ServedEngine",
    "crash_requested",
    "free_port",
    "served_engine",
    "write_bundle",
]

ServedEngine = EngineProcess
served_engine = start_engine


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


def crash_requested(inputs: Sequence[Any]) -> bool:
    """Whether an input of the batch carries Echo's ``crash`` instruction."""
    return any(_flag(x, "crash") is True for x in inputs)


class Echo(StageModel):
    """Returns its input unchanged after obeying ``sleep_s``, ``crash`` and ``fail``."""

    def predict(self, inputs: list[Any]) -> list[Any]:
        if crash_requested(inputs):
            os._exit(17)
        if any(_flag(x, "fail") is True for x in inputs):
            raise RuntimeError("asked to fail by the 'fail' input")
        sleep_s = max((float(_flag(x, "sleep_s") or 0.0) for x in inputs), default=0.0)
        if sleep_s > 0:
            time.sleep(sleep_s)
        return inputs


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


# --- replicas in this process (unit tests of the front-end) -----------------------------------

#: Decides whether a replica dies on a batch: (the replica, the batch's inputs) -> bool.
DeathRule = Callable[["InMemoryReplica", list[Any]], bool]


def _echo_crash(_replica: InMemoryReplica, inputs: list[Any]) -> bool:
    return crash_requested(inputs)


def _copy(message: Any) -> Any:
    """The message as the other side of a socketpair would decode it (a pickled copy)."""
    return FrameReader().feed(pack(message))[0]


class InMemoryReplica(Replica):
    """A replica whose "process" is this event loop: it loads the stage with
    :func:`~inferline.engine.batching.load_stage` and runs each batch with
    :func:`~inferline.engine.batching.run_batch` in a callback of its own, so every
    message reaches the engine one loop step later, as from a socket, and pickled, as
    over one. It dies (the engine sees its end of stream) on :meth:`die`, on a batch its
    factory's death rule picks, or when told to stop."""

    def __init__(
        self,
        replica_id: int,
        stage: str,
        hardware: str,
        on_message: Callable[[Replica, Any], None],
        on_lost: Callable[[Replica], None],
        factory: InMemoryReplicaFactory,
    ) -> None:
        super().__init__(replica_id, stage, hardware, resources_for(hardware), on_message, on_lost)
        self._factory = factory
        self._loop = asyncio.get_running_loop()
        self._model: Any = None
        self._successors: tuple[str, ...] = ()
        self._declared: tuple[Any, ...] = ()
        self._gone = asyncio.Event()
        self.spec: dict[str, Any] = {}
        #: Batches received while the stage is held (``InMemoryReplicaFactory.hold``).
        self.parked: list[tuple[int, list[Any]]] = []

    def __repr__(self) -> str:
        return f"<in-memory replica {self.id} of {self.stage} {self.state.value}>"

    def __hash__(self) -> int:
        return self.id

    @property
    def alive(self) -> bool:
        return not self._gone.is_set()

    async def launch(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.pid = self._factory.pid_base + self.id  # not an OS process: a unique number
        self._loop.call_soon(self._setup)

    def _setup(self) -> None:
        if not self.alive:
            return
        spec = self.spec
        try:
            add_import_path(spec.get("sys_path", []))
            self._model = load_stage(spec)
        except Exception as exc:
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            self._reply(("fatal", f"{detail} (while loading {spec['model']})"))
            self.die(exit_code=2)
            return
        self._successors = tuple(spec["successors"])
        self._declared = declared_outputs(self._model)
        inputs = stage_specs(getattr(self._model, "inputs", ()))
        self._reply(
            ("ready", {"pid": self.pid, "inputs": inputs, "outputs": stage_specs(self._declared)})
        )

    def _reply(self, message: Any) -> None:
        self.data_received(pack(message))  # decoded by the Replica's own frame reader

    def send(self, message: Any) -> None:
        if not self.alive:
            return
        message = _copy(message)
        if message[0] == "batch":
            self._loop.call_soon(self._run, message[1], message[2])
        elif message[0] == "stop":
            self._loop.call_soon(self.die, 0)

    def _run(self, batch_id: int, items: list[Any]) -> None:
        if not self.alive:
            return
        if self.stage in self._factory.held:
            self.parked.append((batch_id, items))
            return
        self._factory.batches += 1
        if self._factory.death_rule(self, items):
            self.die()
            return
        try:
            results, predict_s, cpu_s = run_batch(
                self._model, self.stage, items, self._successors, self._declared
            )
            reply: Any = ("done", batch_id, results, predict_s, cpu_s)
        except Exception as exc:
            reply = ("failed", batch_id, f"{type(exc).__name__}: {exc}")
        self._reply(reply)

    def resume(self) -> None:
        """Run the parked batches (in the next loop steps, in the order they came)."""
        parked, self.parked = self.parked, []
        for batch_id, items in parked:
            self._loop.call_soon(self._run, batch_id, items)

    def die(self, exit_code: int = -9) -> None:
        """End now, like a process that exits or is killed: the engine loses the replica
        (and re-queues the batch it was running)."""
        if not self.alive:
            return
        self.exit_code = exit_code
        self._gone.set()
        self._factory.deaths += exit_code != 0
        self.connection_lost(None)

    def terminate(self) -> None:
        self._loop.call_soon(self.die)

    async def wait_exit(self, timeout_s: float) -> int | None:
        try:
            await asyncio.wait_for(self._gone.wait(), timeout_s)
        except TimeoutError:
            self.die()
        return self.exit_code


class InMemoryReplicaFactory:
    """An :class:`~inferline.engine.Engine` ``replica_factory`` making
    :class:`InMemoryReplica` s; keeps every replica it made, in order.

    ``death_rule`` picks the batches on which a replica dies instead of answering
    (default: a batch with Echo's ``crash`` instruction, which would otherwise end this
    process). :meth:`hold` keeps a stage's batches running until :meth:`release`, so a
    test decides when each finishes (or kills the replica mid-batch). ``batches`` and
    ``deaths`` count what happened.
    """

    def __init__(self, death_rule: DeathRule = _echo_crash, *, pid_base: int = 1_000_000) -> None:
        self.death_rule = death_rule
        self.pid_base = pid_base
        self.replicas: list[InMemoryReplica] = []
        self.batches = 0
        self.deaths = 0
        self.held: set[str] = set()

    def __call__(
        self,
        replica_id: int,
        stage: str,
        hardware: str,
        on_message: Callable[[Replica, Any], None],
        on_lost: Callable[[Replica], None],
    ) -> Replica:
        replica = InMemoryReplica(replica_id, stage, hardware, on_message, on_lost, self)
        self.replicas.append(replica)
        return replica

    def alive(self, stage: str | None = None) -> list[InMemoryReplica]:
        """The replicas (of ``stage``) that have not died or stopped."""
        return [r for r in self.replicas if r.alive and stage in (None, r.stage)]

    def hold(self, *stages: str) -> None:
        """Batches of these stages stay running (unanswered) until :meth:`release`."""
        self.held.update(stages)

    def release(self, *stages: str) -> None:
        """Let the held batches of ``stages`` (all held stages if none given) finish."""
        for stage in stages or tuple(self.held):
            self.held.discard(stage)
            for replica in self.alive(stage):
                replica.resume()

    def running(self, stage: str) -> list[InMemoryReplica]:
        """The live replicas of ``stage`` that the engine has given a batch."""
        return [r for r in self.alive(stage) if r.batch is not None]
