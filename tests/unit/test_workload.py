"""Workloads (SPEC §2.4): the Trace value, generators, real traces, rescaling, split, files."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from inferline.errors import TraceError
from inferline.workload import (
    Segment,
    Trace,
    bundled_trace_path,
    gamma_trace,
    load_timestamp_csv,
    load_trace,
    peak_rate_qps,
    piecewise_trace,
    ramp_trace,
    rescale_to_mean_rate,
    rescale_to_peak_rate,
    save_trace,
    split_trace,
)


def gap_cv(arrival_s: npt.NDArray[np.float64]) -> float:
    gaps = np.diff(arrival_s)
    return float(gaps.std() / gaps.mean())


def rate_in(trace: Trace, start_s: float, end_s: float) -> float:
    a = trace.arrival_s
    return float(np.count_nonzero((a >= start_s) & (a < end_s)) / (end_s - start_s))


@pytest.fixture(scope="module")
def azure() -> Trace:
    return load_timestamp_csv(bundled_trace_path())


# --- Trace -----------------------------------------------------------------------------


class TestTrace:
    def test_properties(self) -> None:
        trace = Trace(np.array([1.0, 2.0, 2.0, 5.0]))
        assert trace.n_queries == 4
        assert trace.duration_s == 4.0
        assert trace.mean_rate_qps == pytest.approx(3 / 4)
        assert trace.paths() is None
        assert trace.arrival_s.dtype == np.float64

    def test_single_arrival(self) -> None:
        trace = Trace(np.array([3.0]))
        assert trace.duration_s == 0.0
        assert trace.mean_rate_qps == 0.0

    def test_arrays_are_copied_and_read_only(self) -> None:
        times = np.array([0.0, 1.0])
        trace = Trace(times)
        times[0] = 5.0
        assert trace.arrival_s[0] == 0.0
        with pytest.raises(ValueError, match="read-only"):
            trace.arrival_s[0] = 1.0

    @pytest.mark.parametrize(
        ("times", "match"),
        [
            ([], "no arrivals"),
            ([0.0, 2.0, 1.0], "query 2.*sorted"),
            ([-1.0, 2.0], "query 0.*negative"),
            ([0.0, math.nan], "query 1.*finite"),
            ([0.0, math.inf], "query 1.*finite"),
            ([[0.0, 1.0]], "1-D"),
        ],
    )
    def test_invalid_arrivals(self, times: list[float], match: str) -> None:
        with pytest.raises(TraceError, match=match) as info:
            Trace(np.array(times, dtype=np.float64), source="mine")
        assert info.value.source == "mine"
        assert info.value.field == "arrival_s"

    def test_from_arrivals_dedups_and_sorts_paths(self) -> None:
        trace = Trace.from_arrivals(
            [0.0, 1.0, 2.0], [["translate", "langid"], ["langid"], ("langid", "translate")]
        )
        assert trace.path_table == (("langid", "translate"), ("langid",))
        assert trace.path_ids is not None
        assert trace.path_ids.dtype == np.int32
        assert trace.path_ids.tolist() == [0, 1, 0]
        assert trace.paths() == [("langid", "translate"), ("langid",), ("langid", "translate")]

    @pytest.mark.parametrize(
        ("paths", "match"),
        [
            ([["a"]], "2 arrivals"),
            ([["a"], []], "empty"),
            ([["a"], ["a+b"]], "rename"),
            ([["a"], ["a", ""]], "non-empty"),
            ([["a"], "ab"], "string"),
        ],
    )
    def test_from_arrivals_bad_paths(self, paths: list[list[str]], match: str) -> None:
        with pytest.raises(TraceError, match=match):
            Trace.from_arrivals([0.0, 1.0], paths)

    def test_direct_path_validation(self) -> None:
        with pytest.raises(TraceError, match="outside path_table"):
            Trace(np.array([0.0]), np.array([1], dtype=np.int32), (("a",),))
        with pytest.raises(TraceError, match="sorted order"):
            Trace(np.array([0.0]), np.array([0], dtype=np.int32), (("b", "a"),))
        with pytest.raises(TraceError, match="one entry per query"):
            Trace(np.array([0.0, 1.0]), np.array([0], dtype=np.int32), (("a",),))
        with pytest.raises(TraceError, match="without path_ids"):
            Trace(np.array([0.0]), None, (("a",),))

    def test_equality(self) -> None:
        a = Trace.from_arrivals([0.0, 1.0], [["x"], ["y"]])
        b = Trace(np.array([0.0, 1.0]), np.array([1, 0], dtype=np.int32), (("y",), ("x",)))
        assert a == b
        assert a != Trace(np.array([0.0, 1.0]))
        assert a != Trace.from_arrivals([0.0, 1.0], [["x"], ["x"]])

    def test_window_shifts_and_keeps_paths(self) -> None:
        trace = Trace.from_arrivals([0.5, 1.0, 1.5, 2.0], [["a"], ["b"], ["a"], ["b"]])
        part = trace.window(1.0, 2.0)
        assert part.arrival_s.tolist() == [0.0, 0.5]
        assert part.paths() == [("b",), ("a",)]
        assert trace.window(1.2, math.inf).arrival_s.tolist() == pytest.approx([0.3, 0.8])

    def test_empty_window_is_an_error(self) -> None:
        with pytest.raises(TraceError, match="no arrivals"):
            Trace(np.array([0.0, 1.0])).window(5.0, 6.0)
        with pytest.raises(TraceError, match="window"):
            Trace(np.array([0.0, 1.0])).window(1.0, 1.0)


# --- generators ------------------------------------------------------------------------


class TestGamma:
    @pytest.mark.parametrize("cv", [0.5, 1.0, 2.0])
    def test_rate_and_cv(self, cv: float) -> None:
        trace = gamma_trace(100.0, cv, 2_000.0, seed=11)
        assert trace.mean_rate_qps == pytest.approx(100.0, rel=0.02)
        assert gap_cv(trace.arrival_s) == pytest.approx(cv, rel=0.05)
        assert np.all(np.diff(trace.arrival_s) >= 0)
        assert trace.arrival_s[-1] < 2_000.0

    def test_seeds(self) -> None:
        assert gamma_trace(50.0, 2.0, 10.0, seed=1) == gamma_trace(50.0, 2.0, 10.0, seed=1)
        assert gamma_trace(50.0, 2.0, 10.0, seed=1) != gamma_trace(50.0, 2.0, 10.0, seed=2)

    def test_first_arrival_after_first_gap(self) -> None:
        trace = gamma_trace(10.0, 0.0, 1.0, seed=0)
        assert trace.arrival_s.tolist() == pytest.approx([0.1 * k for k in range(1, 10)])

    @pytest.mark.parametrize(
        ("kwargs", "field"),
        [
            ({"rate_qps": 0.0}, "rate_qps"),
            ({"cv": -1.0}, "cv"),
            ({"duration_s": math.inf}, "duration_s"),
            ({"seed": -3}, "seed"),
        ],
    )
    def test_bad_arguments(self, kwargs: dict[str, float], field: str) -> None:
        args = {"rate_qps": 10.0, "cv": 1.0, "duration_s": 10.0, "seed": 0, **kwargs}
        with pytest.raises(TraceError) as info:
            gamma_trace(**args)  # type: ignore[arg-type]
        assert info.value.field == field

    def test_no_arrival_is_an_error(self) -> None:
        with pytest.raises(TraceError, match="no arrival"):
            gamma_trace(1e-6, 1.0, 1.0, seed=0)


class TestPiecewise:
    def test_rate_in_each_segment(self) -> None:
        trace = piecewise_trace(
            [Segment(200.0, 50.0), Segment(200.0, 200.0, cv=1.5), Segment(200.0, 100.0)], seed=4
        )
        assert rate_in(trace, 0, 200) == pytest.approx(50.0, rel=0.05)
        assert rate_in(trace, 200, 400) == pytest.approx(200.0, rel=0.05)
        assert rate_in(trace, 400, 600) == pytest.approx(100.0, rel=0.05)

    def test_ramp_rate_increases(self) -> None:
        trace = ramp_trace(150.0, 250.0, 100.0, before_s=50.0, after_s=50.0, cv=1.0, seed=5)
        assert rate_in(trace, 0, 50) == pytest.approx(150.0, rel=0.05)
        assert rate_in(trace, 150, 200) == pytest.approx(250.0, rel=0.05)
        ramp = [rate_in(trace, s, s + 20) for s in range(50, 150, 20)]
        assert all(b > a for a, b in itertools.pairwise(ramp))
        assert ramp[0] == pytest.approx(160.0, rel=0.08)
        assert ramp[-1] == pytest.approx(240.0, rel=0.08)

    def test_ramp_steps(self) -> None:
        # With cv=0 arrivals are evenly spaced within each step, so each 10 s step
        # holds its midpoint rate (15, 25, 35, 45 qps) times 10 s.
        trace = piecewise_trace([Segment(40.0, 10.0, cv=0.0, end_rate_qps=50.0)], 0, 10.0)
        counts = [rate_in(trace, s, s + 10) * 10 for s in range(0, 40, 10)]
        assert counts == pytest.approx([150, 250, 350, 450], abs=1)

    def test_burstiness_change_at_same_rate(self) -> None:
        trace = piecewise_trace([Segment(500.0, 100.0, cv=1.0), Segment(500.0, 100.0, cv=4.0)], 6)
        first = trace.arrival_s[trace.arrival_s < 500.0]
        second = trace.arrival_s[trace.arrival_s >= 500.0]
        assert gap_cv(first) == pytest.approx(1.0, rel=0.1)
        assert gap_cv(second) > 3.0
        assert rate_in(trace, 500, 1000) == pytest.approx(100.0, rel=0.05)

    def test_no_extra_arrivals_at_boundaries(self) -> None:
        # Restarting a bursty process at every step would add ~(cv²-1)/2 arrivals per step.
        steps = [Segment(1.0, 5.0, cv=3.0) for _ in range(2_000)]
        trace = piecewise_trace(steps, seed=7)
        assert trace.n_queries / 2_000.0 == pytest.approx(5.0, rel=0.05)

    def test_zero_rate_segment(self) -> None:
        trace = piecewise_trace([Segment(10.0, 20.0), Segment(10.0, 0.0), Segment(10.0, 20.0)], 1)
        assert rate_in(trace, 10.5, 19.5) == 0.0
        assert rate_in(trace, 20, 30) > 0

    def test_bad_segments(self) -> None:
        with pytest.raises(TraceError, match="at least one"):
            piecewise_trace([], seed=0)
        with pytest.raises(TraceError) as info:
            Segment(0.0, 10.0)
        assert info.value.field == "Segment.duration_s"
        with pytest.raises(TraceError, match="no arrivals"):
            piecewise_trace([Segment(5.0, 0.0)], seed=0)
        with pytest.raises(TraceError) as info:
            ramp_trace(1.0, 2.0, 0.0, before_s=0.0, after_s=0.0, cv=1.0, seed=0)
        assert info.value.field == "transition_s"


# --- real traces -----------------------------------------------------------------------


class TestTimestampCsv:
    def test_bundled_azure_trace(self, azure: Trace) -> None:
        # 8,820 lines: the header and 8,819 requests (the last line has no newline).
        assert azure.n_queries == 8_819
        assert azure.arrival_s[0] == 0.0
        assert 3_300.0 < azure.duration_s < 3_700.0
        assert 2.4 < azure.mean_rate_qps < 2.7
        assert gap_cv(azure.arrival_s) > 10.0
        assert "azure_llm_2023_code.csv" in azure.source

    def test_bundled_path_is_inside_the_package(self) -> None:
        path = bundled_trace_path("azure_llm_2023_code.csv")
        assert path.is_file()
        assert "shared" not in path.parts
        assert (path.parent / "README.md").is_file()

    def test_unknown_bundled_name_lists_available(self) -> None:
        with pytest.raises(TraceError, match="azure_llm_2023_code"):
            bundled_trace_path("nope")

    def test_datetime_precision_and_sorting(self, tmp_path: Path) -> None:
        file = tmp_path / "log.csv"
        file.write_text(
            "id,TIMESTAMP\n"
            "1,2023-11-16 18:17:04.0000000\n"
            "2,2023-11-16 18:17:03.9999999\n"
            "3,2023-11-16 18:17:05.5\n"
        )
        trace = load_timestamp_csv(file)
        assert trace.arrival_s.tolist() == pytest.approx([0.0, 1e-7, 1.5000001], abs=1e-12)

    def test_time_zones_are_converted(self, tmp_path: Path) -> None:
        file = tmp_path / "log.csv"
        file.write_text("timestamp\n2023-11-16T18:00:00Z\n2023-11-16T20:00:01+02:00\n")
        assert load_timestamp_csv(file).arrival_s.tolist() == [0.0, 1.0]

    @pytest.mark.parametrize("column", ["arrival_s", "timestamp_s", "Timestamp_S"])
    def test_numeric_column(self, tmp_path: Path, column: str) -> None:
        file = tmp_path / "log.csv"
        file.write_text(f"# exported\nuser,{column}\nu1,10.5\nu2,10.25\n\nu3,12\n")
        assert load_timestamp_csv(file).arrival_s.tolist() == [0.0, 0.25, 1.75]

    def test_missing_column(self, tmp_path: Path) -> None:
        file = tmp_path / "log.csv"
        file.write_text("when,tokens\n1,2\n")
        with pytest.raises(TraceError, match=r"'when', 'tokens'.*TIMESTAMP") as info:
            load_timestamp_csv(file)
        assert info.value.source == str(file)
        assert info.value.field == "header"

    @pytest.mark.parametrize(
        ("body", "line", "value"),
        [
            (
                "TIMESTAMP,x\n2023-11-16 18:17:03.1,1\n2023-11-16 18:17:04,1\nyesterday,1\n",
                4,
                "yesterday",
            ),
            ("TIMESTAMP\n2023-11-16 18:17:03.1\n\n2023-13-16 18:17:04\n", 4, "2023-13-16"),
            ("TIMESTAMP,x\n2023-11-16 18:17:03.1,1\n,2\n", 3, "''"),
            ("arrival_s\n1\n2\nthree\n", 4, "three"),
            ("arrival_s\n1\nnan\n", 3, "nan"),
        ],
    )
    def test_bad_value_names_line(self, tmp_path: Path, body: str, line: int, value: str) -> None:
        file = tmp_path / "log.csv"
        file.write_text(body)
        with pytest.raises(TraceError, match=f"line {line}: .*{value}") as info:
            load_timestamp_csv(file)
        assert str(file) in str(info.value)

    def test_short_row(self, tmp_path: Path) -> None:
        file = tmp_path / "log.csv"
        file.write_text("x,TIMESTAMP\n1,2023-11-16 18:17:03\n2\n")
        with pytest.raises(TraceError, match="line 3: has 1 column"):
            load_timestamp_csv(file)

    @pytest.mark.parametrize("body", ["", "# only a comment\n", "TIMESTAMP,x\n"])
    def test_empty(self, tmp_path: Path, body: str) -> None:
        file = tmp_path / "log.csv"
        file.write_text(body)
        with pytest.raises(TraceError, match=r"empty|no data rows") as info:
            load_timestamp_csv(file)
        assert info.value.source == str(file)

    def test_missing_file(self, tmp_path: Path) -> None:
        with pytest.raises(TraceError, match="not found") as info:
            load_timestamp_csv(tmp_path / "absent.csv")
        assert info.value.source == str(tmp_path / "absent.csv")

    def test_folder(self, tmp_path: Path) -> None:
        with pytest.raises(TraceError, match="folder"):
            load_timestamp_csv(tmp_path)


# --- rescaling, peaks, split -----------------------------------------------------------


class TestRescale:
    def test_mean_rate(self, azure: Trace) -> None:
        scaled = rescale_to_mean_rate(azure, 150.0)
        assert scaled.mean_rate_qps == pytest.approx(150.0, rel=1e-12)
        assert scaled.n_queries == azure.n_queries
        # Shape kept: the gap cv does not change.
        assert gap_cv(scaled.arrival_s) == pytest.approx(gap_cv(azure.arrival_s), rel=1e-9)

    def test_peak_rate(self, azure: Trace) -> None:
        assert peak_rate_qps(azure, 1.0) == 72.0
        scaled = rescale_to_peak_rate(azure, 250.0)
        assert peak_rate_qps(scaled, 1.0) == 250.0
        assert gap_cv(scaled.arrival_s) == pytest.approx(gap_cv(azure.arrival_s), rel=1e-9)
        longer = rescale_to_peak_rate(azure, 100.0, window_s=10.0)
        assert peak_rate_qps(longer, 10.0) == 100.0

    def test_peak_rate_keeps_paths(self) -> None:
        trace = Trace.from_arrivals([0.0, 0.1, 0.5, 3.0], [["a"], ["b"], ["a"], ["b"]])
        scaled = rescale_to_peak_rate(trace, 2.0)
        assert peak_rate_qps(scaled, 1.0) == 2.0
        assert scaled.paths() == trace.paths()

    def test_peak_rate_impossible(self) -> None:
        with pytest.raises(TraceError, match="only 3 arrivals"):
            rescale_to_peak_rate(Trace(np.array([0.0, 1.0, 2.0])), 10.0)

    def test_no_spread(self) -> None:
        with pytest.raises(TraceError, match="one instant"):
            rescale_to_mean_rate(Trace(np.array([1.0, 1.0])), 10.0)

    def test_peak_rate_sliding(self) -> None:
        # Whole-second buckets would see at most 3; the window [0.6, 1.6) holds 4.
        trace = Trace(np.array([0.1, 0.6, 0.9, 1.1, 1.5, 2.7]))
        assert peak_rate_qps(trace, 1.0) == 4.0
        assert peak_rate_qps(trace, 0.5) == 4.0
        assert peak_rate_qps(trace, 10.0) == 0.6
        with pytest.raises(TraceError, match="window_s"):
            peak_rate_qps(trace, 0.0)


class TestSplit:
    def test_split_by_time(self) -> None:
        trace = gamma_trace(100.0, 1.0, 400.0, seed=3)
        planning, evaluation = split_trace(trace)
        assert planning.n_queries + evaluation.n_queries == trace.n_queries
        cut_s = trace.arrival_s[0] + 0.25 * trace.duration_s
        assert planning.arrival_s[-1] < cut_s
        assert np.array_equal(planning.arrival_s, trace.arrival_s[: planning.n_queries])
        assert np.allclose(evaluation.arrival_s + cut_s, trace.arrival_s[planning.n_queries :])
        assert 0.0 <= evaluation.arrival_s[0] < 0.1
        assert planning.n_queries / trace.n_queries == pytest.approx(0.25, rel=0.05)

    def test_split_keeps_paths(self) -> None:
        trace = Trace.from_arrivals([0.0, 1.0, 2.0, 3.0], [["a"], ["b"], ["c"], ["a"]])
        planning, evaluation = split_trace(trace, 0.5)
        assert planning.paths() == [("a",), ("b",)]
        assert evaluation.paths() == [("c",), ("a",)]
        assert evaluation.arrival_s.tolist() == [0.5, 1.5]

    @pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, math.nan])
    def test_bad_fraction(self, fraction: float) -> None:
        with pytest.raises(TraceError, match="between 0 and 1"):
            split_trace(Trace(np.array([0.0, 1.0])), fraction)

    def test_too_short(self) -> None:
        with pytest.raises(TraceError, match="empty"):
            split_trace(Trace(np.array([2.0])))


# --- InferLine trace files -------------------------------------------------------------


class TestTraceFiles:
    def test_round_trip_exact(self, tmp_path: Path) -> None:
        trace = gamma_trace(1_000.0, 2.0, 5.0, seed=9)
        file = tmp_path / "t.csv"
        save_trace(trace, file)
        assert file.read_text().startswith("arrival_s\n")
        loaded = load_trace(file)
        assert np.array_equal(loaded.arrival_s, trace.arrival_s)
        assert loaded.paths() is None
        assert loaded.source == str(file)

    def test_round_trip_with_paths(self, tmp_path: Path) -> None:
        rng = np.random.default_rng(0)
        choices = [["langid"], ["langid", "translate_de"], ["langid", "translate_fr"]]
        paths = [choices[i] for i in rng.integers(0, 3, 500)]
        trace = Trace.from_arrivals(np.sort(rng.random(500)) * 10, paths)
        file = tmp_path / "t.csv"
        save_trace(trace, file)
        assert file.read_text().splitlines()[0] == "arrival_s,path"
        assert "langid+translate_de" in file.read_text()
        loaded = load_trace(file)
        assert loaded == trace
        assert np.array_equal(loaded.arrival_s, trace.arrival_s)

    def test_comments_and_spacing(self, tmp_path: Path) -> None:
        file = tmp_path / "t.csv"
        file.write_text("# made by hand\n\n# second comment\narrival_s, path\n0.5, b+a\n1 ,a\n\n")
        trace = load_trace(file)
        assert trace.arrival_s.tolist() == [0.5, 1.0]
        assert trace.paths() == [("a", "b"), ("a",)]

    @pytest.mark.parametrize(
        ("body", "field", "match"),
        [
            ("arrival_s\n0\n2\n1\n", "arrival_s", "line 4: .*earlier.*sorted"),
            ("arrival_s\n0\n-1\n", "arrival_s", "line 3: .*negative"),
            ("arrival_s\n0\nnan\n", "arrival_s", "line 3: .*finite"),
            ("arrival_s\n0\ninf\n", "arrival_s", "line 3: .*finite"),
            ("arrival_s\n0\nabc\n", "arrival_s", "line 3: 'abc' is not a number"),
            ("arrival_s\n0\n1,2\n", "arrival_s", "line 3: .*more columns"),
            ("", "header", "empty"),
            ("# nothing\n", "header", "empty"),
            ("arrival_s\n", "arrival_s", "no arrivals"),
            ("time\n1\n", "header", "line 1: header is 'time'"),
            ("arrival_s,stage\n1,a\n", "header", "header is"),
            ("arrival_s,path\n0,a\n1\n", "path", "line 3: expected 2 columns"),
            ("arrival_s,path\n0,a\n1,\n", "path", "line 3: a path is empty"),
            ("arrival_s,path\n0,a+b,c\n", "path", "line 2: expected 2 columns"),
            ("arrival_s,path\n0,a\n1,a\n0.5,b\n", "arrival_s", "line 4: .*sorted"),
        ],
    )
    def test_errors(self, tmp_path: Path, body: str, field: str, match: str) -> None:
        file = tmp_path / "bad.csv"
        file.write_text(body)
        with pytest.raises(TraceError, match=match) as info:
            load_trace(file)
        assert info.value.source == str(file)
        assert info.value.field == field
        assert str(info.value).startswith(str(file))

    def test_missing_file(self, tmp_path: Path) -> None:
        with pytest.raises(TraceError, match="not found"):
            load_trace(tmp_path / "absent.csv")

    def test_binary_file(self, tmp_path: Path) -> None:
        file = tmp_path / "bad.csv"
        file.write_bytes(b"arrival_s\n\xff\xfe\x00\n")
        with pytest.raises(TraceError, match="UTF-8"):
            load_trace(file)

    def test_unwritable(self, tmp_path: Path) -> None:
        with pytest.raises(TraceError, match="cannot write"):
            save_trace(Trace(np.array([0.0])), tmp_path / "missing" / "t.csv")

    def test_large_file_round_trip(self, tmp_path: Path) -> None:
        trace = gamma_trace(10_000.0, 1.0, 20.0, seed=2)
        file = tmp_path / "big.csv"
        save_trace(trace, file)
        assert load_trace(file) == trace
