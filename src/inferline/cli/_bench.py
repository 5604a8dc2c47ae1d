"""``inferline bench``: the benchmarks behind SPEC §4's performance targets."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import Progress
from rich.table import Table

from inferline.cli._common import JSON_OPTION, print_json, stdout, user_errors
from inferline.cli._tune import tuner_bench_command
from inferline.errors import ConfigError

app = typer.Typer(help="Benchmarks that print the SPEC §4 figures.", no_args_is_help=True)
app.command("tuner")(tuner_bench_command)


@app.command("estimator")
@user_errors
def estimator(
    duration_s: Annotated[
        float, typer.Option("--duration-s", help="Length of the throughput trace (700 q/s).")
    ] = 1500.0,
    simpy_queries: Annotated[
        int, typer.Option("--simpy-queries", help="Queries in the SimPy comparison.")
    ] = 100_000,
    repeats: Annotated[int, typer.Option("--repeats")] = 3,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    as_json: bool = JSON_OPTION,
) -> None:
    """Estimator throughput and agreement with a plain SimPy model of the same semantics."""
    from inferline.estimator._bench import run_estimator_benchmark

    with (
        stdout.status("running the estimator benchmark …", spinner="dots")
        if not as_json
        else _NoStatus()
    ):
        figures = run_estimator_benchmark(
            duration_s=duration_s, simpy_queries=simpy_queries, repeats=repeats, seed=seed
        )
    if as_json:
        print_json(figures)
        return
    table = Table(title="estimator benchmark", show_header=False)
    for key, value in figures.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v:.3g}" for k, v in value.items())
        table.add_row(key, f"{value:,.4g}" if isinstance(value, float) else str(value))
    stdout.print(table)


@app.command("planner")
@user_errors
def planner(
    reference_dir: Annotated[
        Path, typer.Option("--reference-dir", help="Folder holding the reference bundles.")
    ] = Path("examples/reference"),
    duration_s: Annotated[float, typer.Option("--duration-s", help="Trace length, s.")] = 600.0,
    exhaustive_max_s: Annotated[float, typer.Option("--exhaustive-max-s")] = 30.0,
    margin: Annotated[
        float, typer.Option("--margin", help="Plan for a P99 of SLO × (1 − margin).")
    ] = 0.05,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    output: Annotated[
        Path | None,
        typer.Option("-o", "--output", help="Also write the sweep tables and plots here."),
    ] = None,
    as_json: bool = JSON_OPTION,
) -> None:
    """InferLine against CG-Mean, CG-Peak and the optimum on the four reference pipelines."""
    from inferline.reports._planner_bench import run_planner_benchmark, verdict

    with Progress(console=stdout, disable=as_json, transient=True) as progress:
        task = progress.add_task("planning the reference pipelines", total=4 * 3 * 2 * 2 * 4)
        summary = run_planner_benchmark(
            reference_dir,
            duration_s=duration_s,
            exhaustive_max_s=exhaustive_max_s,
            margin=margin,
            seed=seed,
            on_point=lambda _: progress.advance(task),
        )
    points = summary.pop("points")
    if output is not None:
        from inferline.reports import write_sweep

        write_sweep(points, output)
    figures = {"verdict": verdict(summary), **summary}
    if as_json:
        print_json(figures)
        return
    table = Table(title="InferLine planner against the baselines (held-out traces)")
    columns = (
        "pipeline",
        "SLO ms",
        "q/s",
        "cv",
        "InferLine $/h",
        "IL miss",
        "vs optimum",
        "CG-Mean ×cost",
        "CG-Mean miss",
        "CG-Peak ×cost",
        "CG-Peak miss",
    )
    for col in columns:
        table.add_column(col, justify="right")
    for c in summary["cases"]:
        if not c.get("inferline_feasible"):
            table.add_row(
                c["pipeline"],
                f"{c['slo_s'] * 1000:.0f}",
                f"{c['rate_qps']:g}",
                f"{c['cv']:g}",
                "infeasible",
            )
            continue
        table.add_row(
            c["pipeline"],
            f"{c['slo_s'] * 1000:.0f}",
            f"{c['rate_qps']:g}",
            f"{c['cv']:g}",
            f"{c['inferline_cost']:.3f}",
            f"{c['inferline_heldout_miss']:.2%}",
            f"{c['gap_to_optimum']:.3f}" if "gap_to_optimum" in c else "—",
            f"{c.get('cg-mean_cost_ratio', float('nan')):.2f}",
            f"{c.get('cg-mean_heldout_miss', float('nan')):.1%}",
            f"{c.get('cg-peak_cost_ratio', float('nan')):.2f}",
            f"{c.get('cg-peak_heldout_miss', float('nan')):.1%}",
        )
    stdout.print(table)
    timing = Table(title="planning time, 10-minute 200-q/s trace, SLO 150 ms")
    for col in ("pipeline", "seconds", "estimator calls"):
        timing.add_column(col, justify="right")
    for name, t in summary["timing_10min_200qps"].items():
        timing.add_row(name, f"{t['planning_time_s']:.2f}", str(t["estimator_calls"]))
    stdout.print(timing)
    stdout.print(figures["verdict"])


@app.command("engine")
@user_errors
def engine(
    rates: Annotated[
        str, typer.Option("--rates", help="Offered rates, q/s.")
    ] = "200,500,1000,1500,2000",
    duration_s: Annotated[float, typer.Option("--duration-s", help="Length of each run, s.")] = 5.0,
    repeats: Annotated[int, typer.Option("--repeats")] = 3,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 32,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    as_json: bool = JSON_OPTION,
) -> None:
    """Engine overhead: a 2-stage no-op pipeline under open-loop Poisson load."""
    from inferline.engine._bench import engine_benchmark_table, run_engine_benchmark

    try:
        rates_qps = tuple(float(r) for r in rates.split(",") if r.strip())
    except ValueError:
        raise ConfigError(
            f"not a list of numbers: {rates!r}", source="<argument>", field="--rates"
        ) from None
    with (
        stdout.status("running the engine benchmark …", spinner="dots")
        if not as_json
        else _NoStatus()
    ):
        figures = run_engine_benchmark(
            rates_qps=rates_qps,
            duration_s=duration_s,
            repeats=repeats,
            batch_size=batch_size,
            seed=seed,
        )
    if as_json:
        print_json(figures)
        return
    stdout.print(engine_benchmark_table(figures))


@app.command("replica-start")
@user_errors
def replica_start(
    bundle: Annotated[Path, typer.Argument(help="Bundle folder with stage import paths.")],
    stage: Annotated[str, typer.Option("--stage", help="The stage to add replicas to.")],
    hardware: Annotated[str, typer.Option("--hardware", help="Hardware of every replica.")] = (
        "cpu-1"
    ),
    repeats: Annotated[int, typer.Option("--repeats", help="Scale-ups per mode.")] = 3,
    as_json: bool = JSON_OPTION,
) -> None:
    """Time to add one replica, forked from the stage's template against fresh."""
    from inferline.engine._start_bench import replica_start_table, run_replica_start_benchmark

    with (
        stdout.status("adding and removing replicas …", spinner="dots")
        if not as_json
        else _NoStatus()
    ):
        figures = run_replica_start_benchmark(bundle, stage, hardware=hardware, repeats=repeats)
    if as_json:
        print_json(figures)
        return
    stdout.print(replica_start_table(figures))


