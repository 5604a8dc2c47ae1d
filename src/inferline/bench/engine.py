"""``inferline bench engine``: the engine's own overhead on a 2-stage no-op pipeline (SPEC §4).

Serves two :class:`~inferline.engine.testing.NoOp` stages (one single-thread replica each)
in a child process, replays open-loop Poisson load from this process at increasing rates
and reports, per rate, the medians over repeats of achieved throughput and P50/P99
latency as the client sees them; then, at a moderate rate, how much of each stage's
latency is the engine (queueing, IPC, serialisation) rather than ``predict``.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.table import Table

from inferline.engine import replay, replay_summary
from inferline.engine.process import EngineProcess, start_engine
from inferline.engine.testing import write_bundle

__all__ = ["run_engine_benchmark", "tables"]

_NOOP = "inferline.engine.testing:NoOp"
_MODEL = "noop"


def _poisson(rate_qps: float, duration_s: float, rng: np.random.Generator) -> np.ndarray:
    gaps = rng.exponential(1.0 / rate_qps, int(rate_qps * duration_s * 1.2) + 10)
    arrivals = np.cumsum(gaps)
    return arrivals[arrivals < duration_s]


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _overhead(
    engine: EngineProcess, rate_qps: float, duration_s: float, seed: int
) -> dict[str, Any]:
    engine.request("DELETE", "/v2/control/stats")
    arrivals = _poisson(rate_qps, duration_s, np.random.default_rng(seed))
    summary = replay_summary(replay(engine.url, arrivals, slo_s=1.0, model=_MODEL))
    _, stats = engine.request("GET", "/v2/control/stats")
    stages: dict[str, Any] = {}
    residence_p50_s = 0.0
    for name, s in stats["stages"].items():
        stages[name] = {
            "overhead_median_s": s["overhead_s"]["p50"],
            "overhead_p99_s": s["overhead_s"]["p99"],
            "queue_wait_median_s": s["queue_wait_s"]["p50"],
            "queue_wait_p99_s": s["queue_wait_s"]["p99"],
            "predict_median_s": s["predict_s"]["p50"],
            "visits": s["visits"],
        }
        residence_p50_s += s["residence_s"]["p50"] or 0.0
    return {
        "rate_qps": rate_qps,
        "duration_s": duration_s,
        "achieved_qps": summary["achieved_rate"],
        "client_p50_s": summary["p50_s"],
        "client_p99_s": summary["p99_s"],
        "errors": summary["errors"],
        # what the client sees beyond the stages: HTTP parse/serialise, routing, loopback
        "http_and_routing_median_s": (summary["p50_s"] or 0.0) - residence_p50_s,
        "stages": stages,
    }


def run_engine_benchmark(
    rates_qps: Sequence[float] = (200.0, 500.0, 1000.0, 1500.0, 2000.0),
    duration_s: float = 5.0,
    repeats: int = 3,
    overhead_rate_qps: float = 200.0,
    overhead_duration_s: float = 10.0,
    batch_size: int = 32,
    seed: int = 0,
    target_qps: float = 1000.0,
    target_p99_s: float = 0.020,
) -> dict[str, Any]:
    """Run the benchmark; returns JSON-ready figures (see the module docstring)."""
    load_before = os.getloadavg()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="inferline-bench-") as tmp:
        stage = {"hardware": "cpu-1", "batch_size": batch_size, "replicas": 1}
        pipeline, plan = write_bundle(
            Path(tmp),
            _MODEL,
            {"first": _NOOP, "second": _NOOP},
            [("first", "second")],
            {"first": stage, "second": stage},
        )
        with start_engine(pipeline, plan, "--slo-s", "1.0") as engine:
            warm = _poisson(overhead_rate_qps, 1.0, np.random.default_rng(seed + 999))
            replay(engine.url, warm, slo_s=1.0, model=_MODEL)
            overhead = _overhead(engine, overhead_rate_qps, overhead_duration_s, seed)
            rows = []
            for k, rate in enumerate(rates_qps):
                runs = []
                for r in range(repeats):
                    rng = np.random.default_rng(seed + 1000 * (k + 1) + r)
                    arrivals = _poisson(rate, duration_s, rng)
                    runs.append(
                        replay_summary(replay(engine.url, arrivals, slo_s=1.0, model=_MODEL))
                    )
                rows.append(
                    {
                        "rate_qps": rate,
                        "offered_qps": _median([s["offered_rate"] for s in runs]),
                        "achieved_qps": _median([s["achieved_rate"] for s in runs]),
                        "p50_s": _median([s["p50_s"] for s in runs]),
                        "p99_s": _median([s["p99_s"] for s in runs]),
                        "p99_s_runs": [s["p99_s"] for s in runs],
                        "errors": sum(s["errors"] for s in runs),
                        "send_lag_p99_s": _median([s["send_lag_p99_s"] for s in runs]),
                    }
                )
            status = engine.status()
    meeting = [
        row
        for row in rows
        if row["achieved_qps"] is not None
        and row["p99_s"] is not None
        and row["p99_s"] <= target_p99_s
        and row["errors"] == 0
        and row["achieved_qps"] >= 0.98 * (row["offered_qps"] or 0.0)
    ]
    best = max((row["achieved_qps"] for row in meeting), default=0.0)
    return {
        "pipeline": "2-stage no-op (NoOp -> NoOp), 1 single-thread replica each, "
        f"batch_size {batch_size}",
        "cpus": os.cpu_count(),
        "load_average_1m_before": round(load_before[0], 2),
        "load_average_1m_after": round(os.getloadavg()[0], 2),
        "duration_s_per_run": duration_s,
        "repeats": repeats,
        "rates": rows,
        "max_achieved_qps_with_p99_within_target": best,
        "target": {"qps": target_qps, "p99_s": target_p99_s},
        "target_met": best >= 0.98 * target_qps,
        "overhead_at_rate": overhead,
        "batches_served": {
            name: sum(r["batches"] for r in s["replica_list"])
            for name, s in status["stages"].items()
        },
        "wall_s": time.monotonic() - started,
    }


def tables(figures: dict[str, Any]) -> list[Table]:
    """The readable output of :func:`run_engine_benchmark`'s figures."""
    load = figures["load_average_1m_before"]
    table = Table(
        title=f"engine benchmark: {figures['pipeline']} (load avg {load}, {figures['cpus']} CPUs)"
    )
    for col in ("offered q/s", "achieved q/s", "P50 ms", "P99 ms", "errors"):
        table.add_column(col, justify="right")

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value * 1000:.2f}"

    for row in figures["rates"]:
        table.add_row(
            f"{row['offered_qps']:.0f}",
            f"{row['achieved_qps']:.0f}",
            ms(row["p50_s"]),
            ms(row["p99_s"]),
            str(row["errors"]),
        )
    over = figures["overhead_at_rate"]
    table.caption = (
        f"per-stage overhead at {over['rate_qps']:.0f} q/s (median / P99 ms): "
        + "; ".join(
            f"{name} {ms(s['overhead_median_s'])} / {ms(s['overhead_p99_s'])}"
            for name, s in over["stages"].items()
        )
        + f"; target {figures['target']['qps']:.0f} q/s at P99 ≤ "
        + f"{figures['target']['p99_s'] * 1000:.0f} ms: "
        + ("met" if figures["target_met"] else "NOT met")
    )
    return [table]
