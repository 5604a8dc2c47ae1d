"""The Planner: the cheapest per-stage configuration that meets an end-to-end P99 SLO.

:func:`plan_inferline` is the paper's greedy Initialize + MinimizeCost search
(SPEC §2.6); :func:`plan_cg_mean` and :func:`plan_cg_peak` are the
coarse-grained baselines, :func:`plan_exhaustive` the optimum for small
pipelines and :func:`lower_bound_cost` a latency-blind cost floor. All planners
judge a configuration with the same Estimator on the same planning trace.
Each takes an optional ``machine`` (a ``profiles.MachinePool``) to plan for.
:func:`with_batch_headroom` raises a plan's batch sizes at no cost for the Tuner.
"""

from inferline.planner._baselines import lower_bound_cost, plan_cg_mean, plan_cg_peak
from inferline.planner._bias import MAX_TAIL_BIAS, biased_margin, tail_bias
from inferline.planner._exhaustive import plan_exhaustive
from inferline.planner._inferline import plan_inferline, with_batch_headroom
from inferline.planner._registry import PLANNERS, Planner, plan
from inferline.planner._result import MachineUse, Plan

__all__ = [
    "MAX_TAIL_BIAS",
    "PLANNERS",
    "MachineUse",
    "Plan",
    "Planner",
    "biased_margin",
    "lower_bound_cost",
    "plan",
    "plan_cg_mean",
    "plan_cg_peak",
    "plan_exhaustive",
    "plan_inferline",
    "tail_bias",
    "with_batch_headroom",
]
