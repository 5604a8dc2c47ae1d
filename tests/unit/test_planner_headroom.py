"""``with_batch_headroom``: a plan the Tuner will scale gets bigger batches at no cost."""

from __future__ import annotations

import pytest

from inferline.errors import ConfigError
from inferline.pipeline import Pipeline
from inferline.planner import plan, with_batch_headroom
from inferline.profiles import BatchProfile, HardwareCatalogue, HardwareType, ProfilePoint, Profiles
from inferline.workload import gamma_trace

#: batch size -> median latency (s): throughput grows with the batch up to 8
CURVE = {1: 0.004, 2: 0.006, 4: 0.010, 8: 0.018}


def _profiles() -> Profiles:
    hardware = HardwareCatalogue((HardwareType("cpu-1", 0.04),))
    return Profiles(
        hardware,
        {
            (stage, "cpu-1"): BatchProfile(
                stage, "cpu-1", tuple(ProfilePoint(b, t, 1.3 * t) for b, t in CURVE.items())
            )
            for stage in ("a", "b")
        },
    )


def test_batches_rise_at_no_cost_while_the_plan_stays_feasible() -> None:
    pipeline = Pipeline.chain("two", ["a", "b"])
    profiles = _profiles()
    trace = gamma_trace(60.0, 1.0, 30.0, 0)
    first = plan("inferline", pipeline, profiles, trace, 0.1, margin=0.15)
    raised = with_batch_headroom(first, pipeline, profiles, trace, max_steps=10)
    assert raised.feasible and raised.cost_per_hour == first.cost_per_hour
    assert raised.estimated_p99_s <= 0.1 * (1 - 0.15)
    before, after = first.config.stages, raised.config.stages
    assert all(after[n].batch_size >= before[n].batch_size for n in before)
    assert all(after[n].replicas == before[n].replicas for n in before)
    assert all(after[n].batch_size == 8 for n in after)  # an SLO this loose allows the top
    # by default one step a stage: the next profiled size at least twice the batch
    one = with_batch_headroom(first, pipeline, profiles, trace)
    for n, stage in one.config.stages.items():
        assert stage.batch_size == min(8, max(2, 2 * before[n].batch_size))
    with pytest.raises(ConfigError) as refused:
        with_batch_headroom(first, pipeline, profiles, trace, max_steps=0)
    assert refused.value.field == "max_steps"
    assert any("headroom:" in line for line in raised.log)
    assert (raised.margin, raised.tail_bias) == (first.margin, first.tail_bias)
    # nothing left to raise: the same plan back
    assert with_batch_headroom(raised, pipeline, profiles, trace, max_steps=10) is raised


def test_a_batch_that_would_break_the_slo_is_not_raised() -> None:
    pipeline = Pipeline.chain("two", ["a", "b"])
    profiles = _profiles()
    trace = gamma_trace(150.0, 1.0, 30.0, 0)
    first = plan("inferline", pipeline, profiles, trace, 0.02)
    raised = with_batch_headroom(first, pipeline, profiles, trace, max_steps=10)
    assert raised.feasible and raised.estimated_p99_s <= 0.02
    assert raised.config.stages["b"].batch_size > first.config.stages["b"].batch_size
    stage_a = raised.config.stages["a"]
    assert stage_a.batch_size < 8  # stopped below the top: one more doubling misses the SLO
    from inferline.estimator import Estimator

    bigger = raised.config.with_stage("a", batch_size=2 * stage_a.batch_size)
    assert Estimator(pipeline, profiles, trace, slo_s=0.02).run(bigger).p99_s > 0.02
