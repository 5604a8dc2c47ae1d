"""What a replica's hardware name means on this machine: CPU threads and device.

``serve`` reads only pipeline.yaml and the plan (no catalogue), so the name decides:
``cpu-N`` and ``...-Nvcpu`` give N threads, c5 sizes their vCPUs, GPU names one
thread and ``cuda``; anything else one thread. Threads are capped at the cores here.

Kept free of heavy imports: replica processes load it (through the engine's launcher).
Public as :func:`inferline.profiles.resources_for`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

__all__ = ["ReplicaResources", "resources_for"]

_CPU_N = re.compile(r"(?:^|[-_.])(?:cpu|vcpu)[-_]?(\d+)$|(\d+)[-_]?v?cpu$", re.IGNORECASE)
_C5_SIZES = {"large": 2, "xlarge": 4, "2xlarge": 8, "4xlarge": 16, "9xlarge": 36}
_GPU = re.compile(r"gpu|cuda|^(k80|m60|v100|t4|a10g?|a100|h100|h200|l4|l40s?)", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class ReplicaResources:
    """What one replica occupies: CPU threads and the device it runs on."""

    threads: int
    device: str


def resources_for(hardware: str, cores: int | None = None) -> ReplicaResources:
    """Threads and device for one replica on ``hardware`` (see the module docstring);
    threads are capped at ``cores`` (default: this machine's)."""
    cores = cores or os.cpu_count() or 1
    if _GPU.search(hardware):
        return ReplicaResources(1, "cuda")
    threads = 1
    match = _CPU_N.search(hardware)
    if match:
        threads = int(match.group(1) or match.group(2))
    elif hardware.lower().startswith("c5.") and hardware[3:].lower() in _C5_SIZES:
        threads = _C5_SIZES[hardware[3:].lower()]
    return ReplicaResources(max(1, min(threads, cores)), "cpu")
