"""Hardware catalogue, prices, per-stage batch latency profiles, and the machine as a pool."""

from inferline.profiles._io import load_hardware, load_profiles, profiles_to_mapping
from inferline.profiles._machine import (
    FRONTEND_MEMORY_BYTES,
    FRONTEND_RESERVE_CORES,
    MAX_BATCH_SIZE,
    MAX_THREADS_PER_CORE,
    REPLICA_MEMORY_BYTES,
    MachinePool,
    ReplicaResources,
    check_plan_fits,
    fit_plan,
    machine_pool_for_host,
    resources_for,
)
from inferline.profiles._model import (
    BatchProfile,
    EngineOverhead,
    HardwareCatalogue,
    HardwareType,
    LatencyStat,
    ProfilePoint,
    Profiles,
)

__all__ = [
    "FRONTEND_MEMORY_BYTES",
    "FRONTEND_RESERVE_CORES",
    "MAX_BATCH_SIZE",
    "MAX_THREADS_PER_CORE",
    "REPLICA_MEMORY_BYTES",
    "BatchProfile",
    "EngineOverhead",
    "HardwareCatalogue",
    "HardwareType",
    "LatencyStat",
    "MachinePool",
    "ProfilePoint",
    "Profiles",
    "ReplicaResources",
    "check_plan_fits",
    "fit_plan",
    "load_hardware",
    "load_profiles",
    "machine_pool_for_host",
    "profiles_to_mapping",
    "resources_for",
]
