"""``inferline plan``: the cheapest configuration that meets a P99 SLO on a planning trace."""

from __future__ import annotations

import math
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated, cast

import typer
from rich.table import Table

from inferline._bundle import Bundle, load_bundle
from inferline.cli._common import JSON_OPTION, as_options, print_json, stdout, user_errors
from inferline.errors import MachineInfeasibleError
from inferline.planner import PLANNERS, Plan, plan
from inferline.profiles import LatencyStat, MachinePool, parse_machine
from inferline.workload import load_trace

#: Fields of the planner the command fills from its options, for errors naming the option.
FLAGS = {
    "planner": "--planner",
    "slo_s": "--slo-s",
    "margin": "--margin",
    "latency_stat": "--latency-stat",
    "max_seconds": "--max-seconds",
    "tail_bias": "--tail-bias",
}


def _ms(seconds: float) -> str:
    return "—" if not math.isfinite(seconds) else f"{seconds * 1000:.1f}"


@user_errors
def plan_command(
    bundle: Annotated[
        Path, typer.Argument(help="Bundle folder (pipeline.yaml, hardware, profiles).")
    ],
    trace: Annotated[
        Path, typer.Option("--trace", help="Planning trace file (inferline trace …).")
    ],
    slo_s: Annotated[float, typer.Option("--slo-s", help="End-to-end P99 latency objective, s.")],
    planner: Annotated[
        str, typer.Option("--planner", help=f"One of: {', '.join(PLANNERS)}.")
    ] = "inferline",
    seed: Annotated[int, typer.Option("--seed", help="Seed for sampling conditional paths.")] = 0,
    margin: Annotated[
        float,
        typer.Option("--margin", help="Safety margin: plan for a P99 of SLO x (1 - margin)."),
    ] = 0.0,
    tail_bias: Annotated[
        float,
        typer.Option(
            "--tail-bias",
            help="The Estimator's measured ÷ estimated P99 on this machine (`inferline "
            "calibrate` prints it): plan for the estimate × it ≤ SLO × (1 − margin).",
        ),
    ] = 1.0,
    batch_headroom: Annotated[
        bool,
        typer.Option(
            "--batch-headroom",
            help="For a plan served with the Tuner (serve --tune), which changes replicas "
            "only: raise each stage's maximum batch one step (the next profiled size ≥ 2×) "
            "at no cost where the plan stays feasible, so a replica absorbs more of a rise "
            "in load.",
        ),
    ] = False,
    latency_stat: Annotated[
        str, typer.Option("--latency-stat", help="Profile statistic per batch: median or p99.")
    ] = "median",
    max_seconds: Annotated[
        float | None,
        typer.Option("--max-seconds", help="Time budget of the exhaustive search, s."),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option("-o", "--output", help="Plan file to write (read by simulate --config)."),
    ] = None,
    machine: Annotated[
        str | None,
        typer.Option(
            "--machine",
            help="Plan for a machine: 'local' (this host) or 'cores=N[,memory=16G][,gpus=K]', "
            "optionally ',fit=shared' (default: the cores the replicas keep busy, with the "
            "front-end's, stay within ',max-busy-fraction=F' of the machine, default 0.8, "
            "and the Estimator simulates the cores as shared, so contention counts against "
            "the SLO), ',fit=busy' (the same bound, contention not simulated) or "
            "',fit=threads' (a core per replica thread, ',threads-per-core=T', default 1); "
            "',sharing=per-core' keeps a run queue per core instead of sharing them equally; "
            "',threads-per-replica=N' lets a CPU replica have N threads (default: the whole "
            "cores left after the front-end's share, so a replica never asks for every core); "
            "'none' ignores the machine section of hardware.yaml, which applies otherwise.",
        ),
    ] = None,
    as_json: bool = JSON_OPTION,
) -> None:
    """Plan per-stage hardware, batch size and replicas for the cheapest cost under the SLO."""
    loaded = load_bundle(bundle)
    workload = load_trace(trace)
    pool = _machine(machine, loaded)
    try:
        with (
            stdout.status(f"planning with {planner} …", spinner="dots")
            if not as_json
            else nullcontext(),
            as_options(FLAGS),
        ):
            result = plan(
                planner,
                loaded.pipeline,
                loaded.profiles,
                workload,
                slo_s,
                seed=seed,
                margin=margin,
                latency_stat=cast(LatencyStat, latency_stat),  # checked there
                max_seconds=max_seconds,
                machine=pool,
                tail_bias=tail_bias,
                batch_headroom=batch_headroom,
            )
    except MachineInfeasibleError as exc:
        _show_unbounded(exc, loaded, trace, slo_s, as_json=as_json)
        raise
    if output is not None:
        result.save(output)
    if as_json:
        summary = result.summary()
        if output is not None:
            summary["output"] = str(output)
        print_json(summary)
        return
    _print_plan(result, loaded, _title(result, loaded, trace, slo_s))
    if output is not None:
        stdout.print(f"plan written to {output}")


