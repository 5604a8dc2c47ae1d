"""A plan under a named replica policy over a trace: what ``inferline tune-sim`` runs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from inferline.errors import ConfigError
from inferline.pipeline import Pipeline, PipelineConfig
from inferline.profiles import Profiles
from inferline.tuner._policy import Policy
from inferline.tuner._registry import DEFAULT_POLICY, PolicyOptions, make_policy
from inferline.tuner._simulate import simulate_tuned
from inferline.workload import Trace, split_trace

if TYPE_CHECKING:
    from inferline.estimator import TunedResult

__all__ = ["tune_simulate"]


def tune_simulate(
    pipeline: Pipeline,
    profiles: Profiles,
    plan: PipelineConfig,
    trace: Trace,
    slo_s: float,
    *,
    policy: str | Policy = DEFAULT_POLICY,
    options: PolicyOptions | None = None,
    planning_trace: Trace | None = None,
    activation_s: float = 5.0,
    tick_s: float = 1.0,
    seed: int = 0,
) -> TunedResult:
    """Simulate ``trace`` from ``plan`` with the replica policy ``policy`` (a registered name,
    see :func:`available_policies`, or a policy object) deciding every ``tick_s`` seconds.

    ``planning_trace`` is the trace the plan was made for (the policy's baseline rate and
    envelope); default: the first 25 % of ``trace``. ``activation_s``: the delay before an
    added replica serves.
    """
    if isinstance(policy, str):
        planning = planning_trace if planning_trace is not None else split_trace(trace, 0.25)[0]
        chosen = make_policy(
            policy, pipeline, profiles, plan, planning, slo_s=slo_s, options=options
        )
    elif options is not None:
        raise ConfigError("options go with a policy name, not a policy object", field="options")
    else:
        chosen = policy
    return simulate_tuned(
        pipeline,
        profiles,
        plan,
        trace,
        slo_s,
        chosen,
        activation_s=activation_s,
        tick_s=tick_s,
        seed=seed,
    )
