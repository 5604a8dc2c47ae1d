"""``inferline tune-sim``: simulate a replica policy (the Tuner or a baseline) over a trace."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from inferline._bundle import load_bundle, load_plan_for
from inferline.cli._common import JSON_OPTION, as_options, print_json, stdout, user_errors
from inferline.workload import load_trace

#: Fields of tune_simulate the command fills from its options, for errors naming the option.
FLAGS = {
    "slo_s": "--slo-s",
    "policy": "--policy",
    "activation_s": "--activation-s",
    "tick_s": "--tick-s",
}


@user_errors
def tune_sim_command(
    bundle: Annotated[
        Path, typer.Argument(help="Bundle folder (pipeline.yaml, hardware, profiles).")
    ],
    plan: Annotated[Path, typer.Option("--plan", help="Plan or configuration file to start from.")],
    trace: Annotated[
        Path, typer.Option("--trace", help="Trace file to simulate (inferline trace …).")
    ],
    slo_s: Annotated[float, typer.Option("--slo-s", help="End-to-end P99 latency objective, s.")],
    policy: Annotated[
        str | None,
        typer.Option(
            "--policy",
            help="inferline, inferline+opt-in (with the opt-in departures from SPEC §2.7), "
            "none, cg-autoscale, queue-length or simulate (docs/tuner.md). Default: "
            "inferline.tuner.DEFAULT_POLICY, the one that keeps the SLO in bench tuner.",
        ),
    ] = None,
    planning_trace: Annotated[
        Path | None,
        typer.Option(
            "--planning-trace",
            help="Trace the plan was made for (envelope, provisioning ratios); "
            "default: the first 25 % of --trace.",
        ),
    ] = None,
    activation_s: Annotated[
        float, typer.Option("--activation-s", help="Delay before an added replica serves, s.")
    ] = 5.0,
    tick_s: Annotated[float, typer.Option("--tick-s", help="Policy decision interval, s.")] = 1.0,
    seed: Annotated[int, typer.Option("--seed", help="Seed for sampling conditional paths.")] = 0,
    as_json: bool = JSON_OPTION,
) -> None:
    """Simulate a plan under a replica policy on a trace (time-varying Estimator)."""
    from inferline.tuner import DEFAULT_POLICY, tune_simulate

    policy = policy or DEFAULT_POLICY

    loaded = load_bundle(bundle)
    cfg = load_plan_for(plan, loaded)
    workload = load_trace(trace)
    with as_options(FLAGS):
        result = tune_simulate(
            loaded.pipeline,
            loaded.profiles,
            cfg,
            workload,
            slo_s,
            policy=policy,
            planning_trace=load_trace(planning_trace) if planning_trace else None,
            activation_s=activation_s,
            tick_s=tick_s,
            seed=seed,
        )
    summary = result.summary()
    if as_json:
        print_json(summary)
        return
    head = Table(
        title=f"{loaded.pipeline.name} on {trace.name}, policy {policy} (SLO {slo_s * 1000:.0f} ms)"
    )
    for col in ("queries", "P99 ms", "miss rate", "cost $", "mean $/h", "scale-ups", "scale-downs"):
        head.add_column(col, justify="right")
    head.add_row(
        str(result.queries),
        f"{result.p99_s * 1000:.1f}",
        f"{result.miss_rate:.3%}",
        f"{result.cost_dollars:.4f}",
        f"{result.mean_cost_per_hour:.3f}",
        str(result.scale_ups),
        str(result.scale_downs),
    )
    stdout.print(head)
    stages = Table(title="replicas per stage")
    for col in ("stage", "planned", "min", "max", "final"):
        stages.add_column(col, justify="right")
    for i, name in enumerate(result.stage_names):
        counts = result.replicas[:, i] if result.replicas.size else None
        stages.add_row(
            name,
            str(cfg.stages[name].replicas),
            str(int(counts.min())) if counts is not None else "-",
            str(int(counts.max())) if counts is not None else "-",
            str(int(counts[-1])) if counts is not None else "-",
        )
    stdout.print(stages)
