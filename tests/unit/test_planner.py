"""The Planner: InferLine's greedy search, the CG baselines, exhaustive search, the CLI.

Synthetic pipelines with evenly spaced arrivals (``gamma_trace(cv=0)``) make the
answers computable by hand: a batch-1 stage of latency L serving one query every
g seconds needs exactly ceil(L / g) replicas to never queue, and with fewer its
queue grows without bound.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

from inferline import load_bundle
from inferline.errors import ConfigError, InfeasibleError
from inferline.pipeline import Edge, Pipeline, Stage, load_config
from inferline.planner import (
    PLANNERS,
    Plan,
    lower_bound_cost,
    plan,
    plan_cg_mean,
    plan_cg_peak,
    plan_exhaustive,
    plan_inferline,
)
from inferline.profiles import BatchProfile, HardwareCatalogue, HardwareType, ProfilePoint, Profiles
from inferline.workload import Trace, gamma_trace, save_trace

# --- synthetic pipelines ---------------------------------------------------------------------


def catalogue(*types: tuple[str, float, int | None]) -> HardwareCatalogue:
    return HardwareCatalogue(tuple(HardwareType(n, p, max_units=m) for n, p, m in types))


def make_profiles(
    hardware: HardwareCatalogue, curves: dict[tuple[str, str], dict[int, float]]
) -> Profiles:
    return Profiles(
        hardware,
        {
            (stage, hw): BatchProfile(
                stage, hw, tuple(ProfilePoint(b, t, t) for b, t in sorted(curve.items()))
            )
            for (stage, hw), curve in curves.items()
        },
    )


def even(rate_qps: float, duration_s: float = 10.0) -> Trace:
    """Evenly spaced arrivals: no burst, so queueing appears only when a stage is too slow."""
    return gamma_trace(rate_qps, 0.0, duration_s, seed=0)


def used_units(result: Plan) -> dict[str, int]:
    units: dict[str, int] = {}
    for c in result.config.stages.values():
        units[c.hardware] = units.get(c.hardware, 0) + c.replicas
    return units


ONE = Pipeline.chain("one", ["work"])
TWO = Pipeline.chain("two", ["a", "b"])


# --- InferLine: answers known by hand ---------------------------------------------------------


def test_one_stage_one_hardware_gets_the_fewest_replicas_that_keep_up() -> None:
    # 25 ms per query, one query every 10 ms: 3 replicas never queue, 2 fall behind.
    profiles = make_profiles(catalogue(("cpu", 0.1, None)), {("work", "cpu"): {1: 0.025}})
    result = plan_inferline(ONE, profiles, even(100), 0.05)
    assert result.feasible
    assert result.stages() == {"work": {"hardware": "cpu", "batch_size": 1, "replicas": 3}}
    assert result.cost_per_hour == pytest.approx(0.3)
    assert result.estimated_p99_s == pytest.approx(0.025)
    assert result.estimator_calls >= 1
    assert result.planner == "inferline"


def test_downgrade_to_cheaper_feasible_hardware_is_taken() -> None:
    profiles = make_profiles(
        catalogue(("cpu", 0.1, None), ("gpu", 1.0, None)),
        {("work", "cpu"): {1: 0.025}, ("work", "gpu"): {1: 0.005}},
    )
    result = plan_inferline(ONE, profiles, even(100), 0.05)
    # Initialize picks the fastest (gpu, 1 replica, $1/h); 3 cpu replicas ($0.3/h) also work.
    assert result.log[0].startswith("initialize") and "work=gpu/b1/x1" in result.log[0]
    assert any("DowngradeHW 'work'" in line and "gpu/b1/x1 -> cpu" in line for line in result.log)
    assert result.stages()["work"] == {"hardware": "cpu", "batch_size": 1, "replicas": 3}
    assert result.cost_per_hour == pytest.approx(0.3)


def test_downgrade_is_rejected_when_the_cheaper_hardware_cannot_meet_the_slo() -> None:
    profiles = make_profiles(
        catalogue(("cpu", 0.1, None), ("gpu", 1.0, None)),
        {("work", "cpu"): {1: 0.060}, ("work", "gpu"): {1: 0.005}},
    )
    result = plan_inferline(ONE, profiles, even(100), 0.05)  # 60 ms > the 50 ms SLO
    assert result.stages()["work"] == {"hardware": "gpu", "batch_size": 1, "replicas": 1}
    assert not any("DowngradeHW" in line for line in result.log)


BATCHING = {("work", "cpu"): {1: 0.015, 2: 0.016, 4: 0.017}}


def test_a_bigger_batch_lets_a_replica_go() -> None:
    # At batch 1 one replica serves 67 q/s < 100 q/s; at batch 2 it serves 125 q/s.
    profiles = make_profiles(catalogue(("cpu", 0.1, None)), BATCHING)
    result = plan_inferline(ONE, profiles, even(100), 0.1)
    assert result.stages()["work"]["replicas"] == 1
    assert result.stages()["work"]["batch_size"] >= 2
    assert any("BatchRemove 'work'" in line for line in result.log)


def test_paper_mode_uses_increase_batch_then_remove_replica() -> None:
    profiles = make_profiles(catalogue(("cpu", 0.1, None)), BATCHING)
    result = plan_inferline(ONE, profiles, even(100), 0.1, paper=True)
    actions = [line.split(":")[1].split()[0] for line in result.log if line.startswith("round")]
    assert actions[:2] == ["IncreaseBatch", "RemoveReplica"]
    assert result.stages()["work"]["replicas"] == 1
    assert result.planner == "inferline-paper"


def test_planning_is_deterministic() -> None:
    bundle = load_bundle(
        Path(__file__).resolve().parents[2] / "examples/reference/image-processing"
    )
    trace = gamma_trace(150, 2.0, 20, seed=4)
    first = plan_inferline(bundle.pipeline, bundle.profiles, trace, 0.1, seed=3)
    second = plan_inferline(bundle.pipeline, bundle.profiles, trace, 0.1, seed=3)
    assert first.config == second.config
    assert first.log == second.log
    assert first.estimator_calls == second.estimator_calls
    assert first.estimated_p99_s == second.estimated_p99_s


def test_margin_tightens_the_target() -> None:
    profiles = make_profiles(
        catalogue(("cpu", 0.1, None), ("gpu", 1.0, None)),
        {("work", "cpu"): {1: 0.045}, ("work", "gpu"): {1: 0.005}},
    )
    assert plan_inferline(ONE, profiles, even(100), 0.05).stages()["work"]["hardware"] == "cpu"
    # With a 20 % margin the target is 40 ms: the 45 ms cpu no longer fits.
    tight = plan_inferline(ONE, profiles, even(100), 0.05, margin=0.2)
    assert tight.stages()["work"]["hardware"] == "gpu"
    assert tight.estimated_p99_s <= 0.04
    with pytest.raises(ConfigError, match="margin"):
        plan_inferline(ONE, profiles, even(100), 0.05, margin=1.0)


# --- infeasible SLOs and bounded loops ----------------------------------------------------------


def test_slo_below_the_service_time_names_the_path_and_the_smallest_slo() -> None:
    profiles = make_profiles(
        catalogue(("cpu", 0.1, None), ("gpu", 1.0, None)),
        {
            ("a", "cpu"): {1: 0.010},
            ("b", "cpu"): {1: 0.030},
            ("b", "gpu"): {1: 0.0042},
        },
    )
    with pytest.raises(InfeasibleError) as info:
        plan_inferline(TWO, profiles, even(50), 0.01)
    message = str(info.value)
    assert "a (10.00 ms on cpu) -> b (4.20 ms on gpu)" in message
    assert "14.20 ms" in message and "smallest SLO that could work is 0.015 s" in message
    assert info.value.exit_code == 3
    for baseline in (plan_cg_mean, plan_cg_peak):
        with pytest.raises(InfeasibleError, match=r"0\.015 s"):
            baseline(TWO, profiles, even(50), 0.01)


def test_critical_path_of_a_dag_is_named() -> None:
    dag = Pipeline(
        "dag",
        (Stage("src"), Stage("fast"), Stage("slow")),
        (Edge("src", "fast"), Edge("src", "slow", 0.5)),
    )
    profiles = make_profiles(
        catalogue(("cpu", 0.1, None)),
        {("src", "cpu"): {1: 0.002}, ("fast", "cpu"): {1: 0.001}, ("slow", "cpu"): {1: 0.05}},
    )
    with pytest.raises(InfeasibleError, match=r"src \(2.00 ms on cpu\) -> slow \(50.00 ms"):
        plan_inferline(dag, profiles, even(10), 0.04)


def test_slo_barely_above_the_service_time_terminates() -> None:
    # Bursty arrivals and no slack: either many replicas or a clear bound, never a hang.
    profiles = make_profiles(
        catalogue(("cpu", 0.1, None), ("gpu", 1.0, None)),
        {("work", "cpu"): {1: 0.010, 2: 0.011}, ("work", "gpu"): {1: 0.002, 2: 0.0021}},
    )
    trace = gamma_trace(200, 2.0, 10, seed=1)
    started = time.perf_counter()
    for slo in (0.00201, 0.0021, 0.0101):
        result = plan_inferline(ONE, profiles, trace, slo)
        assert result.feasible and result.estimated_p99_s <= slo
    assert time.perf_counter() - started < 30


def test_replica_bound_gives_a_clear_error() -> None:
    # The SLO equals the service time: any queueing misses, so bursts can never be met.
    profiles = make_profiles(catalogue(("cpu", 0.1, None)), {("work", "cpu"): {1: 0.010}})
    trace = gamma_trace(300, 3.0, 10, seed=2)
    with pytest.raises(InfeasibleError, match="search bound") as info:
        plan_inferline(ONE, profiles, trace, 0.010)
    assert "'work'" in str(info.value)


# --- hardware limits ----------------------------------------------------------------------------


def test_max_units_are_respected() -> None:
    # One gpu exists. At batch 1 the work needs 2 gpus, so it must settle elsewhere.
    hardware = catalogue(("cpu", 0.1, None), ("gpu", 1.0, 1))
    profiles = make_profiles(hardware, {("work", "cpu"): {1: 0.025}, ("work", "gpu"): {1: 0.005}})
    result = plan_inferline(ONE, profiles, even(300), 0.05)
    assert result.feasible
    assert used_units(result).get("gpu", 0) <= 1


def test_max_units_are_shared_between_stages() -> None:
    hardware = catalogue(("cpu", 0.05, None), ("gpu", 1.0, 1))
    curves = {
        (stage, hw): {1: t} for stage in ("a", "b") for hw, t in (("cpu", 0.015), ("gpu", 0.002))
    }
    profiles = make_profiles(hardware, curves)
    # Both on cpu take 30 ms > 25 ms: exactly one stage must get the only gpu.
    for planner in ("inferline", "exhaustive"):
        result = plan(planner, TWO, profiles, even(100), 0.025)
        assert used_units(result)["gpu"] == 1
        assert result.feasible


def test_a_limit_that_blocks_every_option_is_infeasible() -> None:
    profiles = make_profiles(catalogue(("gpu", 1.0, 2)), {("work", "gpu"): {1: 0.025}})
    with pytest.raises(InfeasibleError, match="units"):
        plan_inferline(ONE, profiles, even(200), 0.05)


# --- baselines, exhaustive search, lower bound --------------------------------------------------

CG_CURVE = {1: 0.010, 2: 0.012, 4: 0.020, 8: 0.050}


def test_cg_baselines_by_hand() -> None:
    profiles = make_profiles(
        catalogue(("gpu", 1.0, None)), {(s, "gpu"): dict(CG_CURVE) for s in ("a", "b")}
    )
    trace = even(300)
    mean = plan_cg_mean(TWO, profiles, trace, 0.05)
    # Batch 4: 2 x 20 ms = 40 ms fits 50 ms, batch 8 (100 ms) does not. One unit serves
    # 4 / 0.020 = 200 q/s, so 300 q/s needs 2 units of one replica per stage.
    assert mean.stages() == {
        s: {"hardware": "gpu", "batch_size": 4, "replicas": 2} for s in ("a", "b")
    }
    assert mean.cost_per_hour == pytest.approx(4.0)
    assert mean.estimator_calls == 1
    peak = plan_cg_peak(TWO, profiles, trace, 0.05)
    assert peak.stages()["a"]["replicas"] >= 2
    assert peak.cost_per_hour >= mean.cost_per_hour


def test_cg_mean_reports_an_infeasible_plan_without_repairing_it() -> None:
    profiles = make_profiles(
        catalogue(("gpu", 1.0, None)), {(s, "gpu"): dict(CG_CURVE) for s in ("a", "b")}
    )
    bursty = gamma_trace(190, 3.0, 30, seed=5)
    mean = plan_cg_mean(TWO, profiles, bursty, 0.05)
    assert mean.stages()["a"]["replicas"] == 1
    assert not mean.feasible
    assert math.isfinite(mean.estimated_p99_s) and mean.estimated_p99_s > 0.05
    assert "INFEASIBLE" in mean.log[-1]


def test_cg_unit_counts_each_stage_once_even_when_rarely_visited() -> None:
    dag = Pipeline("cascade", (Stage("a"), Stage("b")), (Edge("a", "b", 0.25),))
    profiles = make_profiles(
        catalogue(("gpu", 1.0, None)), {(s, "gpu"): dict(CG_CURVE) for s in ("a", "b")}
    )
    mean = plan_cg_mean(dag, profiles, even(300), 0.05)
    assert mean.stages()["b"]["replicas"] == mean.stages()["a"]["replicas"] == 2


SMALL = {
    ("a", "cpu"): {1: 0.010, 2: 0.012, 4: 0.016},
    ("a", "gpu"): {1: 0.002, 2: 0.0025, 4: 0.003},
    ("b", "cpu"): {1: 0.020, 2: 0.024, 4: 0.030},
    ("b", "gpu"): {1: 0.003, 2: 0.0035, 4: 0.004},
}


@pytest.mark.parametrize(("rate", "slo"), [(100, 0.06), (150, 0.1), (150, 0.04)])
def test_inferline_is_close_to_the_exhaustive_optimum_and_below_cg_peak(
    rate: float, slo: float
) -> None:
    profiles = make_profiles(catalogue(("cpu", 0.1, None), ("gpu", 1.0, None)), SMALL)
    trace = gamma_trace(rate, 1.0, 20, seed=7)
    greedy = plan_inferline(TWO, profiles, trace, slo)
    optimum = plan_exhaustive(TWO, profiles, trace, slo, max_seconds=60)
    peak = plan_cg_peak(TWO, profiles, trace, slo)
    assert optimum.exhaustive_complete is True
    assert optimum.feasible and greedy.feasible
    assert optimum.cost_per_hour <= greedy.cost_per_hour + 1e-9
    assert greedy.cost_per_hour <= 1.10 * optimum.cost_per_hour
    assert greedy.cost_per_hour <= peak.cost_per_hour + 1e-9
    assert lower_bound_cost(TWO, profiles, trace) <= optimum.cost_per_hour


def test_exhaustive_time_budget_returns_the_best_so_far() -> None:
    profiles = make_profiles(catalogue(("cpu", 0.1, None), ("gpu", 1.0, None)), SMALL)
    trace = gamma_trace(150, 1.0, 20, seed=7)
    result = plan_exhaustive(TWO, profiles, trace, 0.04, max_seconds=1e-9)
    assert result.exhaustive_complete is False
    assert result.feasible
    assert result.summary()["exhaustive_complete"] is False


def test_lower_bound_by_hand() -> None:
    profiles = make_profiles(
        catalogue(("cpu", 0.1, None), ("gpu", 1.0, None)),
        {("work", "cpu"): {1: 0.025, 2: 0.040}, ("work", "gpu"): {1: 0.005}},
    )
    trace = even(100)
    # Most cost-efficient: cpu at batch 2, 50 q/s per $0.1/h -> 100 q/s costs $0.2/h.
    expected = trace.mean_rate_qps / 50.0 * 0.1
    assert lower_bound_cost(ONE, profiles, trace) == pytest.approx(expected)
    assert (
        lower_bound_cost(ONE, profiles, trace)
        <= plan_inferline(ONE, profiles, trace, 0.05).cost_per_hour
    )


def test_registry_and_unknown_planner() -> None:
    assert set(PLANNERS) == {"inferline", "cg-mean", "cg-peak", "exhaustive"}
    profiles = make_profiles(catalogue(("cpu", 0.1, None)), {("work", "cpu"): {1: 0.025}})
    assert plan("inferline", ONE, profiles, even(100), 0.05).cost_per_hour == pytest.approx(0.3)
    with pytest.raises(ConfigError, match="inferline, cg-mean, cg-peak, exhaustive"):
        plan("greedy", ONE, profiles, even(100), 0.05)


# --- the reference pipeline -------------------------------------------------------------------


@pytest.fixture
def image_processing(reference_bundle: Path) -> tuple[Pipeline, Profiles]:
    bundle = load_bundle(reference_bundle)
    return bundle.pipeline, bundle.profiles


def test_reference_pipeline_inferline_beats_cg_peak(
    image_processing: tuple[Pipeline, Profiles],
) -> None:
    pipeline, profiles = image_processing
    trace = gamma_trace(200, 2.0, 30, seed=0)
    for slo in (0.1, 0.3):
        ours = plan_inferline(pipeline, profiles, trace, slo)
        peak = plan_cg_peak(pipeline, profiles, trace, slo)
        assert ours.feasible and ours.estimated_p99_s <= slo
        assert ours.cost_per_hour <= peak.cost_per_hour
        assert lower_bound_cost(pipeline, profiles, trace) <= ours.cost_per_hour


def test_plan_file_round_trips(image_processing: tuple[Pipeline, Profiles], tmp_path: Path) -> None:
    pipeline, profiles = image_processing
    result = plan_inferline(pipeline, profiles, gamma_trace(100, 1.0, 20, seed=0), 0.15)
    path = tmp_path / "plan.yaml"
    result.save(path)
    assert load_config(path) == result.config
    body = yaml.safe_load(path.read_text())
    assert body["planner"] == "inferline"
    assert body["slo_s"] == 0.15
    assert body["cost_per_hour"] == pytest.approx(result.cost_per_hour)
    assert body["estimated"]["p99_s"] == pytest.approx(result.estimated_p99_s)
    assert body["log"] == list(result.log)
    summary = result.summary()
    for key in ("feasible", "cost_per_hour", "estimated_p99_s", "planning_time_s"):
        assert key in summary
    assert summary["estimator_calls"] == result.estimator_calls
    assert set(summary["stages"]) == {"preprocess", "alexnet"}


# --- command line -------------------------------------------------------------------------------

runner = CliRunner()


def cli() -> typer.Typer:
    """The real top-level ``inferline`` app."""
    from inferline.cli import app

    return app


def plan_args(bundle: Path, trace: Path, slo: str) -> list[str]:
    return ["plan", str(bundle), "--trace", str(trace), "--slo-s", slo]


@pytest.fixture
def trace_file(tmp_path: Path) -> Path:
    path = tmp_path / "trace.csv"
    save_trace(gamma_trace(150, 2.0, 20, seed=3), path)
    return path


def test_cli_plan_json_and_plan_file(
    reference_bundle: Path, trace_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "plan.yaml"
    result = runner.invoke(
        cli(),
        [*plan_args(reference_bundle, trace_file, "0.15"), "-o", str(out), "--json"],
    )
    assert result.exit_code == 0, result.stderr
    summary = yaml.safe_load(result.stdout)
    assert summary["feasible"] is True
    assert summary["stages"]["alexnet"]["replicas"] >= 1
    for key in ("cost_per_hour", "estimated_p99_s", "planning_time_s", "estimator_calls"):
        assert key in summary
    simulated = runner.invoke(
        cli(),
        [
            *("simulate", str(reference_bundle), "--config", str(out)),
            *("--trace", str(trace_file), "--slo-s", "0.15", "--json"),
        ],
    )
    assert simulated.exit_code == 0, simulated.stderr
    assert yaml.safe_load(simulated.stdout)["p99_s"] == pytest.approx(summary["estimated_p99_s"])


def test_cli_plan_readable_output(reference_bundle: Path, trace_file: Path) -> None:
    result = runner.invoke(
        cli(),
        [*plan_args(reference_bundle, trace_file, "0.1"), "--planner", "cg-peak"],
    )
    assert result.exit_code == 0, result.stderr
    assert "cg-peak plan for image-processing" in result.stdout
    assert "alexnet" in result.stdout and "step log" in result.stdout


def test_cli_infeasible_slo_exits_3(reference_bundle: Path, trace_file: Path) -> None:
    result = runner.invoke(
        cli(), ["plan", str(reference_bundle), "--trace", str(trace_file), "--slo-s", "0.004"]
    )
    assert result.exit_code == 3
    message = " ".join(result.stderr.split())
    assert "preprocess (3.13 ms on c5-1vcpu) -> alexnet (1.52 ms on v100)" in message
    assert "smallest SLO that could work is 0.005 s" in message
    assert "Traceback" not in result.stderr


def test_cli_rejects_bad_arguments(reference_bundle: Path, trace_file: Path) -> None:
    base = ["plan", str(reference_bundle), "--trace", str(trace_file)]
    unknown = runner.invoke(cli(), [*base, "--slo-s", "0.1", "--planner", "greedy"])
    assert unknown.exit_code == 2
    assert "inferline, cg-mean, cg-peak, exhaustive" in " ".join(unknown.stderr.split())
    assert runner.invoke(cli(), [*base, "--slo-s", "0"]).exit_code == 2
    assert runner.invoke(cli(), [*base, "--slo-s", "0.1", "--margin", "1.5"]).exit_code == 2
