"""``inferline bench planner``: the Planner's quality and speed targets (SPEC §4, issue #3).

For each reference pipeline, SLO, rate and burstiness it plans with InferLine,
CG-Mean, CG-Peak and (within a time budget) exhaustive search, scores every plan
on a held-out trace, and summarises: InferLine never costlier than CG-Peak, its
worst gap to the optimum where the optimum was found, its worst held-out miss
rate, and the baselines' cost ratios and miss rates. Separately it times
InferLine on a 10-minute 200-q/s trace for every pipeline. With ``out_dir`` it also
writes the sweep there (``sweep.csv``, ``sweep.md``, one PNG per pipeline).

Every planner plans for a P99 of SLO × (1 − margin), 5 % by default: a plan that
sits exactly on the SLO for the planning arrivals misses it on about half of the
held-out traces drawn with the same parameters, so the margin is what makes a
plan hold on traffic it has not seen (the exhaustive optimum uses the same test).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.table import Table

from inferline import load_bundle
from inferline.planner import plan_inferline
from inferline.reports import SweepPoint, run_sweep, write_sweep
from inferline.workload import gamma_trace

__all__ = ["PLANNERS", "REFERENCE_PIPELINES", "run_planner_benchmark", "tables", "verdict"]

REFERENCE_PIPELINES = ("image-processing", "video-monitoring", "social-media", "tf-cascade")
PLANNERS = ("inferline", "cg-mean", "cg-peak", "exhaustive")


def run_planner_benchmark(
    reference_dir: Path,
    *,
    pipelines: Sequence[str] = REFERENCE_PIPELINES,
    slos_s: Sequence[float] = (0.1, 0.15, 0.3),
    rates_qps: Sequence[float] = (100.0, 200.0),
    cvs: Sequence[float] = (1.0, 2.0),
    duration_s: float = 600.0,
    timing_duration_s: float = 600.0,
    exhaustive_max_s: float = 30.0,
    margin: float = 0.05,
    seed: int = 0,
    out_dir: Path | None = None,
    on_point: Callable[[SweepPoint], None] | None = None,
) -> dict[str, Any]:
    """Plan and score every case (module docstring); returns JSON-ready figures."""
    points: list[SweepPoint] = []
    timing: dict[str, dict[str, float]] = {}
    for name in pipelines:
        bundle = load_bundle(reference_dir / name)
        points += run_sweep(
            bundle,
            planners=PLANNERS,
            slos_s=slos_s,
            rates_qps=rates_qps,
            cvs=cvs,
            duration_s=duration_s,
            seed=seed,
            exhaustive_max_s=exhaustive_max_s,
            margin=margin,
            on_point=on_point,
        )
        trace = gamma_trace(200.0, 1.0, timing_duration_s, seed)
        start = time.perf_counter()
        timed = plan_inferline(
            bundle.pipeline, bundle.profiles, trace, 0.15, seed=seed, margin=margin
        )
        timing[name] = {
            "planning_time_s": time.perf_counter() - start,
            "estimator_calls": timed.estimator_calls,
            "queries": trace.n_queries,
        }
    summary: dict[str, Any] = {
        "margin": margin,
        "duration_s": duration_s,
        "cases": summarise(points),
        "timing_10min_200qps": timing,
    }
    written = [] if out_dir is None else [str(p) for p in write_sweep(points, out_dir)]
    return {"verdict": verdict(summary), **summary, "written": written}


def summarise(points: Sequence[SweepPoint]) -> list[dict[str, Any]]:
    """One row per (pipeline, SLO, rate, cv): InferLine next to the baselines and the optimum."""
    groups: dict[tuple[str, float, float, float], dict[str, SweepPoint]] = {}
    for p in points:
        groups.setdefault((p.pipeline, p.slo_s, p.rate_qps, p.cv), {})[p.planner] = p
    rows = []
    for (pipeline, slo, rate, cv), by in groups.items():
        il = by.get("inferline")
        if il is None or not math.isfinite(il.cost_per_hour):
            rows.append(
                {
                    "pipeline": pipeline,
                    "slo_s": slo,
                    "rate_qps": rate,
                    "cv": cv,
                    "inferline_feasible": False,
                    "note": il.note if il else "not planned",
                }
            )
            continue
        row: dict[str, Any] = {
            "pipeline": pipeline,
            "slo_s": slo,
            "rate_qps": rate,
            "cv": cv,
            "inferline_feasible": il.feasible,
            "inferline_cost": il.cost_per_hour,
            "inferline_heldout_miss": il.heldout_miss_rate,
        }
        for base in ("cg-mean", "cg-peak"):
            b = by.get(base)
            if b is not None and math.isfinite(b.cost_per_hour):
                row[f"{base}_cost_ratio"] = b.cost_per_hour / il.cost_per_hour
                row[f"{base}_heldout_miss"] = b.heldout_miss_rate
        ex = by.get("exhaustive")
        if ex is not None and math.isfinite(ex.cost_per_hour) and not ex.note:
            row["optimum_cost"] = ex.cost_per_hour
            row["gap_to_optimum"] = il.cost_per_hour / ex.cost_per_hour
        rows.append(row)
    return rows


def verdict(summary: dict[str, Any]) -> dict[str, Any]:
    """The figures the issue asks for, from a benchmark summary."""
    cases = [c for c in summary["cases"] if c.get("inferline_feasible")]
    gaps = [c["gap_to_optimum"] for c in cases if "gap_to_optimum" in c]
    never_above_peak = all(c.get("cg-peak_cost_ratio", math.inf) >= 1 - 1e-9 for c in cases)
    return {
        "cases": len(summary["cases"]),
        "inferline_feasible_cases": len(cases),
        "never_costlier_than_cg_peak": never_above_peak,
        "optimum_found_cases": len(gaps),
        "worst_gap_to_optimum": max(gaps) if gaps else None,
        "worst_inferline_heldout_miss": max(
            (c["inferline_heldout_miss"] for c in cases), default=None
        ),
        "max_planning_time_s": max(
            t["planning_time_s"] for t in summary["timing_10min_200qps"].values()
        ),
    }


def tables(figures: dict[str, Any]) -> list[Table]:
    """The readable output of :func:`run_planner_benchmark`'s figures: a row per case, the
    planning times and the verdict."""
    cases = Table(title="InferLine planner against the baselines (held-out traces)")
    for col in (
        "pipeline", "SLO ms", "q/s", "cv", "InferLine $/h", "IL miss", "vs optimum",
        "CG-Mean ×cost", "CG-Mean miss", "CG-Peak ×cost", "CG-Peak miss",
    ):  # fmt: skip
        cases.add_column(col, justify="right")
    for c in figures["cases"]:
        head = (c["pipeline"], f"{c['slo_s'] * 1000:.0f}", f"{c['rate_qps']:g}", f"{c['cv']:g}")
        if not c.get("inferline_feasible"):
            cases.add_row(*head, "infeasible")
            continue
        cases.add_row(
            *head,
            f"{c['inferline_cost']:.3f}",
            f"{c['inferline_heldout_miss']:.2%}",
            f"{c['gap_to_optimum']:.3f}" if "gap_to_optimum" in c else "—",
            f"{c.get('cg-mean_cost_ratio', math.nan):.2f}",
            f"{c.get('cg-mean_heldout_miss', math.nan):.1%}",
            f"{c.get('cg-peak_cost_ratio', math.nan):.2f}",
            f"{c.get('cg-peak_heldout_miss', math.nan):.1%}",
        )
    timing = Table(title="planning time, 10-minute 200-q/s trace, SLO 150 ms")
    for col in ("pipeline", "seconds", "estimator calls"):
        timing.add_column(col, justify="right")
    for name, t in figures["timing_10min_200qps"].items():
        timing.add_row(name, f"{t['planning_time_s']:.2f}", str(t["estimator_calls"]))
    verdict_table = Table(title="verdict", show_header=False)
    for key, value in figures["verdict"].items():
        verdict_table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    return [cases, timing, verdict_table]
