"""``inferline tune-sim``: simulate a replica policy (the Tuner or a baseline) over a trace."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from inferline._bundle import load_bundle, load_plan_for
from inferline.cli._common import JSON_OPTION, print_json, stdout, user_errors
from inferline.errors import ConfigError
from inferline.workload import load_trace, split_trace

POLICIES = ("inferline", "inferline+opt-in", "none", "cg-autoscale", "queue-length")


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
        str,
        typer.Option(
            "--policy",
            help="inferline, inferline+opt-in (with the opt-in departures from SPEC §2.7), "
            "none, cg-autoscale or queue-length.",
        ),
    ] = "inferline",
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
    from inferline.tuner._scenarios import make_policy
    from inferline.tuner._simulate import simulate_tuned

    if not slo_s > 0:
        raise ConfigError(f"must be positive, got {slo_s}", source="<argument>", field="--slo-s")
    if policy not in POLICIES:
        raise ConfigError(
            f"unknown policy {policy!r}; choose one of {', '.join(POLICIES)}",
            source="<argument>",
            field="--policy",
        )
    loaded = load_bundle(bundle)
    cfg = load_plan_for(plan, loaded)
    workload = load_trace(trace)
    sample = load_trace(planning_trace) if planning_trace else split_trace(workload, 0.25)[0]
    chosen = make_policy(policy, loaded.pipeline, loaded.profiles, cfg, sample, slo_s=slo_s)
    result = simulate_tuned(
        loaded.pipeline,
        loaded.profiles,
        cfg,
        workload,
        slo_s,
        chosen,
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


@user_errors
def tuner_bench_command(
    reference_dir: Annotated[
        Path, typer.Option("--reference-dir", help="Folder holding the reference bundles.")
    ] = Path("examples/reference"),
    out_dir: Annotated[
        Path, typer.Option("--out-dir", help="Where the PNGs, tuner.json and tuner.md go.")
    ] = Path("benchmarks/results/tuner"),
    after_s: Annotated[
        float, typer.Option("--after-s", help="Seconds of the new regime after each change.")
    ] = 240.0,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    margin: Annotated[
        float,
        typer.Option(
            "--margin",
            help="Planner safety margin of the inferline+opt-in+margin configuration "
            "(plan for a P99 of SLO x (1 - margin)).",
        ),
    ] = 0.3,
    seeds: Annotated[
        int,
        typer.Option(
            "--seeds",
            help="Repeat the targets check over this many seeds (from --seed) and write "
            "tuner_seeds.md; no plots.",
        ),
    ] = 1,
    as_json: bool = JSON_OPTION,
) -> None:
    """The Tuner and its baselines on ramp, burstiness and real-trace scenarios (issue 6)."""
    from rich.markdown import Markdown

    from inferline.tuner._scenarios import run_tuner_benchmark, run_tuner_seeds, seeds_markdown

    if not 0.0 <= margin < 1.0:
        raise ConfigError(
            f"must be a fraction in [0, 1), got {margin}", source="<argument>", field="--margin"
        )
    if seeds < 1:
        raise ConfigError(f"must be at least 1, got {seeds}", source="<argument>", field="--seeds")
    if seeds > 1:
        summary = run_tuner_seeds(
            reference_dir,
            range(seed, seed + seeds),
            out_dir,
            margin=margin,
            after_s=after_s,
        )
        if as_json:
            print_json(summary)
            return
        stdout.print(Markdown(seeds_markdown(summary)))
        stdout.print(f"written: {out_dir}/tuner_seeds.md  wall {summary['wall_s']:.1f} s")
        return
    figures = run_tuner_benchmark(
        reference_dir, out_dir=out_dir, after_s=after_s, seed=seed, margin=margin
    )
    if as_json:
        print_json(figures)
        return
    rows = figures["rows"]
    policies = list(dict.fromkeys(r["policy"] for r in rows))
    for pipeline in dict.fromkeys(r["pipeline"] for r in rows):
        mine = [r for r in rows if r["pipeline"] == pipeline]
        table = Table(
            title=f"{pipeline} (SLO {mine[0]['slo_s'] * 1000:.0f} ms): miss rate / cost $"
        )
        table.add_column("scenario")
        for p in policies:
            table.add_column(p, justify="right")
        for scenario in dict.fromkeys(r["scenario"] for r in mine):
            cells = []
            for p in policies:
                hit = [r for r in mine if r["scenario"] == scenario and r["policy"] == p]
                cells.append(
                    f"{hit[0]['miss_rate']:.2%} / {hit[0]['cost_dollars']:.3f}" if hit else "-"
                )
            table.add_row(scenario, *cells)
        stdout.print(table)
    for key in ("targets", "targets_opt_in", "targets_margin"):
        if figures.get(key):
            stdout.print(_targets_table(figures[key]))
    stdout.print(f"plots: {out_dir}  ({len(figures['plots'])} PNG)  wall {figures['wall_s']:.1f} s")


def _targets_table(checks: list[dict[str, Any]]) -> Table:
    first = checks[0]
    met = sum(bool(c["ten_x_fewer_misses"] and c["cost_no_more"]) for c in checks)
    table = Table(
        title=f"issue 6 targets: {first['policy']} vs {first['cg_policy']} "
        f"(≥ 10× fewer misses at no more cost: {met} of {len(checks)})"
    )
    for col in (
        "pipeline",
        "scenario",
        "miss ≤ 1 %",
        "CG/IL misses",
        "≥ 10× fewer",
        "cost ≤ CG",
        "CG@IL-cost / IL misses",
    ):
        table.add_column(col)
    for c in checks:
        table.add_row(
            c["pipeline"],
            c["scenario"],
            "yes" if c["inferline_miss_le_1pct"] else "NO",
            f"{c['cg_over_inferline_misses']:.3g}",
            "yes" if c["ten_x_fewer_misses"] else "NO",
            "yes" if c["cost_no_more"] else "NO",
            _equal_cost_cell(c),
        )
    return table


def _equal_cost_cell(check: dict[str, Any]) -> str:
    if "cg_at_il_cost_over_inferline_misses" not in check:
        return "-"
    ratio = check["cg_at_il_cost_over_inferline_misses"]
    if ratio is None:
        return f"CG ≥ ${check['cg_cheapest_cost_dollars']:.3f}"
    return f"{ratio:.3g}"
