"""Planning for a machine: every plan returned fits it, a machine big enough changes nothing,
and when nothing fits the error says what machine would.

Evenly spaced arrivals (``gamma_trace(cv=0)``) as in test_planner.py: a batch-1 stage of
latency L serving one query every g seconds needs ceil(L / g) replicas.
"""

from __future__ import annotations

import math
import re

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from inferline.errors import CapacityError, ConfigError, InfeasibleError, MachineInfeasibleError
from inferline.estimator import Estimator
from inferline.pipeline import Pipeline, PipelineConfig
from inferline.planner import PLANNERS, Plan, plan, plan_cg_peak, plan_inferline
from inferline.planner._inferline import initialize
from inferline.planner._search import Search
from inferline.profiles import (
    DEFAULT_FRONTEND_CPU_S_PER_QUERY,
    BatchProfile,
    EngineOverhead,
    FitRule,
    HardwareCatalogue,
    HardwareType,
    MachinePool,
    ProfilePoint,
    Profiles,
    check_plan_fits,
    resources_for,
)
from inferline.workload import Trace, gamma_trace


def make_profiles(
    prices: dict[str, float], curves: dict[tuple[str, str], dict[int, float]]
) -> Profiles:
    hardware = HardwareCatalogue(tuple(HardwareType(n, p) for n, p in prices.items()))
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
    return gamma_trace(rate_qps, 0.0, duration_s, seed=0)


def machine(cores: int, gpus: int = 0, fit: FitRule = "threads") -> MachinePool:
    """The literal rule unless told: the tests below count threads against cores."""
    return MachinePool(cores=cores, memory_bytes=None, gpus=gpus, fit=fit)


ONE = Pipeline.chain("one", ["work"])
# 25 ms per query, one every 10 ms: 3 single-thread replicas ($0.30/h)
THREE_REPLICAS = make_profiles({"cpu-1": 0.1}, {("work", "cpu-1"): {1: 0.025}})


def threads(result: Plan) -> int:
    assert result.machine is not None
    return result.machine.replica_threads


def test_a_machine_big_enough_changes_nothing_and_is_recorded() -> None:
    free = plan_inferline(ONE, THREE_REPLICAS, even(100), 0.05)
    # 4 cores: 0.05 + 100 q/s × 0.8 ms = 0.13 core for the front-end, 3.87 for replicas
    bound = plan_inferline(ONE, THREE_REPLICAS, even(100), 0.05, machine=machine(4))
    assert bound.config == free.config and bound.cost_per_hour == pytest.approx(0.3)
    assert bound.machine is not None and free.machine is None
    assert bound.machine.pool.frontend_reserve_cores == pytest.approx(0.13, abs=1e-3)
    assert not bound.machine.cpu_measured and threads(bound) == 3
    assert bound.machine.describe() == (
        "machine: 4 cores, front-end share 0.13 core (100 q/s × 0.80 ms CPU/query, default, "
        "+ floor), replicas use 3 of 3.87 cores"
    )
    assert bound.summary()["machine"]["replica_threads"] == 3
    two_per_core = MachinePool(
        cores=2, memory_bytes=None, planning_threads_per_core=2.0, fit="threads"
    )
    relaxed = plan_inferline(ONE, THREE_REPLICAS, even(100), 0.05, machine=two_per_core)
    assert relaxed.config == free.config and relaxed.machine is not None
    assert relaxed.machine.describe().endswith(
        "replicas use 3 threads of 3 (1.87 cores × 2 threads/core)"
    )


def test_a_machine_too_small_says_how_many_cores_and_carries_the_unbounded_plan() -> None:
    with pytest.raises(MachineInfeasibleError) as caught:
        plan_inferline(ONE, THREE_REPLICAS, even(100), 0.05, machine=machine(3))
    error = caught.value
    assert isinstance(error, InfeasibleError) and error.exit_code == 3
    assert (error.needs_cores, error.has_cores) == (4, 3)
    assert "inferline: infeasible on this machine: needs 4 cores, has 3" in str(error)
    assert "runs 3 replica thread(s) plus 0.13 core for the front-end" in str(error)
    assert isinstance(error.unbounded, Plan) and error.unbounded.cost_per_hour == pytest.approx(0.3)


