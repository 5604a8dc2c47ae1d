"""The Profiler's pure parts: statistics, cache keys, measured paths, overhead in the Estimator.

No processes, no sleeps: everything here runs on hand-made inputs.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from inferline import load_bundle
from inferline.engine import Tensor
from inferline.errors import ConfigError, PipelineError, ProfileError
from inferline.estimator import Estimator, simulate
from inferline.pipeline import Edge, Pipeline, PipelineConfig, Stage, StageConfig
from inferline.pipeline._io import (
    MeasuredPaths,
    apply_measured_paths,
    load_measured_paths,
    measured_paths_to_mapping,
    pipeline_from_mapping,
)
from inferline.profiler import ProfilerError, available_hardware, load_samples
from inferline.profiler._measure import _Pool
from inferline.profiler._overhead import _cpu_per_query, with_path
from inferline.profiler._relay import PATH_TENSOR, Relay, relay_module_source
from inferline.profiler._samples import bundle_imports
from inferline.profiler._stats import (
    RepetitionPolicy,
    batch_sizes,
    cached_points,
    digest,
    machine_fingerprint,
    measured_on,
    summarise,
)
from inferline.profiler._trace import SampleRun, summarise_paths
from inferline.profiler._validate import (
    ValidationReport,
    ValidationRun,
    attach_samples,
    plan_cores,
    rate_for_utilisation,
)
from inferline.profiles import (
    OVERHEAD_PERCENTILES,
    BatchProfile,
    EngineOverhead,
    HardwareCatalogue,
    HardwareType,
    ProfilePoint,
    Profiles,
    load_hardware,
    load_profiles,
    profiles_to_mapping,
)
from inferline.workload import Trace, gamma_trace

HW = "cpu-1"
CATALOGUE = HardwareCatalogue((HardwareType(HW, 0.0425), HardwareType("cpu-2", 0.085)))

# --- statistics ------------------------------------------------------------------------------


def test_batch_sizes_are_powers_of_two_up_to_the_maximum() -> None:
    assert batch_sizes(32) == (1, 2, 4, 8, 16, 32)
    assert batch_sizes(24) == (1, 2, 4, 8, 16, 24)
    assert batch_sizes(1) == (1,)
    with pytest.raises(ConfigError, match="--max-batch"):
        batch_sizes(0)


def test_summarise_gives_median_and_p99_never_below_the_median() -> None:
    timings = [0.001 * k for k in range(1, 101)]  # 1 .. 100 ms
    s = summarise(timings, [t / 2 for t in timings])
    assert s.median_s == pytest.approx(0.0505)
    assert s.p99_s == pytest.approx(float(np.percentile(timings, 99)))
    assert s.predict_median_s == pytest.approx(0.02525)
    assert s.reps == 100
    one = summarise([0.003])
    assert one.median_s == one.p99_s == 0.003
    point = s.point(4)
    assert (point.batch_size, point.reps) == (4, 100)
    assert point.p99_s >= point.median_s
    for bad in ([], [float("nan")], [-1.0]):
        with pytest.raises(ValueError, match="timings"):
            summarise(bad)


def test_repetition_policy_counts_reps_then_time() -> None:
    policy = RepetitionPolicy(min_reps=3, max_reps=5, min_time_s=1.0, warmup=0)
    assert policy.more(0, 0.0) and policy.more(2, 10.0)  # below min_reps: always more
    assert policy.more(3, 0.5)  # enough reps, not enough time
    assert not policy.more(3, 1.0)  # enough of both
    assert not policy.more(5, 0.1)  # max_reps caps it
    with pytest.raises(ConfigError, match="min_reps"):
        RepetitionPolicy(min_reps=5, max_reps=2)


def test_pool_hands_out_captured_inputs_in_turn() -> None:
    pool = _Pool(["a", "b", "c"])
    assert pool.take(2) == ["a", "b"]
    assert pool.take(4) == ["c", "a", "b", "c"]
    assert pool.take(1) == ["a"]


def test_digest_and_machine_descriptions_are_stable() -> None:
    assert digest(["a", b"b"]) == digest(["a", b"b"]) != digest(["ab"])
    assert digest(["x"]).startswith("sha256:")
    assert machine_fingerprint() == machine_fingerprint()
    text = measured_on(2)
    assert "os.cpu_count()=" in text and "Python" in text and "2 threads" in text


# --- cache -------------------------------------------------------------------------------------


def _profile(code: str | None, machine: str | None, sizes: tuple[int, ...]) -> BatchProfile:
    return BatchProfile(
        "a",
        HW,
        tuple(ProfilePoint(b, 0.001 * b, 0.002 * b) for b in sizes),
        code_hash=code,
        machine=machine,
    )


def test_cache_reuses_only_same_code_same_machine_and_wanted_sizes() -> None:
    prior = _profile("c1", "m1", (1, 2, 4))
    assert sorted(cached_points(prior, "c1", "m1", (1, 2, 4, 8))) == [1, 2, 4]
    assert sorted(cached_points(prior, "c1", "m1", (1, 2))) == [1, 2]
    assert cached_points(prior, "c2", "m1", (1, 2)) == {}  # the stage's code changed
    assert cached_points(prior, "c1", "m2", (1, 2)) == {}  # another machine
    assert cached_points(_profile(None, None, (1,)), "c1", "m1", (1,)) == {}  # published
    assert cached_points(None, "c1", "m1", (1,)) == {}


# --- measured paths ------------------------------------------------------------------------------


def cascade_pipeline() -> Pipeline:
    return Pipeline(
        "cascade",
        (Stage("pre"), Stage("small"), Stage("large"), Stage("note")),
        (Edge("pre", "small"), Edge("small", "large", 0.5), Edge("small", "note", 0.5)),
    )


def sample_run() -> SampleRun:
    visited = [
        frozenset({"pre", "small", "large"}),
        frozenset({"pre", "small"}),
        frozenset({"pre", "small", "large", "note"}),
        frozenset({"pre", "small", "note"}),
    ]
    routed = {("pre", "small"): 4, ("small", "large"): 2, ("small", "note"): 2}
    return SampleRun(visited, routed, {})


def measured() -> MeasuredPaths:
    return summarise_paths(
        cascade_pipeline(),
        sample_run(),
        seed=3,
        samples_function="m:f",
        code_hash="h",
        samples_hash="s",
        measured_on="here",
    )


def test_paths_give_probabilities_scale_factors_and_a_path_per_sample() -> None:
    paths = measured()
    assert paths.edge_probability == {
        ("pre", "small"): 1.0,
        ("small", "large"): 0.5,
        ("small", "note"): 0.5,
    }
    assert paths.edge_counts[("small", "large")] == (2, 4)
    assert paths.scale_factors == {"pre": 1.0, "small": 1.0, "large": 0.5, "note": 0.5}
    assert paths.path_of(0) == ("large", "pre", "small")
    assert paths.path_of(1) == ("pre", "small")
    assert paths.path_of(5) == paths.path_of(1)  # sample indices wrap around
    assert len(paths.path_table) == 4


def test_paths_file_round_trips_and_replaces_probabilities(tmp_path: Path) -> None:
    pipeline = cascade_pipeline()
    file = tmp_path / "paths.yaml"
    file.write_text(yaml.safe_dump(measured_paths_to_mapping(measured(), pipeline)))
    back = load_measured_paths(file, pipeline)
    assert back.edge_probability == measured().edge_probability
    assert back.sample_path == measured().sample_path
    assert back.samples == 4 and back.seed == 3
    applied = apply_measured_paths(pipeline, back)
    assert applied.scale_factors["large"] == pytest.approx(0.5)
    assert [e.probability for e in applied.edges] == [1.0, 0.5, 0.5]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["edges"].append(dict(d["edges"][0], to="note")), "not an edge"),
        (lambda d: d["edges"].pop(), "no measured probability"),
        (lambda d: d["edges"][1].update(taken=9), "exceeds visits"),
        (lambda d: d["sample_paths"].__setitem__(0, 17), "outside paths"),
        (lambda d: d["edges"][1].update(probability=1.5), "less than or equal to 1"),
        (lambda d: d["stages"].update(ghost={"scale_factor": 0.1, "visits": 1}), "unknown stage"),
    ],
)
def test_bad_paths_files_are_rejected_with_the_field(
    tmp_path: Path, change: object, message: str
) -> None:
    pipeline = cascade_pipeline()
    data = measured_paths_to_mapping(measured(), pipeline)
    change(data)  # type: ignore[operator]
    file = tmp_path / "paths.yaml"
    file.write_text(yaml.safe_dump(data))
    with pytest.raises(PipelineError, match=message) as info:
        load_measured_paths(file, pipeline)
    assert str(file) in str(info.value)


def test_a_stage_no_sample_reached_is_an_error_naming_it() -> None:
    run = SampleRun(
        [frozenset({"pre", "small"})] * 3,
        {("pre", "small"): 3},
        {},
    )
    paths = summarise_paths(
        cascade_pipeline(),
        run,
        seed=0,
        samples_function="m:f",
        code_hash="",
        samples_hash="",
        measured_on="",
    )
    with pytest.raises(PipelineError, match="large, note"):
        apply_measured_paths(cascade_pipeline(), paths)


def test_pipeline_file_accepts_samples_and_paths_and_still_rejects_unknown_keys() -> None:
    base = {"name": "p", "stages": [{"name": "a"}]}
    _, spec = pipeline_from_mapping({**base, "samples": "m:f", "paths": "paths.yaml"}, "x.yaml")
    assert (spec.samples, spec.paths) == ("m:f", "paths.yaml")
    _, spec = pipeline_from_mapping(base, "x.yaml")
    assert spec.samples is None and spec.paths is None
    with pytest.raises(PipelineError, match="unknown field"):
        pipeline_from_mapping({**base, "sample": "m:f"}, "x.yaml")


def test_load_bundle_uses_measured_probabilities_when_named(tmp_path: Path) -> None:
    pipeline = cascade_pipeline()
    spec = {
        "name": "cascade",
        "stages": [{"name": s} for s in pipeline.stage_names],
        "edges": [{"from": e.source, "to": e.target, "probability": 0.9} for e in pipeline.edges],
    }
    (tmp_path / "hardware.yaml").write_text(
        yaml.safe_dump({"hardware": [{"name": HW, "price_per_hour": 0.04}]})
    )
    entries = [
        {"stage": s, "hardware": HW, "points": [{"batch_size": 1, "median_s": 0.01}]}
        for s in pipeline.stage_names
    ]
    (tmp_path / "profiles.yaml").write_text(yaml.safe_dump({"profiles": entries}))
    (tmp_path / "pipeline.yaml").write_text(yaml.safe_dump(spec))
    declared = load_bundle(tmp_path)
    assert declared.paths is None
    assert declared.pipeline.edges[1].probability == 0.9
    (tmp_path / "paths.yaml").write_text(
        yaml.safe_dump(measured_paths_to_mapping(measured(), pipeline))
    )
    (tmp_path / "pipeline.yaml").write_text(yaml.safe_dump({**spec, "paths": "paths.yaml"}))
    bundle = load_bundle(tmp_path)
    assert bundle.paths is not None
    assert [e.probability for e in bundle.pipeline.edges] == [1.0, 0.5, 0.5]


# --- profiles file: the engine overhead -----------------------------------------------------------


def overhead(**changes: object) -> EngineOverhead:
    base: dict[str, object] = {
        "per_batch_s": 0.0002,
        "per_query_s": 0.001,
        "per_query_p99_s": 0.004,
        "per_query_percentiles": (0.0, 50.0, 99.0, 100.0),
        "per_query_percentiles_s": (0.0005, 0.001, 0.004, 0.006),
    }
    base.update(changes)
    return EngineOverhead(**base)  # type: ignore[arg-type]


def test_profiles_with_overhead_round_trip_and_add_the_per_batch_part(tmp_path: Path) -> None:
    hw = tmp_path / "hardware.yaml"
    hw.write_text(yaml.safe_dump({"hardware": [{"name": HW, "price_per_hour": 0.04}]}))
    raw = BatchProfile("a", HW, (ProfilePoint(1, 0.01, 0.02, 0.009, 20),), code_hash="c")
    profiles = Profiles(load_hardware(hw), {("a", HW): raw}).with_overhead(overhead())
    assert profiles.get("a", HW).latency_s(1) == pytest.approx(0.0102)
    assert profiles.get("a", HW).latency_s(1, "p99") == pytest.approx(0.0202)
    assert profiles.get("a", HW).throughput_qps(1) == pytest.approx(1 / 0.0102)
    file = tmp_path / "profiles.yaml"
    file.write_text(yaml.safe_dump(profiles_to_mapping(profiles)))
    back = load_profiles(file, load_hardware(hw), ("a",))
    assert back.overhead == profiles.overhead
    assert back.get("a", HW).points == raw.points  # written as measured, overhead kept apart
    assert back.get("a", HW).latency_s(1) == pytest.approx(0.0102)
    assert back.get("a", HW).code_hash == "c"
    assert back.with_overhead(None).get("a", HW).latency_s(1) == 0.01


def test_reference_bundles_have_no_overhead(reference_bundle: Path) -> None:
    bundle = load_bundle(reference_bundle)
    assert bundle.profiles.overhead is None
    assert all(p.overhead_s == 0.0 for p in bundle.profiles.entries.values())


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"per_query_percentiles": (0.0, 100.0)}, "2 percentiles but 4 values"),
        ({"per_query_percentiles": (1.0, 50.0, 99.0, 100.0)}, "from 0 to 100"),
        ({"per_query_percentiles": (0.0, 50.0, 50.0, 100.0)}, "ascend strictly"),
        ({"per_query_percentiles_s": (0.002, 0.001, 0.004, 0.006)}, "non-decreasing"),
        ({"per_batch_s": -1.0}, ">= 0"),
    ],
)
def test_bad_overhead_is_a_profile_error(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ProfileError, match=message):
        overhead(**changes)


def test_overhead_draws_follow_the_percentiles() -> None:
    o = overhead()
    draws = o.per_query_draws(200_000, np.random.default_rng(0))
    assert draws.min() >= 0.0005 and draws.max() <= 0.006
    assert np.percentile(draws, 50) == pytest.approx(0.001, rel=0.02)
    assert np.percentile(draws, 99) == pytest.approx(0.004, rel=0.02)
    flat = overhead(per_query_percentiles=(), per_query_percentiles_s=())
    assert np.all(flat.per_query_draws(5, np.random.default_rng(0)) == 0.001)
    assert flat.per_query_min_s == 0.001 and o.per_query_min_s == 0.0005


# --- the Estimator with overhead ---------------------------------------------------------------


def chain_profiles(o: EngineOverhead | None) -> Profiles:
    table = {"a": {1: 0.004, 2: 0.006, 4: 0.009}, "b": {1: 0.002, 2: 0.003, 4: 0.004}}
    entries = {
        (s, HW): BatchProfile(s, HW, tuple(ProfilePoint(b, t, 1.5 * t) for b, t in pts.items()))
        for s, pts in table.items()
    }
    return Profiles(CATALOGUE, entries).with_overhead(o)


CHAIN = Pipeline.chain("ab", ["a", "b"])
CONFIG = PipelineConfig(
    stages={
        "a": StageConfig(hardware=HW, batch_size=4, replicas=1),
        "b": StageConfig(hardware=HW, batch_size=4, replicas=1),
    }
)


def test_zero_overhead_changes_nothing() -> None:
    trace = gamma_trace(150.0, 2.0, 60.0, seed=1)
    plain = simulate(CHAIN, chain_profiles(None), CONFIG, trace, slo_s=0.05)
    zero = simulate(CHAIN, chain_profiles(EngineOverhead()), CONFIG, trace, slo_s=0.05)
    assert np.array_equal(plain.latency_s, zero.latency_s)


def test_per_query_overhead_shifts_every_latency_and_per_batch_lengthens_service() -> None:
    trace = gamma_trace(150.0, 2.0, 60.0, seed=1)
    plain = simulate(CHAIN, chain_profiles(None), CONFIG, trace)
    flat = overhead(per_batch_s=0.0, per_query_percentiles=(), per_query_percentiles_s=())
    shifted = simulate(CHAIN, chain_profiles(flat), CONFIG, trace)
    assert np.allclose(shifted.latency_s, plain.latency_s + 0.001)
    slower = simulate(
        CHAIN,
        chain_profiles(overhead(per_query_s=0.0)).with_overhead(EngineOverhead(per_batch_s=0.001)),
        CONFIG,
        trace,
    )
    assert slower.p50_s > plain.p50_s + 0.0019  # one extra ms per stage, two stages
    assert slower.stages["a"].utilization > plain.stages["a"].utilization
    off = Estimator(CHAIN, chain_profiles(overhead()), trace, engine_overhead=False).run(CONFIG)
    assert np.array_equal(off.latency_s, plain.latency_s)


def test_random_overhead_is_seeded_and_early_stopping_stays_certain() -> None:
    trace = gamma_trace(300.0, 2.0, 30.0, seed=2)
    profiles = chain_profiles(overhead())
    one = Estimator(CHAIN, profiles, trace, slo_s=0.02, seed=4).run(CONFIG)
    two = Estimator(CHAIN, profiles, trace, slo_s=0.02, seed=4).run(CONFIG)
    assert np.array_equal(one.latency_s, two.latency_s)
    other = Estimator(CHAIN, profiles, trace, slo_s=0.02, seed=5).run(CONFIG)
    assert not np.array_equal(one.latency_s, other.latency_s)
    misses = int(np.sum(one.latency_s > 0.02))
    assert misses > 100
    # a miss the kernel counts is certain (it assumes the smallest overhead), so it stops
    # only once that many queries really missed, never on a query that met the SLO
    stopped = Estimator(CHAIN, profiles, trace, slo_s=0.02, seed=4).run(CONFIG, max_misses=100)
    assert stopped.stopped_early and 100 < stopped.misses_counted <= misses
    full = Estimator(CHAIN, profiles, trace, slo_s=0.02, seed=4).run(CONFIG, max_misses=misses)
    assert not full.stopped_early


# --- samples, relay, validation helpers -------------------------------------------------------


def write_module(folder: Path, name: str, body: str) -> None:
    (folder / f"{name}.py").write_text(body)


def test_load_samples_calls_the_bundle_function(tmp_path: Path) -> None:
    write_module(
        tmp_path,
        "my_samples_ok",
        "def make(n, seed):\n"
        "    return [{'inputs': [{'name': 'x', 'shape': [1], 'datatype': 'FP64',"
        " 'data': [seed + i]}]} for i in range(n)]\n",
    )
    bodies = load_samples(tmp_path, "my_samples_ok:make", 3, 10)
    assert [b["inputs"][0]["data"] for b in bodies] == [[10], [11], [12]]
    assert "my_samples_ok" not in sys.modules  # forgotten after the call
    assert str(tmp_path.resolve()) not in sys.path


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("def make(n, seed):\n    return None\n", "returned NoneType"),
        ("def make(n, seed):\n    return [{'inputs': []}]\n", "returned 1 request bodies for n=2"),
        ("def make(n, seed):\n    return [1, 2]\n", "body 0 is not an infer request"),
        ("def make(n, seed):\n    raise KeyError('boom')\n", "raised KeyError"),
        ("make = 3\n", "not callable"),
        ("import no_such_module_here\n", "cannot be imported"),
        (
            "def make(n, seed):\n    return [{'inputs': [], 'x': object()}] * n\n",
            "not JSON-serialisable",
        ),
    ],
)
def test_bad_samples_functions_name_themselves(tmp_path: Path, body: str, message: str) -> None:
    write_module(tmp_path, "my_samples_bad", body)
    with pytest.raises(ProfilerError, match=message) as info:
        load_samples(tmp_path, "my_samples_bad:make", 2, 0)
    assert "samples function 'my_samples_bad:make'" in str(info.value)
    assert info.value.exit_code == 2


def test_bundle_imports_forget_the_bundle_modules(tmp_path: Path) -> None:
    write_module(tmp_path, "my_bundle_mod", "VALUE = 1\n")
    with bundle_imports(tmp_path):
        import my_bundle_mod  # type: ignore[import-not-found]

        assert my_bundle_mod.VALUE == 1
    assert "my_bundle_mod" not in sys.modules


def test_relay_passes_inputs_on_and_routes_by_the_carried_path() -> None:
    source, classes = relay_module_source({"a": ("b", "c"), "b": (), "c": ()})
    namespace: dict[str, object] = {}
    exec(compile(source, "relay", "exec"), namespace)
    relay_a = namespace[classes["a"]]()  # type: ignore[operator]
    request = {PATH_TENSOR: Tensor(PATH_TENSOR, "BYTES", (1,), ["a+c"]), "x": 1}
    assert relay_a.predict([request]) == [request]
    assert tuple(relay_a.route(request)) == ("c",)
    join = Relay().predict([{"b": request, "c": request}])
    assert join == [request]
    body = with_path({"inputs": [{"name": "x"}]}, ("a", "c"))
    assert body["inputs"][-1]["data"] == ["a+c"]
    assert OVERHEAD_PERCENTILES[0] == 0 and OVERHEAD_PERCENTILES[-1] == 100


def test_attach_samples_gives_each_query_its_samples_path() -> None:
    paths = measured()
    trace, k = attach_samples(np.arange(50) * 0.01, paths, seed=1, source="t")
    assert trace.paths() == [paths.path_of(int(i)) for i in k]
    again, k2 = attach_samples(np.arange(50) * 0.01, paths, seed=1, source="t")
    assert np.array_equal(k, k2) and again == trace
    assert isinstance(trace, Trace)


@pytest.mark.parametrize("target", [0.5, 0.8])
def test_rate_for_utilisation_finds_the_rate(target: float) -> None:
    def proportional(rate: float) -> float:
        return rate * 0.004

    assert proportional(rate_for_utilisation(proportional, 10.0, target)) == pytest.approx(
        target, abs=0.003
    )

    def batching(rate: float) -> float:  # sublinear: bigger batches at higher rates
        return min(1.0, 0.02 * math.sqrt(rate))

    rate = rate_for_utilisation(batching, 5000.0, target)
    assert batching(rate) == pytest.approx(target, abs=0.003)


def test_available_hardware_skips_what_this_machine_lacks() -> None:
    catalogue = HardwareCatalogue(
        (
            HardwareType("cpu-1", 0.04),
            HardwareType("cpu-2", 0.08),
            HardwareType("cpu-4", 0.16),
            HardwareType("k80", 0.9, accelerator=True),
            HardwareType("spare", 0.04, max_units=0),
        )
    )
    usable, skipped = available_hardware(catalogue, cores=2)
    assert [(name, res.threads) for name, res in usable] == [("cpu-1", 1), ("cpu-2", 2)]
    assert "needs 4 threads; this machine has 2 cores" in skipped["cpu-4"]
    assert "k80" in skipped and "spare" in skipped
    only, skipped = available_hardware(catalogue, ("cpu-2",), cores=2)
    assert [name for name, _ in only] == ["cpu-2"]
    assert skipped["cpu-1"] == "not asked for (--hardware)"
    with pytest.raises(ConfigError, match="unknown hardware 'gpu-9'"):
        available_hardware(catalogue, ("gpu-9",), cores=2)


def test_busy_single_thread_replicas_get_their_own_core() -> None:
    config = PipelineConfig(
        stages={
            "pre": StageConfig(hardware=HW, batch_size=1, replicas=1),
            "model": StageConfig(hardware=HW, batch_size=4, replicas=1),
        }
    )
    plan = plan_cores(config, {"pre": 0.1, "model": 0.8}, rate_qps=50.0, cores=2)
    assert plan is not None
    assert plan.shared == (0,) and plan.dedicated == {"model": (1,)}
    assert plan.as_dict() == {"shared": [0], "dedicated": {"model": [1]}}
    assert plan_cores(config, {"pre": 0.1, "model": 0.8}, 50.0, cores=1) is None
    assert plan_cores(config, {"pre": 0.1, "model": 0.1}, 50.0, cores=2) is None  # idle
    # the shared core would be overloaded: no pinning
    assert plan_cores(config, {"pre": 0.7, "model": 0.8}, 400.0, cores=2) is None
    two = config.with_stage("model", replicas=2)
    spread = plan_cores(two, {"pre": 0.1, "model": 0.5}, 50.0, cores=3)
    assert spread is not None and spread.dedicated == {"model": (1, 2)}
    wide = config.with_stage("model", hardware="cpu-2")
    assert plan_cores(wide, {"pre": 0.1, "model": 0.8}, 50.0, cores=2) is None


def _run(label: str, estimated: float, measured: float, lag_s: float) -> ValidationRun:
    return ValidationRun(
        label=label,
        target_utilisation=0.5,
        rate_qps=10.0,
        queries=100,
        duration_s=10.0,
        estimated={"p50_s": 0.01, "p99_s": estimated, "miss_rate": 0.0},
        estimated_without_overhead_p99_s=estimated,
        utilisation={"a": 0.5},
        cpu_demand=0.5,
        measured={"p99_s": measured, "send_lag_p99_s": lag_s},
        load_average=(1.0, 1.0),
    )


def test_levels_take_the_median_error_of_undisturbed_runs() -> None:
    runs = (
        _run("U=0.50", 0.100, 0.110, 0.001),
        _run("U=0.50", 0.100, 0.090, 0.002),
        _run("U=0.50", 0.100, 0.900, 0.250),  # the machine stalled: left out
        _run("U=0.80", 0.200, 0.250, 0.050),  # only disturbed runs: used anyway
    )
    assert [r.disturbed for r in runs] == [False, False, True, True]
    assert runs[0].p99_error == pytest.approx(-1 / 11)
    report = ValidationReport(
        bundle=Path("."),
        pipeline="p",
        config=CONFIG,
        config_source="x",
        cost_per_hour=0.1,
        slo_s=0.3,
        planning_queries=10,
        runs=runs,
        wall_s=1.0,
    )
    half, eight = report.levels()
    assert (half["runs"], half["undisturbed_runs"]) == (3, 2)
    assert half["measured_p99_s_median"] == pytest.approx(0.100)
    assert half["p99_error"] == pytest.approx((-1 / 11 + 1 / 9) / 2)  # median of the errors
    assert half["p99_errors"] == [r.p99_error for r in runs[:3]]
    assert eight["measured_p99_s_median"] == 0.250
    assert report.summary()["levels"] == [half, eight]


def test_a_run_with_any_stage_at_another_speed_is_disturbed() -> None:
    def run(
        ratio: float | None, b_ratio: float = 2.0, b_profiled_s: float = 0.0001
    ) -> ValidationRun:
        base = _run("U=0.50", 0.100, 0.150, 0.001)
        utilisation = {"a": 0.5, "b": 0.1}
        a = {"ratio": ratio}
        if ratio is not None:
            a.update(engine_predict_s=0.01 * ratio, profiled_predict_s=0.01)
        # b takes microseconds: twice its profile is 0.1 ms a batch, too little to count
        b = {
            "ratio": b_ratio,
            "engine_predict_s": b_profiled_s * b_ratio,
            "profiled_predict_s": b_profiled_s,
        }
        return dataclasses.replace(base, utilisation=utilisation, service={"a": a, "b": b})

    steady, slower, faster, unknown = run(1.10), run(1.20), run(0.80), run(None)
    assert steady.speed_drift == pytest.approx(0.10) and not steady.disturbed
    assert slower.drifted and slower.disturbed and not slower.stalled
    assert slower.drifted_stages == ["a"]
    assert faster.speed_drift == pytest.approx(-0.20) and faster.disturbed
    assert unknown.speed_drift is None and not unknown.disturbed
    # a light stage that ran 1.69x its (milliseconds) profile counts, busiest or not
    light_but_slow = run(1.0, b_ratio=1.69, b_profiled_s=0.005)
    assert light_but_slow.drifted_stages == ["b"]
    assert light_but_slow.speed_drift == pytest.approx(0.69)
    assert light_but_slow.stage_speed_drift == pytest.approx({"a": 0.0, "b": 0.69})
    as_dict = run(1.2).as_dict()
    assert as_dict["speed_drift"] == pytest.approx(0.2)
    assert as_dict["drifted_stages"] == ["a"]
    assert as_dict["stage_speed_drift"] == pytest.approx({"a": 0.2, "b": 1.0})


def test_per_query_overhead_follows_the_trace_rate(tmp_path: Path) -> None:
    grid = (0.0, 50.0, 99.0, 100.0)
    low = (0.0005, 0.001, 0.004, 0.006)
    high = (0.0015, 0.003, 0.012, 0.020)
    o = overhead(per_query_by_rate=((100.0, low), (300.0, high)))
    assert o.per_query_values_at(50.0) == low  # clamped below
    assert o.per_query_values_at(900.0) == high  # and above
    assert o.per_query_values_at(200.0) == pytest.approx(
        tuple((a + b) / 2 for a, b in zip(low, high, strict=True))
    )
    assert o.per_query_values_at(None) == o.per_query_percentiles_s
    assert o.per_query_min_s == 0.0005
    draws = o.per_query_draws(100_000, np.random.default_rng(1), 300.0)
    assert np.percentile(draws, 50) == pytest.approx(0.003, rel=0.03)
    hw = tmp_path / "hardware.yaml"
    hw.write_text(yaml.safe_dump({"hardware": [{"name": HW, "price_per_hour": 0.04}]}))
    raw = BatchProfile("a", HW, (ProfilePoint(1, 0.01, 0.02),))
    profiles = Profiles(load_hardware(hw), {("a", HW): raw}).with_overhead(o)
    file = tmp_path / "profiles.yaml"
    file.write_text(yaml.safe_dump(profiles_to_mapping(profiles)))
    assert load_profiles(file, load_hardware(hw), ("a",)).overhead == o
    # the Estimator draws from the distribution at the trace's mean rate
    slow = Estimator(CHAIN, chain_profiles(o), gamma_trace(20.0, 1.0, 200.0, seed=3)).run(CONFIG)
    busy = Estimator(CHAIN, chain_profiles(o), gamma_trace(40.0, 1.0, 100.0, seed=3))
    assert slow.p50_s < busy.run(CONFIG).p50_s
    with pytest.raises(ProfileError, match="ascend"):
        overhead(per_query_by_rate=((300.0, low), (100.0, high)))
    with pytest.raises(ProfileError, match="non-decreasing values"):
        overhead(per_query_by_rate=((100.0, (0.1, 0.0, 0.2, 0.3)),))
    grid_only = overhead(per_query_percentiles=grid)
    assert grid_only.per_query_by_rate == ()


def test_machine_speed_probe_times_a_fixed_loop_and_reports_drift() -> None:
    from inferline.profiler._probe import machine_speed_probe, speed_drift

    assert 0 < machine_speed_probe() < 5.0
    assert speed_drift(0.010, 0.012) == pytest.approx(0.2)
    assert speed_drift(0.010, 0.009) == pytest.approx(-0.1)


def test_the_front_ends_cpu_per_query_is_the_slope_of_cores_used_against_rate() -> None:
    # 0.03 core idle + 0.7 ms per query, at 50 and 300 q/s over 10 s each
    use = [(10 * (0.03 + 50 * 0.0007), 500, 10.0), (10 * (0.03 + 300 * 0.0007), 3000, 10.0)]
    assert _cpu_per_query(use) == pytest.approx(0.0007)
    assert _cpu_per_query(use[:1]) == pytest.approx(0.065 / 50)  # one rate: idle included
    noisy = [(1.0, 500, 10.0), (0.9, 3000, 10.0)]  # less CPU at the higher rate: no slope
    assert _cpu_per_query(noisy) == pytest.approx(0.9 / 3000)
    assert _cpu_per_query([]) is None
