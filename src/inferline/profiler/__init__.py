"""The Profiler and validation: measure real stages, routing and the engine's overhead, and
check the Estimator's predictions against the real engine (SPEC §2.3, §4; docs/profiler.md).

Imported lazily, so that a replica process running the Profiler's no-op relay stage
(``inferline.profiler._relay``) does not load the estimator and planner.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from inferline.profiler._errors import ProfilerError
    from inferline.profiler._inplace import InPlaceOptions, InPlaceReport, profile_in_place
    from inferline.profiler._overhead import OverheadOptions
    from inferline.profiler._probe import DRIFT_WARNING
    from inferline.profiler._profile import (
        NullProgress,
        ProfileOptions,
        ProfileProgress,
        ProfileReport,
        StageProfileReport,
        available_hardware,
        profile_bundle,
    )
    from inferline.profiler._samples import load_samples
    from inferline.profiler._stats import RepetitionPolicy
    from inferline.profiler._validate import (
        DRIFT_LIMIT,
        ValidateOptions,
        ValidationReport,
        ValidationRun,
        attach_samples,
        validate_bundle,
    )

__all__ = [
    "DRIFT_LIMIT",
    "DRIFT_WARNING",
    "InPlaceOptions",
    "InPlaceReport",
    "NullProgress",
    "OverheadOptions",
    "ProfileOptions",
    "ProfileProgress",
    "ProfileReport",
    "ProfilerError",
    "RepetitionPolicy",
    "StageProfileReport",
    "ValidateOptions",
    "ValidationReport",
    "ValidationRun",
    "attach_samples",
    "available_hardware",
    "load_samples",
    "profile_bundle",
    "profile_in_place",
    "validate_bundle",
]

_LAZY = {
    "ProfilerError": "inferline.profiler._errors",
    "InPlaceOptions": "inferline.profiler._inplace",
    "InPlaceReport": "inferline.profiler._inplace",
    "profile_in_place": "inferline.profiler._inplace",
    "OverheadOptions": "inferline.profiler._overhead",
    "NullProgress": "inferline.profiler._profile",
    "ProfileOptions": "inferline.profiler._profile",
    "ProfileProgress": "inferline.profiler._profile",
    "ProfileReport": "inferline.profiler._profile",
    "StageProfileReport": "inferline.profiler._profile",
    "available_hardware": "inferline.profiler._profile",
    "profile_bundle": "inferline.profiler._profile",
    "DRIFT_WARNING": "inferline.profiler._probe",
    "load_samples": "inferline.profiler._samples",
    "RepetitionPolicy": "inferline.profiler._stats",
    "DRIFT_LIMIT": "inferline.profiler._validate",
    "ValidateOptions": "inferline.profiler._validate",
    "ValidationReport": "inferline.profiler._validate",
    "ValidationRun": "inferline.profiler._validate",
    "attach_samples": "inferline.profiler._validate",
    "validate_bundle": "inferline.profiler._validate",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'inferline.profiler' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
