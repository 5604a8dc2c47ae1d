"""A replica that is a Ray actor, behind the embedded engine's :class:`Replica` interface.

The front-end (:class:`~inferline.engine.Engine`) keeps its central EDF queue per
stage and its dispatch; only the transport changes. Where an embedded replica writes a
frame on its socketpair, a :class:`RayReplica` calls an actor method; where it reads
frames, the actor call's result is delivered on the event loop (a callback from Ray's
thread through ``call_soon_threadsafe``) and handed to the engine as the same message
tuple. The end of the stream is the failure of a ``watch`` call kept pending on every
actor (``ray.kill``, a crash, a lost node).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from inferline.engine import Replica, ReplicaResources, ReplicaState, thread_environment
from inferline.ray_backend._resources import RayReplicaResources, ray_resources_for

__all__ = ["RayReplica", "RayReplicaFactory"]

log = logging.getLogger("inferline.ray")


class RayReplica(Replica):
    """One actor; ``node_id``/``node_ip`` once it is ready."""

    def __init__(
        self,
        replica_id: int,
        stage: str,
        hardware: str,
        demand: RayReplicaResources,
        on_message: Callable[[Replica, Any], None],
        on_lost: Callable[[Replica], None],
        *,
        scheduling_strategy: str = "SPREAD",
    ) -> None:
        super().__init__(
            replica_id,
            stage,
            hardware,
            ReplicaResources(demand.threads, demand.device),
            on_message,
            on_lost,
        )
        self.demand = demand
        self.scheduling_strategy = scheduling_strategy
        self.node_id: str | None = None
        self.node_ip: str | None = None
        self._actor: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._gone = False
        self._gone_event = asyncio.Event()

    def __repr__(self) -> str:
        return f"<ray replica {self.id} of {self.stage} pid={self.pid} {self.state.value}>"

    def __hash__(self) -> int:
        return self.id

    # --- delivery from Ray's thread to the event loop ------------------------------------
    def _when_done(self, ref: Any, callback: Callable[[Any, BaseException | None], None]) -> None:
        loop = self._loop
        assert loop is not None

        def deliver(future: Any) -> None:
            try:
                value, error = future.result(), None
            except BaseException as exc:
                value, error = None, exc
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody is listening
                loop.call_soon_threadsafe(callback, value, error)

        ref.future().add_done_callback(deliver)

    # --- Replica interface ---------------------------------------------------------------
    async def launch(self, spec: dict[str, Any]) -> None:
        from inferline.ray_backend._actor import StageActor

        self._loop = asyncio.get_running_loop()
        spec = dict(spec, threads=self.demand.threads, device=self.demand.device)
        self._actor = StageActor.options(
            **self.demand.actor_options(),
            scheduling_strategy=self.scheduling_strategy,
            max_restarts=0,
            max_task_retries=0,
            runtime_env={"env_vars": thread_environment(self.demand.threads)},
        ).remote()
        self._when_done(self._actor.watch.remote(), self._on_watch)
        self._when_done(self._actor.setup.remote(spec), self._on_setup)

    def _on_setup(self, outcome: Any, error: BaseException | None) -> None:
        if self._gone:
            return
        if error is not None:
            # The actor died during setup (or could not be created): the watch reports it.
            self.fatal = self.fatal or _describe(error)
            self._kill()
            return
        kind, info = outcome
        if kind == "ready":
            self.pid = info.get("pid")
            self.node_id = info.get("node_id")
            self.node_ip = info.get("node_ip")
        self._on_message(self, outcome)
        if kind == "fatal":
            self._kill()

    def _on_watch(self, _value: Any, error: BaseException | None) -> None:
        if error is not None and self.state in (ReplicaState.STARTING, ReplicaState.READY):
            log.debug("replica %s: actor ended: %s", self, _describe(error))
        self._lost()

    def _lost(self) -> None:
        if self._gone:
            return
        self._gone = True
        self.exit_code = 0
        self._gone_event.set()
        self._on_lost(self)

    def send(self, message: Any) -> None:
        if self._gone or self._actor is None:
            return
        kind = message[0]
        if kind == "batch":
            _, batch_id, items = message
            ref = self._actor.run.remote(batch_id, items)
            self._when_done(ref, lambda outcome, error: self._on_result(batch_id, outcome, error))
        elif kind == "stop":
            self._kill()

    def _on_result(self, batch_id: int, outcome: Any, error: BaseException | None) -> None:
        if self._gone:
            return
        if error is None:
            self._on_message(self, outcome)
            return
        if _is_actor_death(error):
            self._lost()  # the engine re-queues the batch (retried once elsewhere)
            return
        # e.g. a result that cannot be serialised: this batch fails, the replica lives on
        self._on_message(self, ("failed", batch_id, _describe(error)))

    def _kill(self) -> None:
        if self._actor is not None:
            import ray

            with contextlib.suppress(Exception):
                ray.kill(self._actor, no_restart=True)

    def terminate(self) -> None:
        self._kill()

    async def wait_exit(self, timeout_s: float) -> int | None:
        if self._actor is None:
            return None
        try:
            await asyncio.wait_for(self._gone_event.wait(), timeout_s)
        except TimeoutError:
            self._kill()
            self._lost()
        return self.exit_code


def _is_actor_death(error: BaseException) -> bool:
    from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

    return isinstance(error, RayActorError | ActorDiedError | ActorUnavailableError)


def _describe(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


class RayReplicaFactory:
    """Makes the engine's replicas as actors; keeps them for the status report."""

    def __init__(self, *, scheduling_strategy: str = "SPREAD") -> None:
        self.scheduling_strategy = scheduling_strategy
        self.replicas: dict[int, RayReplica] = {}

    def __call__(
        self,
        replica_id: int,
        stage: str,
        hardware: str,
        on_message: Callable[[Replica, Any], None],
        on_lost: Callable[[Replica], None],
    ) -> Replica:
        replica = RayReplica(
            replica_id,
            stage,
            hardware,
            ray_resources_for(hardware),
            on_message,
            self._forget(on_lost),
            scheduling_strategy=self.scheduling_strategy,
        )
        self.replicas[replica_id] = replica
        return replica

    def _forget(self, on_lost: Callable[[Replica], None]) -> Callable[[Replica], None]:
        def lost(replica: Replica) -> None:
            self.replicas.pop(replica.id, None)
            on_lost(replica)

        return lost

    def placement(self) -> dict[str, list[dict[str, Any]]]:
        """Per stage: every live actor's id, state, pid and node."""
        out: dict[str, list[dict[str, Any]]] = {}
        for r in sorted(self.replicas.values(), key=lambda r: r.id):
            out.setdefault(r.stage, []).append(
                {
                    "id": r.id,
                    "state": r.state.value,
                    "pid": r.pid,
                    "node_id": r.node_id,
                    "node_ip": r.node_ip,
                    "num_cpus": r.demand.num_cpus,
                    "num_gpus": r.demand.num_gpus,
                    "accelerator_type": r.demand.accelerator_type,
                }
            )
        return out
