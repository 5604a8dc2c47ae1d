"""The live tuner's loop (engine/_autoscale.py) with a fake clock, engine and apply function."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import numpy as np
import pytest

from inferline.engine._autoscale import Autoscaler
from inferline.pipeline import PipelineConfig
from inferline.tuner import InferLineTuner, Observation, TunerConfig


def config(a: int, b: int) -> PipelineConfig:
    return PipelineConfig.model_validate(
        {
            "stages": {
                "a": {"hardware": "cpu-1", "batch_size": 4, "replicas": a},
                "b": {"hardware": "cpu-2", "batch_size": 2, "replicas": b},
            }
        }
    )


class FakeEngine:
    def __init__(self, a: int, b: int) -> None:
        self.config = config(a, b)
        self.arrivals: list[float] = []
        self.activation: float | None = None
        self.applied: list[PipelineConfig] = []

    def take_arrivals(self) -> list[float]:
        out, self.arrivals = self.arrivals, []
        return out

    def outstanding(self) -> dict[str, int]:
        return {"a": 3, "b": 0}

    def activation_median_s(self) -> float | None:
        return self.activation

    async def apply(
        self, config: PipelineConfig, timeout_s: float | None = None, *, wait: bool = True
    ) -> None:
        assert not wait  # the tuner never blocks on replicas loading
        self.applied.append(config)
        self.config = config


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class Scripted:
    """A policy answering scripted targets and recording what it saw."""

    name = "scripted"

    def __init__(self, targets: list[dict[str, int]]) -> None:
        self.targets = targets
        self.seen: list[tuple[Observation, float]] = []

    def initial_state(self, now_s: float) -> Any:
        return {"start": now_s}

    def decide(self, state: Any, observation: Observation, now_s: float) -> Any:
        self.seen.append((observation, now_s))
        return self.targets.pop(0), state


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_step_observes_decides_and_applies_only_changed_counts() -> None:
    engine, clock = FakeEngine(1, 2), Clock()
    policy = Scripted([{"a": 1, "b": 2}, {"a": 3, "b": 2}, {"a": 3}])
    scaler = Autoscaler(engine, policy, clock=clock)
    scaler.start_recording()
    engine.arrivals = [0.2, 0.1, 0.7]
    clock.t = 1.0
    assert run(scaler.step()) == []  # unchanged: nothing applied
    assert engine.applied == []
    obs, now = policy.seen[0]
    assert now == 1.0
    np.testing.assert_array_equal(obs.arrivals_s, [0.1, 0.2, 0.7])  # sorted
    assert dict(obs.replicas) == {"a": 1, "b": 2}
    assert dict(obs.outstanding or {}) == {"a": 3, "b": 0}

    clock.t = 2.0
    changes = run(scaler.step())
    assert [(c.stage, c.before, c.after, c.time_s) for c in changes] == [("a", 1, 3, 2.0)]
    new = engine.applied[-1].stages
    assert (new["a"].replicas, new["a"].batch_size, new["a"].hardware) == (3, 4, "cpu-1")
    assert (new["b"].replicas, new["b"].batch_size, new["b"].hardware) == (2, 2, "cpu-2")
    assert policy.seen[1][0].arrivals_s.size == 0

    clock.t = 3.0  # a stage missing from the targets keeps its count
    assert run(scaler.step()) == []
    status = scaler.status()
    assert status["policy"] == "scripted" and status["n_changes"] == 1
    assert status["changes"] == [
        {"time_s": 2.0, "stage": "a", "from": 1, "to": 3, "reason": "scripted"}
    ]


def test_each_change_is_reported_once(caplog: pytest.LogCaptureFixture) -> None:
    """`serve --tune` logs at INFO (logging.basicConfig) and passes ``on_change`` to print
    the changes: each change must come out once, not once per channel."""
    printed: list[tuple[str, int, int]] = []
    scaler = Autoscaler(
        FakeEngine(1, 2),
        Scripted([{"a": 3, "b": 1}]),
        clock=Clock(),
        on_change=lambda c: printed.append((c.stage, c.before, c.after)),
    )
    with caplog.at_level(logging.DEBUG):
        run(scaler.step())
    logged = [r.getMessage() for r in caplog.records if "replicas" in r.getMessage()]
    assert printed == [("a", 1, 3), ("b", 2, 1)] and logged == []

    caplog.clear()  # without on_change the changes are logged, once each
    scaler = Autoscaler(FakeEngine(1, 2), Scripted([{"a": 3, "b": 1}]), clock=Clock())
    with caplog.at_level(logging.INFO, logger="inferline.engine"):
        run(scaler.step())
    assert [r.getMessage() for r in caplog.records] == [
        "tuner: t=0.0s stage 'a' 1 -> 3 replicas (scripted)",
        "tuner: t=0.0s stage 'b' 2 -> 1 replicas (scripted)",
    ]


def test_a_failed_apply_is_counted_and_retried_next_tick() -> None:
    engine, clock = FakeEngine(1, 1), Clock()
    calls: list[PipelineConfig] = []

    async def failing(cfg: PipelineConfig) -> None:
        calls.append(cfg)
        raise RuntimeError("no capacity")

    scaler = Autoscaler(
        engine, Scripted([{"a": 2, "b": 1}, {"a": 2, "b": 1}]), clock=clock, apply=failing
    )
    assert run(scaler.step()) == []
    assert run(scaler.step()) == []
    assert len(calls) == 2 and scaler.errors == 2 and scaler.n_changes == 0


def tuner_config() -> TunerConfig:
    # one stage pair at 10 qps per replica; the plan (1, 1) was made for ≤ 4 qps bursts
    return TunerConfig(
        stages=("a", "b"),
        mu_qps={"a": 10.0, "b": 10.0},
        rho={"a": 0.4, "b": 0.4},
        scale_factor={"a": 1.0, "b": 1.0},
        windows=(1.0, 2.0, 4.0),
        envelope_qps=(4.0, 4.0, 4.0),
        max_replicas={"a": 8, "b": 8},
        planned_replicas={"a": 1, "b": 1},
        scale_down_holdoff_s=5.0,
    )


def test_inferline_tuner_scales_up_at_once_and_down_after_the_holdoff() -> None:
    engine, clock = FakeEngine(1, 1), Clock()
    scaler = Autoscaler(engine, InferLineTuner(tuner_config()), clock=clock)
    scaler.start_recording()
    for t in range(1, 4):  # 2 qps: within the plan
        engine.arrivals = [t - 1 + 0.25, t - 1 + 0.75]
        clock.t = float(t)
        assert run(scaler.step()) == []
    engine.arrivals = [3 + i / 12 for i in range(12)]  # 12 qps: 3× the planned envelope
    clock.t = 4.0
    ups = run(scaler.step())
    assert {(c.stage, c.before, c.after) for c in ups} == {("a", 1, 3), ("b", 1, 3)}
    assert all(c.reason.startswith("scale up") for c in ups)
    downs: list[tuple[float, str, int]] = []
    for t in range(5, 20):  # quiet: 1 query a second
        engine.arrivals = [t - 0.5]
        clock.t = float(t)
        downs += [(c.time_s, c.stage, c.after) for c in run(scaler.step())]
    # the first scale-down waits the 5-s hold-off after the scale-up at t=4,
    # then one replica per step, each step restarting the hold-off
    assert downs[0][0] >= 9.0
    assert {d[2] for d in downs if d[0] == downs[0][0]} == {2}
    assert engine.config.stages["a"].replicas == 1 and engine.config.stages["b"].replicas == 1
    assert scaler.status()["n_changes"] == 6


def test_measured_activation_replaces_the_assumed_one() -> None:
    engine, clock = FakeEngine(1, 1), Clock()
    scaler = Autoscaler(engine, InferLineTuner(tuner_config()), clock=clock)
    assert scaler.status()["activation_s"] == 5.0
    engine.activation = 0.42
    run(scaler.step())
    assert scaler.status()["activation_s"] == pytest.approx(0.42)


def test_run_ticks_until_stopped() -> None:
    engine = FakeEngine(1, 1)
    policy = Scripted([{"a": 1, "b": 1}] * 100)

    async def main() -> None:
        scaler = Autoscaler(engine, policy, clock=lambda: 0.0, tick_s=0.01)
        scaler.start()
        await asyncio.sleep(0.1)
        await scaler.stop()

    run(main())
    assert 2 <= len(policy.seen) <= 20


def test_warm_up_decides_once_and_leaves_no_trace() -> None:
    engine = FakeEngine(1, 2)
    engine.arrivals = [0.5]
    policy = Scripted([{"a": 5, "b": 5}])
    tuner = Autoscaler(engine, policy, clock=Clock())
    tuner.warm_up()
    ((observation, now),) = policy.seen
    assert observation.replicas == {"a": 1, "b": 2}
    assert np.asarray(observation.arrivals_s).size == 2 and now == 1.0
    assert engine.applied == [] and tuner.changes == []
    assert engine.arrivals == [0.5]  # the engine's real arrivals are left for the first tick


def test_warm_up_loads_the_envelope_kernel_for_the_real_tuner() -> None:
    engine = FakeEngine(1, 1)
    policy = InferLineTuner(tuner_config())
    tuner = Autoscaler(engine, policy, clock=Clock())
    tuner.warm_up()  # must not raise nor apply
    assert engine.applied == []


def test_decisions_beyond_the_machine_are_capped_and_marked() -> None:
    from inferline.engine._metrics import EngineMetrics
    from inferline.profiles import MachinePool

    # 2 cores: 8 replica threads; b is cpu-2 (2 threads a replica)
    engine, clock = FakeEngine(1, 1), Clock()
    policy = Scripted([{"a": 10, "b": 1}, {"a": 10, "b": 1}, {"a": 2, "b": 1}])
    scaler = Autoscaler(
        engine, policy, clock=clock, machine=MachinePool(cores=2, memory_bytes=8 << 30)
    )
    clock.t = 1.0
    (change,) = run(scaler.step())
    assert (change.stage, change.before, change.after) == ("a", 1, 6)  # 6 + 2 = 8 threads
    assert "capped at the machine's capacity" in change.reason
    clock.t = 2.0
    assert run(scaler.step()) == []  # still wants 10: capped again, nothing to change
    limited = scaler.status()["capacity_limited"]
    assert limited["decisions"] == {"a": 2}
    assert limited["now"] == {"a": {"time_s": 2.0, "wanted": 10, "allowed": 6}}

    metrics = EngineMetrics(["a", "b"])
    state = {"queue_length": 0, "busy": 0, "replicas": 1, "ready": 1, "starting": 0}
    stages = {s: {**state, "draining": 0} for s in ("a", "b")}
    metrics.watch(lambda: {"stages": stages, "in_flight": 0, "tuner": scaler.status()})
    text = metrics.render().decode()
    assert 'inferline_tuner_capacity_limited_total{stage="a"} 2.0' in text
    assert 'inferline_tuner_capacity_limited_now{stage="a"} 1.0' in text
    assert 'inferline_tuner_capacity_limited_now{stage="b"} 0.0' in text

    clock.t = 3.0  # a decision within the machine clears the mark
    (change,) = run(scaler.step())
    assert (change.after, scaler.status()["capacity_limited"]["now"]) == (2, {})