def test_the_measured_front_end_share_is_used_when_the_profiles_record_it() -> None:
    # 4 ms of front-end CPU per query at 100 q/s: 0.45 core, so 3 cores leave 2.55: 2 threads
    measured = THREE_REPLICAS.with_overhead(EngineOverhead(frontend_cpu_s_per_query=0.004))
    with pytest.raises(MachineInfeasibleError):
        plan_inferline(ONE, measured, even(100), 0.05, machine=machine(3))
    bound = plan_inferline(ONE, measured, even(100), 0.05, machine=machine(4))
    assert bound.machine is not None and bound.machine.cpu_measured
    assert bound.machine.pool.frontend_reserve_cores == pytest.approx(0.45)
    assert "4.00 ms CPU/query, measured" in bound.machine.describe()


# one stage, two ways: a 4-thread instance that is cheap ($0.10/h, 10 ms) and a 1-thread one
# that costs more ($0.12/h, 9 ms); at 100 q/s either keeps up with one replica
TRADE = make_profiles(
    {"cpu-4": 0.10, "cpu-1": 0.12},
    {("work", "cpu-4"): {1: 0.0099}, ("work", "cpu-1"): {1: 0.009}},
)


@pytest.mark.parametrize("planner", ["inferline", "exhaustive"])
def test_a_searching_planner_trades_cost_for_threads_to_fit(planner: str) -> None:
    free = plan(planner, ONE, TRADE, even(100), 0.05)
    assert free.stages()["work"] == {"hardware": "cpu-4", "batch_size": 1, "replicas": 1}
    bound = plan(planner, ONE, TRADE, even(100), 0.05, machine=machine(3))
    assert bound.stages()["work"] == {"hardware": "cpu-1", "batch_size": 1, "replicas": 1}
    assert bound.cost_per_hour == pytest.approx(0.12) and bound.feasible
    assert bound.machine is not None and threads(bound) == 1
    assert "does not fit 2; searched again within the machine" in bound.log[0]
    assert bound.estimator_calls >= free.estimator_calls


def test_gpu_replicas_are_bounded_by_the_machines_gpus() -> None:
    profiles = make_profiles(
        {"cpu-1": 0.5, "t4": 0.3},
        {("work", "cpu-1"): {1: 0.009}, ("work", "t4"): {1: 0.005}},
    )
    assert plan_inferline(ONE, profiles, even(100), 0.05).stages()["work"]["hardware"] == "t4"
    with_gpu = plan_inferline(ONE, profiles, even(100), 0.05, machine=machine(2, gpus=1))
    assert with_gpu.stages()["work"]["hardware"] == "t4"
    assert with_gpu.machine is not None and with_gpu.machine.gpu_replicas == 1
    without = plan_inferline(ONE, profiles, even(100), 0.05, machine=machine(2))
    assert without.stages()["work"]["hardware"] == "cpu-1"


def test_the_coarse_grained_planners_check_the_machine_but_do_not_search() -> None:
    # CG-Peak: the fastest hardware (cpu-1), replicas for the peak rate: 2
    fits = plan_cg_peak(ONE, TRADE, even(100), 0.05, machine=machine(8))
    assert fits.stages()["work"] == {"hardware": "cpu-1", "batch_size": 1, "replicas": 2}
    assert fits.machine is not None and fits.machine.replica_threads == 2
    with pytest.raises(MachineInfeasibleError) as caught:
        plan("cg-peak", ONE, TRADE, even(100), 0.05, machine=machine(2))
    assert "needs 3 cores, has 2" in str(caught.value)
    assert "does not search within a machine" in str(caught.value)


def test_an_slo_no_machine_can_meet_is_the_plain_infeasible_error() -> None:
    with pytest.raises(InfeasibleError) as caught:
        plan_inferline(ONE, THREE_REPLICAS, even(100), 0.02, machine=machine(64))
    assert not isinstance(caught.value, MachineInfeasibleError)


# --- fit=busy: the CPU a plan uses, not its thread count -----------------------------------------

