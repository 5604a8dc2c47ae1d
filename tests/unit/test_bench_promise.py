"""``bench promise``'s pure parts: the capacity and SLO searches (alone and with the real
Planner on a synthetic pipeline), calibration from engine statistics, the cost integral
and the readable tables."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console

from inferline.bench.promise import (
    PLANNING_MARGIN,
    PromiseSettings,
    _level_summary,
    _run_figures,
    machine_capacity,
    plan_for_machine,
    ratio_of,
    status_figures,
    tables,
    tightest_slo,
)
from inferline.errors import ConfigError
from inferline.pipeline import Pipeline
from inferline.planner import MAX_TAIL_BIAS, biased_margin, tail_bias
from inferline.profiles import (
    BatchProfile,
    HardwareCatalogue,
    HardwareType,
    MachinePool,
    ProfilePoint,
    Profiles,
)
from inferline.workload import gamma_trace

GIB = 1 << 30


def profiles_for(curves: dict[str, dict[int, tuple[float, float]]]) -> Profiles:
    """One ``cpu-1`` hardware type; per stage, batch size → (median, predict median)."""
    hardware = HardwareCatalogue((HardwareType("cpu-1", 0.04),))
    return Profiles(
        hardware,
        {
            (stage, "cpu-1"): BatchProfile(
                stage,
                "cpu-1",
                tuple(
                    ProfilePoint(b, t, 1.5 * t, predict_median_s=p)
                    for b, (t, p) in sorted(curve.items())
                ),
            )
            for stage, curve in curves.items()
        },
    )


@given(
    threshold=st.floats(min_value=0.5, max_value=5000.0),
    start=st.floats(min_value=0.1, max_value=10_000.0),
)
def test_capacity_search_finds_the_threshold_within_its_tolerance(
    threshold: float, start: float
) -> None:
    calls: list[float] = []

    def fits_at(rate: float) -> bool:
        calls.append(rate)
        return rate <= threshold

    found = machine_capacity(fits_at, start, max_rate_qps=5000.0, rel_tol=0.03)
    assert fits_at(found)
    assert found >= threshold / 1.03 - 1e-9 or found == 5000.0
    assert len(calls) < 40


def test_capacity_search_says_zero_when_nothing_fits_and_the_top_when_everything_does() -> None:
    assert machine_capacity(lambda _r: False, 100.0, max_rate_qps=1000.0) == 0.0
    assert machine_capacity(lambda _r: True, 100.0, max_rate_qps=1000.0) == 1000.0


@given(threshold=st.floats(min_value=1e-3, max_value=2.0))
def test_tightest_slo_is_the_smallest_that_fits_within_tolerance(threshold: float) -> None:
    found = tightest_slo(lambda slo: slo >= threshold, 2.0, rel_tol=0.03)
    assert found is not None
    assert threshold <= found <= threshold * 1.03 + 1e-12


def test_tightest_slo_is_none_when_even_the_loosest_does_not_fit() -> None:
    assert tightest_slo(lambda slo: slo >= 3.0, 2.0) is None


def test_capacity_is_what_the_machine_allows_by_each_fit_rule() -> None:
    """One stage, 10 ms per query at batch 1 (100 q/s a replica) on 2 cores. By busy cores
    (the default) the replicas may keep 80 % of the cores less the front-end's share
    (0.8 ms a query) busy: about 1.4 cores, so about 140 q/s. By threads at one per core
    one replica fits (below 100 q/s); at two per core three (below 300 q/s)."""
    pipeline = Pipeline.chain("one", ["work"])
    profiles = profiles_for({"work": {1: (0.010, 0.009)}})

    def capacity(pool: MachinePool) -> float:
        return machine_capacity(
            lambda r: (
                plan_for_machine(pipeline, profiles, gamma_trace(r, 1.0, 30.0, 0), 0.1, pool)
                is not None
            ),
            10.0,
            max_rate_qps=2000.0,
        )

    busy = MachinePool(cores=2, memory_bytes=8 * GIB)
    rate = capacity(busy)
    assert 120.0 < rate < 150.0
    chosen = plan_for_machine(pipeline, profiles, gamma_trace(rate, 1.0, 30.0, 0), 0.1, busy)
    assert chosen is not None and chosen.machine is not None
    assert chosen.machine.replica_busy_cores <= 2 * 0.8 - 0.0008 * rate + 1e-9
    assert (
        plan_for_machine(pipeline, profiles, gamma_trace(rate * 1.1, 1.0, 30.0, 0), 0.1, busy)
        is None
    )
    one = MachinePool(cores=2, memory_bytes=8 * GIB, fit="threads")
    assert 50.0 < capacity(one) < 100.0
    two = MachinePool(cores=2, memory_bytes=8 * GIB, fit="threads", planning_threads_per_core=2.0)
    assert 200.0 < capacity(two) < 300.0


def test_cost_is_integrated_between_readings() -> None:
    # 2 $/h for 1 s then 4 $/h for 1 s (the last reading only closes the interval)
    out = status_figures([(0.0, 2, 2, 2.0), (1.0, 4, 4, 4.0), (2.0, 3, 3, 99.0)])
    assert math.isclose(out["cost_usd"], 6.0 / 3600.0)
    assert math.isclose(out["mean_cost_per_hour"], 3.0)
    assert out["max_threads"] == 4 and out["max_replicas"] == 4
    assert status_figures([])["cost_usd"] is None


def test_settings_refuse_what_cannot_be_measured() -> None:
    with pytest.raises(ConfigError) as bad_loads:
        PromiseSettings(loads=(0.5, 1.5))
    assert bad_loads.value.field == "loads"
    with pytest.raises(ConfigError) as bad_ramp:
        PromiseSettings(ramp_from=0.8, ramp_to=0.4)
    assert bad_ramp.value.field == "ramp_from"
    with pytest.raises(ConfigError):
        PromiseSettings(repeats=0)
    with pytest.raises(ConfigError, match="≥ 0") as reruns:
        PromiseSettings(max_reruns=-1)
    assert reruns.value.field == "max_reruns"


def figures(passed: bool) -> dict[str, Any]:
    level = {
        "load": 0.8, "rate_qps": 80.0, "slo_s": 0.055, "feasible": True, "binds": True,
        "runs": [{"machine_load": {"other_cores": 0.07}, "measured_p99_s": 0.047,
                  "measured_p99_sd_s": 0.0029}],
        "estimated_p99_s": 0.040, "calibrated_p99_s": 0.045, "measured_p99_s": 0.047,
        "error": 0.149, "calibrated_error": 0.043, "measured_miss_rate": 0.004,
        "calibrated_shared_p99_s": 0.0433, "calibrated_shared_error": 0.079,
        "max_threads": 4, "passed": passed, "other_cores": 0.07, "disturbed_runs": [{}],
        "measured_p99_spread": 0.37,
        "replanned": {"feasible": True, "same_plan": False, "cost_per_hour": 0.1275,
                      "first_cost_per_hour": 0.17, "plan_threads": 3, "planned_p99_s": 0.051,
                      "measured_p99_s": 0.0432, "measured_miss_rate": 0.003,
                      "passed": passed, "runs": [{}]},
    }  # fmt: skip
    run = {
        "feasible": True, "policy": "inferline", "tuner_changes": 2, "measured_p99_s": 0.05,
        "measured_miss_rate": 0.002, "cost_usd": 0.0012, "mean_cost_per_hour": 0.21,
        "max_threads": 4, "machine_load": {"other_cores": 0.31},
    }  # fmt: skip
    return {
        "settings": {
            "duration_s": 60.0, "repeats": 3, "miss_target": 0.01, "error_target": 0.1,
            "ramp_from": 0.4, "ramp_to": 0.8, "ramp_s": 60.0, "other_cores_limit": 0.25,
            "steal_limit": 0.05, "max_reruns": 2,
        },
        "machine": {"cores": 2, "frontend_reserve_cores": 1.0, "max_threads": 8,
                    "max_threads_per_core": 8.0, "fit": "busy"},
        "bundles": [
            {"pipeline": "text-pipeline", "capacity_qps": 100.0, "slo_s": 0.06,
             "tightest_slo_s": 0.05, "pool_threads": 4, "levels": [level],
             "ramp": {"from_qps": 40.0, "to_qps": 80.0, "fixed": {**run, "policy": None},
                      "tuned": run, "passed": passed}},
            {"pipeline": "big", "pool_threads": 4,
             "infeasible": "infeasible on this machine: one replica per stage needs 9"},
        ],
        "passed": passed,
        "notes": ["the machine was busy: load average 9.0 on 2 cores"],
        "wall_s": 12.0,
        "load_average_before_after": [1.0, 2.0],
        "written": ["/out/promise.json"],
    }  # fmt: skip


def text_of(figs: dict[str, Any]) -> str:
    console = Console(record=True, width=200)
    for table in tables(figs):
        console.print(table)
    return console.export_text()


def test_tables_show_the_figures_the_verdicts_and_what_did_not_fit() -> None:
    text = text_of(figures(True))
    assert "text-pipeline" in text and "100.0" in text and "60.0" in text and "55.0" in text
    assert "40.0" in text and "45.0" in text and "47.0" in text  # est, calibrated, measured
    assert "43.3" in text and "8%" in text  # calibrated on CPU work, cores shared
    assert "on the cores simulated as shared" in " ".join(text.split())
    assert "15%" in text and "4%" in text and "0.4%" in text and "0.20%" in text
    assert "4/4" in text and "PASS" in text and "FAIL" not in text
    assert "infeasible on this machine" in text
    assert "0.00120" in text and "/out/promise.json" in text and "load average 9.0" in text
    # other processes' cores, per level and per ramp leg; the limits that re-run a run;
    # the measured P99's own sampling error
    assert "0.07" in text and "0.31" in text and "0.25 cores" in text and "5% steal" in text
    assert "1 run(s) re-run" in text and "6%" in text
    assert "37% apart" in " ".join(text.split())
    # planned again from the calibrated profiles: cheaper, served, and its verdict
    assert "planned again" in text and "0.1275" in text and "0.1700" in text
    assert "43.2" in text and "3/4" in text
    tight = figures(True)
    tight["bundles"][0]["levels"][0]["replanned"] = {"feasible": False}
    assert "no plan fits" in text_of(tight)
    assert "FAIL" in text_of(figures(False))
    assert "PASS*" not in text
    disturbed = figures(True)
    disturbed["bundles"][0]["levels"][0]["runs_disturbed"] = 1
    assert "PASS*" in text_of(disturbed)
    assert "profiled here" not in text
    here = figures(True)
    here["bundles"][0]["profiled_here"] = {
        "wall_s": 90.0, "latency_vs_bundle": {"a on cpu-1": 0.52, "b on cpu-1": 0.61},
    }  # fmt: skip
    assert "profiled here: 0.52–0.61× the bundle's latencies" in text_of(here)
    # planned from a first plan's calibration: the overview says so, the uncalibrated
    # estimate's error stands beside the others
    assert "calibrated serving" not in text and "err uncal" not in text
    first = figures(True)
    first["bundles"][0]["calibration"] = {
        "rate_qps": 61.2, "duration_s": 30.0,
        "latency_vs_isolated": {"a on cpu-1": 1.18, "b on cpu-1": 1.64},
    }  # fmt: skip
    first["bundles"][0]["levels"][0]["isolated_error"] = 0.377
    calibrated = text_of(first)
    assert "calibrated serving 61 q/s for 30 s: 1.18–1.64× the isolated latencies" in calibrated
    assert "err uncal" in calibrated and "38%" in calibrated
    assert "× the estimate calibrated on it" not in calibrated
    first["bundles"][0]["calibration"]["measured_over_calibrated"] = 1.123
    assert "its P99 1.12× the estimate calibrated on it" in " ".join(text_of(first).split())
    assert "plans corrected by" not in text_of(first) and "sh×b" not in text_of(first)
    # plans corrected by the tail bias: the note says by how much, est and sh are shown
    # × b, and the error judged is the corrected model's
    first["bundles"][0]["calibration"]["tail_bias"] = 1.123
    level = first["bundles"][0]["levels"][0]
    level.update(error_judged="corrected", predicted_p99_s=0.0449, predicted_error=0.045,
                 corrected_p99_s=0.0486, corrected_error=0.034)  # fmt: skip
    corrected = " ".join(text_of(first).split())
    assert "corrected by" in corrected and "1.12×)" in corrected
    assert "× the tail bias b = 1.12" in corrected
    assert "sh×b" in corrected and "err sh×b ≤ 10%" in corrected
    # measured on a second serve, of a plan from the calibrated profiles: both ratios
    first["bundles"][0]["calibration"]["bias_serve"] = {"measured_over_calibrated": 1.141}
    first["bundles"][0]["calibration"]["tail_bias"] = 1.141
    both = " ".join(text_of(first).split())
    assert "calibrated on it; a calibrated plan's" in both and "1.14× (plans" in both
    assert "44.9" in corrected and "48.6" in corrected and "3%" in corrected
    # judged live: sh × the ratio the plan showed on the window before, in its own column
    assert "err live" not in corrected
    first["settings"].update(correct_bias=True, plan_from="calibrated", priming_s=20.0)
    level.update(error_judged="live", live_p99_s=0.0471, live_error=0.002)
    live = " ".join(text_of(first).split())
    assert "err live ≤ 10%" in live and "47.1" in live and "0%" in live
    assert "sh×b" in live and "the window served before the run (20 s before" in live
    # the ramp says when the Tuner starts from the peak's own plan
    assert "the start's plan is the peak's" not in text
    same = figures(True)
    same["bundles"][0]["ramp"]["same_start"] = True
    assert "the start's plan is the peak's" in " ".join(text_of(same).split())


def test_settings_name_where_plans_come_from() -> None:
    assert PromiseSettings().plan_from == "calibrated"
    assert PromiseSettings(plan_from="isolated").plan_from == "isolated"
    with pytest.raises(ConfigError, match="calibrated, isolated") as bad:
        PromiseSettings(plan_from="measured")  # type: ignore[arg-type]
    assert bad.value.field == "plan_from"
    with pytest.raises(ConfigError) as share:
        PromiseSettings(calibration_load=1.5)
    assert share.value.field == "calibration_load"


def test_calibration_estimates_along_the_paths_the_engine_answered() -> None:
    """Samples the served models route another way than when profiled (weights trained
    on another machine) take the answered path; queries without an answer keep theirs."""
    from inferline.bench.promise import observed_trace, paths_agreement
    from inferline.engine import answered_path
    from inferline.workload import Trace

    body = b'{"model_name":"m","parameters":{"path":"a+b"},"outputs":[{"path":"x"}]}'
    assert answered_path(body) == "a+b"
    assert answered_path(b'{"error":"shed"}') is None
    trace = Trace.from_arrivals([0.0, 0.1, 0.2, 0.3], [("a",), ("a", "b"), ("a",), ("a",)])
    observed = observed_trace(trace, ["a+b", "a", None, "a"])
    routes = [observed.path_table[k] for k in observed.path_ids.tolist()]
    assert routes == [("a", "b"), ("a",), ("a",), ("a",)]
    assert list(observed.arrival_s) == list(trace.arrival_s)
    assert paths_agreement(trace, observed) == 0.5
    assert observed_trace(trace, [None] * 4) is trace
    plain = Trace.from_arrivals([0.0, 0.1])
    assert observed_trace(plain, ["a", "a"]) is plain
    assert paths_agreement(plain, plain) is None


def test_the_sampling_error_of_a_p99_shrinks_with_the_run_and_needs_answers() -> None:
    from inferline.bench.promise import p99_sampling_sd

    rng = np.random.default_rng(1)
    short = p99_sampling_sd(rng.exponential(0.01, 1_000))
    long = p99_sampling_sd(rng.exponential(0.01, 16_000))
    assert short is not None and long is not None
    assert long < short  # 16 x the queries: about a quarter of the spread
    assert p99_sampling_sd(np.full(50, 0.01)) is None
    assert p99_sampling_sd(np.array([np.nan] * 200)) is None


def test_replanning_takes_the_cpu_work_on_shared_cores_with_its_overhead() -> None:
    from inferline.bench.promise import replanning_profiles
    from inferline.engine import CalibrationReport
    from inferline.profiles import EngineOverhead

    def one(t: float) -> Profiles:
        return profiles_for({"a": {1: (t, t)}})

    measured = EngineOverhead(per_batch_s=1e-4, per_query_s=4e-4)
    served, work = one(0.004).with_overhead(measured), one(0.002).with_overhead(measured)
    report = CalibrationReport("http://x", "m", 60.0, served, {}, {}, {}, work_profiles=work)
    shared = MachinePool(cores=2, memory_bytes=None)
    busy = MachinePool(cores=2, memory_bytes=None, fit="busy")

    def curve(p: Profiles) -> tuple[ProfilePoint, ...]:
        return p.get("a", "cpu-1").points

    assert curve(replanning_profiles(report, shared)) == curve(work)
    assert curve(replanning_profiles(report, busy)) == curve(served)
    assert replanning_profiles(report, shared).overhead == measured
    no_work = CalibrationReport("http://x", "m", 60.0, served, {}, {}, {})
    assert curve(replanning_profiles(no_work, shared)) == curve(served)
    # asked for by name, as `inferline calibrate --cpu-work` and il.calibrate do
    assert report.chosen_profiles() is served and report.chosen_profiles(True) is work
    with pytest.raises(ConfigError, match="calibrated no CPU work") as none:
        no_work.chosen_profiles(cpu_work=True)
    assert none.value.field == "cpu_work" and "http://x" in str(none.value)


def test_the_load_generator_takes_its_cores_on_shared_cores_only() -> None:
    """The benchmark's client shares the machine: its CPU per query joins the
    front-end's when the Planner simulates the cores as shared."""
    from inferline.bench.promise import calibration_profiles, with_client_cpu
    from inferline.engine import CalibrationReport
    from inferline.profiles import DEFAULT_FRONTEND_CPU_S_PER_QUERY, EngineOverhead

    plain = profiles_for({"a": {1: (0.002, 0.003)}})
    added = with_client_cpu(plain, 3e-4)
    assert added.overhead is not None
    assert added.overhead.frontend_cpu_s_per_query == pytest.approx(
        DEFAULT_FRONTEND_CPU_S_PER_QUERY + 3e-4
    )
    assert with_client_cpu(plain, None) is plain and with_client_cpu(plain, 0.0) is plain
    measured = plain.with_overhead(EngineOverhead(frontend_cpu_s_per_query=6e-4))
    report = CalibrationReport("http://x", "m", 60.0, measured, {}, {}, {}, work_profiles=measured)
    shared = MachinePool(cores=2, memory_bytes=None)
    busy = MachinePool(cores=2, memory_bytes=None, fit="busy")
    on_shared = calibration_profiles(report, shared, 4e-4).overhead
    assert on_shared is not None and on_shared.frontend_cpu_s_per_query == pytest.approx(1e-3)
    on_busy = calibration_profiles(report, busy, 4e-4).overhead
    assert on_busy is not None and on_busy.frontend_cpu_s_per_query == pytest.approx(6e-4)


