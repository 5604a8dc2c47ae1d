"""`make demo`: InferLine's loop end to end on a real pipeline and a real trace.

1. profile the text pipeline (langid → MiniLM → scikit-learn) on this machine
   (cached: a second run reuses the measurements);
2. cut a busy slice of the real Azure trace, rescale it, and split it into a
   planning part and an evaluation part with different arrivals, on which the load
   has grown 2.5× since planning (GROWTH);
3. plan the pipeline for a P99 SLO with the InferLine planner;
4. estimate the evaluation part with the Estimator;
5. serve the plan on the real engine and replay the evaluation part with real
   payloads: measured P99 and misses next to the estimate;
6. serve it again with the Tuner on: the replica changes print as they happen,
   and the cost is integrated from the replicas actually running.

Each step shows the `inferline` command a user would type. Set DEMO_QUICK=1 for a
shorter run (what the test suite's smoke check uses).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from inferline import load_bundle, load_config, save_trace
from inferline.engine import EngineProcess, ReplayResult, replay, replay_summary, start_engine
from inferline.workload import Trace, bundled_trace_path, load_timestamp_csv

ROOT = Path(__file__).resolve().parent.parent
BUNDLE = ROOT / "examples" / "text-pipeline"
QUICK = os.environ.get("DEMO_QUICK") == "1"
SLO_S = 0.25
MEAN_RATE_QPS = 8.0
#: The slice of the Azure trace: its busiest stretch, in minutes from its start.
SLICE_MIN = (14.0, 25.0) if not QUICK else (14.0, 17.0)
EVAL_S = 60.0 if not QUICK else 20.0
#: After planning the load grows by this factor (the Tuner's reason to exist).
GROWTH = 2.5
POLL_S = 0.5
console = Console()


def inferline(*args: str, as_json: bool = True) -> dict[str, Any]:
    """Run one `inferline` command as a user would, show it, return its JSON."""
    console.print(f"[dim]$ inferline {shlex.join(args)}[/]")
    binary = Path(sys.executable).parent / "inferline"
    command = [str(binary), *args, *(["--json"] if as_json else [])]
    done = subprocess.run(command, check=False, capture_output=as_json, text=True)
    if done.returncode != 0:
        if as_json:
            console.print(done.stderr)
        raise SystemExit(done.returncode)
    return dict(json.loads(done.stdout)) if as_json else {}


def azure_slice(rate_qps: float) -> Trace:
    """The busiest minutes of the real trace, time-scaled to ``rate_qps`` on average."""
    raw = load_timestamp_csv(bundled_trace_path())
    t = raw.arrival_s - raw.arrival_s[0]
    lo, hi = SLICE_MIN[0] * 60.0, SLICE_MIN[1] * 60.0
    cut = t[(t >= lo) & (t < hi)] - lo
    scale = (cut.size / rate_qps) / (hi - lo)
    return Trace.from_arrivals(np.sort(cut * scale), source="azure slice")


def sample_requests(path: Path, n: int) -> None:
    sys.path.insert(0, str(BUNDLE))
    try:
        from samples import sample_requests as make  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(BUNDLE))
    path.write_text("".join(json.dumps(body) + "\n" for body in make(n, 7)))


def watch_replicas(
    engine: EngineProcess, price: dict[str, float], stop: threading.Event, show: bool
) -> dict[str, Any]:
    """Poll the engine's status: integrate cost from the replicas running, print changes."""
    seen = 0
    dollars = 0.0
    last = time.monotonic()
    peak: dict[str, int] = {}
    while not stop.wait(POLL_S):
        status = engine.status()
        now = time.monotonic()
        per_hour = 0.0
        for name, stage in status["stages"].items():
            running = int(stage["ready"]) + int(stage.get("starting", 0))
            per_hour += running * price[stage["hardware"]]
            peak[name] = max(peak.get(name, 0), int(stage["ready"]))
        dollars += per_hour * (now - last) / 3600.0
        last = now
        changes = status.get("tuner", {}).get("changes", [])
        for c in changes[seen:]:
            if show:
                arrow = "▲" if c["to"] > c["from"] else "▼"
                console.print(
                    f"  [bold]{arrow}[/] t={c['time_s']:6.1f} s  {c['stage']:>10}: "
                    f"{c['from']} → {c['to']} replicas"
                )
        seen = len(changes)
    return {"cost_dollars": dollars, "peak_replicas": peak, "changes": seen}


