"""Planner sweeps: cost and latency of every planner against SLO, rate and burstiness.

Each (rate, cv) pair gets a planning trace and a held-out evaluation trace drawn
with the same parameters and another seed (the paper never evaluates on the
arrivals it planned on); every plan is simulated on the held-out trace.
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from inferline._bundle import Bundle
from inferline.errors import InfeasibleError
from inferline.estimator import Estimator
from inferline.planner import plan
from inferline.workload import gamma_trace

__all__ = ["SweepPoint", "run_sweep", "write_sweep"]

EVALUATION_SEED_OFFSET = 1000


@dataclass(frozen=True)
class SweepPoint:
    pipeline: str
    planner: str
    slo_s: float
    rate_qps: float
    cv: float
    feasible: bool
    cost_per_hour: float
    estimated_p99_s: float
    heldout_p99_s: float
    heldout_miss_rate: float
    planning_time_s: float
    estimator_calls: int
    note: str = ""


def run_sweep(
    bundle: Bundle,
    *,
    planners: Sequence[str],
    slos_s: Sequence[float],
    rates_qps: Sequence[float],
    cvs: Sequence[float],
    duration_s: float,
    seed: int = 0,
    exhaustive_max_s: float = 60.0,
    margin: float = 0.0,
    on_point: Callable[[SweepPoint], None] | None = None,
) -> list[SweepPoint]:
    """Plan every combination and score each plan on its held-out trace."""
    points: list[SweepPoint] = []
    for rate in rates_qps:
        for cv in cvs:
            planning = gamma_trace(rate, cv, duration_s, seed)
            evaluation = gamma_trace(rate, cv, duration_s, seed + EVALUATION_SEED_OFFSET)
            for slo in slos_s:
                judge = Estimator(
                    bundle.pipeline, bundle.profiles, evaluation, slo_s=slo, seed=seed + 1
                )
                for name in planners:
                    start = time.perf_counter()
                    try:
                        result = plan(
                            name,
                            bundle.pipeline,
                            bundle.profiles,
                            planning,
                            slo,
                            seed=seed,
                            margin=margin,
                            max_seconds=exhaustive_max_s,
                        )
                    except InfeasibleError as exc:
                        point = SweepPoint(
                            bundle.pipeline.name,
                            name,
                            slo,
                            rate,
                            cv,
                            False,
                            math.nan,
                            math.nan,
                            math.nan,
                            math.nan,
                            time.perf_counter() - start,
                            0,
                            str(exc),
                        )
                    else:
                        heldout = judge.run(result.config)
                        note = ""
                        if result.exhaustive_complete is False:
                            note = "exhaustive search stopped at its time budget"
                        point = SweepPoint(
                            bundle.pipeline.name,
                            name,
                            slo,
                            rate,
                            cv,
                            result.feasible,
                            result.cost_per_hour,
                            result.estimated_p99_s,
                            heldout.p99_s,
                            heldout.miss_rate,
                            result.planning_time_s,
                            result.estimator_calls,
                            note,
                        )
                    points.append(point)
                    if on_point is not None:
                        on_point(point)
    return points


def write_sweep(points: Sequence[SweepPoint], out_dir: str | Path) -> list[Path]:
    """Write sweep.csv, sweep.md and one PNG per pipeline; returns the files written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "sweep.csv", out / "sweep.md"]
    fields = list(SweepPoint.__dataclass_fields__)
    with (out / "sweep.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for p in points:
            writer.writerow(asdict(p))
    (out / "sweep.md").write_text(markdown_table(points), encoding="utf-8")
    for pipeline in sorted({p.pipeline for p in points}):
        path = out / f"{pipeline}.png"
        _plot(pipeline, [p for p in points if p.pipeline == pipeline], path)
        written.append(path)
    return written


def markdown_table(points: Sequence[SweepPoint]) -> str:
    head = (
        "| pipeline | rate q/s | cv | SLO ms | planner | feasible | $/hour | est. P99 ms "
        "| held-out P99 ms | held-out miss | plan s | estimator calls |\n"
        "|---|---:|---:|---:|---|---|---:|---:|---:|---:|---:|---:|\n"
    )
    rows = []
    for p in points:
        rows.append(
            f"| {p.pipeline} | {p.rate_qps:g} | {p.cv:g} | {p.slo_s * 1000:.0f} | {p.planner} "
            f"| {'yes' if p.feasible else 'no'} | {_fmt(p.cost_per_hour, '.3f')} "
            f"| {_fmt(p.estimated_p99_s * 1000, '.1f')} | {_fmt(p.heldout_p99_s * 1000, '.1f')} "
            f"| {_fmt(p.heldout_miss_rate * 100, '.2f')} % | {p.planning_time_s:.2f} "
            f"| {p.estimator_calls} |"
        )
    return head + "\n".join(rows) + "\n"


def _fmt(value: float, spec: str) -> str:
    return "—" if not math.isfinite(value) else format(value, spec)


def _plot(pipeline: str, points: Sequence[SweepPoint], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    combos = sorted({(p.rate_qps, p.cv) for p in points})
    planners = list(dict.fromkeys(p.planner for p in points))
    fig, axes = plt.subplots(2, len(combos), figsize=(4.2 * len(combos), 7), squeeze=False)
    for col, (rate, cv) in enumerate(combos):
        subset = [p for p in points if (p.rate_qps, p.cv) == (rate, cv)]
        for name in planners:
            line = sorted((p for p in subset if p.planner == name), key=lambda p: p.slo_s)
            slos = [p.slo_s * 1000 for p in line]
            axes[0][col].plot(slos, [p.cost_per_hour for p in line], marker="o", label=name)
            axes[1][col].plot(slos, [p.heldout_p99_s * 1000 for p in line], marker="o", label=name)
        slo_grid = sorted({p.slo_s * 1000 for p in subset})
        axes[1][col].plot(slo_grid, slo_grid, color="grey", linestyle="--", label="SLO")
        axes[0][col].set_title(f"{rate:g} q/s, cv {cv:g} (paper CV {cv * cv:g})")
        axes[0][col].set_ylabel("cost $/hour")
        axes[1][col].set_ylabel("held-out P99 ms")
        axes[1][col].set_xlabel("SLO ms")
        axes[1][col].set_yscale("log")
    axes[0][0].legend(fontsize="small")
    fig.suptitle(f"{pipeline}: planners against SLO, rate and burstiness")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
