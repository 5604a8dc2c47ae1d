"""``make demo``'s pure parts (scripts/demo.py): the load step, the SLO search, the
per-second P99 and the PNG, on synthetic data."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def demo() -> ModuleType:
    spec = importlib.util.spec_from_file_location("inferline_demo", ROOT / "scripts" / "demo.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


@settings(deadline=None, max_examples=40)
@given(
    duration_s=st.floats(2.0, 100.0),
    rate_qps=st.floats(0.5, 20.0),
    factor=st.floats(1.0, 4.0),
    seed=st.integers(0, 1000),
)
def test_the_load_step_has_exact_rates_and_keeps_the_recordings_gaps(
    demo: ModuleType, duration_s: float, rate_qps: float, factor: float, seed: int
) -> None:
    half = duration_s / 2
    first, second = round(rate_qps * half), round(factor * rate_qps * half)
    assume(first >= 1 and second >= 1)
    gaps = np.random.default_rng(seed).exponential(1.0, first + second + 5)
    source = 7.0 + np.cumsum(gaps)
    out = demo.step_arrivals(source, duration_s, factor, rate_qps)
    assert np.all(np.diff(out) >= 0) and out[0] == 0.0 and np.all(out < duration_s)
    assert np.sum(out < half) == first and np.sum(out >= half) == second
    # each half is one stretch of the recording, scaled: gaps keep their proportions
    scale = half / (source[first] - source[0])
    np.testing.assert_allclose(out[:first], (source[:first] - source[0]) * scale)
    stretch = source[first : first + second + 1]
    np.testing.assert_allclose(
        out[first:], half + (stretch[:-1] - stretch[0]) * half / (stretch[-1] - stretch[0])
    )


def test_a_tripled_rate_triples_the_second_half(demo: ModuleType) -> None:
    bursty = np.cumsum(np.tile([0.01, 0.01, 0.5], 400))  # a burst of 3, then a pause
    out = demo.step_arrivals(bursty, 60.0, 3.0, 8.0)
    assert np.sum(out < 30.0) == 240 and np.sum(out >= 30.0) == 720


def test_too_short_a_recording_for_the_step_is_an_error(demo: ModuleType) -> None:
    with pytest.raises(ValueError, match="needs 961 recorded ones, got 100"):
        demo.step_arrivals(np.arange(100.0), 60.0, 3.0, 8.0)


@settings(deadline=None, max_examples=40)
@given(
    gaps=st.lists(st.floats(0.0, 100.0), min_size=0, max_size=50),
    max_gap_s=st.floats(0.1, 10.0),
)
def test_squeezed_gaps_are_at_most_the_cap_and_short_ones_stay(
    demo: ModuleType, gaps: list[float], max_gap_s: float
) -> None:
    arrivals = np.concatenate([[3.0], 3.0 + np.cumsum(gaps)])
    out = demo.squeeze_gaps(arrivals, max_gap_s)
    assert out[0] == 0.0 and out.size == arrivals.size
    np.testing.assert_allclose(np.diff(out), np.minimum(gaps, max_gap_s), atol=1e-9)


def feasible_from(min_slo_s: float, p99_fraction: float = 0.9) -> object:
    """A stand-in Planner: a plan exists from ``min_slo_s`` on and fills the SLO."""
    return lambda slo: None if slo < min_slo_s else p99_fraction * slo


def test_the_slo_is_tight_at_the_peak_and_binds_at_the_base(demo: ModuleType) -> None:
    choice = demo.choose_slo(feasible_from(0.05), feasible_from(0.08), factor=1.1)
    assert choice.slo_s == pytest.approx(0.088, rel=0.04)
    assert choice.tightest_s == pytest.approx(0.08, rel=0.04)
    assert choice.binds and choice.peak_feasible
    assert choice.estimated_p99_s >= 0.8 * choice.slo_s


def test_the_peaks_tightest_slo_itself_when_more_would_not_bind(demo: ModuleType) -> None:
    # the base plan's P99 stays at 66 ms: 75 % of 1.1 × 80 ms, 82 % of 80 ms
    choice = demo.choose_slo(
        lambda s: None if s < 0.03 else min(0.9 * s, 0.066), feasible_from(0.08), factor=1.1
    )
    assert choice.slo_s == pytest.approx(0.08, rel=0.04)
    assert choice.binds and choice.peak_feasible


def test_without_a_peak_plan_the_base_load_sets_the_slo(demo: ModuleType) -> None:
    choice = demo.choose_slo(feasible_from(0.05), lambda _slo: None, factor=1.1)
    assert choice.slo_s == pytest.approx(0.055, rel=0.04)
    assert choice.binds and not choice.peak_feasible


def test_a_slack_plan_is_reported_as_not_binding(demo: ModuleType) -> None:
    """The cheapest plan's P99 is 10 ms whatever the SLO: nothing binds above 12.5 ms."""
    choice = demo.choose_slo(lambda s: 0.010 if s >= 0.05 else None, lambda _s: None)
    assert choice is not None and not choice.binds


