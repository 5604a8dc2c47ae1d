"""Calibrated profiles: measured ``predict`` times replace or scale the profiled curve."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inferline.errors import ConfigError
from inferline.profiles import (
    MIN_FRONTEND_QUERIES,
    OVERHEAD_PERCENTILES,
    BatchProfile,
    EngineOverhead,
    HardwareCatalogue,
    HardwareType,
    ProfilePoint,
    Profiles,
    calibrate_profiles,
    carry_speeds,
    hardware_from_mapping,
    hardware_to_mapping,
    profiles_from_mapping,
    profiles_to_mapping,
)

HW = HardwareCatalogue((HardwareType("cpu-1", 0.05),))
SIZES = (1, 2, 4, 8, 16)


def _profile(predicts: list[float], rest_s: float = 0.0005, spread: float = 1.3) -> Profiles:
    points = tuple(
        ProfilePoint(b, p + rest_s, (p + rest_s) * spread, predict_median_s=p, reps=50)
        for b, p in zip(SIZES, predicts, strict=True)
    )
    return Profiles(HW, {("m", "cpu-1"): BatchProfile("m", "cpu-1", points)})


#: Increasing predict times per profiled size (seconds).
curves = st.lists(st.floats(1e-4, 0.05), min_size=len(SIZES), max_size=len(SIZES)).map(
    lambda xs: sorted(xs)
)


@settings(max_examples=60, deadline=None)
@given(curve=curves, factor=st.floats(0.3, 4.0), sizes=st.sets(st.sampled_from(SIZES), min_size=1))
def test_uniform_slowdown_scales_every_size(
    curve: list[float], factor: float, sizes: set[int]
) -> None:
    """Batches measured at ``factor`` × the profile (some sizes only): the ratio is
    ``factor`` and every size, measured or not, gets ``factor`` × its predict part."""
    profiles = _profile(curve)
    by_size = {b: [factor * curve[SIZES.index(b)]] * 25 for b in sizes}
    result = calibrate_profiles(profiles, {("m", "cpu-1"): by_size})
    speed = result.speeds[("m", "cpu-1")]
    assert speed.ratio == pytest.approx(factor)
    assert speed.samples == 25 * len(sizes)
    calibrated = result.profiles.get("m", "cpu-1")
    for b, p in zip(SIZES, curve, strict=True):
        point = next(q for q in calibrated.points if q.batch_size == b)
        assert point.predict_median_s == pytest.approx(factor * p)
        assert point.median_s == pytest.approx(0.0005 + factor * p)
        assert point.p99_s >= point.median_s


@settings(max_examples=60, deadline=None)
@given(
    curve=curves,
    samples=st.dictionaries(
        st.integers(1, 20),  # 17..20 lie beyond the profile and are ignored
        st.lists(st.floats(1e-5, 0.2), min_size=1, max_size=40),
        max_size=6,
    ),
)
def test_calibrated_curve_is_monotone_and_conservative(
    curve: list[float], samples: dict[int, list[float]]
) -> None:
    profiles = _profile(curve)
    result = calibrate_profiles(profiles, {("m", "cpu-1"): samples}, min_samples=5)
    calibrated = result.profiles.get("m", "cpu-1")
    assert calibrated.max_batch_size == 16
    medians = [calibrated.latency_s(b) for b in range(1, 17)]
    p99s = [calibrated.latency_s(b, "p99") for b in range(1, 17)]
    assert medians == sorted(medians)
    assert p99s == sorted(p99s)
    assert all(p >= m for p, m in zip(p99s, medians, strict=True))
    for b, values in samples.items():
        if b <= 16 and len(values) >= 5:  # measured often enough: at least its median
            ordered = sorted(values)
            n = len(ordered)
            med = ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) / 2
            assert calibrated.latency_s(b) >= med + 0.0005 - 1e-12
            assert b in calibrated.batch_sizes
    # no samples in range: the profile stays exactly as it was
    if not any(b <= 16 and v for b, v in samples.items()):
        assert calibrated == profiles.get("m", "cpu-1")


@settings(max_examples=40, deadline=None)
@given(curve=curves, scale=st.floats(0.2, 5.0))
def test_ratio_scales_with_the_samples(curve: list[float], scale: float) -> None:
    profiles = _profile(curve)
    base = {1: [curve[0] * 1.1] * 10, 4: [curve[2] * 0.9] * 30}
    scaled = {b: [scale * v for v in vs] for b, vs in base.items()}
    r0 = calibrate_profiles(profiles, {("m", "cpu-1"): base}).speeds[("m", "cpu-1")].ratio
    r1 = calibrate_profiles(profiles, {("m", "cpu-1"): scaled}).speeds[("m", "cpu-1")].ratio
    assert r0 is not None and r1 is not None
    assert r1 == pytest.approx(scale * r0)


def test_between_sizes_the_fit_interpolates_and_few_samples_keep_the_profile() -> None:
    profiles = _profile([0.001, 0.002, 0.004, 0.008, 0.016])
    # a batch of 3 is profiled (linearly) at 3 ms of predict; measured at 6 ms: ratio 2
    result = calibrate_profiles(profiles, {("m", "cpu-1"): {3: [0.006] * 30}})
    speed = result.speeds[("m", "cpu-1")]
    assert speed.ratio == pytest.approx(2.0)
    assert speed.sizes[0].profiled_s == pytest.approx(0.003)
    calibrated = result.profiles.get("m", "cpu-1")
    assert calibrated.batch_sizes == (1, 2, 3, 4, 8, 16)
    assert calibrated.latency_s(3) == pytest.approx(0.0065)
    assert calibrated.latency_s(16) == pytest.approx(0.0325)
    # fewer than min_samples batches: no ratio, nothing measured often enough
    few = calibrate_profiles(profiles, {("m", "cpu-1"): {3: [0.006] * 5}})
    assert few.speeds[("m", "cpu-1")].ratio is None
    assert few.profiles.get("m", "cpu-1") == profiles.get("m", "cpu-1")


def test_unknown_entries_are_ignored_and_min_samples_checked() -> None:
    profiles = _profile([0.001, 0.002, 0.004, 0.008, 0.016])
    result = calibrate_profiles(profiles, {("other", "cpu-1"): {1: [0.1] * 50}})
    assert not result.speeds
    assert result.profiles.entries == profiles.entries
    with pytest.raises(ConfigError, match="min_samples"):
        calibrate_profiles(profiles, {}, min_samples=0)


def test_calibrated_profiles_round_trip_through_the_file_format() -> None:
    profiles = _profile([0.001, 0.002, 0.004, 0.008, 0.016])
    result = calibrate_profiles(profiles, {("m", "cpu-1"): {2: [0.003] * 40, 5: [0.01] * 40}})
    hardware = hardware_from_mapping(hardware_to_mapping(HW))
    assert hardware == HW
    loaded = profiles_from_mapping(profiles_to_mapping(result.profiles), hardware, ("m",))
    assert loaded.get("m", "cpu-1").points == result.profiles.get("m", "cpu-1").points
    assert math.isclose(loaded.get("m", "cpu-1").latency_s(5), 0.0105)


def test_measured_round_trips_replace_the_profiled_rest() -> None:
    """Served side by side, the rest of the round trip (IPC, waiting for a core to wake
    up, for the engine to read the answer) grows too: measured sizes take their round
    trip's median and P99; the others scale the profiled rest like the measured ones."""
    profiles = _profile([0.001, 0.002, 0.004, 0.008, 0.016], rest_s=0.0005)
    key = ("m", "cpu-1")
    predicts = {1: [0.001] * 99 + [0.003]}
    turns = {1: [0.002] * 98 + [0.006, 0.009]}  # rest 1 ms at the median: 2x profiled
    result = calibrate_profiles(profiles, {key: predicts}, turns={key: turns})
    calibrated = result.profiles.get("m", "cpu-1")
    one = calibrated.points[0]
    assert (one.median_s, one.p99_s, one.predict_median_s) == (0.002, 0.009, 0.001)
    four = next(p for p in calibrated.points if p.batch_size == 4)
    assert four.predict_median_s == pytest.approx(0.004)  # speed ratio 1
    assert four.median_s == pytest.approx(0.004 + 2 * 0.0005)
    # without round trips, the rest stays as profiled
    plain = calibrate_profiles(profiles, {key: predicts}).profiles.get("m", "cpu-1")
    assert plain.points[0].median_s == pytest.approx(0.0015)
    assert next(p for p in plain.points if p.batch_size == 4).median_s == pytest.approx(0.0045)
    # too few round trips of a size: that size is calibrated as without them
    few = calibrate_profiles(profiles, {key: predicts}, turns={key: {1: [0.002] * 5}})
    assert few.profiles.get("m", "cpu-1") == plain