def test_the_spread_between_repeats_is_relative_to_their_median() -> None:
    from inferline.bench.promise import repeat_spread

    assert repeat_spread([0.063, 0.094]) == pytest.approx(0.031 / 0.0785)
    assert repeat_spread([0.1, 0.1, 0.1]) == 0.0
    assert repeat_spread([0.1]) is None
    assert repeat_spread([0.1, None]) is None
    assert repeat_spread([0.1, float("nan"), 0.12]) == pytest.approx(0.02 / 0.11)


def test_plans_keep_the_margin_as_headroom_and_the_settings_refuse_a_margin_of_one() -> None:
    """With a margin the plan's estimated P99 stays within SLO × (1 − margin): the plan for
    the same trace and SLO costs at least the one planned to the SLO itself."""
    pipeline = Pipeline.chain("one", ["work"])
    profiles = profiles_for({"work": {1: (0.010, 0.009), 4: (0.024, 0.022)}})
    pool = MachinePool(cores=8, memory_bytes=8 * GIB)
    trace = gamma_trace(150.0, 1.0, 30.0, 0)
    to_slo = plan_for_machine(pipeline, profiles, trace, 0.05, pool)
    headroom = plan_for_machine(pipeline, profiles, trace, 0.05, pool, margin=PLANNING_MARGIN)
    assert to_slo is not None and headroom is not None
    assert headroom.estimated_p99_s <= 0.05 * (1 - PLANNING_MARGIN)
    assert headroom.cost_per_hour >= to_slo.cost_per_hour
    assert PromiseSettings().margin == PLANNING_MARGIN
    for bad in (1.0, -0.1):
        with pytest.raises(ConfigError) as refused:
            PromiseSettings(margin=bad)
        assert refused.value.field == "margin"


