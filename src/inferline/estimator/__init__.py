"""The Estimator: a fast discrete-event simulator with one central batched queue per stage."""

from inferline.estimator._simulate import (
    Estimator,
    QueuePolicy,
    ServiceTime,
    SimulationResult,
    StageStats,
    simulate,
)
from inferline.estimator._timevarying import (
    Observation,
    ReplicaController,
    TunedResult,
    simulate_timevarying,
)

__all__ = [
    "Estimator",
    "Observation",
    "QueuePolicy",
    "ReplicaController",
    "ServiceTime",
    "SimulationResult",
    "StageStats",
    "TunedResult",
    "simulate",
    "simulate_timevarying",
]