def serve_and_replay(
    plan: Path, trace: Trace, requests: Path, price: dict[str, float], *, tune: Path | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    extra = ["--slo-s", str(SLO_S), "--no-shed"]
    if tune is not None:
        extra += ["--tune", "--planning-trace", str(tune)]
    console.print(f"[dim]$ inferline serve {BUNDLE.name} --config plan.yaml {shlex.join(extra)}[/]")
    bodies = [line.encode() for line in requests.read_text().splitlines()]
    with start_engine(BUNDLE, plan, *extra, start_timeout_s=240.0) as engine:
        console.print("[dim]$ inferline replay URL --trace evaluation.csv --requests …[/]")
        stop = threading.Event()
        box: dict[str, Any] = {}
        watcher = threading.Thread(
            target=lambda: box.update(watch_replicas(engine, price, stop, tune is not None))
        )
        watcher.start()
        result: ReplayResult = replay(
            engine.url, trace.arrival_s, bodies, slo_s=SLO_S, model="text-pipeline"
        )
        stop.set()
        watcher.join()
    return replay_summary(result), box


def main() -> None:
    console.rule("InferLine demo: profile → plan → estimate → serve → tune (text pipeline)")
    bundle_arg = str(BUNDLE.relative_to(ROOT))
    console.print("[bold]1. Profile[/] each stage on this machine (cached after the first run)")
    inferline(
        "profile",
        bundle_arg,
        "--hardware",
        "cpu-1",
        "--max-batch",
        "16",
        "--samples",
        "300",
        as_json=False,
    )
    bundle = load_bundle(BUNDLE)
    price = dict(bundle.profiles.hardware.price_per_hour)

    with tempfile.TemporaryDirectory(prefix="inferline-demo-") as tmp_name:
        tmp = Path(tmp_name)
        full = azure_slice(MEAN_RATE_QPS)
        cut = full.duration_s * 0.3
        planning = full.window(0.0, cut)
        later = full.window(cut, min(full.duration_s, cut + EVAL_S * GROWTH))
        evaluation = Trace.from_arrivals(later.arrival_s / GROWTH, source="azure slice, grown")
        for name, tr in (("planning", planning), ("evaluation", evaluation)):
            save_trace(tr, tmp / f"{name}.csv")
        console.print(
            f"\n[bold]2. Workload[/]: Azure LLM code trace, minutes {SLICE_MIN[0]:g}–"
            f"{SLICE_MIN[1]:g} rescaled to {MEAN_RATE_QPS:g} q/s on average; planning part "
            f"{planning.n_queries} queries, evaluation part (the load then grows "
            f"{GROWTH:g}×) {evaluation.n_queries} queries over "
            f"{evaluation.duration_s:.0f} s (peak 1-s rate "
            f"{np.bincount(evaluation.arrival_s.astype(int)).max()} q/s)"
        )

        console.print(f"\n[bold]3. Plan[/] for a P99 SLO of {SLO_S * 1000:.0f} ms")
        plan_path = tmp / "plan.yaml"
        planned = inferline(
            "plan",
            bundle_arg,
            "--trace",
            str(tmp / "planning.csv"),
            "--slo-s",
            str(SLO_S),
            "--margin",
            "0.1",
            "-o",
            str(plan_path),
        )
        config = load_config(plan_path)
        for name, st in config.stages.items():
            console.print(f"  {name:>10}: {st.replicas} × {st.hardware}, max batch {st.batch_size}")
        cost_per_hour = config.cost_per_hour(price)
        console.print(f"  cost ${cost_per_hour:.3f}/hour (planner: {planned.get('planner', '')})")

        console.print("\n[bold]4. Estimate[/] the evaluation part with the Estimator")
        est = inferline(
            "simulate",
            bundle_arg,
            "--config",
            str(plan_path),
            "--trace",
            str(tmp / "evaluation.csv"),
            "--slo-s",
            str(SLO_S),
        )

        requests = tmp / "requests.jsonl"
        sample_requests(requests, 400)
        console.print("\n[bold]5. Serve the plan[/] and replay the evaluation part (real payloads)")
        fixed, fixed_watch = serve_and_replay(plan_path, evaluation, requests, price, tune=None)
        console.print("\n[bold]6. Serve with the Tuner on[/]: replica changes as they happen")
        tuned, tuned_watch = serve_and_replay(
            plan_path, evaluation, requests, price, tune=tmp / "planning.csv"
        )

    duration_h = evaluation.duration_s / 3600.0
    table = Table(title=f"text pipeline, SLO {SLO_S * 1000:.0f} ms, {evaluation.n_queries} queries")
    for col in ("run", "P50 ms", "P99 ms", "miss rate", "errors", "cost $ (eval. part)"):
        table.add_column(col, justify="right")
    table.add_row(
        "estimated (Estimator)",
        f"{float(est['p50_s']) * 1000:.1f}",
        f"{float(est['p99_s']) * 1000:.1f}",
        f"{float(est['miss_rate']):.2%}",
        "-",
        f"{cost_per_hour * duration_h:.5f}",
    )
    for label, run, watch in (
        ("measured, fixed plan", fixed, fixed_watch),
        ("measured, Tuner on", tuned, tuned_watch),
    ):
        table.add_row(
            label,
            f"{float(run['p50_s']) * 1000:.1f}",
            f"{float(run['p99_s']) * 1000:.1f}",
            f"{float(run['miss_rate']):.2%}",
            str(run["errors"]),
            f"{watch['cost_dollars']:.5f}",
        )
    console.print(table)
    p99_est, p99_meas = float(est["p99_s"]), float(fixed["p99_s"])
    console.print(
        f"|estimated − measured P99| = {abs(p99_est - p99_meas) * 1000:.1f} ms "
        f"({abs(p99_est - p99_meas) / p99_meas:.0%} of measured); "
        f"tuner changes: {tuned_watch['changes']}, peak ready replicas "
        f"{tuned_watch['peak_replicas']}"
    )


if __name__ == "__main__":
    main()
