"""Errors of the Ray backend (a branch of the engine's errors, :mod:`inferline.errors`).

::

    EngineError
    └── RayBackendError                the Ray backend cannot start or run as asked (exit 1)
        ├── RayNotInstalledError       ``ray`` is not importable (exit 2)
        ├── ClusterUnreachableError    nothing answers as a Ray cluster at the address (exit 2)
        └── InsufficientResourcesError the cluster lacks what the plan asks for (exit 2)
"""

from __future__ import annotations

from inferline.engine import EngineError

__all__ = [
    "ClusterUnreachableError",
    "InsufficientResourcesError",
    "RayBackendError",
    "RayNotInstalledError",
]


class RayBackendError(EngineError):
    """The Ray backend cannot start, or cannot carry out an action on the cluster."""


class RayNotInstalledError(RayBackendError):
    """``ray`` is missing: install the ``ray`` extra."""

    exit_code = 2


class ClusterUnreachableError(RayBackendError):
    """Nothing answers as a Ray cluster at the given address (a user mistake: exit 2)."""

    exit_code = 2

    def __init__(self, address: str, problem: str) -> None:
        self.address = address
        self.problem = problem
        super().__init__(f"cannot reach the Ray cluster at {address}: {problem}")


class InsufficientResourcesError(RayBackendError):
    """The cluster lacks a resource the plan asks for; raised before anything is deployed.

    ``stage`` is the first stage that does not fit, ``resource`` the Ray resource it
    lacks (``CPU``, ``GPU``, ``accelerator_type:V100``, ...), ``needed`` and
    ``available`` the amounts compared, ``missing`` their difference.
    """

    exit_code = 2

    def __init__(
        self,
        message: str,
        *,
        stage: str,
        resource: str,
        needed: float,
        available: float,
    ) -> None:
        self.stage = stage
        self.resource = resource
        self.needed = needed
        self.available = available
        self.missing = max(0.0, needed - available)
        super().__init__(message)
