"""The tuner's policy registry: every name builds, unknown names and fields are named, option
objects (the policies', the engine's, the Ray backend's) raise ConfigError with the field."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from inferline import ConfigError, load_bundle, load_config
from inferline.engine import EngineOptions
from inferline.ray_backend import RayBackendOptions
from inferline.tuner import (
    CoarseGrainedAutoscaler,
    CoarseGrainedOptions,
    InferLineOptions,
    InferLineTuner,
    NoTuner,
    NoTunerOptions,
    QueueLengthOptions,
    QueueLengthPolicy,
    SimulatingTuner,
    available_policies,
    make_policy,
    planning_workload,
    policy_for_bundle,
    policy_options,
    simulate_tuned,
    tune_simulate,
)
from inferline.workload import gamma_trace

BUNDLE = Path(__file__).resolve().parents[2] / "examples" / "reference" / "image-processing"
PLAN = BUNDLE / "configs" / "balanced.yaml"
NAMES = ("none", "inferline", "inferline+opt-in", "cg-autoscale", "queue-length", "simulate")
KINDS = {
    "none": NoTuner,
    "inferline": InferLineTuner,
    "inferline+opt-in": InferLineTuner,
    "cg-autoscale": CoarseGrainedAutoscaler,
    "queue-length": QueueLengthPolicy,
    "simulate": SimulatingTuner,
}


@pytest.fixture(scope="module")
def inputs() -> tuple[Any, Any, Any, Any]:
    bundle = load_bundle(BUNDLE)
    return (
        bundle.pipeline,
        bundle.profiles,
        load_config(PLAN),
        gamma_trace(150.0, 1.0, 20.0, seed=1),
    )


def test_the_registry_lists_every_policy_and_each_builds_under_its_name(inputs: Any) -> None:
    assert available_policies() == NAMES
    for name in NAMES:
        policy = make_policy(name, *inputs, slo_s=0.15)
        assert isinstance(policy, KINDS[name]), name
        assert policy.name == name


def test_the_inferline_policies_differ_only_in_the_opt_in_rules(inputs: Any) -> None:
    plain = make_policy("inferline", *inputs, slo_s=0.15)
    opted = make_policy("inferline+opt-in", *inputs, slo_s=0.15)
    assert isinstance(plain, InferLineTuner) and isinstance(opted, InferLineTuner)
    assert plain.config.slo_s == opted.config.slo_s == 0.15
    assert not plain.config.anticipate_growth and not plain.config.floor_at_plan
    assert opted.config.anticipate_growth and opted.config.floor_at_plan
    assert dataclasses.replace(opted.config, anticipate_growth=False, floor_at_plan=False) == (
        plain.config
    )


def test_options_reach_the_policy(inputs: Any) -> None:
    tuner = make_policy(
        "inferline", *inputs, options=policy_options("inferline", scale_down_holdoff_s=3.0)
    )
    assert isinstance(tuner, InferLineTuner) and tuner.config.scale_down_holdoff_s == 3.0
    assert tuner.config.slo_s is None  # no SLO given: the queued-work rule is off
    cg = make_policy("cg-autoscale", *inputs, options=CoarseGrainedOptions(wait_s=7.0))
    assert isinstance(cg, CoarseGrainedAutoscaler) and cg.wait_s == 7.0
    queue = make_policy("queue-length", *inputs, options=QueueLengthOptions(target_batches=3.0))
    assert isinstance(queue, QueueLengthPolicy)
    plan = inputs[2]
    assert queue.target_ongoing_requests == {
        n: 3.0 * plan.stages[n].batch_size for n in queue.stages
    }


def test_an_unknown_name_lists_the_valid_ones(inputs: Any) -> None:
    for call in (
        lambda: make_policy("magic", *inputs),
        lambda: policy_options("magic"),
        lambda: policy_for_bundle("magic", BUNDLE, PLAN, planning_rate=5.0),
    ):
        with pytest.raises(ConfigError) as err:
            call()
        assert err.value.field == "policy"
        assert all(name in str(err.value) for name in NAMES), err.value


def test_an_unknown_option_names_the_field_and_the_policy_options() -> None:
    with pytest.raises(ConfigError) as err:
        policy_options("queue-length", scale_down_holdoff_s=3.0)
    assert err.value.field == "scale_down_holdoff_s"
    assert "'queue-length'" in str(err.value) and "upscale_delay_s" in str(err.value)
    with pytest.raises(ConfigError, match=r"no option 'x'.*none"):
        policy_options("none", x=1)


def test_options_of_another_policy_are_refused(inputs: Any) -> None:
    with pytest.raises(ConfigError) as err:
        make_policy("inferline", *inputs, options=NoTunerOptions())
    assert err.value.field == "options" and "InferLineOptions" in str(err.value)


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: InferLineOptions(scale_down_holdoff_s=-1.0), "scale_down_holdoff_s"),
        (lambda: InferLineOptions(lookback_s=-1.0), "lookback_s"),
        (lambda: InferLineOptions(activation_s=-0.5), "activation_s"),
        (lambda: InferLineOptions(bucket_s=0.0), "bucket_s"),
        (lambda: InferLineOptions(queue_budget=1.5), "queue_budget"),
        (lambda: CoarseGrainedOptions(measure_s=0.0), "measure_s"),
        (lambda: CoarseGrainedOptions(wait_s=-1.0), "wait_s"),
        (lambda: QueueLengthOptions(upscale_delay_s=-1.0), "upscale_delay_s"),
        (lambda: QueueLengthOptions(downscale_delay_s=-1.0), "downscale_delay_s"),
        (lambda: QueueLengthOptions(min_replicas=0), "min_replicas"),
        (lambda: QueueLengthOptions(target_batches=0.0), "target_batches"),
        (lambda: policy_options("inferline", lookback_s=-2.0), "lookback_s"),
        (lambda: EngineOptions(slo_s=0.0), "slo_s"),
        (lambda: EngineOptions(max_queue=0), "max_queue"),
        (lambda: EngineOptions(max_in_flight=0), "max_in_flight"),
        (lambda: EngineOptions(retries=-1), "retries"),
        (lambda: EngineOptions(start_timeout_s=0.0), "start_timeout_s"),
        (lambda: EngineOptions(drain_timeout_s=-1.0), "drain_timeout_s"),
        (lambda: RayBackendOptions(placement="random"), "placement"),  # type: ignore[arg-type]
        (lambda: RayBackendOptions(num_cpus=0), "num_cpus"),
        (lambda: RayBackendOptions(address="h:1", num_cpus=2), "num_cpus"),
        (lambda: RayBackendOptions(connect_timeout_s=0.0), "connect_timeout_s"),
        (lambda: RayBackendOptions(resource_wait_s=-1.0), "resource_wait_s"),
    ],
)
def test_option_objects_raise_config_error_naming_the_field(make: Any, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        make()
    assert err.value.field == field
    assert f"field '{field}'" in str(err.value)


def test_the_planning_workload_is_one_trace_or_one_rate() -> None:
    trace = gamma_trace(5.0, 1.0, 10.0, seed=0)
    assert planning_workload(trace) is trace
    assert planning_workload(rate_qps=5.0).duration_s > 200
    for kwargs, field in (
        ({}, "planning_trace"),
        ({"trace": trace, "rate_qps": 5.0}, "planning_rate"),
        ({"rate_qps": 0.0}, "planning_rate"),
    ):
        with pytest.raises(ConfigError) as err:
            planning_workload(**kwargs)
        assert err.value.field == field


def test_policy_for_bundle_reads_the_bundle_and_needs_its_profiles(tmp_path: Path) -> None:
    tuner = policy_for_bundle("inferline", BUNDLE, PLAN, planning_rate=100.0, slo_s=0.2)
    assert isinstance(tuner, InferLineTuner) and tuner.config.slo_s == 0.2
    (tmp_path / "pipeline.yaml").write_text((BUNDLE / "pipeline.yaml").read_text())
    with pytest.raises(ConfigError, match=r"hardware\.yaml and profiles\.yaml are missing"):
        policy_for_bundle("inferline", tmp_path, PLAN, planning_rate=100.0)


def test_tune_simulate_runs_a_named_policy_as_the_simulator_does(inputs: Any) -> None:
    pipeline, profiles, plan, _ = inputs
    trace = gamma_trace(150.0, 1.0, 20.0, seed=3)
    named = tune_simulate(pipeline, profiles, plan, trace, 0.15, policy="none", seed=2)
    direct = simulate_tuned(pipeline, profiles, plan, trace, 0.15, NoTuner(), seed=2)
    assert named.summary() == direct.summary()
    with pytest.raises(ConfigError) as err:
        tune_simulate(
            pipeline, profiles, plan, trace, 0.15, policy=NoTuner(), options=NoTunerOptions()
        )
    assert err.value.field == "options"
