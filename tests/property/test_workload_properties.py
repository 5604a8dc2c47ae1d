"""Properties of the workload functions, checked on generated traces."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inferline.workload import (
    Trace,
    gamma_trace,
    load_trace,
    peak_rate_qps,
    rescale_to_mean_rate,
    rescale_to_peak_rate,
    save_trace,
    split_trace,
)

FAST = settings(max_examples=80, deadline=None)

# Sorted arrival times with ties, built from non-negative gaps.
gaps = st.lists(
    st.one_of(st.just(0.0), st.floats(min_value=1e-6, max_value=50.0)), min_size=1, max_size=60
)
# Arbitrary float64 values, to test that files round-trip exactly.
any_times = st.lists(
    st.floats(min_value=0.0, max_value=1e300, allow_nan=False, allow_infinity=False),
    min_size=1,
    max_size=40,
)
stage = st.sampled_from(["langid", "translate_de", "translate_fr", "resnet", "a.b-c_d"])
path_sets = st.lists(stage, min_size=1, max_size=3)


def sorted_times(values: list[float]) -> npt.NDArray[np.float64]:
    return np.cumsum(np.array(values, dtype=np.float64))


def brute_force_peak(arrival_s: npt.NDArray[np.float64], window_s: float) -> float:
    start = arrival_s[:, None]
    inside = (arrival_s[None, :] >= start) & (arrival_s[None, :] < start + window_s)
    return int(inside.sum(axis=1).max()) / window_s


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("traces")


@FAST
@given(gaps, st.floats(min_value=1e-3, max_value=200.0))
def test_peak_rate_matches_brute_force(values: list[float], window_s: float) -> None:
    arrival_s = sorted_times(values)
    assert peak_rate_qps(Trace(arrival_s), window_s) == brute_force_peak(arrival_s, window_s)


@FAST
@given(
    st.lists(st.floats(min_value=1e-3, max_value=10.0), min_size=2, max_size=60),
    st.data(),
    st.sampled_from([0.5, 1.0, 4.0]),
)
def test_peak_rescale_hits_whole_counts(
    values: list[float], data: st.DataObject, window_s: float
) -> None:
    # With distinct times every count 1..n is reachable, so the peak is exact.
    trace = Trace(sorted_times(values))
    count = data.draw(st.integers(min_value=1, max_value=trace.n_queries))
    scaled = rescale_to_peak_rate(trace, count / window_s, window_s)
    assert peak_rate_qps(scaled, window_s) == count / window_s
    assert scaled.n_queries == trace.n_queries


@FAST
@given(gaps, st.floats(min_value=1e-3, max_value=1e4))
def test_mean_rescale_hits_rate(values: list[float], rate_qps: float) -> None:
    trace = Trace(sorted_times([1.0, *values]))
    if trace.duration_s <= 0:
        return
    scaled = rescale_to_mean_rate(trace, rate_qps)
    assert scaled.mean_rate_qps == pytest.approx(rate_qps, rel=1e-9)
    assert np.all(np.diff(scaled.arrival_s) >= 0)


@FAST
@given(gaps, st.floats(min_value=0.05, max_value=0.95))
def test_split_never_shares_arrivals(values: list[float], fraction: float) -> None:
    trace = Trace(sorted_times([0.0, *values, 1.0]))
    planning, evaluation = split_trace(trace, fraction)
    cut_s = trace.arrival_s[0] + fraction * trace.duration_s
    n_plan = planning.n_queries
    assert n_plan + evaluation.n_queries == trace.n_queries
    assert np.array_equal(planning.arrival_s, trace.arrival_s[:n_plan])
    assert np.all(planning.arrival_s < cut_s)
    assert np.all(trace.arrival_s[n_plan:] >= cut_s)
    assert evaluation.arrival_s[0] >= 0.0
    assert np.allclose(evaluation.arrival_s + cut_s, trace.arrival_s[n_plan:], rtol=1e-12)


@FAST
@given(gaps, st.floats(min_value=0.0, max_value=500.0), st.floats(min_value=0.01, max_value=500))
def test_window_selects_and_shifts(values: list[float], start_s: float, length_s: float) -> None:
    trace = Trace(sorted_times(values))
    a = trace.arrival_s
    expected = a[(a >= start_s) & (a < start_s + length_s)] - start_s
    if expected.size == 0:
        return
    assert np.array_equal(trace.window(start_s, start_s + length_s).arrival_s, expected)


@FAST
@given(any_times, st.booleans(), st.data())
def test_file_round_trip_is_exact(
    folder: Path, values: list[float], with_paths: bool, data: st.DataObject
) -> None:
    arrival_s = np.sort(np.array(values, dtype=np.float64))
    paths = (
        data.draw(st.lists(path_sets, min_size=arrival_s.size, max_size=arrival_s.size))
        if with_paths
        else None
    )
    trace = Trace.from_arrivals(arrival_s, paths)
    file = folder / "round_trip.csv"
    save_trace(trace, file)
    loaded = load_trace(file)
    assert loaded == trace
    assert loaded.arrival_s.tobytes() == trace.arrival_s.tobytes()
    if paths is not None:
        assert loaded.paths() == [tuple(sorted(set(p))) for p in paths]


@FAST
@given(
    st.floats(min_value=50.0, max_value=500.0),  # >= 250 mean gaps, so never an empty trace
    st.floats(min_value=0.0, max_value=4.0),
    st.integers(min_value=0, max_value=2**32),
)
def test_gamma_traces_are_valid_and_reproducible(rate_qps: float, cv: float, seed: int) -> None:
    trace = gamma_trace(rate_qps, cv, 5.0, seed)
    assert np.all(np.diff(trace.arrival_s) >= 0)
    assert trace.arrival_s[0] >= 0.0
    assert trace.arrival_s[-1] < 5.0
    assert trace == gamma_trace(rate_qps, cv, 5.0, seed)