def test_the_tail_bias_is_what_the_calibration_serve_measured_over_its_estimate() -> None:
    """Plans are corrected only upward, and not beyond what a disturbed serve would say."""
    assert tail_bias(0.056, 0.050) == pytest.approx(1.12)
    assert tail_bias(0.045, 0.050) == 1.0  # an Estimator that runs high is safe as it is
    assert tail_bias(0.500, 0.050) == MAX_TAIL_BIAS
    assert tail_bias(None, 0.05) == 1.0 and tail_bias(0.05, None) == 1.0
    assert tail_bias(0.05, 0.0) == 1.0 and tail_bias(math.inf, 0.05) == 1.0


@given(
    margin=st.floats(min_value=0.0, max_value=0.5),
    bias=st.floats(min_value=0.5, max_value=MAX_TAIL_BIAS),
    slo_s=st.floats(min_value=0.001, max_value=10.0),
)
def test_a_biased_margin_keeps_the_corrected_estimate_within_the_margin(
    margin: float, bias: float, slo_s: float
) -> None:
    """An estimate at the biased margin's limit, × the bias, is the margin's own limit."""
    limit_s = slo_s * (1 - biased_margin(margin, bias))
    assert limit_s * max(bias, 1.0) == pytest.approx(slo_s * (1 - margin))
    assert biased_margin(margin, bias) >= margin - 1e-12