@app.command("overload")
@user_errors
def overload(
    factors: Annotated[
        str, typer.Option("--factors", help="Offered loads, as multiples of capacity.")
    ] = "1,1.5,2,3",
    duration_s: Annotated[
        float, typer.Option("--duration-s", help="Seconds of arrivals per run.")
    ] = 6.0,
    slo_s: Annotated[float, typer.Option("--slo-s", help="Latency objective, s.")] = 0.2,
    stages: Annotated[
        int, typer.Option("--stages", help="A chain of this many identical stages.")
    ] = 1,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    output: Annotated[
        Path | None,
        typer.Option("-o", "--output", help="Also write the figures to this JSON file."),
    ] = None,
    as_json: bool = JSON_OPTION,
) -> None:
    """Goodput and P99 at 1×–3× a stage's capacity, with and without shedding."""
    from inferline.bench.overload import OverloadSettings, overload_table, run_overload_benchmark

    try:
        load_factors = tuple(float(f) for f in factors.split(",") if f.strip())
    except ValueError:
        raise ConfigError(
            f"not a list of numbers: {factors!r}", source="<argument>", field="--factors"
        ) from None
    try:
        settings = OverloadSettings(
            load_factors=load_factors,
            duration_s=duration_s,
            slo_s=slo_s,
            stages=stages,
            seed=seed,
        )
    except ValueError as exc:
        raise ConfigError(str(exc), source="<argument>") from None
    if as_json:
        figures = run_overload_benchmark(settings)
    else:
        with stdout.status("running the overload benchmark …", spinner="dots") as status:
            figures = run_overload_benchmark(
                settings, progress=lambda text: status.update(f"{text} …")
            )
    if output is not None:
        import json

        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(figures, indent=2) + "\n")
    if as_json:
        print_json(figures)
        return
    stdout.print(overload_table(figures))
    stdout.print(f"wall time {figures['wall_s']:.0f} s")
    if output is not None:
        stdout.print(f"→ {output}")


