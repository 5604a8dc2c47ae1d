"""The Tuner: per-stage reactive autoscaling with traffic envelopes (SPEC §2.7).

Policies share one pure interface, ``decide(state, observation, now_s) ->
(targets, state)``, so the same code runs in :func:`simulate_tuned` (the Estimator's
time-varying run, :func:`inferline.estimator.simulate_timevarying`) and live.
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
from inferline.tuner._simulate import simulate_tuned

__all__ = [
    "CoarseGrainedAutoscaler",
    "InferLineTuner",
    "NoTuner",
    "Observation",
    "Policy",
    "QueueLengthPolicy",
    "TrafficEnvelope",
    "TunedResult",
    "TunerConfig",
    "TunerState",
    "envelope_windows",
    "pipeline_service_s",
    "planned_envelope",
    "simulate_tuned",
]
