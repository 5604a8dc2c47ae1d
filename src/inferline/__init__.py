"""InferLine: latency-aware provisioning, simulation and serving of ML inference pipelines.

The public API is what ``__all__`` lists; modules whose names start with ``_`` are internal.
Each command has its function: ``inferline profile`` → :func:`profile_bundle`, ``plan`` →
:func:`plan`, ``simulate`` → :func:`simulate`, ``tune-sim`` → :func:`tune_simulate`,
``serve`` → :func:`serve`, ``replay`` → :func:`replay`, ``validate`` →
:func:`validate_bundle`, ``calibrate`` → :func:`calibrate`. The components' own packages
(``inferline.tuner``, ``inferline.engine``, ...) hold the rest of their public API.
"""

from inferline._api import calibrate, plan, replay
from inferline._bundle import Bundle, load_bundle
from inferline.engine import EngineError, ReplayResult, replay_summary
from inferline.errors import (
    ConfigError,
    InfeasibleError,
    InferLineError,
    MachineInfeasibleError,
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
from inferline.planner import Plan
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
    MachinePool,
    ProfilePoint,
    Profiles,
    load_hardware,
    load_profiles,
    parse_machine,
)
from inferline.serving import ServedPipeline, serve
from inferline.tuner import TunedResult, available_policies, policy_options, tune_simulate
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
    "EngineError",
    "EngineOverhead",
    "Estimator",
    "HardwareCatalogue",
    "HardwareType",
    "InfeasibleError",
    "InferLineError",
    "MachineInfeasibleError",
    "MachinePool",
    "Pipeline",
    "PipelineConfig",
    "PipelineError",
    "Plan",
    "ProfileError",
    "ProfileOptions",
    "ProfilePoint",
    "ProfileReport",
    "ProfilerError",
    "Profiles",
    "ReplayResult",
    "Segment",
    "ServedPipeline",
    "SimulationResult",
    "Stage",
    "StageConfig",
    "StageStats",
    "Trace",
    "TraceError",
    "TunedResult",
    "ValidateOptions",
    "ValidationReport",
    "available_policies",
    "calibrate",
    "gamma_trace",
    "load_bundle",
    "load_config",
    "load_hardware",
    "load_pipeline",
    "load_profiles",
    "load_timestamp_csv",
    "load_trace",
    "parse_machine",
    "piecewise_trace",
    "plan",
    "policy_options",
    "profile_bundle",
    "ramp_trace",
    "replay",
    "replay_summary",
    "rescale_to_mean_rate",
    "rescale_to_peak_rate",
    "save_config",
    "save_trace",
    "serve",
    "simulate",
    "split_trace",
    "tune_simulate",
    "validate_bundle",
]