class _NoStatus:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


@app.command("ray")
@user_errors
def ray_bench(
    output: Annotated[
        Path | None,
        typer.Option("-o", "--output", help="Write ray.json and ray_autoscaling.png here."),
    ] = None,
    rate: Annotated[
        float, typer.Option("--rate", help="Part 1: the plan's and the trace's rate, q/s.")
    ] = 16.0,
    low_rate: Annotated[float, typer.Option("--low-rate", help="Part 2: step from, q/s.")] = 4.0,
    high_rate: Annotated[float, typer.Option("--high-rate", help="Part 2: step to, q/s.")] = 16.0,
    slo_s: Annotated[float, typer.Option("--slo-s", help="End-to-end latency objective, s.")] = 0.4,
    no_ray_serve: Annotated[
        bool, typer.Option("--no-ray-serve", help="Skip the Ray Serve application runs.")
    ] = False,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    as_json: bool = JSON_OPTION,
) -> None:
    """InferLine on Ray vs the embedded engine vs Ray Serve: estimated and measured P99 for one
    plan, and the InferLine Tuner vs Ray Serve's autoscaler on a rate step (docs/ray.md)."""
    from inferline.ray_backend._bench import (
        RayBenchmarkSettings,
        ray_benchmark_table,
        run_ray_benchmark,
    )
    from inferline.ray_backend._cluster import import_ray

    import_ray()
    try:
        settings = RayBenchmarkSettings(
            slo_s=slo_s,
            rate_qps=rate,
            low_rate_qps=low_rate,
            high_rate_qps=high_rate,
            include_ray_serve=not no_ray_serve,
            seed=seed,
        )
    except ValueError as exc:
        raise ConfigError(str(exc), source="<argument>") from None
    if as_json:
        figures = run_ray_benchmark(settings, output=output)
        print_json(figures)
        return
    with stdout.status("running the Ray benchmark …", spinner="dots") as status:
        figures = run_ray_benchmark(
            settings, output=output, progress=lambda text: status.update(f"{text} …")
        )
    for table in ray_benchmark_table(figures):
        stdout.print(table)
    stdout.print(f"wall time {figures['wall_s']:.0f} s")
    for path in figures.get("written", []):
        stdout.print(f"→ {path}")