# four single-thread stages of 10 ms each (batch 1; 4 ms per query at batch 8): idle most of
# the time at 8 q/s, each needs a replica of its own
FOUR = Pipeline.chain("four", ["a", "b", "c", "d"])
FOUR_PROFILES = make_profiles(
    {"cpu-1": 0.1},
    {(n, "cpu-1"): {1: 0.010, 2: 0.012, 4: 0.018, 8: 0.032} for n in "abcd"},
)


def test_a_four_stage_pipeline_at_a_low_rate_fits_two_cores_by_busy_cores_not_by_threads() -> None:
    with pytest.raises(MachineInfeasibleError) as caught:
        plan_inferline(FOUR, FOUR_PROFILES, even(8), 0.25, machine=machine(2, fit="threads"))
    assert "needs 5 cores, has 2" in str(caught.value)
    busy = plan_inferline(FOUR, FOUR_PROFILES, even(8), 0.25, machine=machine(2, fit="busy"))
    assert busy.machine is not None and busy.machine.replica_threads == 4
    # 4 stages × 8 q/s × 10 ms = 0.32 busy cores; 80 % of 2 less 0.06 for the front-end
    assert busy.machine.replica_busy_cores == pytest.approx(0.32, abs=0.01)
    assert busy.machine.describe().endswith(
        "replicas busy 0.32 of 1.54 cores (target 80 % of 2, less the front-end's share), "
        "4 threads of 8"
    )
    record = busy.summary()["machine"]
    assert record["fit"] == "busy" and record["busy_cores_allowed"] == pytest.approx(1.5436)
    assert record["replica_busy_cores"] == pytest.approx(0.32, abs=0.01)


def test_busy_cores_beyond_the_target_are_infeasible_with_the_cores_that_would_do() -> None:
    # 60 q/s: 4 × 60 × 10 ms = 2.4 busy cores at batch 1, far less batched; 30 ms SLO
    # leaves no room to batch, so the plan keeps ~2.4 cores busy
    with pytest.raises(MachineInfeasibleError) as caught:
        plan_inferline(FOUR, FOUR_PROFILES, even(60), 0.045, machine=machine(2, fit="busy"))
    text = str(caught.value)
    assert re.search(r"infeasible on this machine: needs 2\.\d\d busy cores, has 1\.60 ", text)
    assert "(80 % of 2 cores; 4 cores would do)" in text and caught.value.needs_cores == 4
    assert "raise max-busy-fraction=F knowingly" in text
    # a looser target admits it: 100 % of 3 cores
    roomy = MachinePool(cores=3, memory_bytes=None, max_busy_fraction=1.0)
    fitted = plan_inferline(FOUR, FOUR_PROFILES, even(60), 0.045, machine=roomy)
    assert fitted.machine is not None and fitted.machine.replica_busy_cores is not None
    share = fitted.machine.pool.frontend_reserve_cores
    assert fitted.machine.replica_busy_cores <= roomy.cores - share


@pytest.mark.parametrize("planner", ["inferline", "exhaustive"])
def test_a_searching_planner_trades_cost_for_busy_cores_to_fit(planner: str) -> None:
    # the cheap 4-thread instance keeps ~4 cores busy at 100 q/s (all its threads work each
    # batch), the dearer 1-thread one ~0.9: on 2 cores only the latter fits
    free = plan(planner, ONE, TRADE, even(100), 0.05)
    assert free.stages()["work"]["hardware"] == "cpu-4"
    pool = machine(2, fit="busy")
    bound = plan(planner, ONE, TRADE, even(100), 0.05, machine=pool)
    assert bound.stages()["work"] == {"hardware": "cpu-1", "batch_size": 1, "replicas": 1}
    assert bound.machine is not None and bound.machine.replica_busy_cores is not None
    assert bound.machine.replica_busy_cores == pytest.approx(0.9, abs=0.02)
    assert "busy cores" in bound.log[0] and "searched again within the machine" in bound.log[0]
    assert fits(bound.config, bound.machine.pool, ONE, TRADE, even(100))


