"""Replica policies by name: one registry for ``tune-sim``, ``serve --tune`` and the benchmarks.

Each name maps to a factory and a frozen options object (its defaults are the
policy's). :func:`make_policy` builds the policy for a plan and the trace it was made
for; :func:`policy_options` starts from a name's defaults and changes fields; an
unknown name or field raises :class:`~inferline.errors.ConfigError` naming the valid ones.

========================  ===================================================================
``none``                  the plan stays fixed (:class:`NoTuner`)
``inferline``             the paper's Tuner, SPEC §2.7 (:class:`InferLineTuner`)
``inferline+opt-in``      the same with its opt-in departures switched on (docs/tuner.md)
``cg-autoscale``          AutoScale-style whole-pipeline scaling (:class:`CoarseGrainedAutoscaler`)
``queue-length``          Ray Serve-style ongoing requests per replica (:class:`QueueLengthPolicy`)
``simulate``              the cheapest replica change the Estimator says keeps the SLO
                          (:class:`SimulatingTuner`)
========================  ===================================================================

:data:`DEFAULT_POLICY` is what ``tune-sim`` and ``serve --tune`` run without ``--policy``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inferline._bundle import check_config_for, load_bundle, load_plan_for, read_bundle_files
from inferline.errors import ConfigError
from inferline.pipeline import Pipeline, PipelineConfig
from inferline.profiles import MachinePool, Profiles
from inferline.tuner._policy import (
    CoarseGrainedAutoscaler,
    InferLineTuner,
    NoTuner,
    Policy,
    QueueLengthPolicy,
    TunerConfig,
    default_replica_limits,
)
from inferline.tuner._simulating import SimulatingTuner
from inferline.workload import Trace, gamma_trace, load_trace

__all__ = [
    "DEFAULT_POLICY",
    "PLANNING_RATE_DURATION_S",
    "CoarseGrainedOptions",
    "InferLineOptions",
    "NoTunerOptions",
    "PolicyOptions",
    "PolicySpec",
    "QueueLengthOptions",
    "SimulateOptions",
    "available_policies",
    "make_policy",
    "planning_workload",
    "policy_for_bundle",
    "policy_options",
    "policy_spec",
]

#: Length of the Poisson planning trace that a planning rate stands for (seed 0).
PLANNING_RATE_DURATION_S = 300.0


def _at_least(value: float, low: float, name: str, *, strict: bool = False) -> None:
    if not (value > low if strict else value >= low):
        raise ConfigError(f"must be {'>' if strict else '≥'} {low:g}, got {value!r}", field=name)


@dataclass(frozen=True)
class NoTunerOptions:
    """The fixed plan has no options."""


@dataclass(frozen=True)
class InferLineOptions:
    """The InferLine Tuner's timing constants and rules (seconds; see :class:`TunerConfig`).

    The SLO is not an option: it is the run's (``slo_s`` of :func:`make_policy`).
    """

    activation_s: float = 5.0
    scale_down_holdoff_s: float = 15.0
    lookback_s: float = 30.0
    bucket_s: float = 5.0
    queue_budget: float = 0.5
    anticipate_growth: bool = False
    floor_at_plan: bool = False

    def __post_init__(self) -> None:
        _at_least(self.activation_s, 0.0, "activation_s")
        _at_least(self.scale_down_holdoff_s, 0.0, "scale_down_holdoff_s")
        _at_least(self.lookback_s, 0.0, "lookback_s")
        _at_least(self.bucket_s, 0.0, "bucket_s", strict=True)
        if not 0 < self.queue_budget <= 1:
            raise ConfigError(
                f"a fraction of the SLO in (0, 1] is needed, got {self.queue_budget!r}",
                field="queue_budget",
            )


@dataclass(frozen=True)
class CoarseGrainedOptions:
    """Load window and scale-down wait of the coarse-grained autoscaler (seconds)."""

    measure_s: float = 10.0
    wait_s: float = 60.0

    def __post_init__(self) -> None:
        _at_least(self.measure_s, 0.0, "measure_s", strict=True)
        _at_least(self.wait_s, 0.0, "wait_s")


@dataclass(frozen=True)
class QueueLengthOptions:
    """Delays before a change (seconds), the floor, and the target ongoing requests per
    replica in planned batches (Ray Serve's default target is 2)."""

    upscale_delay_s: float = 5.0
    downscale_delay_s: float = 60.0
    min_replicas: int = 1
    target_batches: float = 2.0

    def __post_init__(self) -> None:
        _at_least(self.upscale_delay_s, 0.0, "upscale_delay_s")
        _at_least(self.downscale_delay_s, 0.0, "downscale_delay_s")
        _at_least(self.min_replicas, 1, "min_replicas")
        _at_least(self.target_batches, 0.0, "target_batches", strict=True)


@dataclass(frozen=True)
class SimulateOptions:
    """The simulating Tuner's margins (fractions of the SLO) and windows (seconds); see
    :class:`SimulatingTuner`. Defaults measured with ``inferline bench tuner --seeds 8``
    (benchmarks/results/tuner-simulate.md)."""

    margin: float = 0.0
    scale_down_margin: float = 0.2
    lookback_s: float = 30.0
    bucket_s: float = 5.0
    scale_down_holdoff_s: float = 15.0
    activation_s: float = 5.0
    anticipate_growth: bool = True
    min_gain: float = 0.01
    floor_at_plan: bool = True
    rate_headroom: float = 0.2
    max_utilisation: float = 0.85

    def __post_init__(self) -> None:
        if not 0 <= self.margin < 1:
            raise ConfigError(
                f"a fraction in [0, 1) is needed, got {self.margin!r}", field="margin"
            )
        if not self.margin <= self.scale_down_margin < 1:
            raise ConfigError(
                f"must be in [margin ({self.margin:g}), 1), got {self.scale_down_margin!r}",
                field="scale_down_margin",
            )
        _at_least(self.bucket_s, 0.0, "bucket_s", strict=True)
        _at_least(self.lookback_s, self.bucket_s, "lookback_s")
        _at_least(self.scale_down_holdoff_s, 0.0, "scale_down_holdoff_s")
        _at_least(self.activation_s, 0.0, "activation_s")
        _at_least(self.min_gain, 0.0, "min_gain")
        _at_least(self.rate_headroom, 0.0, "rate_headroom")
        if not 0 < self.max_utilisation <= 1:
            raise ConfigError(
                f"a fraction in (0, 1] is needed, got {self.max_utilisation!r}",
                field="max_utilisation",
            )


PolicyOptions = (
    NoTunerOptions | InferLineOptions | CoarseGrainedOptions | QueueLengthOptions | SimulateOptions
)
Factory = Callable[
    [str, Any, Pipeline, Profiles, PipelineConfig, Trace, "float | None", "MachinePool | None"],
    Policy,
]


@dataclass(frozen=True)
class PolicySpec:
    """One registered policy: its name, what it is, its default options and its factory
    ``(name, options, pipeline, profiles, plan, planning_trace, slo_s, machine) -> Policy``."""

    name: str
    description: str
    defaults: PolicyOptions
    factory: Factory


def _none(name: str, options: NoTunerOptions, *_: Any) -> Policy:
    return NoTuner(name=name)


def _inferline(
    name: str,
    options: InferLineOptions,
    pipeline: Pipeline,
    profiles: Profiles,
    plan: PipelineConfig,
    planning_trace: Trace,
    slo_s: float | None,
    machine: MachinePool | None = None,
) -> Policy:
    fields = dataclasses.asdict(options)
    config = TunerConfig.from_plan(pipeline, profiles, plan, planning_trace, slo_s=slo_s, **fields)
    return InferLineTuner(config, name=name)


def _coarse(
    name: str,
    options: CoarseGrainedOptions,
    pipeline: Pipeline,
    profiles: Profiles,
    plan: PipelineConfig,
    planning_trace: Trace,
    slo_s: float | None,
    machine: MachinePool | None = None,
) -> Policy:
    base = CoarseGrainedAutoscaler.from_plan(pipeline, profiles, plan, planning_trace)
    return dataclasses.replace(base, name=name, **dataclasses.asdict(options))


def _queue_length(
    name: str,
    options: QueueLengthOptions,
    pipeline: Pipeline,
    profiles: Profiles,
    plan: PipelineConfig,
    planning_trace: Trace,
    slo_s: float | None,
    machine: MachinePool | None = None,
) -> Policy:
    base = QueueLengthPolicy.from_plan(pipeline, profiles, plan)
    return dataclasses.replace(
        base,
        name=name,
        target_ongoing_requests={
            n: options.target_batches * plan.stages[n].batch_size for n in base.stages
        },
        upscale_delay_s=options.upscale_delay_s,
        downscale_delay_s=options.downscale_delay_s,
        min_replicas=options.min_replicas,
    )


def _simulate(
    name: str,
    options: SimulateOptions,
    pipeline: Pipeline,
    profiles: Profiles,
    plan: PipelineConfig,
    planning_trace: Trace,
    slo_s: float | None,
    machine: MachinePool | None = None,
) -> Policy:
    if slo_s is None:
        raise ConfigError(
            "the simulate policy estimates the P99 against the SLO; give the SLO (--slo-s)",
            field="slo_s",
        )
    return SimulatingTuner(
        pipeline,
        profiles,
        plan,
        slo_s,
        max_replicas=default_replica_limits(profiles, plan),
        machine=machine,
        name=name,
        **dataclasses.asdict(options),
    )


_REGISTRY: dict[str, PolicySpec] = {
    spec.name: spec
    for spec in (
        PolicySpec("none", "the plan stays fixed", NoTunerOptions(), _none),
        PolicySpec(
            "inferline",
            "the InferLine Tuner (SPEC §2.7): envelope-triggered scale-up, cautious scale-down",
            InferLineOptions(),
            _inferline,
        ),
        PolicySpec(
            "inferline+opt-in",
            "the InferLine Tuner with its opt-in rules: anticipate growth, never below the plan",
            InferLineOptions(anticipate_growth=True, floor_at_plan=True),
            _inferline,
        ),
        PolicySpec(
            "cg-autoscale",
            "coarse-grained AutoScale-style scaling of whole-pipeline units",
            CoarseGrainedOptions(),
            _coarse,
        ),
        PolicySpec(
            "queue-length",
            "Ray Serve-style target ongoing requests per replica, per stage",
            QueueLengthOptions(),
            _queue_length,
        ),
        PolicySpec(
            "simulate",
            "simulates candidate replica counts on the recent and forecast arrivals; the "
            "cheapest change whose estimated P99 keeps the SLO and fits the machine",
            SimulateOptions(),
            _simulate,
        ),
    )
}

#: What ``tune-sim``, ``serve --tune`` and :func:`tune_simulate` run without a policy name
#: (SPEC §2.7: the configuration that keeps misses ≤ 1 % in every ``bench tuner`` scenario
#: over 8 seeds at less than the coarse-grained autoscaler's cost).
DEFAULT_POLICY = "simulate"


def available_policies() -> tuple[str, ...]:
    """The registered policy names, in registration order."""
    return tuple(_REGISTRY)


def policy_spec(name: str) -> PolicySpec:
    """The registered policy ``name`` (ConfigError listing the valid names if unknown)."""
    spec = _REGISTRY.get(name)
    if spec is None:
        raise ConfigError(
            f"unknown policy {name!r}; choose one of {', '.join(_REGISTRY)}", field="policy"
        )
    return spec


def policy_options(name: str, **fields: Any) -> PolicyOptions:
    """Policy ``name``'s default options with ``fields`` changed (ConfigError naming a field
    the policy does not have, or a value it rejects)."""
    defaults = policy_spec(name).defaults
    known = [f.name for f in dataclasses.fields(defaults)]
    for key in fields:
        if key not in known:
            raise ConfigError(
                f"policy {name!r} has no option {key!r}; "
                f"its options: {', '.join(known) if known else 'none'}",
                field=key,
            )
    return dataclasses.replace(defaults, **fields)


def make_policy(
    name: str,
    pipeline: Pipeline,
    profiles: Profiles,
    plan: PipelineConfig,
    planning_trace: Trace,
    *,
    slo_s: float | None = None,
    options: PolicyOptions | None = None,
    machine: MachinePool | None = None,
) -> Policy:
    """Build policy ``name`` for ``plan``, made on ``planning_trace`` (its rate and envelope
    are the policy's baseline). ``slo_s`` feeds the InferLine Tuner's queued-work rule (the
    ``simulate`` policy needs it); ``options`` default to the name's (:func:`policy_options`);
    ``machine``: the pool the ``simulate`` policy keeps its decisions within."""
    spec = policy_spec(name)
    if options is None:
        options = spec.defaults
    elif type(options) is not type(spec.defaults):
        raise ConfigError(
            f"policy {name!r} takes {type(spec.defaults).__name__}, got {type(options).__name__}",
            field="options",
        )
    if slo_s is not None and not slo_s > 0:
        raise ConfigError(f"the SLO must be positive seconds, got {slo_s}", field="slo_s")
    return spec.factory(name, options, pipeline, profiles, plan, planning_trace, slo_s, machine)


def planning_workload(
    trace: Trace | str | Path | None = None, rate_qps: float | None = None
) -> Trace:
    """The workload a plan was made for: a trace (or its file), or a Poisson workload at
    ``rate_qps`` (:data:`PLANNING_RATE_DURATION_S` seconds, seed 0). Exactly one is given."""
    if trace is None and rate_qps is None:
        raise ConfigError(
            "a tuner needs the workload the plan was made for: a planning trace or rate",
            field="planning_trace",
        )
    if trace is not None and rate_qps is not None:
        raise ConfigError(
            "give a planning trace or a planning rate, not both", field="planning_rate"
        )
    if trace is not None:
        return trace if isinstance(trace, Trace) else load_trace(trace)
    assert rate_qps is not None
    if not rate_qps > 0:
        raise ConfigError(f"must be positive, got {rate_qps}", field="planning_rate")
    return gamma_trace(rate_qps, 1.0, PLANNING_RATE_DURATION_S, seed=0)


def policy_for_bundle(
    name: str,
    bundle: str | Path,
    plan: str | Path | PipelineConfig,
    *,
    planning_trace: Trace | str | Path | None = None,
    planning_rate: float | None = None,
    slo_s: float | None = None,
    options: PolicyOptions | None = None,
    machine: MachinePool | None = None,
) -> Policy:
    """:func:`make_policy` for a bundle folder (or its pipeline.yaml) and a plan (or its file),
    as ``inferline serve --tune`` runs it: the bundle must hold its hardware and profiles."""
    policy_spec(name)
    files = read_bundle_files(bundle)
    missing = [p.name for p in (files.hardware_file, files.profiles_file) if not p.exists()]
    if missing:
        raise ConfigError(
            f"a tuner needs the bundle's profiles, but {' and '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} missing from {files.root} "
            "(their format: docs/bundles.md)",
            source=bundle,
        )
    trace = planning_workload(planning_trace, planning_rate)
    loaded = load_bundle(bundle)
    if isinstance(plan, PipelineConfig):
        config = plan
        check_config_for(config, loaded.pipeline, loaded.profiles, "<plan>")
    else:
        config = load_plan_for(plan, loaded)
    return make_policy(
        name,
        loaded.pipeline,
        loaded.profiles,
        config,
        trace,
        slo_s=slo_s,
        options=options,
        machine=machine,
    )
