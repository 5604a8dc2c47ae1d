"""RayReplica behind the real Engine, with a fake actor in place of Ray (no cluster).

The fake runs the stage in this process and answers through concurrent futures, as Ray's
ObjectRef.future() does; killing it fails its pending ``watch`` call with ActorDiedError.
The engine's central queue, dispatch, retry-once and drain then work unchanged.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
from typing import Any, ClassVar

import pytest

pytest.importorskip("ray")

from ray.exceptions import ActorDiedError

from inferline.engine._engine import Engine, EngineOptions
from inferline.engine._stage import Tensor
from inferline.engine._tensor import InferRequest
from inferline.engine.batching import load_stage, run_batch
from inferline.pipeline import Pipeline, PipelineConfig
from inferline.ray_backend import _actor, _replica
from inferline.ray_backend._replica import RayReplicaFactory

_pids = itertools.count(1000)


class _Ref:
    def __init__(self, future: concurrent.futures.Future[Any]) -> None:
        self._future = future

    def future(self) -> concurrent.futures.Future[Any]:
        return self._future


class _Method:
    def __init__(self, call: Any) -> None:
        self._call = call

    def remote(self, *args: Any) -> _Ref:
        return _Ref(self._call(*args))


class FakeActor:
    """Runs the stage here; ``die()`` ends it like a crash (pending calls fail)."""

    instances: ClassVar[list[FakeActor]] = []
    pool: ClassVar[concurrent.futures.ThreadPoolExecutor] = concurrent.futures.ThreadPoolExecutor(4)

    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options
        self.model: Any = None
        self.spec: dict[str, Any] = {}
        self.dead = False
        self.hold = False  # True: batches never finish (to kill an actor mid-batch)
        self.pending: list[concurrent.futures.Future[Any]] = []
        self.watch = _Method(self._watch)
        self.setup = _Method(self._setup)
        self.run = _Method(self._run)
        FakeActor.instances.append(self)

    def _watch(self) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self.pending.append(future)
        return future

    def _setup(self, spec: dict[str, Any]) -> concurrent.futures.Future[Any]:
        self.spec = spec
        self.model = load_stage(spec)
        done: concurrent.futures.Future[Any] = concurrent.futures.Future()
        done.set_result(("ready", {"pid": next(_pids), "node_id": "n1", "node_ip": "x"}))
        return done

    def _run(self, batch_id: int, items: list[Any]) -> concurrent.futures.Future[Any]:
        if self.hold:
            future: concurrent.futures.Future[Any] = concurrent.futures.Future()
            self.pending.append(future)
            return future

        def work() -> Any:
            results, predict_s, cpu_s = run_batch(
                self.model, self.spec["stage"], items, tuple(self.spec["successors"]), ()
            )
            return ("done", batch_id, results, predict_s, cpu_s)

        return FakeActor.pool.submit(work)

    def die(self) -> None:
        self.dead = True
        for future in self.pending:
            if not future.done():
                future.set_exception(ActorDiedError())


class _FakeActorClass:
    def options(self, **options: Any) -> Any:
        class _Creator:
            def remote(self) -> FakeActor:
                return FakeActor(options)

        return _Creator()


@pytest.fixture
def fake_ray(monkeypatch: pytest.MonkeyPatch) -> list[FakeActor]:
    FakeActor.instances = []
    monkeypatch.setattr(_actor, "StageActor", _FakeActorClass())
    monkeypatch.setattr(
        _replica.RayReplica, "_kill", lambda self: self._actor and self._actor.die()
    )
    return FakeActor.instances


def pipeline() -> Pipeline:
    from inferline.pipeline._io import pipeline_from_mapping

    data = {
        "name": "fake",
        "stages": [
            {"name": "a", "model": "inferline.engine.testing:Echo"},
            {"name": "b", "model": "inferline.engine.testing:NoOp"},
        ],
        "edges": [{"from": "a", "to": "b"}],
    }
    return pipeline_from_mapping(data, "<test>")[0]


def plan(a: int, b: int, hardware: str = "cpu-2") -> PipelineConfig:
    return PipelineConfig.model_validate(
        {
            "stages": {
                "a": {"hardware": hardware, "batch_size": 4, "replicas": a},
                "b": {"hardware": "cpu-1", "batch_size": 4, "replicas": b},
            }
        }
    )


def request(value: float) -> InferRequest:
    return InferRequest({"x": Tensor("x", "FP64", (1,), [value])})


def test_actors_get_the_stage_resources_and_answer_queries(fake_ray: list[FakeActor]) -> None:
    async def main() -> None:
        factory = RayReplicaFactory()
        engine = Engine(pipeline(), plan(2, 1), EngineOptions(), replica_factory=factory)
        await engine.start()
        answers = await asyncio.gather(*(engine.submit(request(i)) for i in range(40)))
        assert [a.status for a in answers] == [200] * 40
        assert [a.outputs[0]["data"][0] for a in answers] == [float(i) for i in range(40)]
        placed = factory.placement()
        assert len(placed["a"]) == 2 and len(placed["b"]) == 1
        assert placed["a"][0]["num_cpus"] == 2 and placed["a"][0]["node_id"] == "n1"
        a_options = [f.options for f in fake_ray if f.spec.get("stage") == "a"]
        assert all(o["num_cpus"] == 2 and o["scheduling_strategy"] == "SPREAD" for o in a_options)
        assert all(o["max_restarts"] == 0 for o in a_options)
        assert a_options[0]["runtime_env"]["env_vars"]["OMP_NUM_THREADS"] == "2"
        assert engine.status()["stages"]["a"]["replica_list"][0]["threads"] == 2
        await engine.stop()
        assert all(f.dead for f in fake_ray)  # every actor killed on shutdown
        assert factory.placement() == {}

    asyncio.run(main())


def test_a_dead_actor_is_replaced_and_its_batch_retried_once(fake_ray: list[FakeActor]) -> None:
    async def main() -> None:
        engine = Engine(
            pipeline(), plan(1, 1), EngineOptions(), replica_factory=RayReplicaFactory()
        )
        await engine.start()
        (victim,) = [f for f in fake_ray if f.spec["stage"] == "a"]
        victim.hold = True
        futures = [engine.submit(request(i)) for i in range(3)]
        for _ in range(100):  # the batch reaches the victim
            await asyncio.sleep(0.01)
            if victim.pending[1:]:
                break
        victim.die()  # mid-batch: the watch and the batch both fail
        answers = await asyncio.wait_for(asyncio.gather(*futures), 10)
        assert [a.status for a in answers] == [200, 200, 200]
        replacement = [f for f in fake_ray if f.spec.get("stage") == "a" and not f.dead]
        assert len(replacement) == 1
        status = engine.status()
        assert status["stages"]["a"]["ready"] == 1
        await engine.stop()

    asyncio.run(main())


def test_scaling_down_drains_then_kills(fake_ray: list[FakeActor]) -> None:
    async def main() -> None:
        factory = RayReplicaFactory()
        engine = Engine(pipeline(), plan(3, 1), EngineOptions(), replica_factory=factory)
        await engine.start()
        await engine.apply(plan(1, 1))
        for _ in range(100):
            if len(factory.placement()["a"]) == 1:
                break
            await asyncio.sleep(0.01)
        assert len(factory.placement()["a"]) == 1
        assert sum(f.dead for f in fake_ray if f.spec.get("stage") == "a") == 2
        answers = await asyncio.gather(*(engine.submit(request(i)) for i in range(5)))
        assert all(a.status == 200 for a in answers)
        await engine.stop()

    asyncio.run(main())