def test_initialize_batches_the_busiest_stage_before_it_gives_up_on_busy_cores() -> None:
    # 60 q/s evenly: every configuration meets a 0.15 s SLO and keeps ~2.4 cores busy
    # whatever its batch (no queue forms to fill one): batches rise to the largest, then stop
    pool = machine(2, fit="busy").for_planning(60.0)
    search = Search(FOUR, FOUR_PROFILES, even(60), 0.15, machine=pool)
    log: list[str] = []
    with pytest.raises(InfeasibleError) as caught:
        initialize(search, log)
    assert "every stage is at its largest profiled batch" in str(caught.value)
    assert "keeps 2.39 cores busy" in str(caught.value) and "the machine allows 1.50" in str(
        caught.value
    )
    assert "batch 1->2 on the busiest stage that can batch more, 'a'" in log[1]
    assert sum("on the busiest stage" in line for line in log) == 12  # 1->2->4->8, four stages


def test_a_bad_fit_rule_or_busy_fraction_is_a_config_error_naming_the_field() -> None:
    with pytest.raises(ConfigError) as caught:
        MachinePool(cores=2, memory_bytes=None, fit="cores")  # type: ignore[arg-type]
    assert caught.value.field == "fit" and "busy, shared, threads" in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        MachinePool(cores=2, memory_bytes=None, max_busy_fraction=1.5)
    assert caught.value.field == "max_busy_fraction"


# --- any plan returned fits; a machine that holds the optimum changes nothing --------------------

HARDWARE = ("cpu-1", "cpu-2", "t4")
PRICES = {"cpu-1": 0.05, "cpu-2": 0.07, "t4": 0.2}  # cpu-2 and t4 cheaper per query
SPEED = {"cpu-1": 1.0, "cpu-2": 0.6, "t4": 0.2}  # latency multiplier on each hardware


@st.composite
def small_problems(draw: st.DrawFn) -> tuple[Pipeline, Profiles, float, MachinePool]:
    n = draw(st.integers(1, 3))
    names = [f"s{i}" for i in range(n)]
    curves: dict[tuple[str, str], dict[int, float]] = {}
    for name in names:
        base_ms = draw(st.floats(1.0, 12.0))
        growth = draw(st.floats(0.1, 1.0))
        for hw in draw(st.sets(st.sampled_from(HARDWARE), min_size=2)):
            curves[(name, hw)] = {
                b: round(SPEED[hw] * base_ms * (1 + growth * (b - 1)) / 1000, 6) for b in (1, 2, 4)
            }
    rate = draw(st.sampled_from([50.0, 100.0, 200.0]))
    pool = MachinePool(
        cores=draw(st.integers(1, 12)),
        memory_bytes=None,
        gpus=draw(st.integers(0, 2)),
        planning_threads_per_core=draw(st.sampled_from([1.0, 2.0])),
        fit=draw(st.sampled_from(["busy", "threads"])),
        max_busy_fraction=draw(st.sampled_from([0.5, 0.8, 1.0])),
    )
    profiles = make_profiles(PRICES, curves)
    return Pipeline.chain("p", names), profiles, rate, pool


