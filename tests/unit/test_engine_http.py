"""The engine's front-end in-process: its ASGI app over an Engine with in-memory replicas.

No processes and no sockets: :class:`InMemoryReplicaFactory` runs each stage's ``predict``
on the test's event loop (through the same ``engine.batching`` code a worker runs), and
requests are ASGI calls on :class:`EngineApp`. The engine's clock is a manual one and
replicas answer only when the loop runs, so every step is deterministic: ``settle()``
lets the ready callbacks run (it never waits on the wall clock), ``hold``/``release``
decide when a stage's batches finish, and a replica dies exactly when a test says.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest

from inferline.engine import (
    Engine,
    EngineApp,
    EngineOptions,
    InferRequest,
    StageModel,
    Tensor,
)
from inferline.engine.testing import InMemoryReplica, InMemoryReplicaFactory
from inferline.pipeline import Pipeline, PipelineConfig, pipeline_from_mapping

HERE = __name__  # stage classes below are imported by this module's name


class Source(StageModel):
    """Reads ``x``; a negative ``x`` names a successor that does not exist."""

    def predict(self, inputs: list[Any]) -> list[Any]:
        return [float(tensors["x"].scalar()) for tensors in inputs]

    def route(self, output: Any) -> Iterable[str] | None:
        return ("nowhere",) if output < 0 else None  # None: every successor


class Double(StageModel):
    def predict(self, inputs: list[Any]) -> list[Any]:
        return [2 * x for x in inputs]


class Square(StageModel):
    """``x * x``; a square of 100 or more also visits ``big`` (a conditional edge)."""

    def predict(self, inputs: list[Any]) -> list[Any]:
        return [x * x for x in inputs]

    def route(self, output: Any) -> Iterable[str]:
        return ("join", "big") if output >= 100 else ("join",)


class Big(StageModel):
    def predict(self, inputs: list[Any]) -> list[Any]:
        return [-x for x in inputs]


class Join(StageModel):
    """Receives ``{predecessor: output}`` for the branches the query took."""

    def predict(self, inputs: list[Any]) -> list[Any]:
        return [
            {"total": float(sum(branches.values())), "branches": "+".join(sorted(branches))}
            for branches in inputs
        ]


class Fragile(StageModel):
    """Its ``setup`` fails while ``broken`` is set; ``predict`` fails on ``x == 13``."""

    broken: ClassVar[bool] = False

    def setup(self) -> None:
        if Fragile.broken:
            raise RuntimeError("the weights are gone")

    def predict(self, inputs: list[Any]) -> list[Any]:
        if any(x == 13 for x in inputs):
            raise ValueError("unlucky batch")
        return inputs


DAG = {
    "name": "dag",
    "stages": [
        {"name": name, "model": f"{HERE}:{cls}"}
        for name, cls in [
            ("source", "Source"),
            ("double", "Double"),
            ("square", "Square"),
            ("big", "Big"),
            ("join", "Join"),
        ]
    ],
    "edges": [
        {"from": "source", "to": "double"},
        {"from": "source", "to": "square"},
        {"from": "double", "to": "join"},
        {"from": "square", "to": "join"},
        {"from": "square", "to": "big", "probability": 0.2},
        {"from": "big", "to": "join"},
    ],
}

CHAIN = {
    "name": "chain",
    "stages": [
        {"name": "source", "model": f"{HERE}:Source"},
        {"name": "fragile", "model": f"{HERE}:Fragile"},
    ],
    "edges": [{"from": "source", "to": "fragile"}],
}


def pipeline(spec: dict[str, Any]) -> Pipeline:
    return pipeline_from_mapping(spec, "<test>")[0]


def plan(
    spec: dict[str, Any], replicas: dict[str, int] | None = None, batch_size: int = 4
) -> dict[str, Any]:
    counts = replicas or {}
    return {
        "stages": {
            s["name"]: {
                "hardware": "cpu-1",
                "batch_size": batch_size,
                "replicas": counts.get(s["name"], 1),
            }
            for s in spec["stages"]
        }
    }


class Clock:
    """The engine's clock: moves only when a test moves it."""

    def __init__(self) -> None:
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s


async def settle() -> None:
    """Run every callback that is ready, and those they schedule, until nothing moves.

    Each ``sleep(0)`` is one pass of the event loop (no wall-clock wait); replicas here
    answer one pass after they are sent a batch, so a few dozen passes drain any chain.
    """
    for _ in range(64):
        await asyncio.sleep(0)