def test_cpu_work_takes_the_measured_rest_of_the_round_trip() -> None:
    """Calibrating CPU work, a point is the work plus the measured median rest of the
    round trip of its size (the Profiler's harness timed a rest the engine does not
    spend); sizes not measured scale the profiled rest like the measured ones."""
    profiles = _profile([0.001, 0.002, 0.004, 0.008, 0.016], rest_s=0.002)
    key = ("m", "cpu-1")
    work = {1: [0.001] * 99 + [0.002]}
    rests = {1: [0.0005] * 60 + [0.0007] * 40}  # median 0.5 ms: a quarter of the profiled
    calibrated = calibrate_profiles(profiles, {key: work}, rests={key: rests}).profiles
    one = calibrated.get("m", "cpu-1").points[0]
    assert (one.median_s, one.p99_s) == pytest.approx((0.0015, 0.0025))
    four = next(p for p in calibrated.get("m", "cpu-1").points if p.batch_size == 4)
    assert four.median_s == pytest.approx(0.004 + 0.25 * 0.002)
    # too few rests of a size: the profiled rest stays
    few = calibrate_profiles(profiles, {key: work}, rests={key: {1: [0.0005] * 5}})
    assert few.profiles.get("m", "cpu-1").points[0].median_s == pytest.approx(0.003)