def test_a_bias_makes_plans_cheaper_never_and_safer_always() -> None:
    """The Planner at the biased margin: a plan whose estimate × bias keeps the margin."""
    pipeline = Pipeline.chain("one", ["work"])
    profiles = profiles_for({"work": {1: (0.010, 0.009), 4: (0.024, 0.022)}})
    pool = MachinePool(cores=8, memory_bytes=8 * GIB)
    trace = gamma_trace(150.0, 1.0, 30.0, 0)
    plain = plan_for_machine(pipeline, profiles, trace, 0.05, pool, margin=PLANNING_MARGIN)
    biased = plan_for_machine(
        pipeline, profiles, trace, 0.05, pool, margin=PLANNING_MARGIN, tail_bias=1.3
    )
    assert plain is not None and biased is not None
    assert biased.estimated_p99_s * 1.3 <= 0.05 * (1 - PLANNING_MARGIN)
    assert (biased.margin, biased.tail_bias) == (PLANNING_MARGIN, 1.3)
    assert biased.cost_per_hour >= plain.cost_per_hour
    assert PromiseSettings().correct_bias


def test_a_live_estimate_is_the_run_model_times_the_ratio_learned_before_it() -> None:
    """Unlike a plan's tail bias, the live ratio corrects both ways and is not clamped."""
    assert ratio_of(0.045, 0.050) == pytest.approx(0.9)
    assert ratio_of(None, 0.05) is None and ratio_of(0.05, 0.0) is None
    assert ratio_of(math.inf, 0.05) is None
    from inferline.estimator import SimulationResult

    def result(p99_s: float) -> SimulationResult:
        return SimulationResult(
            arrival_s=np.arange(200.0), latency_s=np.full(200, p99_s), slo_s=0.1, stages={},
            cost_per_hour=0.1,
        )  # fmt: skip

    measured = {"p99_s": 0.044, "miss_rate": 0.0}
    machine = {"max_threads": 3}
    run = _run_figures(
        measured, machine, result(0.04), None, result(0.040), None, bias=1.2, live_ratio=1.05
    )
    assert run["live_p99_s"] == pytest.approx(0.042) and run["corrected_p99_s"] == 0.048
    assert run["measured_over_shared"] == pytest.approx(1.1)
    assert run["live_error"] == pytest.approx(0.002 / 0.044)
    pool = MachinePool(cores=2, memory_bytes=8 * GIB)
    run.update(machine_load=None)
    summary = _level_summary([run], pool, PromiseSettings())
    assert summary["error_judged"] == "live" and summary["error_pass"]
    plain = _run_figures(measured, machine, result(0.04), None, result(0.040), None, bias=1.2)
    plain.update(machine_load=None)
    assert plain["live_p99_s"] is None
    assert _level_summary([plain], pool, PromiseSettings())["error_judged"] == "corrected"
