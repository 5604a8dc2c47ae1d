"""Hardware catalogue, prices and per-stage batch latency profiles."""

from inferline.profiles._io import load_hardware, load_profiles
from inferline.profiles._model import (
    BatchProfile,
    HardwareCatalogue,
    HardwareType,
    LatencyStat,
    ProfilePoint,
    Profiles,
)

__all__ = [
    "BatchProfile",
    "HardwareCatalogue",
    "HardwareType",
    "LatencyStat",
    "ProfilePoint",
    "Profiles",
    "load_hardware",
    "load_profiles",
]