def test_no_plan_at_all_is_none(demo: ModuleType) -> None:
    assert demo.choose_slo(lambda _s: None, lambda _s: 0.01) is None


def test_per_second_p99_is_the_nearest_rank_and_skips_failures(demo: ModuleType) -> None:
    sent = np.array([0.1, 0.2, 0.3, 1.5, 1.6, 3.2])
    latency = np.array([0.010, 0.030, 0.020, 0.050, np.nan, np.nan])
    t, p99 = demo.per_second_p99(sent, latency)
    np.testing.assert_array_equal(t, [0.5, 1.5])
    np.testing.assert_array_equal(p99, [0.030, 0.050])


def test_the_png_has_the_runs_and_is_a_png(demo: ModuleType, tmp_path: Path) -> None:
    def run(scale: int) -> object:
        return demo.Timeline(
            latency_t_s=[0.5, 1.5, 2.5],
            latency_p99_s=[0.02, 0.03 * scale, 0.025],
            status_t_s=[0.0, 1.0, 2.0],
            estimated_p99_s=[None, 0.02, 0.03],
            replicas={"a": [1, scale, scale], "b": [1, 1, 1]},
        )

    path = demo.write_timeline_png(
        tmp_path / "out" / "demo.png", {"Tuner": run(2), "fixed": run(1)}, slo_s=0.05, step_at_s=1
    )
    assert path == tmp_path / "out" / "demo.png"
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_the_demo_works_on_a_copy_of_the_bundle_outside_the_checkout(
    demo: ModuleType, tmp_path: Path
) -> None:
    demo.use_working_copy(tmp_path)
    copy = tmp_path / "text-pipeline"
    assert copy == demo.BUNDLE
    assert (copy / "profiles.yaml").read_text() == (
        demo.SOURCE_BUNDLE / "profiles.yaml"
    ).read_text()
    assert (copy / ".models").is_symlink()
    assert (copy / ".models").resolve() == (demo.SOURCE_BUNDLE / ".models").resolve()
    demo.use_working_copy(tmp_path)  # a re-run keeps the copy and what it measured
    assert copy == demo.BUNDLE


def test_the_calibrated_copy_plans_from_the_calibrated_profiles_and_leaves_the_copy(
    demo: ModuleType, tmp_path: Path
) -> None:
    demo.use_working_copy(tmp_path)
    measured = (demo.BUNDLE / "profiles.yaml").read_text()
    calibrated = tmp_path / "calibrated-work.yaml"
    calibrated.write_text("# calibrated on the engine\nprofiles: []\n")
    for _ in range(2):  # a re-run replaces the last calibration's copy
        copy = demo.calibrated_copy(demo.BUNDLE, calibrated, tmp_path)
        assert copy == tmp_path / "text-pipeline-calibrated"
        assert (copy / "profiles.yaml").read_text() == calibrated.read_text()
        assert (copy / "pipeline.yaml").read_text() == (demo.BUNDLE / "pipeline.yaml").read_text()
        assert (copy / ".models").resolve() == (demo.SOURCE_BUNDLE / ".models").resolve()
    assert (demo.BUNDLE / "profiles.yaml").read_text() == measured


@settings(deadline=None, max_examples=30)
@given(rate_qps=st.floats(0.5, 300.0), plays=st.floats(10.0, 20.0), seed=st.integers(0, 99))
def test_superposed_arrivals_keep_the_rate_asked(
    demo: ModuleType, rate_qps: float, plays: float, seed: int
) -> None:
    gaps = np.random.default_rng(seed).exponential(0.5, 400)  # ~2 q/s, a play of ~200 s
    duration_s = plays * 200.0
    out = demo.superposed(np.cumsum(gaps), rate_qps, duration_s, 5.0, seed=seed)
    assert np.all(np.diff(out) >= 0) and out[0] >= 0 and np.all(out < duration_s)
    # whole plays have the rate exactly; the last one, cut, is at most one play of 10-20
    assert out.size == pytest.approx(rate_qps * duration_s, rel=0.1, abs=2)


def test_below_the_recordings_rate_superposed_is_the_recording_stretched(
    demo: ModuleType,
) -> None:
    recording = np.array([3.0, 3.1, 3.2, 10.0, 10.5, 30.0])  # one idle gap of 19.5 s
    # squeezed: gaps 0.1, 0.1, 5 (cut), 0.5, 5 (cut), then one mean gap (2.14 s) per replay
    cyclic = [0.1, 0.1, 5.0, 0.5, 5.0, 10.7 / 5]
    out = demo.superposed(recording, 0.25, 40.0, 5.0, seed=3)
    assert abs(out.size - 10) <= 2  # 0.25 q/s for 40 s, give or take a part of one play
    stretch = (6 / (10.7 * 6 / 5)) / 0.25  # one user: its 0.47 q/s slowed to 0.25
    gaps = np.round(np.diff(out) / stretch, 6).tolist()
    tiled = np.round(cyclic * 4, 6).tolist()
    assert any(tiled[k : k + len(gaps)] == gaps for k in range(len(cyclic)))
