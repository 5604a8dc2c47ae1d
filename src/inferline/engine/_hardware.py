"""What a replica's hardware name means here (``resources_for``, defined in
``inferline._hardware_names`` and public as ``inferline.profiles.resources_for``), and
the environment that caps a replica's numeric libraries at its threads.
"""

from __future__ import annotations

from inferline._hardware_names import ReplicaResources, resources_for

#: Niceness local replicas run at by default, added to the front-end's (docs/engine.md).
REPLICA_NICE = 5

__all__ = ["ReplicaResources", "resources_for", "thread_environment"]


def thread_environment(threads: int) -> dict[str, str]:
    """Environment variables that cap the usual numeric libraries' thread pools."""
    value = str(threads)
    names = (
        "OMP_NUM_THREADS",
        "MKL_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "NUMEXPR_NUM_THREADS",
        "VECLIB_MAXIMUM_THREADS",
        "NUMBA_NUM_THREADS",
        "RAYON_NUM_THREADS",  # Rust libraries, e.g. Hugging Face tokenizers
    )
    return dict.fromkeys(names, value)
