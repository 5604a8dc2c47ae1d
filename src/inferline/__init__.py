"""InferLine: latency-aware provisioning, simulation and serving of ML inference pipelines.

The public API is what ``__all__`` lists; modules whose names start with ``_`` are internal.
"""

from inferline._bundle import Bundle, load_bundle
from inferline.errors import (
    ConfigError,
    InfeasibleError,
    InferLineError,
    PipelineError,
    ProfileError,
    TraceError,
)
from inferline.estimator import Estimator, SimulationResult, StageStats, simulate
from inferline.pipeline import (
    Edge,
    Pipeline,
    PipelineConfig,
    Stage,
    StageConfig,
    load_config,
    load_pipeline,
    save_config,
)
from inferline.profiler import (
    ProfileOptions,
    ProfileReport,
    ProfilerError,
    ValidateOptions,
    ValidationReport,
    profile_bundle,
    validate_bundle,
)
from inferline.profiles import (
    BatchProfile,
    EngineOverhead,
    HardwareCatalogue,
    HardwareType,
    ProfilePoint,
    Profiles,
    load_hardware,
    load_profiles,
)
from inferline.workload import (
    Segment,
    Trace,
    gamma_trace,
    load_timestamp_csv,
    load_trace,
    piecewise_trace,
    ramp_trace,
    rescale_to_mean_rate,
    rescale_to_peak_rate,
    save_trace,
    split_trace,
)

__version__ = "0.1.0"

__all__ = [
    "BatchProfile",
    "Bundle",
    "ConfigError",
    "Edge",
    "EngineOverhead",
    "Estimator",
    "HardwareCatalogue",
    "HardwareType",
    "InfeasibleError",
    "InferLineError",
    "Pipeline",
    "PipelineConfig",
    "PipelineError",
    "ProfileError",
    "ProfileOptions",
    "ProfilePoint",
    "ProfileReport",
    "ProfilerError",
    "Profiles",
    "Segment",
    "SimulationResult",
    "Stage",
    "StageConfig",
    "StageStats",
    "Trace",
    "TraceError",
    "ValidateOptions",
    "ValidationReport",
    "gamma_trace",
    "load_bundle",
    "load_config",
    "load_hardware",
    "load_pipeline",
    "load_profiles",
    "load_timestamp_csv",
    "load_trace",
    "piecewise_trace",
    "profile_bundle",
    "ramp_trace",
    "rescale_to_mean_rate",
    "rescale_to_peak_rate",
    "save_config",
    "save_trace",
    "simulate",
    "split_trace",
    "validate_bundle",
]