@dataclass
class Response:
    status: int
    body: Any
    starts: int  # http.response.start messages sent: exactly one per request


@dataclass
class Served:
    engine: Engine
    app: EngineApp
    replicas: InMemoryReplicaFactory
    clock: Clock

    async def call(
        self,
        method: str,
        path: str,
        body: bytes | str | dict[str, Any] | None = None,
        *,
        chunks: list[bytes] | None = None,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> Response:
        """One HTTP request as an ASGI call (the body in one message, or in ``chunks``)."""
        if isinstance(body, dict):
            body = json.dumps(body)
        raw = body.encode() if isinstance(body, str) else (body or b"")
        parts = chunks if chunks is not None else [raw]
        if headers is None:
            headers = [(b"content-length", str(sum(map(len, parts))).encode())]
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "headers": [(b"content-type", b"application/json"), *headers],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
        }
        messages = [
            {"type": "http.request", "body": part, "more_body": i < len(parts) - 1}
            for i, part in enumerate(parts)
        ]
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return messages.pop(0) if messages else {"type": "http.disconnect"}

        async def send(message: Any) -> None:
            sent.append(dict(message))

        await self.app(scope, receive, send)
        starts = [m for m in sent if m["type"] == "http.response.start"]
        payload = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
        try:
            parsed: Any = json.loads(payload)
        except ValueError:
            parsed = payload.decode()
        return Response(starts[0]["status"] if starts else 0, parsed, len(starts))

    async def infer(self, x: float, model: str | None = None, **extra: Any) -> Response:
        body = {"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [x]}]}
        return await self.call(
            "POST", f"/v2/models/{model or self.app.model}/infer", {**body, **extra}
        )

    def start_infer(self, x: float) -> asyncio.Task[Response]:
        """An inference request in flight (a task), to act on the engine meanwhile."""
        return asyncio.get_running_loop().create_task(self.infer(x))


@contextlib.asynccontextmanager
async def served(
    spec: dict[str, Any],
    config: Any = None,
    *,
    options: EngineOptions | None = None,
    factory: InMemoryReplicaFactory | None = None,
    start: bool = True,
    max_body_bytes: int = 8 << 20,
) -> AsyncIterator[Served]:
    clock = Clock()
    replicas = factory or InMemoryReplicaFactory()
    engine = Engine(
        pipeline(spec),
        PipelineConfig.model_validate(config or plan(spec)),
        options or EngineOptions(slo_s=10.0),
        clock=clock,
        replica_factory=replicas,
    )
    if start:
        await engine.start()
    try:
        yield Served(engine, EngineApp(engine, max_body_bytes=max_body_bytes), replicas, clock)
    finally:
        replicas.release()
        await engine.stop()


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def outputs(response: Response) -> dict[str, Any]:
    return {o["name"]: o["data"][0] for o in response.body["outputs"]}


@pytest.fixture(autouse=True)
def _whole_fragile() -> Iterable[None]:
    Fragile.broken = False
    yield
    Fragile.broken = False


# --- routing through the DAG ---------------------------------------------------------------


def test_a_query_follows_the_edges_its_outputs_choose() -> None:
    async def main() -> None:
        async with served(DAG) as s:
            small, large = await asyncio.gather(s.infer(3.0, id="q1"), s.infer(20.0))
            assert (small.status, small.starts) == (200, 1)
            assert small.body["id"] == "q1" and small.body["model_name"] == "dag"
            assert small.body["parameters"]["path"] == "source+double+square+join"
            assert outputs(small) == {"total": 6.0 + 9.0, "branches": "double+square"}
            assert large.body["parameters"]["path"] == "source+double+square+big+join"
            assert outputs(large) == {
                "total": 40.0 + 400.0 - 400.0,
                "branches": "big+double+square",
            }
            assert s.engine.in_flight == 0

    run(main())


def test_queries_batched_together_each_get_their_own_path_and_answer() -> None:
    async def main() -> None:
        async with served(DAG, plan(DAG, {"square": 2}, batch_size=8)) as s:
            xs = [float(x) for x in range(1, 25)]
            answers = await asyncio.gather(*(s.infer(x) for x in xs))
            for x, answer in zip(xs, answers, strict=True):
                assert answer.status == 200 and answer.starts == 1
                took_big = x * x >= 100
                assert ("big" in answer.body["parameters"]["path"]) is took_big
                expected = 2 * x + (0.0 if took_big else x * x)
                assert outputs(answer)["total"] == expected
            assert max(s.engine.stats()["stages"]["source"]["residence_s"].values()) is not None

    run(main())


def test_the_join_waits_for_its_slowest_branch_and_the_latency_is_the_max() -> None:
    """Fan-out/join = max: the join runs once every branch the query took is done."""

    async def main() -> None:
        async with served(DAG) as s:
            s.replicas.hold("square")
            x = Tensor("x", "FP64", (1,), [3.0])
            future = s.engine.submit(InferRequest({"x": x}))
            await settle()
            assert not future.done()  # double has finished; the join waits for square
            assert s.engine.outstanding() == {
                "source": 0,
                "double": 0,
                "square": 1,
                "big": 0,
                "join": 0,
            }
            s.clock.now_s += 2.5  # the slow branch ends 2.5 s after the fast one
            s.replicas.release("square")
            answer = await future
            assert answer.status == 200 and answer.path == ("source", "double", "square", "join")
            assert answer.latency_s == 2.5  # the slower branch's, not the sum
            assert s.engine.in_flight == 0

    run(main())


def test_a_route_naming_no_successor_fails_only_its_query() -> None:
    async def main() -> None:
        async with served(DAG) as s:
            bad, good = await asyncio.gather(s.infer(-1.0), s.infer(2.0))
            assert bad.status == 500 and bad.starts == 1
            assert "route() named 'nowhere'" in bad.body["error"]
            assert "not a successor of 'source' (double, square)" in bad.body["error"]
            assert good.status == 200

    run(main())


def test_a_batch_whose_predict_raises_fails_its_queries_and_the_replica_lives_on() -> None:
    async def main() -> None:
        async with served(CHAIN) as s:
            answers = await asyncio.gather(s.infer(13.0), s.infer(1.0))  # one batch
            for answer in answers:
                assert (answer.status, answer.starts) == (500, 1)
                assert answer.body["error"] == (
                    "stage 'fragile' failed on its batch: ValueError: unlucky batch"
                )
            again = await s.infer(1.0)
            assert again.status == 200 and outputs(again) == {"fragile": 1.0}
            assert s.replicas.deaths == 0

    run(main())


# --- a replica dies mid-batch ----------------------------------------------------------------


def test_a_replica_death_mid_batch_retries_its_queries_once_elsewhere() -> None:
    async def main() -> None:
        async with served(DAG, plan(DAG, {"square": 2})) as s:
            s.replicas.hold("square")
            tasks = [s.start_infer(float(x)) for x in (1, 2, 3)]
            await settle()
            (victim,) = s.replicas.running("square")
            assert len(victim.parked) == 1  # the one batch of three queries
            victim.die()  # mid-batch: its batch goes back to the queue
            await settle()
            s.replicas.release("square")
            answers = await asyncio.gather(*tasks)
            assert [(a.status, a.starts) for a in answers] == [(200, 1)] * 3
            assert [outputs(a)["total"] for a in answers] == [3.0, 8.0, 15.0]
            alive = s.replicas.alive("square")
            assert len(alive) == 2 and victim not in alive  # replaced
            assert s.engine.status()["stages"]["square"]["ready"] == 2
            metrics = s.engine.metrics.render().decode()
            assert 'inferline_replica_failures_total{stage="square"} 1.0' in metrics

    run(main())


def test_a_query_whose_retry_dies_too_gets_one_clear_500() -> None:
    def dies_on_seven(replica: InMemoryReplica, items: list[Any]) -> bool:
        return replica.stage == "square" and 7.0 in items

    async def main() -> None:
        async with served(DAG, factory=InMemoryReplicaFactory(dies_on_seven)) as s:
            # 5.0 shares the doomed batch, on the first try and on the retry
            answers = await asyncio.gather(s.infer(7.0), s.infer(5.0))
            for answer in answers:
                assert (answer.status, answer.starts) == (500, 1)
                assert answer.body["error"].startswith("stage 'square': replica process ")
                assert answer.body["error"].endswith(
                    "died while running this query and the retry failed too"
                )
            assert s.replicas.deaths == 2  # the first try and the one retry
            assert s.engine.in_flight == 0
            assert (await s.infer(5.0)).status == 200  # the second replacement serves

    run(main())


def test_without_retries_a_death_fails_the_batch_at_once() -> None:
    async def main() -> None:
        options = EngineOptions(slo_s=10.0, retries=0)
        async with served(DAG, options=options) as s:
            s.replicas.hold("double")
            task = s.start_infer(1.0)
            await settle()
            s.replicas.running("double")[0].die()
            answer = await task
            assert answer.status == 500 and "died while running this query" in answer.body["error"]
            assert "retry" not in answer.body["error"]
            s.replicas.release()
            assert (await s.infer(1.0)).status == 200  # the replacement serves

    run(main())


def test_echo_crash_kills_only_the_in_memory_replica() -> None:
    """The default death rule honours Echo's ``crash`` input (a real Echo would exit)."""
    spec = {
        "name": "echo",
        "stages": [{"name": "e", "model": "inferline.engine.testing:Echo"}],
        "edges": [],
    }

    async def main() -> None:
        async with served(spec) as s:
            body = {
                "inputs": [
                    {"name": "x", "shape": [1], "datatype": "FP64", "data": [1.0]},
                    {"name": "crash", "shape": [1], "datatype": "BOOL", "data": [True]},
                ]
            }
            answer = await s.call("POST", "/v2/models/echo/infer", body)
            assert answer.status == 500 and "the retry failed too" in answer.body["error"]
            assert s.replicas.deaths == 2
            assert (await s.infer(4.0)).status == 200

    run(main())


# --- HTTP error paths -----------------------------------------------------------------------


def test_unknown_paths_models_and_versions_are_404() -> None:
    async def main() -> None:
        async with served(CHAIN) as s:
            for method, path, words in [
                ("GET", "/nope", "no such endpoint: GET /nope"),
                ("GET", "/v2/models/other", "unknown model 'other'; this server serves 'chain'"),
                ("POST", "/v2/models/other/infer", "unknown model 'other'"),
                ("GET", "/v2/models/chain/versions/2", "has no version '2'"),
                ("GET", "/v2/models/chain/nothing", "no such endpoint"),
                ("GET", "/v2/control/nothing", "no such endpoint: GET /v2/control/nothing"),
            ]:
                answer = await s.call(method, path)
                assert (answer.status, answer.starts) == (404, 1), path
                assert words in answer.body["error"], path
            metadata = await s.call("GET", "/v2/models/chain/versions/1")
            assert metadata.status == 200 and metadata.body["name"] == "chain"

    run(main())


def test_a_wrong_method_is_405_and_names_the_right_one() -> None:
    async def main() -> None:
        async with served(CHAIN) as s:
            for method, path, allowed in [
                ("GET", "/v2/models/chain/infer", "POST"),
                ("POST", "/v2/health/ready", "GET"),
                ("DELETE", "/v2/models/chain", "GET"),
                ("POST", "/v2/control/status", "GET"),
                ("PUT", "/v2/control/plan", "POST"),
                ("POST", "/v2/control/stats", "GET"),
                ("POST", "/metrics", "GET"),
            ]:
                answer = await s.call(method, path)
                assert answer.status == 405, (method, path)
                assert answer.body["error"] == f"method {method} not allowed here; use {allowed}"

    run(main())


def test_malformed_requests_are_400() -> None:
    async def main() -> None:
        async with served(CHAIN) as s:
            infer = "/v2/models/chain/infer"
            cases: list[tuple[bytes | str | dict[str, Any], str]] = [
                (b"{not json", "malformed JSON in the request body"),
                ("[1, 2]", "the request body must be a JSON object with an 'inputs' array"),
                ({"inputs": []}, "'inputs' must be a non-empty array of tensors"),
                (
                    {"inputs": [{"name": "x", "shape": [2], "datatype": "FP64", "data": [1]}]},
                    "input 'x': shape [2] holds 2 element(s) but 'data' has 1",
                ),
            ]
            for body, words in cases:
                answer = await s.call("POST", infer, body)
                assert (answer.status, answer.starts) == (400, 1), body
                assert words in answer.body["error"], answer.body
            bad_length = await s.call("POST", infer, b"{}", headers=[(b"content-length", b"many")])
            assert bad_length.status == 400 and "Content-Length" in bad_length.body["error"]
            assert s.engine.in_flight == 0  # nothing was admitted

    run(main())


def test_a_body_over_the_limit_is_413_declared_or_streamed() -> None:
    async def main() -> None:
        async with served(CHAIN, max_body_bytes=64) as s:
            infer = "/v2/models/chain/infer"
            declared = await s.call("POST", infer, b"x" * 65)
            assert declared.status == 413
            assert declared.body["error"] == (
                "request body of 65 bytes exceeds the limit of 64 bytes"
            )
            streamed = await s.call("POST", infer, chunks=[b"x" * 40, b"x" * 40], headers=[])
            assert streamed.status == 413
            assert streamed.body["error"] == "request body exceeds the limit of 64 bytes"
            plan_body = await s.call("POST", "/v2/control/plan", b"y" * 100)
            assert plan_body.status == 413

    run(main())


def test_not_ready_is_503_until_the_engine_has_started() -> None:
    async def main() -> None:
        async with served(CHAIN, start=False) as s:
            for path in ("/v2/health/ready", "/v2/models/chain/ready"):
                answer = await s.call("GET", path)
                assert answer.status == 503 and answer.body["ready"] is False
            assert (await s.call("GET", "/v2/health/live")).status == 200
            await s.engine.start()
            assert (await s.call("GET", "/v2/health/ready")).status == 200
            ready = await s.call("GET", "/v2/models/chain/ready")
            assert ready.body == {"name": "chain", "ready": True}

    run(main())


def test_a_stage_that_cannot_start_replicas_makes_queries_503() -> None:
    async def main() -> None:
        async with served(CHAIN) as s:
            Fragile.broken = True
            (replica,) = s.replicas.alive("fragile")
            replica.die()  # its replacements fail in setup, three times: the stage is broken
            await settle()
            status = s.engine.status()["stages"]["fragile"]
            assert status["ready"] == 0
            assert "RuntimeError: the weights are gone" in status["error"]
            answer = await s.infer(1.0)
            assert answer.status == 503
            assert answer.body["error"].startswith("stage 'fragile' has no running replica")
            assert (await s.call("GET", "/v2/health/ready")).status == 503

    run(main())


def test_a_full_engine_and_a_stopping_engine_answer_503() -> None:
    async def main() -> None:
        options = EngineOptions(slo_s=10.0, max_in_flight=2)
        async with served(CHAIN, options=options) as s:
            s.replicas.hold("source")
            tasks = [s.start_infer(1.0), s.start_infer(2.0)]
            await settle()
            over = await s.infer(3.0)
            assert over.status == 503 and over.body["error"].startswith("overloaded: 2 queries")
            s.replicas.release()
            assert [t.status for t in await asyncio.gather(*tasks)] == [200, 200]
            await s.engine.stop()
            late = await s.infer(4.0)
            assert late.status == 503 and late.body["error"] == "the engine is shutting down"

    run(main())


# --- control API errors ----------------------------------------------------------------------


def test_control_plan_errors_are_4xx_or_500_and_leave_the_plan_alone() -> None:
    async def main() -> None:
        async with served(CHAIN) as s:
            before = (await s.call("GET", "/v2/control/plan")).body
            path = "/v2/control/plan"
            stages = before["stages"]
            zero_batch = {"hardware": "cpu-1", "batch_size": 0, "replicas": 1}
            bad: list[tuple[bytes | dict[str, Any], int, str]] = [
                (b"{oops", 400, "malformed JSON in the plan"),
                (b"[]", 400, 'the plan must be a JSON object {"stages": {...}}'),
                (
                    {"stages": {"source": stages["source"]}},
                    400,
                    "stage 'fragile' is not configured",
                ),
                ({"stages": {**stages, "ghost": stages["source"]}}, 400, "unknown stage 'ghost'"),
                ({"stages": {**stages, "source": zero_batch}}, 400, "stages.source.batch_size"),
            ]
            for body, code, words in bad:
                answer = await s.call("POST", path, body)
                assert (answer.status, answer.starts) == (code, 1), body
                assert words in answer.body["error"], answer.body
            assert (await s.call("GET", path)).body == before

            Fragile.broken = True
            more = {**before["stages"], "fragile": {**before["stages"]["fragile"], "replicas": 2}}
            answer = await s.call("POST", path, {"stages": more})
            assert answer.status == 500
            assert answer.body["error"].startswith("the plan could not be applied: stage 'fragile'")
            assert "the weights are gone" in answer.body["error"]

    run(main())


def test_control_plan_changes_replicas_and_stats_reset() -> None:
    async def main() -> None:
        async with served(CHAIN) as s:
            assert (await s.infer(1.0)).status == 200
            stats = await s.call("GET", "/v2/control/stats")
            assert stats.body["stages"]["fragile"]["visits"] == 1
            reset = await s.call("DELETE", "/v2/control/stats")
            assert reset.body == {"reset": True}
            assert (await s.call("GET", "/v2/control/stats")).body["stages"]["fragile"][
                "visits"
            ] == 0
            new = plan(CHAIN, {"fragile": 3})
            applied = await s.call("POST", "/v2/control/plan", new)
            assert applied.status == 200 and applied.body["stages"]["fragile"]["ready"] == 3
            assert len(s.replicas.alive("fragile")) == 3

    run(main())
