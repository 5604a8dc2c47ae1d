"""Planner sweeps: tables, plots and the benchmark summary."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from inferline import load_bundle
from inferline.bench.planner import summarise, verdict
from inferline.reports import SweepPoint, run_sweep, write_sweep


def test_sweep_writes_tables_and_plots(reference_bundle: Path, tmp_path: Path) -> None:
    bundle = load_bundle(reference_bundle)
    points = run_sweep(
        bundle,
        planners=("inferline", "cg-mean", "cg-peak"),
        slos_s=(0.004, 0.1, 0.3),
        rates_qps=(100.0,),
        cvs=(1.0,),
        duration_s=20.0,
    )
    assert len(points) == 9
    infeasible = [p for p in points if p.slo_s == 0.004 and p.planner == "inferline"]
    assert "smallest SLO" in infeasible[0].note  # below the service time: explained, not raised
    feasible = [p for p in points if p.planner == "inferline" and p.slo_s >= 0.1]
    for p in feasible:
        assert p.feasible
        assert math.isfinite(p.heldout_p99_s)
    peak = {p.slo_s: p.cost_per_hour for p in points if p.planner == "cg-peak"}
    for p in feasible:
        assert p.cost_per_hour <= peak[p.slo_s] + 1e-9
    files = write_sweep(points, tmp_path / "out")
    names = {f.name for f in files}
    assert names == {"sweep.csv", "sweep.md", "image-processing.png"}
    with (tmp_path / "out" / "sweep.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == 9
    png = (tmp_path / "out" / "image-processing.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def point(planner: str, cost: float, miss: float, note: str = "") -> SweepPoint:
    return SweepPoint("p", planner, 0.1, 100.0, 1.0, True, cost, 0.05, 0.05, miss, 0.1, 3, note)


def test_summary_ratios_and_verdict() -> None:
    points = [
        point("inferline", 1.0, 0.002),
        point("cg-mean", 2.0, 0.4),
        point("cg-peak", 4.0, 0.0),
        point("exhaustive", 0.95, 0.003),
    ]
    rows = summarise(points)
    assert rows == [
        {
            "pipeline": "p",
            "slo_s": 0.1,
            "rate_qps": 100.0,
            "cv": 1.0,
            "inferline_feasible": True,
            "inferline_cost": 1.0,
            "inferline_heldout_miss": 0.002,
            "cg-mean_cost_ratio": 2.0,
            "cg-mean_heldout_miss": 0.4,
            "cg-peak_cost_ratio": 4.0,
            "cg-peak_heldout_miss": 0.0,
            "optimum_cost": 0.95,
            "gap_to_optimum": 1.0 / 0.95,
        }
    ]
    figures = verdict({"cases": rows, "timing_10min_200qps": {"p": {"planning_time_s": 2.5}}})
    assert figures["never_costlier_than_cg_peak"] is True
    assert figures["worst_gap_to_optimum"] == 1.0 / 0.95
    assert figures["max_planning_time_s"] == 2.5


def test_unfinished_exhaustive_search_is_not_an_optimum() -> None:
    rows = summarise([point("inferline", 1.0, 0.0), point("exhaustive", 0.9, 0.0, "stopped")])
    assert "gap_to_optimum" not in rows[0]
