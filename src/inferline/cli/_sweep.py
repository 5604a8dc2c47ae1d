"""``inferline sweep``: every planner against SLO, rate and burstiness, as tables and plots."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import Progress

from inferline._bundle import load_bundle
from inferline.cli._common import JSON_OPTION, print_json, stdout, user_errors
from inferline.errors import ConfigError
from inferline.planner import PLANNERS
from inferline.reports import SweepPoint, markdown_table, run_sweep, write_sweep


def _floats(text: str, name: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(
            f"expected comma-separated numbers, got {text!r}", source="<argument>", field=name
        ) from None
    if not values or any(not v > 0 for v in values):
        raise ConfigError(
            f"expected positive numbers, got {text!r}", source="<argument>", field=name
        )
    return values


@user_errors
def sweep_command(
    bundle: Annotated[Path, typer.Argument(help="Bundle folder.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Folder for CSV, markdown, PNG.")],
    planners: Annotated[
        str, typer.Option("--planners", help=f"Comma-separated, from: {', '.join(PLANNERS)}.")
    ] = "inferline,cg-mean,cg-peak",
    slos_s: Annotated[
        str, typer.Option("--slo-s", help="SLOs in seconds.")
    ] = "0.05,0.1,0.15,0.2,0.3",
    rates_qps: Annotated[str, typer.Option("--rate", help="Mean rates, q/s.")] = "100,200,400",
    cvs: Annotated[
        str, typer.Option("--cv", help="Gap cv σ/μ (paper CV = cv²): 1 and 2 = paper CV 1 and 4.")
    ] = "1,2",
    duration_s: Annotated[float, typer.Option("--duration-s", help="Trace length, s.")] = 300.0,
    exhaustive_max_s: Annotated[float, typer.Option("--exhaustive-max-s")] = 60.0,
    margin: Annotated[
        float, typer.Option("--margin", help="Plan for a P99 of SLO × (1 − margin).")
    ] = 0.0,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    as_json: bool = JSON_OPTION,
) -> None:
    """Plan every combination, score each plan on a held-out trace, write tables and plots."""
    names = [p.strip() for p in planners.split(",") if p.strip()]
    unknown = [p for p in names if p not in PLANNERS]
    if unknown:
        raise ConfigError(
            f"unknown planner(s) {', '.join(unknown)}; valid: {', '.join(PLANNERS)}",
            source="<argument>",
            field="--planners",
        )
    slos, rates, cv_values = (
        _floats(slos_s, "--slo-s"),
        _floats(rates_qps, "--rate"),
        _floats(cvs, "--cv"),
    )
    loaded = load_bundle(bundle)
    total = len(names) * len(slos) * len(rates) * len(cv_values)
    with Progress(console=stdout, disable=as_json, transient=True) as progress:
        task = progress.add_task(f"planning {loaded.pipeline.name}", total=total)

        def advance(_: SweepPoint) -> None:
            progress.advance(task)

        points = run_sweep(
            loaded,
            planners=names,
            slos_s=slos,
            rates_qps=rates,
            cvs=cv_values,
            duration_s=duration_s,
            seed=seed,
            exhaustive_max_s=exhaustive_max_s,
            margin=margin,
            on_point=advance,
        )
    files = write_sweep(points, output)
    if as_json:
        print_json({"points": [p.__dict__ for p in points], "files": [str(f) for f in files]})
        return
    stdout.print(markdown_table(points))
    stdout.print("wrote " + ", ".join(str(f) for f in files))
