"""The public API is exactly what ``__all__`` lists, every name resolves, and nothing test- or
benchmark-only is exported (``import inferline as il`` matches the command line)."""

from __future__ import annotations

import importlib
import inspect
import warnings
from pathlib import Path

import pytest

import inferline as il

REFERENCE = Path(__file__).resolve().parents[2] / "examples" / "reference"

TOP_LEVEL = {
    # errors
    "ConfigError", "EngineError", "InfeasibleError", "InferLineError", "MachineInfeasibleError",
    "PipelineError", "ProfileError", "ProfilerError", "TraceError",
    # bundle, pipeline, plan files
    "Bundle", "Edge", "Pipeline", "PipelineConfig", "Stage", "StageConfig", "load_bundle",
    "load_config", "load_pipeline", "save_config",
    # profiles and hardware
    "BatchProfile", "EngineOverhead", "HardwareCatalogue", "HardwareType", "ProfilePoint",
    "Profiles", "load_hardware", "load_profiles",
    # the machine planned for
    "MachinePool", "parse_machine",
    # workloads
    "Segment", "Trace", "gamma_trace", "load_timestamp_csv", "load_trace", "piecewise_trace",
    "ramp_trace", "rescale_to_mean_rate", "rescale_to_peak_rate", "save_trace", "split_trace",
    # one function per command: profile, validate, plan, simulate, tune-sim, serve, replay,
    # calibrate
    "ProfileOptions", "ProfileReport", "profile_bundle",
    "ValidateOptions", "ValidationReport", "validate_bundle",
    "Plan", "plan",
    "Estimator", "SimulationResult", "StageStats", "simulate",
    "TunedResult", "available_policies", "policy_options", "tune_simulate",
    "ServedPipeline", "serve",
    "ReplayResult", "replay", "replay_summary",
    "calibrate",
}  # fmt: skip

RAY_BACKEND = {
    "ClusterResources", "ClusterUnreachableError", "InsufficientResourcesError",
    "NodeResources", "RayBackendError", "RayBackendOptions", "RayConnection",
    "RayNotInstalledError", "RayReplica", "RayReplicaFactory", "RayReplicaResources",
    "RayServing", "check_available_resources", "check_plan_resources", "connect",
    "fit_to_capacity", "import_ray", "plan_demand", "ray_resources_for",
    "serve_on_ray",
}  # fmt: skip


def _home(value: object) -> str:
    return str(getattr(value, "__module__", "") or "")


def _check(module: str, expected: set[str]) -> None:
    mod = importlib.import_module(module)
    assert sorted(mod.__all__) == sorted(expected)
    assert len(mod.__all__) == len(set(mod.__all__))
    for name in mod.__all__:
        home = _home(getattr(mod, name))
        assert "testing" not in home and "bench" not in home, (name, home)


def test_the_top_level_all_is_pinned_and_every_name_resolves() -> None:
    _check("inferline", TOP_LEVEL)


def test_the_ray_backend_exports_no_test_or_benchmark_names() -> None:
    pytest.importorskip("ray")
    with warnings.catch_warnings():  # ray's own pydantic deprecation warnings on import
        warnings.simplefilter("ignore", DeprecationWarning)
        _check("inferline.ray_backend", RAY_BACKEND)


def test_the_entry_points_take_what_the_commands_take() -> None:
    """The keyword names of the functions behind the commands (a rename breaks users)."""
    assert list(inspect.signature(il.plan).parameters) == [
        "pipeline", "profiles", "trace", "slo_s",
        "planner", "seed", "margin", "latency_stat", "max_seconds", "machine", "tail_bias",
        "batch_headroom",
    ]  # fmt: skip
    assert list(inspect.signature(il.tune_simulate).parameters) == [
        "pipeline", "profiles", "plan", "trace", "slo_s",
        "policy", "options", "planning_trace", "activation_s", "tick_s", "seed",
    ]  # fmt: skip
    assert list(inspect.signature(il.serve).parameters) == [
        "bundle", "plan", "slo_s", "shed", "max_queue", "drain_timeout_s", "fork_replicas",
        "replica_nice", "tune", "planning_trace", "planning_rate", "holdoff_s", "lookback_s",
        "backend", "address", "num_cpus", "placement", "start_timeout_s", "control_token",
    ]  # fmt: skip
    for method in ("apply", "status", "plan", "stop", "log", "__enter__", "__exit__"):
        assert callable(getattr(il.ServedPipeline, method))


def test_the_planner_is_chosen_by_name_and_checks_its_arguments() -> None:
    bundle = il.load_bundle(REFERENCE / "image-processing")
    trace = il.gamma_trace(100.0, 1.0, 30.0, seed=0)
    cheap = il.plan(bundle.pipeline, bundle.profiles, trace, 0.3, planner="cg-mean")
    assert cheap.planner == "cg-mean" and cheap.feasible
    for kwargs, field in (
        ({"planner": "greedy"}, "planner"),
        ({"margin": 1.5}, "margin"),
        ({"latency_stat": "mean"}, "latency_stat"),
        ({"max_seconds": 0.0}, "max_seconds"),
    ):
        with pytest.raises(il.ConfigError) as err:
            il.plan(bundle.pipeline, bundle.profiles, trace, 0.3, **kwargs)
        assert err.value.field == field
    with pytest.raises(il.ConfigError, match="inferline, cg-mean, cg-peak, exhaustive"):
        il.plan(bundle.pipeline, bundle.profiles, trace, 0.3, planner="greedy")
    with pytest.raises(il.ConfigError) as err:
        il.plan(bundle.pipeline, bundle.profiles, trace, 0.0)
    assert err.value.field == "slo_s"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"slo_s": 0.0}, "slo_s"),
        ({"max_queue": 0}, "max_queue"),
        ({"drain_timeout_s": -1.0}, "drain_timeout_s"),
        ({"tune": "magic", "planning_rate": 5.0}, "policy"),
        ({"tune": "inferline"}, "planning_trace"),
        ({"tune": "inferline", "planning_rate": 5.0, "holdoff_s": -1.0}, "scale_down_holdoff_s"),
        ({"tune": "none", "planning_rate": 5.0, "lookback_s": 5.0}, "lookback_s"),
        ({"backend": "kubernetes"}, "backend"),
        ({"num_cpus": 2}, "backend"),
        ({"backend": "ray", "num_cpus": 0}, "num_cpus"),
        ({"replica_nice": 20}, "replica_nice"),
        ({"backend": "ray", "placement": "random"}, "placement"),
        ({"backend": "ray", "address": "h:1", "num_cpus": 2}, "num_cpus"),
    ],
)
def test_serve_checks_its_options_before_starting_a_process(
    kwargs: dict[str, object], field: str
) -> None:
    bundle = REFERENCE.parent / "text-pipeline"
    with pytest.raises(il.ConfigError) as err:
        il.serve(bundle, bundle / "plan.yaml", **kwargs)  # type: ignore[arg-type]
    assert err.value.field == field