def _machine(flag: str | None, loaded: Bundle) -> MachinePool | None:
    """The flag wins over the catalogue's ``machine`` section; ``none``: neither."""
    if flag is None:
        return loaded.profiles.hardware.machine
    if flag.strip().lower() == "none":
        return None
    return parse_machine(flag)


def _title(result: Plan, loaded: Bundle, trace: Path, slo_s: float) -> str:
    margin, bias = result.margin, result.tail_bias
    return (
        f"{result.planner} plan for {loaded.pipeline.name} on {trace.name} "
        f"(SLO {slo_s * 1000:.0f} ms{f', margin {margin:g}' if margin else ''}"
        f"{f', estimate × tail bias {bias:.2f}' if bias > 1 else ''})"
    )


def _show_unbounded(
    exc: MachineInfeasibleError,
    loaded: Bundle,
    trace: Path,
    slo_s: float,
    *,
    as_json: bool,
) -> None:
    """The cheapest plan without the machine bound, so the user sees what to get."""
    unbounded = exc.unbounded
    if not isinstance(unbounded, Plan):  # pragma: no cover - the planners always attach it
        return
    if as_json:
        print_json(
            {
                "feasible": False,
                "error": str(exc),
                "needs_cores": exc.needs_cores,
                "has_cores": exc.has_cores,
                "needs_gpus": exc.needs_gpus,
                "has_gpus": exc.has_gpus,
                "unbounded": unbounded.summary(),
            }
        )
        return
    title = (
        f"without the machine bound (needs {exc.needs_cores} cores, has {exc.has_cores}): "
        + _title(unbounded, loaded, trace, slo_s)
    )
    _print_plan(unbounded, loaded, title)


def _print_plan(result: Plan, loaded: Bundle, title: str) -> None:
    verdict = "[green]feasible[/]" if result.feasible else "[bold red]INFEASIBLE[/]"
    head = Table(title=title)
    for col in (
        "verdict",
        "$/hour",
        "P50 ms",
        "P99 ms",
        "miss rate",
        "planning s",
        "estimator calls",
    ):
        head.add_column(col, justify="right")
    head.add_row(
        verdict,
        f"{result.cost_per_hour:.4f}",
        _ms(result.estimated_p50_s),
        _ms(result.estimated_p99_s),
        "—" if result.estimated_miss_rate is None else f"{result.estimated_miss_rate:.2%}",
        f"{result.planning_time_s:.2f}",
        str(result.estimator_calls),
    )
    stdout.print(head)
    if result.machine is not None:
        stdout.print(result.machine.describe(), highlight=False, soft_wrap=True)
    prices = loaded.profiles.hardware.price_per_hour
    stages = Table(title="stages")
    for col in ("stage", "hardware", "batch", "replicas", "$/hour"):
        stages.add_column(col, justify="right")
    for name, c in result.config.stages.items():
        stages.add_row(
            name,
            c.hardware,
            str(c.batch_size),
            str(c.replicas),
            f"{c.replicas * prices[c.hardware]:.4f}",
        )
    stdout.print(stages)
    stdout.print("[bold]step log[/]")
    for line in result.log:
        stdout.print(f"  {line}", highlight=False, soft_wrap=True)
    if result.exhaustive_complete is False:
        stdout.print("[yellow]the exhaustive search ran out of time: not proven optimal[/]")