def fits(
    config: PipelineConfig, pool: MachinePool, pipeline: Pipeline, profiles: Profiles, trace: Trace
) -> bool:
    """The machine check, busy cores worked out afresh: ``config`` re-simulated on ``trace``."""
    try:
        check_plan_fits(config, pool)
    except CapacityError:
        return False
    if pool.fit == "threads":
        return True
    # a CPU replica gets at most the whole cores left after the front-end's share, unless
    # its stage was profiled on nothing narrower
    width = max(1, math.floor(pool.cores - pool.frontend_reserve_cores + 1e-9))
    for name, c in config.stages.items():
        narrower = [
            hw
            for hw in profiles.hardware_for(name)
            if resources_for(hw, pool.cores).device == "cuda"
            or resources_for(hw, pool.cores).threads <= width
        ]
        if narrower and c.hardware not in narrower:
            return False
    stages = Estimator(pipeline, profiles, trace).run(config).stages
    busy = sum(
        stages[name].utilization * c.replicas * resources_for(c.hardware, pool.cores).threads
        for name, c in config.stages.items()
    )
    return busy <= pool.busy_cores_allowed + 1e-6


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problem=small_problems(), planner=st.sampled_from(sorted(PLANNERS)))
def test_any_plan_returned_fits_and_a_roomy_machine_changes_nothing(
    problem: tuple[Pipeline, Profiles, float, MachinePool], planner: str
) -> None:
    pipeline, profiles, rate, pool = problem
    trace = even(rate, 4.0)
    slo_s = 0.1
    try:
        free = plan(planner, pipeline, profiles, trace, slo_s, max_seconds=5)
    except InfeasibleError:
        event("the SLO cannot be met anywhere")
        with pytest.raises(InfeasibleError):
            plan(planner, pipeline, profiles, trace, slo_s, max_seconds=5, machine=pool)
        return
    planning = pool.for_planning(trace.mean_rate_qps, DEFAULT_FRONTEND_CPU_S_PER_QUERY)
    refused: MachineInfeasibleError | None = None
    try:
        bound = plan(planner, pipeline, profiles, trace, slo_s, max_seconds=5, machine=pool)
    except MachineInfeasibleError as exc:
        refused = exc
    unbounded_fits = fits(free.config, planning, pipeline, profiles, trace)
    event(f"fit={pool.fit}")
    if refused is not None:
        event("infeasible on the machine")
        assert not unbounded_fits and refused.has_cores == pool.cores
        assert refused.needs_cores > pool.cores or refused.needs_gpus > pool.gpus
        assert isinstance(refused.unbounded, Plan) and refused.unbounded.config == free.config
        return
    assert fits(bound.config, planning, pipeline, profiles, trace)  # every plan returned fits
    assert bound.machine is not None and bound.machine.pool == planning
    assert bound.feasible or planner == "cg-mean"
    if unbounded_fits:
        event("the unbounded plan fits")
        assert bound.config == free.config
        assert bound.cost_per_hour == pytest.approx(free.cost_per_hour)
    else:
        event("searched within the machine")
        assert planner in ("inferline", "exhaustive")
        assert bound.cost_per_hour >= free.cost_per_hour - 1e-9 or planner == "inferline"


@pytest.mark.parametrize("planner", ["inferline", "exhaustive"])
def test_one_stage_of_several_moves_to_hardware_with_fewer_threads(planner: str) -> None:
    two = Pipeline.chain("two", ["a", "b"])
    profiles = make_profiles(
        {"cpu-4": 0.10, "cpu-1": 0.12},
        {("a", "cpu-1"): {1: 0.005}, ("b", "cpu-4"): {1: 0.0099}, ("b", "cpu-1"): {1: 0.009}},
    )
    free = plan(planner, two, profiles, even(100), 0.05)
    assert free.stages()["b"]["hardware"] == "cpu-4"  # 1 + 4 threads
    bound = plan(planner, two, profiles, even(100), 0.05, machine=machine(3))  # 2 threads
    assert {n: s["hardware"] for n, s in bound.stages().items()} == {"a": "cpu-1", "b": "cpu-1"}
    assert bound.feasible and bound.cost_per_hour == pytest.approx(0.24)
    assert bound.machine is not None and bound.machine.replica_threads == 2


def test_a_tail_bias_plans_the_estimate_times_it_and_is_recorded_apart_from_the_margin() -> None:
    """25 ms a query whatever the replicas: × 1.3 is 32.5 ms, within 40 ms but not 30;
    the plan (and the unbounded one a too-small machine carries) keeps the margin asked
    for and the bias apart; a bias that is no positive ratio is refused by name."""
    biased = plan("inferline", ONE, THREE_REPLICAS, even(100), 0.04, tail_bias=1.3)
    assert biased.feasible and biased.estimated_p99_s == pytest.approx(0.025)
    assert (biased.margin, biased.tail_bias) == (0.0, 1.3)
    assert biased.summary()["tail_bias"] == 1.3
    assert plan("inferline", ONE, THREE_REPLICAS, even(100), 0.03).feasible
    with pytest.raises(InfeasibleError):
        plan("inferline", ONE, THREE_REPLICAS, even(100), 0.03, tail_bias=1.3)
    low = plan("inferline", ONE, THREE_REPLICAS, even(100), 0.03, margin=0.1, tail_bias=0.5)
    assert (low.margin, low.tail_bias) == (0.1, 1.0)  # an Estimator running high: as it is
    with pytest.raises(MachineInfeasibleError) as caught:
        plan("inferline", ONE, THREE_REPLICAS, even(100), 0.04, margin=0.1, tail_bias=1.3,
             machine=machine(3))  # fmt: skip
    unbounded = caught.value.unbounded
    assert isinstance(unbounded, Plan) and (unbounded.margin, unbounded.tail_bias) == (0.1, 1.3)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match=r"tail_bias.*positive ratio"):
            plan("inferline", ONE, THREE_REPLICAS, even(100), 0.04, tail_bias=bad)


