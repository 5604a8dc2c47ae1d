"""The Estimator: a fast discrete-event simulator with one central batched queue per stage."""

from inferline.estimator._simulate import (
    Estimator,
    QueuePolicy,
    ServiceTime,
    SimulationResult,
    StageStats,
    simulate,
)

__all__ = [
    "Estimator",
    "QueuePolicy",
    "ServiceTime",
    "SimulationResult",
    "StageStats",
    "simulate",
]
