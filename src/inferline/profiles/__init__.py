"""Hardware catalogue, prices and per-stage batch latency profiles."""

from inferline.profiles._io import load_hardware, load_profiles, profiles_to_mapping
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
    "BatchProfile",
    "EngineOverhead",
    "HardwareCatalogue",
    "HardwareType",
    "LatencyStat",
    "ProfilePoint",
    "Profiles",
    "load_hardware",
    "load_profiles",
    "profiles_to_mapping",
]
