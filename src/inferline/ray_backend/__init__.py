"""Run a planned pipeline on a Ray cluster (SPEC §2.9; docs/ray.md).

``inferline serve BUNDLE --config PLAN --backend ray [--address HOST:PORT]`` keeps the
embedded engine's front-end (OIP V2 HTTP API, one central EDF queue per stage, replicas
pulling batches, the live InferLine Tuner) and makes every replica a Ray actor holding
its stage's resources (``cpu-N`` → N CPUs; a GPU name → one GPU of that type), placed
by Ray anywhere on the cluster. The plan is checked against the cluster's resources
before anything is deployed.

Names load on first use, so importing this package does not import ``ray``. Test support
(a local multi-node cluster) lives in :mod:`inferline.ray_backend.testing`; the benchmark is
``inferline bench ray``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from inferline.ray_backend._errors import (
    ClusterUnreachableError,
    InsufficientResourcesError,
    RayBackendError,
    RayNotInstalledError,
)
from inferline.ray_backend._resources import (
    ClusterResources,
    NodeResources,
    RayReplicaResources,
    check_available_resources,
    check_plan_resources,
    fit_to_capacity,
    plan_demand,
    ray_resources_for,
)

if TYPE_CHECKING:
    from inferline.ray_backend._cluster import RayConnection, connect, import_ray
    from inferline.ray_backend._replica import RayReplica, RayReplicaFactory
    from inferline.ray_backend._serve import RayBackendOptions, RayServing, serve_on_ray

__all__ = [
    "ClusterResources",
    "ClusterUnreachableError",
    "InsufficientResourcesError",
    "NodeResources",
    "RayBackendError",
    "RayBackendOptions",
    "RayConnection",
    "RayNotInstalledError",
    "RayReplica",
    "RayReplicaFactory",
    "RayReplicaResources",
    "RayServing",
    "check_available_resources",
    "check_plan_resources",
    "connect",
    "fit_to_capacity",
    "import_ray",
    "plan_demand",
    "ray_resources_for",
    "serve_on_ray",
]

_LAZY = {
    "RayConnection": "inferline.ray_backend._cluster",
    "connect": "inferline.ray_backend._cluster",
    "import_ray": "inferline.ray_backend._cluster",
    "RayReplica": "inferline.ray_backend._replica",
    "RayReplicaFactory": "inferline.ray_backend._replica",
    "RayBackendOptions": "inferline.ray_backend._serve",
    "RayServing": "inferline.ray_backend._serve",
    "serve_on_ray": "inferline.ray_backend._serve",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'inferline.ray_backend' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
