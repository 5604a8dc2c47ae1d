"""Hand-computed Estimator cases, checked exactly, and agreement with the SimPy model.

Expected finish times are written as the same floating-point sums the
simulator performs (start + latency), so every comparison is ``==``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from inferline.bench.simpy_model import simulate_with_simpy
from inferline.errors import ConfigError
from inferline.estimator import Estimator, QueuePolicy, ServiceTime, simulate
from inferline.pipeline import Edge, Pipeline, PipelineConfig, Stage, StageConfig
from inferline.profiles import BatchProfile, HardwareCatalogue, HardwareType, ProfilePoint, Profiles
from inferline.workload import Trace, gamma_trace

HW = "cpu-1"
CATALOGUE = HardwareCatalogue((HardwareType(HW, price_per_hour=0.5),))


def make_profiles(points: dict[str, dict[int, float]]) -> Profiles:
    """stage -> {batch size: latency s} (median = p99)."""
    return Profiles(
        CATALOGUE,
        {
            (stage, HW): BatchProfile(
                stage, HW, tuple(ProfilePoint(b, s, s) for b, s in sorted(table.items()))
            )
            for stage, table in points.items()
        },
    )


def make_config(**stages: tuple[int, int]) -> PipelineConfig:
    """stage=(max batch, replicas)."""
    return PipelineConfig(
        stages={
            name: StageConfig(hardware=HW, batch_size=batch, replicas=replicas)
            for name, (batch, replicas) in stages.items()
        }
    )


def latencies(
    pipeline: Pipeline,
    profiles: Profiles,
    config: PipelineConfig,
    arrival: list[float] | np.ndarray,
) -> np.ndarray:
    return simulate(pipeline, profiles, config, Trace.from_arrivals(arrival)).latency_s


# --- batching on one stage ---------------------------------------------------------------


def test_one_stage_batching_exact() -> None:
    pipeline = Pipeline.chain("one", ["m"])
    profiles = make_profiles({"m": {1: 0.010, 2: 0.012, 4: 0.016}})
    config = make_config(m=(4, 1))
    arrival = [0.0, 0.0, 0.0, 0.001, 0.002, 0.003, 0.004, 0.030]
    result = simulate(pipeline, profiles, config, Trace.from_arrivals(arrival))
    # t=0: q0-q2 form a batch of 3, which costs the batch-4 latency (higher neighbour)
    b1 = 0.0 + 0.016
    # q3-q6 queue meanwhile and leave together as a full batch of 4
    b2 = b1 + 0.016
    # q7 arrives while the replica is busy and runs alone
    b3 = b2 + 0.010
    finish = np.array([b1, b1, b1, b2, b2, b2, b2, b3])
    assert np.array_equal(result.latency_s, finish - np.array(arrival))
    stats = result.stages["m"]
    assert (stats.visits, stats.batches) == (8, 3)
    assert stats.mean_batch_size == 8 / 3
    waits = [0, 0, 0, b1 - 0.001, b1 - 0.002, b1 - 0.003, b1 - 0.004, b2 - 0.030]
    assert stats.mean_queue_s == pytest.approx(sum(waits) / 8, rel=1e-12)
    assert stats.utilization == pytest.approx(1.0, rel=1e-12)  # busy from 0 to the end


def test_idle_replica_does_not_wait_to_fill_a_batch() -> None:
    pipeline = Pipeline.chain("one", ["m"])
    profiles = make_profiles({"m": {1: 0.010, 8: 0.020}})
    lat = latencies(pipeline, profiles, make_config(m=(8, 1)), [0.0, 0.005])
    # q0 leaves at once in a batch of 1; q1 waits for the replica, then runs alone
    assert np.array_equal(lat, np.array([0.010, (0.0 + 0.010) + 0.010 - 0.005]))


@pytest.mark.parametrize(
    ("batch", "expected"),
    [(1, 0.010), (2, 0.020), (3, 0.020), (4, 0.020), (5, 0.050), (8, 0.050)],
)
def test_batch_latency_between_profiled_sizes_uses_higher_neighbour(
    batch: int, expected: float
) -> None:
    pipeline = Pipeline.chain("one", ["m"])
    profiles = make_profiles({"m": {1: 0.010, 4: 0.020, 8: 0.050}})
    lat = latencies(pipeline, profiles, make_config(m=(8, 1)), [0.0] * batch)
    assert np.array_equal(lat, np.full(batch, expected))


def test_lookup_takes_the_higher_latency_of_both_neighbours() -> None:
    # a non-monotone profile (measurement noise): between 1 and 4 the larger value wins
    pipeline = Pipeline.chain("one", ["m"])
    profiles = make_profiles({"m": {1: 0.030, 4: 0.020}})
    lat = latencies(pipeline, profiles, make_config(m=(4, 1)), [0.0, 0.0])
    assert np.array_equal(lat, np.array([0.030, 0.030]))
    lat = latencies(pipeline, profiles, make_config(m=(4, 1)), [0.0] * 4)
    assert np.array_equal(lat, np.full(4, 0.020))


def test_replicas_share_one_queue() -> None:
    pipeline = Pipeline.chain("one", ["m"])
    profiles = make_profiles({"m": {1: 0.010, 2: 0.015}})
    arrival = [0.0, 0.0, 0.0, 0.0, 0.0]
    lat = latencies(pipeline, profiles, make_config(m=(2, 2)), arrival)
    # two replicas take q0-q1 and q2-q3 at once; q4 goes to the first one free
    first = 0.0 + 0.015
    assert np.array_equal(lat, np.array([first, first, first, first, first + 0.010]))


# --- queue order -------------------------------------------------------------------------


def _order_case(policy: QueuePolicy) -> np.ndarray:
    """A: 2 replicas, batches of 2 are slow; B: 1 slow replica.

    q0, q1 (t=0) leave A together at 0.05; q2 (t=0.001) leaves A alone at 0.011 and
    occupies B until 0.111; q3 (t=0.002) leaves A at 0.021. At 0.111 B's queue holds
    q3 (reached B at 0.021) and q0, q1 (reached B at 0.05, but arrived earlier).
    """
    pipeline = Pipeline.chain("two", ["a", "b"])
    profiles = make_profiles({"a": {1: 0.010, 2: 0.050, 4: 0.050}, "b": {1: 0.100}})
    config = make_config(a=(4, 2), b=(1, 1))
    trace = Trace.from_arrivals([0.0, 0.0, 0.001, 0.002])
    return simulate(pipeline, profiles, config, trace, queue_policy=policy).latency_s


def test_edf_serves_the_earliest_pipeline_arrival_first() -> None:
    b_free = (0.001 + 0.010) + 0.100  # q2 done at B
    q0 = b_free + 0.100
    q1 = q0 + 0.100
    q3 = q1 + 0.100
    assert np.array_equal(_order_case("edf"), np.array([q0, q1, b_free - 0.001, q3 - 0.002]))


def test_fifo_serves_the_earliest_to_reach_the_stage_first() -> None:
    b_free = (0.001 + 0.010) + 0.100
    q3 = b_free + 0.100
    q0 = q3 + 0.100
    q1 = q0 + 0.100
    assert np.array_equal(_order_case("fifo"), np.array([q0, q1, b_free - 0.001, q3 - 0.002]))


def test_same_instant_completions_reach_the_next_stage_as_one_batch() -> None:
    # q0 and q1 finish A at the same instant (one batch); B must see both before pulling
    pipeline = Pipeline.chain("two", ["a", "b"])
    profiles = make_profiles({"a": {1: 0.010, 2: 0.010}, "b": {1: 0.010, 2: 0.030}})
    lat = latencies(pipeline, profiles, make_config(a=(2, 1), b=(2, 1)), [0.0, 0.0])
    assert np.array_equal(lat, np.full(2, (0.0 + 0.010) + 0.030))


def test_arrival_at_a_completion_instant_joins_the_next_batch() -> None:
    # q1 arrives exactly when q0's batch ends: arrivals come first, then the pull takes q1
    pipeline = Pipeline.chain("one", ["m"])
    profiles = make_profiles({"m": {1: 0.25, 2: 0.5}})
    lat = latencies(pipeline, profiles, make_config(m=(2, 1)), [0.0, 0.25, 0.25])
    assert np.array_equal(lat, np.array([0.25, 0.5, 0.5]))


# --- DAG flow ----------------------------------------------------------------------------


def diamond() -> tuple[Pipeline, Profiles]:
    pipeline = Pipeline(
        name="diamond",
        stages=(Stage("src"), Stage("fast"), Stage("slow"), Stage("join")),
        edges=(
            Edge("src", "fast"),
            Edge("src", "slow"),
            Edge("fast", "join"),
            Edge("slow", "join"),
        ),
    )
    profiles = make_profiles(
        {"src": {1: 0.010}, "fast": {1: 0.020}, "slow": {1: 0.050}, "join": {1: 0.005}}
    )
    return pipeline, profiles


def test_fan_out_and_join_latency_is_the_slowest_branch() -> None:
    pipeline, profiles = diamond()
    config = make_config(src=(1, 1), fast=(1, 1), slow=(1, 1), join=(1, 1))
    lat = latencies(pipeline, profiles, config, [0.0, 1.0])
    expected_0 = ((0.0 + 0.010) + 0.050) + 0.005
    expected_1 = ((1.0 + 0.010) + 0.050) + 0.005 - 1.0
    assert np.array_equal(lat, np.array([expected_0, expected_1]))
    assert lat[0] == pipeline.longest_path_s(
        {"src": 0.010, "fast": 0.020, "slow": 0.050, "join": 0.005}
    )


def test_query_without_join_stage_completes_when_all_branches_do() -> None:
    pipeline = Pipeline(
        name="fork",
        stages=(Stage("src"), Stage("a"), Stage("b")),
        edges=(Edge("src", "a"), Edge("src", "b")),
    )
    profiles = make_profiles({"src": {1: 0.010}, "a": {1: 0.020}, "b": {1: 0.040}})
    lat = latencies(pipeline, profiles, make_config(src=(1, 1), a=(1, 1), b=(1, 1)), [0.0])
    assert np.array_equal(lat, np.array([0.010 + 0.040]))


def test_recorded_paths_are_replayed() -> None:
    pipeline = Pipeline(
        name="cond",
        stages=(Stage("src"), Stage("a"), Stage("b"), Stage("join")),
        edges=(
            Edge("src", "a", 0.5),
            Edge("src", "b", 0.5),
            Edge("a", "join", 0.5),
            Edge("b", "join", 0.5),
        ),
    )
    profiles = make_profiles(
        {"src": {1: 0.25}, "a": {1: 0.5}, "b": {1: 0.125}, "join": {1: 0.0625}}
    )
    config = make_config(src=(1, 1), a=(1, 1), b=(1, 1), join=(1, 1))
    paths = [
        ["src"],
        ["src", "a"],
        ["src", "b"],
        ["src", "a", "b"],
        ["src", "b", "join"],
        ["src", "a", "b", "join"],  # join waits for both a and b
    ]
    arrival = [10.0 * k for k in range(len(paths))]
    trace = Trace.from_arrivals(arrival, paths=paths)
    result = Estimator(pipeline, profiles, trace).run(config)
    expected = [0.25, 0.75, 0.375, 0.75, 0.4375, 0.8125]
    assert np.array_equal(result.latency_s, np.array(expected))
    assert result.stages["join"].visits == 2
    assert result.stages["a"].visits == 3


def test_sampled_paths_follow_edge_probabilities() -> None:
    pipeline = Pipeline(
        name="cond",
        stages=(Stage("src"), Stage("rare")),
        edges=(Edge("src", "rare", 0.25),),
    )
    profiles = make_profiles({"src": {1: 0.001}, "rare": {1: 0.001}})
    trace = Trace.from_arrivals(np.arange(40_000) * 0.01)
    result = Estimator(pipeline, profiles, trace, seed=3).run(make_config(src=(1, 1), rare=(1, 1)))
    assert result.stages["rare"].visits / 40_000 == pytest.approx(0.25, abs=0.01)
    # paths="sampled" ignores recorded paths
    recorded = Trace.from_arrivals([0.0, 1.0], paths=[["src"], ["src"]])
    sampled = Estimator(pipeline, profiles, recorded, seed=0, paths="sampled")
    replayed = Estimator(pipeline, profiles, recorded, seed=0)
    config = make_config(src=(1, 1), rare=(1, 1))
    assert replayed.run(config).stages["rare"].visits == 0
    assert sampled.stage_visits == 2 + sampled.run(config).stages["rare"].visits


def test_enough_replicas_give_the_critical_path_time() -> None:
    pipeline, _ = diamond()
    n = 64
    config = make_config(src=(1, n), fast=(1, n), slow=(1, n), join=(1, n))
    # dyadic arrival times and latencies keep every sum exact
    arrival = np.sort(np.random.default_rng(0).integers(0, 256, n)) / 1024
    profiles = make_profiles(
        {"src": {1: 0.25}, "fast": {1: 0.125}, "slow": {1: 0.375}, "join": {1: 0.0625}}
    )
    lat = latencies(pipeline, profiles, config, arrival)
    critical = pipeline.longest_path_s({"src": 0.25, "fast": 0.125, "slow": 0.375, "join": 0.0625})
    assert np.array_equal(lat, np.full(n, critical))


# --- SLO misses and early stop -----------------------------------------------------------


def _queue_of_ten() -> Estimator:
    pipeline = Pipeline.chain("one", ["m"])
    profiles = make_profiles({"m": {1: 0.01}})
    return Estimator(pipeline, profiles, Trace.from_arrivals([0.0] * 10), slo_s=0.035)


def test_miss_rate_counts_queries_over_the_slo() -> None:
    result = _queue_of_ten().run(make_config(m=(1, 1)))
    # latencies 0.01, 0.02, ..., 0.10: seven exceed 0.035
    assert not result.stopped_early
    assert result.miss_rate == 0.7
    assert result.p99_s == pytest.approx(0.0991)  # linear interpolation between 0.09 and 0.1


def test_max_misses_stops_early() -> None:
    estimator = _queue_of_ten()
    result = estimator.run(make_config(m=(1, 1)), max_misses=2)
    assert result.stopped_early
    assert result.misses_counted == 3  # stopped at the first instant with more than 2
    assert result.miss_rate == 0.3  # a lower bound
    assert math.isinf(result.p99_s)
    assert math.isinf(result.mean_s)
    assert np.isnan(result.latency_s[6:]).all()
    assert not np.isnan(result.latency_s[:6]).any()
    # exactly at the limit the run completes
    full = estimator.run(make_config(m=(1, 1)), max_misses=7)
    assert not full.stopped_early
    assert full.misses_counted == 7


def test_max_misses_is_ignored_without_an_slo() -> None:
    pipeline = Pipeline.chain("one", ["m"])
    profiles = make_profiles({"m": {1: 0.01}})
    estimator = Estimator(pipeline, profiles, Trace.from_arrivals([0.0] * 10))
    result = estimator.run(make_config(m=(1, 1)), max_misses=0)
    assert not result.stopped_early
    assert result.miss_rate == 0.0


def test_summary_keys_and_values() -> None:
    result = _queue_of_ten().run(make_config(m=(1, 2)))
    summary = result.summary()
    assert set(summary) == {
        "queries",
        "p50_s",
        "p95_s",
        "p99_s",
        "mean_s",
        "slo_s",
        "miss_rate",
        "cost_per_hour",
        "stopped_early",
        "stages",
    }
    assert set(summary["stages"]) == {"m"}
    assert set(summary["stages"]["m"]) == {
        "utilization",
        "mean_queue_s",
        "mean_batch_size",
        "visits",
        "batches",
    }
    assert summary["queries"] == 10
    assert summary["cost_per_hour"] == 2 * 0.5
    assert summary["slo_s"] == 0.035
    assert summary["stopped_early"] is False
    assert summary["stages"]["m"]["visits"] == 10


def test_run_is_pure_and_deterministic() -> None:
    pipeline, profiles = diamond()
    trace = gamma_trace(40.0, 2.0, 20.0, seed=1)
    config = make_config(src=(1, 1), fast=(1, 1), slow=(1, 2), join=(1, 1))
    estimator = Estimator(pipeline, profiles, trace)
    first = estimator.run(config).latency_s
    estimator.run(config.with_stage("slow", replicas=1))
    assert np.array_equal(estimator.run(config).latency_s, first)


# --- the SimPy model ---------------------------------------------------------------------


def random_case(seed: int) -> tuple[Pipeline, Profiles, PipelineConfig, Trace]:
    """A 5-stage DAG with fan-out, a conditional join and batching, at a busy load."""
    rng = np.random.default_rng(seed)
    pipeline = Pipeline(
        name="case",
        stages=tuple(Stage(n) for n in ("src", "a", "b", "c", "join")),
        edges=(
            Edge("src", "a"),
            Edge("src", "b", 0.6),
            Edge("a", "c", 0.3),
            Edge("b", "join", 0.7),
            Edge("c", "join"),
        ),
    )
    # odd seeds: times on a 1/1024 s grid, so that arrivals and batch completions often
    # coincide (and sums stay exact) and the same-instant order is exercised
    grid = 1024.0 if seed % 2 else 0.0
    tables = {}
    for name in pipeline.stage_names:
        fixed, per = rng.uniform(0.001, 0.004), rng.uniform(0.0002, 0.002)
        tables[name] = {b: fixed + per * b for b in (1, 2, 4, 8)}
        if grid:
            tables[name] = {b: max(1.0, round(s * grid)) / grid for b, s in tables[name].items()}
    profiles = make_profiles(tables)
    config = make_config(
        **{
            name: (int(rng.integers(1, 9)), int(rng.integers(1, 3)))
            for name in pipeline.stage_names
        }
    )
    arrival = gamma_trace(float(rng.uniform(100, 400)), 2.0, 10.0, seed).arrival_s
    if grid:
        arrival = np.round(arrival * grid) / grid
    return pipeline, profiles, config, Trace.from_arrivals(arrival)


@pytest.mark.parametrize("policy", ["edf", "fifo"])
@pytest.mark.parametrize("seed", range(6))
def test_identical_to_simpy_model(seed: int, policy: QueuePolicy) -> None:
    pipeline, profiles, config, trace = random_case(seed)
    estimator = Estimator(pipeline, profiles, trace, seed=seed, queue_policy=policy)
    expected = simulate_with_simpy(estimator, config)
    assert np.array_equal(estimator.run(config).latency_s, expected)


def test_identical_to_simpy_model_with_recorded_paths() -> None:
    pipeline, profiles, config, trace = random_case(7)
    visited = pipeline.sample_visited(trace.n_queries, np.random.default_rng(1))
    paths = [[n for n, v in zip(pipeline.stage_names, row, strict=True) if v] for row in visited]
    recorded = Trace.from_arrivals(trace.arrival_s, paths=paths)
    estimator = Estimator(pipeline, profiles, recorded)
    assert np.array_equal(estimator.run(config).latency_s, simulate_with_simpy(estimator, config))


def test_benchmark_runs_small() -> None:
    from inferline.bench.estimator import run_estimator_benchmark

    figures = run_estimator_benchmark(duration_s=5.0, rate_qps=200.0, repeats=1, simpy_queries=300)
    assert figures["identical_to_simpy"] is True
    assert figures["max_abs_diff_s"] == 0.0
    assert figures["simpy_queries"] == 300
    assert figures["stage_visits"] > figures["queries"] > 0
    for key in ("stage_visits_per_s", "speedup_vs_simpy", "estimator_s", "simpy_s"):
        assert figures[key] > 0


# --- variable service times ----------------------------------------------------------------


def _no_queueing_stage(p99_over_median: float) -> tuple[Estimator, PipelineConfig]:
    pipeline = Pipeline.chain("one", ["s"])
    point = ProfilePoint(1, 0.010, 0.010 * p99_over_median)
    profiles = Profiles(
        HardwareCatalogue((HardwareType("cpu", 1.0),)),
        {("s", "cpu"): BatchProfile("s", "cpu", (point,))},
    )
    trace = Trace.from_arrivals(np.arange(20_000) * 1.0)  # 1 s apart: never a queue
    config = PipelineConfig(stages={"s": StageConfig(hardware="cpu", batch_size=1, replicas=1)})
    return Estimator(pipeline, profiles, trace, seed=5, service_time="lognormal"), config


def test_lognormal_service_keeps_the_profiled_median_and_p99() -> None:
    estimator, config = _no_queueing_stage(2.0)
    latency = estimator.run(config).latency_s
    assert np.median(latency) == pytest.approx(0.010, rel=0.03)
    assert np.percentile(latency, 99) == pytest.approx(0.020, rel=0.05)


def test_lognormal_without_spread_is_the_fixed_latency() -> None:
    estimator, config = _no_queueing_stage(1.0)
    assert np.allclose(estimator.run(config).latency_s, 0.010, rtol=0, atol=1e-9)


def test_exponential_service_has_the_profiled_mean() -> None:
    pipeline, profiles, config, trace = random_case(2)
    fixed = Estimator(pipeline, profiles, trace, seed=2)
    varied = Estimator(pipeline, profiles, trace, seed=2, service_time="exponential")
    assert not np.array_equal(fixed.run(config).latency_s, varied.run(config).latency_s)
    # paths are drawn from their own stream: the same stages are visited
    assert fixed.run(config).stages["c"].visits == varied.run(config).stages["c"].visits


@pytest.mark.parametrize("service_time", ["exponential", "lognormal"])
def test_variable_service_matches_simpy_model(service_time: ServiceTime) -> None:
    pipeline, _, config, trace = random_case(4)
    rng = np.random.default_rng(4)
    tables = {
        name: {
            b: (0.002 + 0.001 * b, (0.002 + 0.001 * b) * rng.uniform(1, 3)) for b in (1, 2, 4, 8)
        }
        for name in pipeline.stage_names
    }
    profiles = Profiles(
        CATALOGUE,
        {
            (name, HW): BatchProfile(
                name, HW, tuple(ProfilePoint(b, m, p) for b, (m, p) in table.items())
            )
            for name, table in tables.items()
        },
    )
    estimator = Estimator(pipeline, profiles, trace, seed=4, service_time=service_time)
    expected = simulate_with_simpy(estimator, config)
    assert np.allclose(estimator.run(config).latency_s, expected, rtol=1e-12, atol=1e-12)


def test_lognormal_requires_the_median_statistic() -> None:
    pipeline, profiles, _, trace = random_case(0)
    with pytest.raises(ConfigError, match="latency_stat='median'"):
        Estimator(pipeline, profiles, trace, service_time="lognormal", latency_stat="p99")