@settings(max_examples=60, deadline=None)
@given(
    curve=curves,
    extra=st.lists(st.floats(0.0, 0.02), min_size=20, max_size=60),
)
def test_a_round_trip_never_makes_a_point_faster_than_its_predict(
    curve: list[float], extra: list[float]
) -> None:
    profiles = _profile(curve)
    key = ("m", "cpu-1")
    predicts = [curve[0]] * len(extra)
    turns = [curve[0] + e for e in extra]
    result = calibrate_profiles(profiles, {key: {1: predicts}}, turns={key: {1: turns}})
    for point in result.profiles.get("m", "cpu-1").points:
        assert point.median_s >= (point.predict_median_s or 0.0) - 1e-12
        assert point.p99_s >= point.median_s


def test_sizes_not_measured_take_the_measured_sizes_spread() -> None:
    """An isolated profile's tail (a batch timed after idling) is not the served one:
    sizes not run often enough get their profiled P99 − median scaled as the measured
    sizes' was."""
    profiles = _profile([0.001, 0.002, 0.004, 0.008, 0.016], rest_s=0.0, spread=2.0)
    key = ("m", "cpu-1")
    # size 1 profiled at median 1 ms, P99 2 ms; served: median 1 ms, P99 1.5 ms
    served = {1: [0.001] * 98 + [0.0015] * 2}
    result = calibrate_profiles(profiles, {key: served}, turns={key: served})
    calibrated = result.profiles.get("m", "cpu-1")
    eight = next(p for p in calibrated.points if p.batch_size == 8)
    assert eight.median_s == pytest.approx(0.008)
    assert eight.p99_s == pytest.approx(0.008 + 0.5 * 0.008)  # half the profiled spread


@settings(max_examples=40, deadline=None)
@given(
    times=st.lists(st.floats(0.0, 0.05), min_size=MIN_FRONTEND_QUERIES, max_size=600),
    per_batch=st.floats(0.0, 0.001),
)
def test_measured_front_end_times_become_the_per_query_overhead(
    times: list[float], per_batch: float
) -> None:
    import numpy as np

    profiled = EngineOverhead(
        per_batch_s=per_batch, per_query_s=0.004, frontend_cpu_s_per_query=0.0007
    )
    profiles = _profile([0.001, 0.002, 0.004, 0.008, 0.016]).with_overhead(profiled)
    overhead = calibrate_profiles(profiles, {}, frontend_s=times).profiles.overhead
    assert overhead is not None
    assert overhead.per_batch_s == per_batch and overhead.frontend_cpu_s_per_query == 0.0007
    assert overhead.per_query_percentiles == OVERHEAD_PERCENTILES
    values = overhead.per_query_percentiles_s
    assert all(b >= a for a, b in itertools.pairwise(values))
    assert values[0] == pytest.approx(min(times)) and values[-1] == pytest.approx(max(times))
    assert overhead.per_query_s == pytest.approx(float(np.median(times)), abs=1e-12)
    # every profile's per-batch part stays as it was
    assert profiles.get("m", "cpu-1").latency_s(1) == calibrate_profiles(
        profiles, {}, frontend_s=times
    ).profiles.get("m", "cpu-1").latency_s(1)
    # fewer than MIN_FRONTEND_QUERIES: the profiled overhead is kept
    few = calibrate_profiles(profiles, {}, frontend_s=times[: MIN_FRONTEND_QUERIES - 1])
    assert few.profiles.overhead == profiled