# one stage, a cheap two-thread instance ($0.10/h, 10 ms) and a dearer one-thread one
# ($0.12/h, 12 ms); at 20 q/s either keeps up with one replica
WIDE = make_profiles(
    {"cpu-2": 0.10, "cpu-1": 0.12},
    {("work", "cpu-2"): {1: 0.010}, ("work", "cpu-1"): {1: 0.012}},
)


def shared(cores: int, threads_per_replica: int | None = None) -> MachinePool:
    return MachinePool(
        cores=cores, memory_bytes=None, fit="shared", threads_per_replica=threads_per_replica
    )


@pytest.mark.parametrize("planner", ["inferline", "exhaustive"])
def test_on_shared_cores_no_replica_asks_for_every_core(planner: str) -> None:
    free = plan(planner, ONE, WIDE, even(20), 0.05)
    assert free.stages()["work"]["hardware"] == "cpu-2"
    narrow = plan(planner, ONE, WIDE, even(20), 0.05, machine=shared(2))
    assert narrow.stages()["work"] == {"hardware": "cpu-1", "batch_size": 1, "replicas": 1}
    assert narrow.machine is not None and narrow.machine.pool.max_threads_per_replica == 1
    assert narrow.summary()["machine"]["max_threads_per_replica"] == 1
    assert any(
        "a CPU replica has at most 1 thread(s) here" in line and "left out: work: cpu-2" in line
        for line in narrow.log
    )
    # four cores keep three for replicas; a replica may then have two threads
    assert (
        plan(planner, ONE, WIDE, even(20), 0.05, machine=shared(4)).stages()["work"]["hardware"]
        == "cpu-2"
    )
    # the bound by hand: two threads allowed on two cores
    wide = plan(planner, ONE, WIDE, even(20), 0.05, machine=shared(2, threads_per_replica=2))
    assert wide.stages()["work"]["hardware"] == "cpu-2"
    assert not any("left out" in line for line in wide.log)


def test_a_stage_profiled_only_on_wide_hardware_keeps_it() -> None:
    only_wide = make_profiles({"cpu-2": 0.10}, {("work", "cpu-2"): {1: 0.010}})
    kept = plan_inferline(ONE, only_wide, even(20), 0.05, machine=shared(2))
    assert kept.stages()["work"]["hardware"] == "cpu-2" and kept.feasible


def test_the_width_bound_is_the_busy_rules_and_follows_the_front_end_share() -> None:
    assert shared(2).max_threads_per_replica == 1
    assert shared(8).max_threads_per_replica == 7  # the engine's reserve: one core
    assert shared(8).for_planning(100.0).max_threads_per_replica == 7  # 0.13 core kept
    assert shared(8).for_planning(2000.0).max_threads_per_replica == 6  # 1.65 cores kept
    assert MachinePool(cores=2, memory_bytes=None, fit="busy").too_wide("cpu-2")
    assert not shared(2).too_wide("cpu-1") and not shared(2).too_wide("t4")
    assert machine(2).max_threads_per_replica is None  # fit=threads: a core per thread
    with pytest.raises(ConfigError, match="threads_per_replica must be a whole number >= 1"):
        shared(2, threads_per_replica=0)


def test_when_only_a_wide_replica_meets_the_slo_the_error_names_the_cores_it_needs() -> None:
    # 11 ms: only the two-thread instance (10 ms) is fast enough
    with pytest.raises(MachineInfeasibleError) as caught:
        plan_inferline(ONE, WIDE, even(20), 0.011, machine=shared(2))
    error = caught.value
    assert (error.needs_cores, error.has_cores) == (3, 2)
    assert "needs 3 cores, has 2, for a 2-thread replica next to the front-end" in str(error)
    assert isinstance(error.unbounded, Plan)
    assert error.unbounded.stages()["work"]["hardware"] == "cpu-2"
    assert plan_inferline(ONE, WIDE, even(20), 0.011, machine=shared(3)).feasible
