"""``inferline simulate``: estimate a configuration's latency and cost on a trace."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from inferline._bundle import load_bundle, load_plan_for
from inferline.cli._common import JSON_OPTION, print_json, stdout, user_errors
from inferline.errors import ConfigError
from inferline.estimator import Estimator
from inferline.profiles import frontend_cpu_s_per_query, parse_machine, resources_for
from inferline.workload import load_trace


@user_errors
def simulate_command(
    bundle: Annotated[
        Path, typer.Argument(help="Bundle folder (pipeline.yaml, hardware, profiles).")
    ],
    config: Annotated[Path, typer.Option("--config", help="Configuration or plan file.")],
    trace: Annotated[Path, typer.Option("--trace", help="Trace file (inferline trace …).")],
    slo_s: Annotated[float, typer.Option("--slo-s", help="End-to-end P99 latency objective, s.")],
    seed: Annotated[int, typer.Option("--seed", help="Seed for sampling conditional paths.")] = 0,
    queue_policy: Annotated[str, typer.Option("--queue-policy", help="edf or fifo.")] = "edf",
    latency_stat: Annotated[
        str, typer.Option("--latency-stat", help="Profile statistic per batch: median or p99.")
    ] = "median",
    machine: Annotated[
        str | None,
        typer.Option(
            "--machine",
            help="Simulate the replicas sharing this machine's cores ('local' or "
            "'cores=N', as `plan --machine` takes it): contention slows busy replicas "
            "down; default: every replica has its own hardware.",
        ),
    ] = None,
    as_json: bool = JSON_OPTION,
) -> None:
    """Simulate a configuration of a pipeline on a trace (the Estimator)."""
    if not slo_s > 0:
        raise ConfigError(f"must be positive, got {slo_s}", source="<argument>", field="--slo-s")
    loaded = load_bundle(bundle)
    cfg = load_plan_for(config, loaded)
    workload = load_trace(trace)
    pool = None if machine is None else parse_machine(machine)
    estimator = Estimator(
        loaded.pipeline,
        loaded.profiles,
        workload,
        slo_s=slo_s,
        seed=seed,
        queue_policy=queue_policy,  # type: ignore[arg-type]  # validated by Estimator
        latency_stat=latency_stat,  # type: ignore[arg-type]
        machine=pool,
    )
    result = estimator.run(cfg, source=str(config))
    summary = result.summary()
    if as_json:
        print_json(summary)
        return
    shared = "" if machine is None else f", {estimator.shared_cores:.2f} shared cores of {machine}"
    head = Table(
        title=f"{loaded.pipeline.name} on {trace.name} (SLO {slo_s * 1000:.0f} ms{shared})"
    )
    for col in ("queries", "P50 ms", "P95 ms", "P99 ms", "miss rate", "$/hour"):
        head.add_column(col, justify="right")
    head.add_row(
        str(result.queries),
        f"{result.p50_s * 1000:.1f}",
        f"{result.p95_s * 1000:.1f}",
        f"{result.p99_s * 1000:.1f}",
        f"{result.miss_rate:.2%}",
        f"{result.cost_per_hour:.3f}",
    )
    stdout.print(head)
    per_stage = Table(title="stages")
    for col in ("stage", "hardware", "batch", "replicas", "utilisation", "queue ms", "mean batch"):
        per_stage.add_column(col, justify="right")
    for name, stats in result.stages.items():
        c = cfg.stages[name]
        per_stage.add_row(
            name,
            c.hardware,
            str(c.batch_size),
            str(c.replicas),
            f"{stats.utilization:.1%}",
            f"{stats.mean_queue_s * 1000:.2f}",
            f"{stats.mean_batch_size:.2f}",
        )
    stdout.print(per_stage)
    if pool is not None:
        planning = pool.for_planning(
            workload.mean_rate_qps, frontend_cpu_s_per_query(loaded.profiles.overhead)[0]
        )
        for name, c in cfg.stages.items():
            if planning.too_wide(c.hardware):
                threads = resources_for(c.hardware, pool.cores).threads
                stdout.print(
                    f"[yellow]note[/]: '{name}' runs {threads}-thread replicas on "
                    f"{pool.cores} cores; plans for this machine give a replica at most "
                    f"{planning.max_threads_per_replica} thread(s). A replica that asks for "
                    "every core stalls whenever anything else runs, which this estimate "
                    "does not model (such plans measured 1.4-1.8x it on a 2-core VM)."
                )
