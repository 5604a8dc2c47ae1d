"""Properties of the Estimator on random small pipelines, profiles, configurations and traces."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from inferline.bench.simpy_model import simulate_with_simpy
from inferline.estimator import Estimator, Observation, QueuePolicy, simulate_timevarying
from inferline.pipeline import Edge, Pipeline, PipelineConfig, Stage, StageConfig
from inferline.profiles import BatchProfile, HardwareCatalogue, HardwareType, ProfilePoint, Profiles
from inferline.workload import Trace

HW = "hw"
CATALOGUE = HardwareCatalogue((HardwareType(HW, price_per_hour=1.0),))
SETTINGS = settings(max_examples=60, deadline=None)
# times on a 1/1024 s grid make arrivals and batch completions coincide (exactly)
GRID = st.integers(0, 20).map(lambda k: k / 1024)


@dataclass(frozen=True)
class Case:
    pipeline: Pipeline
    profiles: Profiles
    config: PipelineConfig
    trace: Trace  # with recorded paths
    policy: QueuePolicy

    def batch1_s(self) -> dict[str, float]:
        return {n: self.profiles.get(n, HW).latency_s(1) for n in self.pipeline.stage_names}

    def critical_path_s(self) -> np.ndarray:
        """Batch-1 service time along each query's visited critical path."""
        paths = self.trace.paths()
        assert paths is not None
        times = self.batch1_s()
        return np.array([self.pipeline.longest_path_s(times, visited=p) for p in paths])


@st.composite
def pipelines(draw: st.DrawFn) -> Pipeline:
    kind = draw(st.sampled_from(["chain", "fan-out", "conditional", "random"]))
    n = draw(st.integers(1, 5))
    names = [f"s{i}" for i in range(n)]
    probability = st.sampled_from([1.0, 1.0, 0.2, 0.5, 0.9])
    edges: list[Edge] = []
    if kind == "chain":
        edges = [Edge(a, b) for a, b in pairwise(names)]
    elif kind == "conditional":
        edges = [Edge(a, b, draw(probability)) for a, b in pairwise(names)]
    elif kind == "fan-out" and n >= 2:
        branches = names[1:-1] if n >= 4 else names[1:]
        edges = [Edge(names[0], b) for b in branches]
        if n >= 4:  # ... and a join
            edges += [Edge(b, names[-1], draw(probability)) for b in branches]
    elif kind == "random":
        for j in range(1, n):
            preds = draw(
                st.lists(st.integers(0, j - 1), min_size=1, max_size=min(j, 3), unique=True)
            )
            edges += [Edge(names[i], names[j], draw(probability)) for i in preds]
    return Pipeline(name="p", stages=tuple(Stage(x) for x in names), edges=tuple(edges))


@st.composite
def profiles_for(draw: st.DrawFn, pipeline: Pipeline) -> Profiles:
    """Latency non-decreasing in batch size, as measured profiles are."""
    entries = {}
    for name in pipeline.stage_names:
        sizes = draw(st.sampled_from([(1,), (1, 2), (1, 2, 4), (1, 4, 8), (1, 2, 4, 8)]))
        latency = draw(st.one_of(st.floats(1e-4, 0.02), GRID.filter(bool)))
        points = []
        for b in sizes:
            points.append(ProfilePoint(b, latency, latency))
            latency += draw(st.one_of(st.floats(0.0, 0.01), GRID))
        entries[(name, HW)] = BatchProfile(name, HW, tuple(points))
    return Profiles(CATALOGUE, entries)


@st.composite
def cases(draw: st.DrawFn, *, many_replicas: bool = False) -> Case:
    pipeline = draw(pipelines())
    profiles = draw(profiles_for(pipeline))
    gaps = draw(
        st.lists(
            st.one_of(
                st.just(0.0),
                GRID,
                st.floats(0.0, 0.02),
            ),
            min_size=1,
            max_size=60,
        )
    )
    arrival = np.cumsum(gaps)
    n = arrival.size
    stages = {}
    for name in pipeline.stage_names:
        largest = profiles.get(name, HW).max_batch_size
        if many_replicas:
            stages[name] = StageConfig(hardware=HW, batch_size=1, replicas=n)
        else:
            stages[name] = StageConfig(
                hardware=HW,
                batch_size=draw(st.integers(1, largest)),
                replicas=draw(st.integers(1, 3)),
            )
    seed = draw(st.integers(0, 2**16))
    visited = pipeline.sample_visited(n, np.random.default_rng(seed))
    names = pipeline.stage_names
    paths = [[s for s, v in zip(names, row, strict=True) if v] for row in visited]
    policy: QueuePolicy = draw(st.sampled_from(["edf", "fifo"]))
    return Case(
        pipeline,
        profiles,
        PipelineConfig(stages=stages),
        Trace.from_arrivals(arrival, paths),
        policy,
    )


