"""The Tuner: per-stage reactive autoscaling with traffic envelopes (SPEC §2.7).

Policies share one pure interface, ``decide(state, observation, now_s) ->
(targets, state)``, so the same code runs in :func:`simulate_tuned` (the Estimator's
time-varying run, :func:`inferline.estimator.simulate_timevarying`) and live.
Policies are chosen by name from one registry (:func:`available_policies`,
:func:`make_policy`, each with a frozen options object).
"""

from inferline.estimator import Observation, TunedResult
from inferline.tuner._envelope import TrafficEnvelope, envelope_windows, planned_envelope
from inferline.tuner._policy import (
    CoarseGrainedAutoscaler,
    InferLineTuner,
    NoTuner,
    Policy,
    QueueLengthPolicy,
    TunerConfig,
    TunerState,
    pipeline_service_s,
)
from inferline.tuner._registry import (
    DEFAULT_POLICY,
    PLANNING_RATE_DURATION_S,
    CoarseGrainedOptions,
    InferLineOptions,
    NoTunerOptions,
    PolicyOptions,
    PolicySpec,
    QueueLengthOptions,
    SimulateOptions,
    available_policies,
    make_policy,
    planning_workload,
    policy_for_bundle,
    policy_options,
    policy_spec,
)
from inferline.tuner._simulate import simulate_tuned
from inferline.tuner._simulating import Forecast, SimulateState, SimulatingTuner
from inferline.tuner._tune_sim import tune_simulate

__all__ = [
    "DEFAULT_POLICY",
    "PLANNING_RATE_DURATION_S",
    "CoarseGrainedAutoscaler",
    "CoarseGrainedOptions",
    "Forecast",
    "InferLineOptions",
    "InferLineTuner",
    "NoTuner",
    "NoTunerOptions",
    "Observation",
    "Policy",
    "PolicyOptions",
    "PolicySpec",
    "QueueLengthOptions",
    "QueueLengthPolicy",
    "SimulateOptions",
    "SimulateState",
    "SimulatingTuner",
    "TrafficEnvelope",
    "TunedResult",
    "TunerConfig",
    "TunerState",
    "available_policies",
    "envelope_windows",
    "make_policy",
    "pipeline_service_s",
    "planned_envelope",
    "planning_workload",
    "policy_for_bundle",
    "policy_options",
    "policy_spec",
    "simulate_tuned",
    "tune_simulate",
]
