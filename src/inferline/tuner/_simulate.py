"""Simulating a Tuner policy: the Estimator's time-varying run with the policy's limits."""

from __future__ import annotations

from inferline._bundle import check_config_for
from inferline.estimator import QueuePolicy, TunedResult, simulate_timevarying
from inferline.pipeline import Pipeline, PipelineConfig
from inferline.profiles import Profiles
from inferline.tuner._policy import Policy, default_replica_limits
from inferline.workload import Trace

__all__ = ["TunedResult", "simulate_tuned"]


def simulate_tuned(
    pipeline: Pipeline,
    profiles: Profiles,
    plan_config: PipelineConfig,
    trace: Trace,
    slo_s: float,
    policy: Policy,
    *,
    activation_s: float = 5.0,
    tick_s: float = 1.0,
    seed: int = 0,
    queue_policy: QueuePolicy = "edf",
) -> TunedResult:
    """Simulate ``trace`` starting from ``plan_config`` with ``policy`` deciding every tick.

    See :func:`inferline.estimator.simulate_timevarying`; replica slots are sized
    for the default per-stage limits (the hardware's unit count, else 16 × planned + 16).
    """
    check_config_for(plan_config, pipeline, profiles, "<plan>")  # before reading its hardware
    return simulate_timevarying(
        pipeline,
        profiles,
        plan_config,
        trace,
        slo_s,
        policy,
        max_replicas=default_replica_limits(profiles, plan_config),
        activation_s=activation_s,
        tick_s=tick_s,
        seed=seed,
        queue_policy=queue_policy,
    )