def run(case: Case) -> np.ndarray:
    estimator = Estimator(case.pipeline, case.profiles, case.trace, queue_policy=case.policy)
    return estimator.run(case.config).latency_s


@SETTINGS
@given(cases())
def test_every_query_completes_no_faster_than_its_critical_path(case: Case) -> None:
    latency = run(case)
    assert not np.isnan(latency).any()
    assert (latency >= case.critical_path_s() - 1e-12).all()


@SETTINGS
@given(cases(many_replicas=True))
def test_without_contention_latency_is_the_critical_path(case: Case) -> None:
    np.testing.assert_allclose(run(case), case.critical_path_s(), rtol=0, atol=1e-9)


@SETTINGS
@given(cases(), st.integers(0, 1000))
def test_same_seed_same_result(case: Case, seed: int) -> None:
    unrecorded = Trace.from_arrivals(case.trace.arrival_s)
    first = Estimator(case.pipeline, case.profiles, unrecorded, seed=seed, queue_policy=case.policy)
    second = Estimator(
        case.pipeline, case.profiles, unrecorded, seed=seed, queue_policy=case.policy
    )
    a = first.run(case.config)
    assert np.array_equal(a.latency_s, second.run(case.config).latency_s)
    assert np.array_equal(a.latency_s, first.run(case.config).latency_s)
    assert a.summary() == first.run(case.config).summary()


@SETTINGS
@given(cases())
def test_estimator_equals_simpy_model(case: Case) -> None:
    estimator = Estimator(case.pipeline, case.profiles, case.trace, queue_policy=case.policy)
    assert np.array_equal(
        estimator.run(case.config).latency_s, simulate_with_simpy(estimator, case.config)
    )


class Unchanged:
    """A replica controller that always keeps the current counts."""

    def initial_state(self, now_s: float) -> None:
        return None

    def decide(
        self, state: None, observation: Observation, now_s: float
    ) -> tuple[dict[str, int], None]:
        return dict(observation.replicas), state


@SETTINGS
@given(cases(), st.integers(1, 40).map(lambda k: k / 1024), st.integers(1, 8))
def test_timevarying_run_without_changes_equals_the_fixed_run(
    case: Case, tick_s: float, max_replicas: int
) -> None:
    # ticks on the 1/1024 s grid coincide with arrivals and completions: slicing the run at
    # them must not change which events happen first
    fixed = Estimator(case.pipeline, case.profiles, case.trace, queue_policy=case.policy)
    timed = simulate_timevarying(
        case.pipeline, case.profiles, case.config, case.trace, 1.0, Unchanged(),
        max_replicas=dict.fromkeys(case.pipeline.stage_names, max_replicas), tick_s=tick_s,
        queue_policy=case.policy,
    )  # fmt: skip
    assert np.array_equal(timed.latency_s, fixed.run(case.config).latency_s)
    assert timed.scale_ups == timed.scale_downs == 0


@SETTINGS
@given(cases())
def test_shared_cores_enough_for_every_replica_equal_dedicated_replicas(case: Case) -> None:
    from inferline.profiles import DEFAULT_FRONTEND_CPU_S_PER_QUERY, MachinePool

    replicas = sum(c.replicas for c in case.config.stages.values())
    rate = case.trace.mean_rate_qps if np.isfinite(case.trace.mean_rate_qps) else 0.0
    frontend = 0.05 + rate * DEFAULT_FRONTEND_CPU_S_PER_QUERY  # what the front-end keeps
    machine = MachinePool(cores=replicas + 1 + int(np.ceil(frontend)), memory_bytes=None)
    shared = Estimator(
        case.pipeline, case.profiles, case.trace, queue_policy=case.policy, machine=machine
    )
    assert shared.shared_cores >= replicas
    assert np.array_equal(shared.run(case.config).latency_s, run(case))


@SETTINGS
@given(cases(), st.integers(1, 3))
def test_shared_cores_never_finish_the_work_sooner_than_its_critical_path(
    case: Case, cores: int
) -> None:
    from inferline.profiles import MachinePool

    machine = MachinePool(cores=cores, memory_bytes=None)
    shared = Estimator(
        case.pipeline, case.profiles, case.trace, queue_policy=case.policy, machine=machine
    )
    result = shared.run(case.config)
    assert not np.isnan(result.latency_s).any()
    assert (result.latency_s >= case.critical_path_s() - 1e-9).all()
