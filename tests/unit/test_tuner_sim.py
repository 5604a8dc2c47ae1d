"""The time-varying simulation: equal to the Estimator when nothing changes, and by hand.

Hand cases use one stage "a", batch 1, latency 1 s, price 0.5 $/h per replica,
ticks every 0.5 s from the first arrival (t = 0), and a scripted policy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inferline._bundle import load_bundle
from inferline.errors import ConfigError
from inferline.estimator import Estimator, simulate_timevarying
from inferline.pipeline import Edge, Pipeline, PipelineConfig, Stage, StageConfig, load_config
from inferline.profiles import (
    BatchProfile,
    EngineOverhead,
    HardwareCatalogue,
    HardwareType,
    ProfilePoint,
    Profiles,
)
from inferline.tuner import (
    InferLineTuner,
    NoTuner,
    Observation,
    QueueLengthPolicy,
    TunerConfig,
    simulate_tuned,
)
from inferline.workload import Trace, gamma_trace, ramp_trace

REFERENCE = Path(__file__).resolve().parents[2] / "examples" / "reference"
HW = "cpu-1"
PRICE = 0.5
PROFILES = Profiles(
    HardwareCatalogue((HardwareType(HW, price_per_hour=PRICE),)),
    {("a", HW): BatchProfile("a", HW, (ProfilePoint(1, 1.0, 1.0),))},
)
ONE = Pipeline(name="one", stages=(Stage("a"),), edges=())


def one_stage(replicas: int) -> PipelineConfig:
    return PipelineConfig(stages={"a": StageConfig(hardware=HW, batch_size=1, replicas=replicas)})


@dataclass(frozen=True)
class Scripted:
    """Sets stage a to ``plan[t]`` at decision time t; records what it saw."""

    plan: dict[float, int]
    name: str = "scripted"

    def initial_state(self, now_s: float) -> list[tuple[float, Observation]]:
        return []

    def decide(
        self, state: list[tuple[float, Observation]], observation: Observation, now_s: float
    ) -> tuple[dict[str, int], Any]:
        state.append((now_s, observation))
        if now_s in self.plan:
            return {"a": self.plan[now_s]}, state
        return dict(observation.replicas), state


def run(replicas: int, arrivals: list[float], plan: dict[float, int], activation_s: float):  # type: ignore[no-untyped-def]
    return simulate_tuned(
        ONE, PROFILES, one_stage(replicas), Trace(np.array(arrivals)), 10.0, Scripted(plan),
        activation_s=activation_s, tick_s=0.5,
    )  # fmt: skip


def test_added_replica_serves_only_after_activation_and_is_billed_while_starting() -> None:
    # replica 1 serves q0 0→1, q1 1→2, q2 2→3; replica 2 is added at t = 1 and serves from 3,
    # so at t = 3 both take q3 and q4 → finish at 4
    arrivals = [0.0, 0.5, 1.5, 2.0, 2.5]
    res = run(1, arrivals, {1.0: 2}, activation_s=2.0)
    finish = res.arrival_s + res.latency_s
    assert finish.tolist() == [1.0, 2.0, 3.0, 4.0, 4.0]
    # billed: replica 1 over [0, 4], replica 2 over [1, 4] (3 s, 2 of them starting)
    assert res.cost_dollars == pytest.approx((4.0 + 3.0) * PRICE / 3600.0, rel=1e-12)
    assert (res.scale_ups, res.scale_downs, res.replicas_added) == (1, 0, 1)
    assert res.duration_s == 4.0
    # with no activation delay replica 2 takes q2 at 1.5: finishes 1, 2, 2.5, 3, 3.5
    fast = run(1, arrivals, {1.0: 2}, activation_s=0.0)
    assert (fast.arrival_s + fast.latency_s).tolist() == [1.0, 2.0, 2.5, 3.0, 3.5]


def test_removed_busy_replica_finishes_its_batch_and_is_billed_until_then() -> None:
    # two replicas take q0 and q1 at 0; one is removed at 0.5 while busy: both finish at 1,
    # then the remaining replica serves q2 1→2 and q3 2→3
    res = run(2, [0.0, 0.0, 0.6, 0.7], {0.5: 1}, activation_s=5.0)
    assert (res.arrival_s + res.latency_s).tolist() == [1.0, 1.0, 2.0, 3.0]
    # billed: one replica over [0, 3], the removed one over [0, 1] (until its batch ended)
    assert res.cost_dollars == pytest.approx((3.0 + 1.0) * PRICE / 3600.0, rel=1e-12)
    assert (res.scale_ups, res.scale_downs, res.replicas_removed) == (0, 1, 1)
    assert res.replicas[:, 0].tolist()[:2] == [1, 1]


def test_replica_removed_while_starting_stops_billing_and_never_serves() -> None:
    # added at 0.5 (activation 5 s), cancelled at 1.0: billed 0.5 s, serves nothing
    res = run(1, [0.0, 0.1, 0.2], {0.5: 2, 1.0: 1}, activation_s=5.0)
    assert (res.arrival_s + res.latency_s).tolist() == [1.0, 2.0, 3.0]
    assert res.cost_dollars == pytest.approx((3.0 + 0.5) * PRICE / 3600.0, rel=1e-12)


def test_policy_sees_arrivals_replicas_and_outstanding_queries() -> None:
    # the tick at 0.5 saw q0–q2 (q0 in flight, q1 and q2 queued); at 1.0 q3 and 4 outstanding
    # (q0 finishes at exactly 1.0, which is simulated after the decision at 1.0)
    arrivals = [0.0, 0.1, 0.2, 0.7]
    seen: list[tuple[float, Observation]] = []

    @dataclass(frozen=True)
    class Spy(Scripted):
        def decide(self, state, observation, now_s):  # type: ignore[no-untyped-def]
            seen.append((now_s, observation))
            return dict(observation.replicas), state

    simulate_tuned(
        ONE, PROFILES, one_stage(1), Trace(np.array(arrivals)), 10.0, Spy({}), tick_s=0.5
    )
    assert seen[0][0] == 0.5
    assert seen[0][1].arrivals_s.tolist() == [0.0, 0.1, 0.2]
    assert seen[0][1].outstanding == {"a": 3}
    assert seen[1][0] == 1.0
    assert seen[1][1].arrivals_s.tolist() == [0.7]
    assert seen[1][1].outstanding == {"a": 4}
    assert seen[1][1].replicas == {"a": 1}


@pytest.mark.parametrize("queue_policy", ["edf", "fifo"])
def test_fixed_schedule_equals_estimator_exactly(queue_policy: str) -> None:
    # a DAG with a conditional branch and batching, under load
    pipe = Pipeline(
        name="dag",
        stages=(Stage("a"), Stage("b"), Stage("c"), Stage("d")),
        edges=(Edge("a", "b"), Edge("a", "c", 0.4), Edge("b", "d"), Edge("c", "d")),
    )
    lat = {"a": 0.004, "b": 0.01, "c": 0.02, "d": 0.003}
    profiles = Profiles(
        HardwareCatalogue((HardwareType(HW, price_per_hour=PRICE),)),
        {
            (s, HW): BatchProfile(
                s,
                HW,
                tuple(
                    ProfilePoint(b, lat[s] * (1 + 0.3 * (b - 1)), lat[s] * 1.5)
                    for b in (1, 2, 4, 8)
                ),
            )
            for s in lat
        },
    )
    cfg = PipelineConfig(
        stages={
            "a": StageConfig(hardware=HW, batch_size=2, replicas=1),
            "b": StageConfig(hardware=HW, batch_size=8, replicas=2),
            "c": StageConfig(hardware=HW, batch_size=4, replicas=1),
            "d": StageConfig(hardware=HW, batch_size=1, replicas=1),
        }
    )
    trace = gamma_trace(250.0, 2.0, 60.0, seed=5)
    ref = Estimator(pipe, profiles, trace, slo_s=0.1, seed=3, queue_policy=queue_policy).run(cfg)  # type: ignore[arg-type]
    res = simulate_tuned(
        pipe, profiles, cfg, trace, 0.1, NoTuner(), seed=3, queue_policy=queue_policy, tick_s=0.7
    )
    assert np.array_equal(res.latency_s, ref.latency_s)
    assert res.miss_rate == ref.miss_rate
    assert res.cost_dollars == pytest.approx(ref.cost_per_hour * res.duration_s / 3600, rel=1e-9)
    assert res.scale_ups == res.scale_downs == 0


def test_fixed_schedule_includes_the_engine_overhead_as_the_estimator_does() -> None:
    bundle = load_bundle(REFERENCE / "social-media")
    cfg = load_config(REFERENCE / "social-media" / "configs" / "balanced.yaml")
    overhead = EngineOverhead(
        per_batch_s=0.0005,
        per_query_s=0.002,
        per_query_percentiles=(0.0, 50.0, 100.0),
        per_query_percentiles_s=(0.001, 0.002, 0.009),
    )
    profiles = bundle.profiles.with_overhead(overhead)
    trace = gamma_trace(150.0, 1.0, 20.0, seed=2)
    ref = Estimator(bundle.pipeline, profiles, trace, slo_s=0.3, seed=4).run(cfg)
    res = simulate_tuned(bundle.pipeline, profiles, cfg, trace, 0.3, NoTuner(), seed=4)
    bare = simulate_tuned(bundle.pipeline, bundle.profiles, cfg, trace, 0.3, NoTuner(), seed=4)
    assert np.array_equal(res.latency_s, ref.latency_s)
    # per-query draws plus the per-batch part (which also reshapes batches, so single
    # queries can finish sooner; on average every query is later)
    assert np.mean(res.latency_s - bare.latency_s) > 0.002


def test_reference_bundle_fixed_plan_equals_estimator() -> None:
    bundle = load_bundle(REFERENCE / "social-media")
    cfg = load_config(REFERENCE / "social-media" / "configs" / "balanced.yaml")
    trace = gamma_trace(150.0, 1.0, 40.0, seed=2)
    ref = Estimator(bundle.pipeline, bundle.profiles, trace, slo_s=0.3).run(cfg)
    res = simulate_tuned(bundle.pipeline, bundle.profiles, cfg, trace, 0.3, NoTuner())
    assert np.array_equal(res.latency_s, ref.latency_s)


def test_inferline_tuner_absorbs_a_ramp_that_the_fixed_plan_cannot() -> None:
    bundle = load_bundle(REFERENCE / "image-processing")
    cfg = PipelineConfig(
        stages={
            "preprocess": StageConfig(hardware="c5-1vcpu", batch_size=1, replicas=1),
            "alexnet": StageConfig(hardware="c5.2xlarge", batch_size=2, replicas=1),
        }
    )
    planning = gamma_trace(150.0, 1.0, 30.0, seed=1)
    evaluation = ramp_trace(150.0, 250.0, 10.0, before_s=20.0, after_s=60.0, cv=1.0, seed=2)
    tuner = InferLineTuner(TunerConfig.from_plan(bundle.pipeline, bundle.profiles, cfg, planning))
    fixed = simulate_tuned(bundle.pipeline, bundle.profiles, cfg, evaluation, 0.15, NoTuner())
    tuned = simulate_tuned(bundle.pipeline, bundle.profiles, cfg, evaluation, 0.15, tuner)
    assert fixed.miss_rate > 0.3
    assert tuned.miss_rate < 0.01
    assert tuned.scale_ups >= 1
    assert tuned.replicas[-1].min() >= 2
    assert tuned.cost_dollars > fixed.cost_dollars


def test_queue_length_policy_runs_interleaved_with_the_simulation() -> None:
    bundle = load_bundle(REFERENCE / "image-processing")
    cfg = PipelineConfig(
        stages={
            "preprocess": StageConfig(hardware="c5-1vcpu", batch_size=1, replicas=1),
            "alexnet": StageConfig(hardware="c5.2xlarge", batch_size=2, replicas=1),
        }
    )
    evaluation = ramp_trace(150.0, 250.0, 10.0, before_s=10.0, after_s=40.0, cv=1.0, seed=2)
    policy = QueueLengthPolicy.from_plan(bundle.pipeline, bundle.profiles, cfg)
    res = simulate_tuned(bundle.pipeline, bundle.profiles, cfg, evaluation, 0.15, policy)
    assert res.scale_ups >= 1  # queues built up, and it reacted to them
    assert res.replicas[:, 1].max() > 1


@pytest.mark.parametrize(
    "policy", ["inferline", "none", "cg-autoscale", "queue-length", "simulate"]
)
def test_tune_sim_command_json_contract(tmp_path: Path, policy: str) -> None:
    import json

    import typer
    from typer.testing import CliRunner

    from inferline.cli._tune import tune_sim_command
    from inferline.workload import save_trace

    app = typer.Typer()
    app.command("tune-sim")(tune_sim_command)
    app.command("unused")(lambda: None)  # keeps typer in multi-command mode, as in the real app
    trace_path = tmp_path / "t.csv"
    save_trace(
        ramp_trace(150.0, 250.0, 10.0, before_s=10.0, after_s=20.0, cv=1.0, seed=2), trace_path
    )
    bundle = REFERENCE / "image-processing"
    args = [
        "tune-sim", str(bundle), "--plan", str(bundle / "configs" / "balanced.yaml"),
        "--trace", str(trace_path), "--slo-s", "0.15", "--policy", policy, "--json",
    ]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    for key in ("miss_rate", "cost_dollars", "p99_s", "scale_ups", "scale_downs"):
        assert key in out
    assert out["policy"] == policy
    bad = CliRunner().invoke(app, [*args[:-2], "--policy", "magic"])
    assert bad.exit_code == 2


def test_scenario_plot_and_table(tmp_path: Path) -> None:
    from inferline.bench.tuner import _plot, markdown_table, scenarios

    names = [s.name for s in scenarios(after_s=10.0)]
    assert names == ["ramp-10s", "ramp-30s", "ramp-60s", "burstiness", "azure"]
    results = {
        "a": run(1, [0.0, 0.5, 1.5, 2.0, 2.5], {1.0: 2}, activation_s=2.0),
        "b": run(2, [0.0, 0.5, 1.5, 2.0, 2.5], {}, activation_s=2.0),
    }
    png = tmp_path / "x.png"
    _plot("hand case", results, 10.0, png)
    assert png.stat().st_size > 1000
    t, p99 = results["a"].p99_over_time(1.0)
    assert t.tolist() == [0.0, 1.0, 2.0]
    assert p99[0] == pytest.approx(1.0 + 0.99 * 0.5)  # latencies 1.0 and 1.5, interpolated
    rows = [
        {
            "pipeline": "p",
            "scenario": "s",
            "policy": pol,
            "slo_s": 0.15,
            "miss_rate": m,
            "cost_dollars": c,
        }
        for pol, m, c in (("inferline", 0.001, 1.0), ("cg-autoscale", 0.05, 2.0))
    ]
    table = markdown_table(rows)
    assert "| s | 0.10% / 1.000 | 5.00% / 2.000 |" in table


def test_benchmark_targets_for_the_default_and_the_opt_in_tuner() -> None:
    from inferline.bench.tuner import OPT_IN_POLICY, _targets, markdown_table

    def row(pol: str, misses: int, cost: float) -> dict[str, Any]:
        return {
            "pipeline": "p", "scenario": "s", "policy": pol, "slo_s": 0.3,
            "miss_rate": misses / 1000, "misses": misses, "misses_after_warmup": misses // 2,
            "cost_dollars": cost,
        }  # fmt: skip

    rows = [
        row("inferline", 4, 1.0),
        row(OPT_IN_POLICY, 2, 1.2),
        row("cg-autoscale", 30, 3.0),
        row("cg-autoscale@il-cost", 50, 1.5),  # CG's cheapest run: dearer than both
    ]
    (base,) = _targets(rows)
    assert base["cg_over_inferline_misses"] == pytest.approx(7.5)
    assert not base["ten_x_fewer_misses"] and base["cost_no_more"]
    assert base["cg_at_il_cost_over_inferline_misses"] is None
    assert base["cg_cheapest_cost_dollars"] == 1.5
    (opt,) = _targets(rows, OPT_IN_POLICY)
    assert opt["policy"] == OPT_IN_POLICY and opt["ten_x_fewer_misses"]
    assert opt["cg_cheapest_cost_dollars"] == 1.5
    # CG's cheapest run (1.1) fits the opt-in's 1.2: no equal-cost claim without a run for it
    rows[-1] = row("cg-autoscale@il-cost", 50, 1.1)
    (opt,) = _targets(rows, OPT_IN_POLICY)
    assert opt["cg_cheapest_cost_dollars"] is None
    assert opt["cg_at_il_cost_over_inferline_misses"] is None
    table = markdown_table(rows, _targets(rows), _targets(rows, OPT_IN_POLICY))
    assert "| p | s | 4 / 2 | 2 / 1 | 30 / 15 | 50 / 25 |" in table
    assert "| p | s | yes | 7.5 | NO | yes | CG ≥ $1.100 |" in table
    assert "| p | s | yes | 15 | yes | yes | not run |" in table
    assert "≥ 10× fewer misses at no more cost: 1 of 1." in table
    assert "### Issue 6 targets: inferline+opt-in vs cg-autoscale" in table


def test_margin_configuration_is_checked_against_cg_planned_with_the_same_margin() -> None:
    from inferline.bench.tuner import (
        CG_MARGIN_POLICY,
        MARGIN_POLICY,
        _targets,
        markdown_table,
    )

    def row(pol: str, misses: int, cost: float) -> dict[str, Any]:
        return {
            "pipeline": "p", "scenario": "s", "policy": pol, "slo_s": 0.3,
            "miss_rate": misses / 1000, "misses": misses, "misses_after_warmup": 0,
            "cost_dollars": cost,
        }  # fmt: skip

    rows = [row("inferline", 4, 1.0), row(MARGIN_POLICY, 0, 1.4), row("cg-autoscale", 0, 3.0)]
    (check,) = _targets(rows, MARGIN_POLICY)
    # both miss nothing: "at least 10x fewer" holds (0 <= 0 / 10), and it costs less
    assert check["cg_policy"] == "cg-autoscale" and check["ten_x_fewer_misses"]
    assert check["cost_no_more"]
    rows.append(row(CG_MARGIN_POLICY, 5, 1.2))  # the CG plan changed with the margin
    (check,) = _targets(rows, MARGIN_POLICY)
    assert check["cg_policy"] == CG_MARGIN_POLICY
    assert check["ten_x_fewer_misses"] and not check["cost_no_more"]
    (base,) = _targets(rows)  # the default tuner still faces the margin-free CG
    assert base["cg_policy"] == "cg-autoscale" and not base["ten_x_fewer_misses"]
    table = markdown_table(rows, _targets(rows), _targets(rows, MARGIN_POLICY))
    assert f"### Issue 6 targets: {MARGIN_POLICY} vs {CG_MARGIN_POLICY}" in table
    assert "≥ 10× fewer misses at no more cost: 0 of 1." in table


@pytest.mark.parametrize(
    ("flag", "value", "field"), [("--margin", "1.5", "--margin"), ("--seeds", "0", "--seeds")]
)
def test_bench_tuner_rejects_bad_arguments_before_running(
    tmp_path: Path, flag: str, value: str, field: str
) -> None:
    from typer.testing import CliRunner

    from inferline.cli import app

    result = CliRunner().invoke(app, ["bench", "tuner", "--out-dir", str(tmp_path), flag, value])
    assert result.exit_code == 2
    assert field in result.output
    assert not any(tmp_path.iterdir())  # nothing ran, nothing written


def test_timevarying_run_needs_a_replica_limit_for_every_stage() -> None:
    with pytest.raises(ConfigError, match="no replica limit for stage"):
        simulate_timevarying(
            ONE, PROFILES, one_stage(1), Trace(np.array([0.0])), 1.0, NoTuner(), max_replicas={}
        )