def test_a_calibrated_overhead_round_trips_through_the_file_format() -> None:
    profiles = _profile([0.001, 0.002, 0.004, 0.008, 0.016])
    result = calibrate_profiles(profiles, {}, frontend_s=[0.001 * (k % 7) for k in range(300)])
    loaded = profiles_from_mapping(profiles_to_mapping(result.profiles), HW, ("m",))
    assert loaded.overhead is not None and result.profiles.overhead is not None
    assert loaded.overhead.per_query_percentiles_s == pytest.approx(
        result.profiles.overhead.per_query_percentiles_s
    )


def test_hardware_not_served_takes_its_stage_speed_where_served() -> None:
    """A stage served on cpu-2 at 1.5× its profile: its cpu-1 entry, never served, is
    scaled by the same 1.5×, so re-planning cannot prefer it for its isolated times.
    Served on cpu-1 instead, its cpu-2 entry is scaled too but never faster than what
    cpu-1 measured: more threads are not assumed to help. A stage served nowhere, and a
    GPU entry of a stage served on CPU, are left as they are."""
    hw = HardwareCatalogue(
        (HardwareType("cpu-1", 0.05), HardwareType("cpu-2", 0.1), HardwareType("gpu", 1.0))
    )

    def entry(stage: str, hardware: str, base: float) -> BatchProfile:
        points = tuple(ProfilePoint(b, base * b, base * b * 1.4) for b in (1, 2, 4))
        return BatchProfile(stage, hardware, points)

    isolated = Profiles(
        hw,
        {
            ("m", "cpu-1"): entry("m", "cpu-1", 0.004),
            ("m", "cpu-2"): entry("m", "cpu-2", 0.0025),
            ("m", "gpu"): entry("m", "gpu", 0.0005),
            ("other", "cpu-1"): entry("other", "cpu-1", 0.001),
        },
    )

    def served_on(hardware: str, base: float) -> tuple[Profiles, Profiles, float]:
        by_size = {b: [1.5 * base * b] * 30 for b in (1, 2, 4)}
        calibrated = calibrate_profiles(isolated, {("m", hardware): by_size}).profiles
        ratio = calibrated.get("m", hardware).latency_s(2) / isolated.get("m", hardware).latency_s(
            2
        )
        return calibrated, carry_speeds(calibrated, isolated), ratio

    calibrated, carried, ratio = served_on("cpu-2", 0.0025)
    assert ratio > 1.3
    assert carried.get("m", "cpu-2") == calibrated.get("m", "cpu-2")  # measured: kept
    for b in (1, 2, 4):
        before, after = isolated.get("m", "cpu-1"), carried.get("m", "cpu-1")
        assert after.latency_s(b) == pytest.approx(before.latency_s(b) * ratio, rel=0.05)
        assert after.latency_s(b, "p99") >= after.latency_s(b)
    assert "calibrated speed" in carried.get("m", "cpu-1").source
    assert carried.get("m", "gpu") == isolated.get("m", "gpu")
    assert carried.get("other", "cpu-1") == isolated.get("other", "cpu-1")

    calibrated, carried, ratio = served_on("cpu-1", 0.004)
    for b in (1, 2, 4):
        scaled = isolated.get("m", "cpu-2").latency_s(b) * ratio  # 1.5 x 2.5 ms: faster
        measured = calibrated.get("m", "cpu-1").latency_s(b)
        assert scaled < measured
        assert carried.get("m", "cpu-2").latency_s(b) == pytest.approx(measured)
        assert carried.get("m", "cpu-2").latency_s(b, "p99") >= measured
