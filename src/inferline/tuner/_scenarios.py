"""The replica policies by their command-line names (``tune-sim``, ``serve --tune``, the
tuner benchmark in :mod:`inferline.bench.tuner`)."""

from __future__ import annotations

from inferline.errors import ConfigError
from inferline.pipeline import Pipeline, PipelineConfig
from inferline.profiles import Profiles
from inferline.tuner._policy import (
    CoarseGrainedAutoscaler,
    InferLineTuner,
    NoTuner,
    Policy,
    QueueLengthPolicy,
    TunerConfig,
)
from inferline.workload import Trace

__all__ = ["OPT_IN_POLICY", "make_policy"]

OPT_IN_POLICY = "inferline+opt-in"


def make_policy(
    name: str,
    pipeline: Pipeline,
    profiles: Profiles,
    config: PipelineConfig,
    planning_trace: Trace,
    slo_s: float | None = None,
) -> Policy:
    """Build a policy by its command-line name for ``config`` planned on ``planning_trace``.

    ``slo_s`` is handed to the InferLine tuner (its queued-work rule needs it);
    ``inferline+opt-in`` also switches on its opt-in departures from SPEC §2.7.
    """
    if name == "none":
        return NoTuner()
    if name in ("inferline", OPT_IN_POLICY):
        opt_in = name == OPT_IN_POLICY
        tuner_config = TunerConfig.from_plan(
            pipeline, profiles, config, planning_trace,
            slo_s=slo_s, anticipate_growth=opt_in, floor_at_plan=opt_in,
        )  # fmt: skip
        return InferLineTuner(tuner_config, name=name)
    if name in ("cg-autoscale", "il+cg-autoscale"):
        return CoarseGrainedAutoscaler.from_plan(pipeline, profiles, config, planning_trace)
    if name == "queue-length":
        return QueueLengthPolicy.from_plan(pipeline, profiles, config)
    raise ConfigError(
        f"unknown policy {name!r}; choose one of none, inferline, {OPT_IN_POLICY}, "
        "cg-autoscale, queue-length",
        field="policy",
    )
