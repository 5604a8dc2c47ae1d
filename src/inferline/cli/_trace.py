"""``inferline trace``: generate, load, rescale, split and describe traces."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.table import Table

from inferline.cli._common import JSON_OPTION, print_json, stdout, user_errors
from inferline.errors import ConfigError
from inferline.workload import (
    Trace,
    gamma_trace,
    load_timestamp_csv,
    load_trace,
    peak_rate_qps,
    ramp_trace,
    rescale_to_mean_rate,
    rescale_to_peak_rate,
    save_trace,
    split_trace,
)

app = typer.Typer(help="Generate, load and inspect arrival traces.", no_args_is_help=True)

OUT = Annotated[Path, typer.Option("-o", "--output", help="Trace file to write (CSV).")]


def describe(trace: Trace) -> dict[str, Any]:
    gaps = np.diff(trace.arrival_s)
    cv = float(gaps.std() / gaps.mean()) if len(gaps) > 1 and gaps.mean() > 0 else 0.0
    return {
        "queries": trace.n_queries,
        "duration_s": trace.duration_s,
        "mean_rate_qps": trace.mean_rate_qps,
        "gap_cv": cv,
        "peak_rate_1s_qps": peak_rate_qps(trace, 1.0),
        "has_paths": trace.path_ids is not None,
    }


def _report(trace: Trace, as_json: bool, written: Path | None = None) -> None:
    info = describe(trace)
    if written is not None:
        info["output"] = str(written)
    if as_json:
        print_json(info)
        return
    table = Table(title=f"trace{f' → {written}' if written else ''}", show_header=False)
    for key, value in info.items():
        table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    stdout.print(table)


def _positive(value: float, name: str) -> None:
    if not value > 0:
        raise ConfigError(f"must be positive, got {value}", source="<argument>", field=name)


@app.command("gamma")
@user_errors
def gamma(
    rate: Annotated[float, typer.Option("--rate", help="Mean arrival rate, queries/s.")],
    cv: Annotated[
        float,
        typer.Option(
            "--cv",
            help="Coefficient of variation σ/μ of the gaps. The paper's 'CV' is the square: "
            "paper CV=4 is --cv 2.",
        ),
    ],
    duration_s: Annotated[float, typer.Option("--duration-s", help="Length in seconds.")],
    output: OUT,
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 0,
    as_json: bool = JSON_OPTION,
) -> None:
    """Gamma-distributed inter-arrival times (Poisson when --cv 1)."""
    _positive(rate, "--rate")
    _positive(cv, "--cv")
    _positive(duration_s, "--duration-s")
    trace = gamma_trace(rate, cv, duration_s, seed)
    save_trace(trace, output)
    _report(trace, as_json, output)


@app.command("ramp")
@user_errors
def ramp(
    from_rate: Annotated[float, typer.Option("--from-rate", help="Rate before the ramp, q/s.")],
    to_rate: Annotated[float, typer.Option("--to-rate", help="Rate after the ramp, q/s.")],
    transition_s: Annotated[float, typer.Option("--transition-s", help="Ramp length, s.")],
    output: OUT,
    before_s: Annotated[float, typer.Option("--before-s")] = 60.0,
    after_s: Annotated[float, typer.Option("--after-s")] = 60.0,
    cv: Annotated[float, typer.Option("--cv")] = 1.0,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    as_json: bool = JSON_OPTION,
) -> None:
    """A flat rate, a linear ramp to a new rate, then flat again."""
    for value, name in ((from_rate, "--from-rate"), (to_rate, "--to-rate"), (cv, "--cv")):
        _positive(value, name)
    trace = ramp_trace(
        from_rate, to_rate, transition_s, before_s=before_s, after_s=after_s, cv=cv, seed=seed
    )
    save_trace(trace, output)
    _report(trace, as_json, output)


@app.command("load")
@user_errors
def load(
    csv: Annotated[Path, typer.Argument(help="CSV of timestamps (TIMESTAMP or arrival_s column).")],
    output: OUT,
    rate: Annotated[
        float | None, typer.Option("--rate", help="Rescale time to this mean rate, q/s.")
    ] = None,
    peak_rate: Annotated[
        float | None,
        typer.Option("--peak-rate", help="Rescale so the busiest --window-s window has this rate."),
    ] = None,
    window_s: Annotated[float, typer.Option("--window-s")] = 1.0,
    as_json: bool = JSON_OPTION,
) -> None:
    """Load a real trace of timestamps and rescale it, keeping its shape."""
    if rate is not None and peak_rate is not None:
        raise ConfigError("give --rate or --peak-rate, not both", source="<argument>")
    trace = load_timestamp_csv(csv)
    if rate is not None:
        _positive(rate, "--rate")
        trace = rescale_to_mean_rate(trace, rate)
    elif peak_rate is not None:
        _positive(peak_rate, "--peak-rate")
        trace = rescale_to_peak_rate(trace, peak_rate, window_s)
    save_trace(trace, output)
    _report(trace, as_json, output)


@app.command("split")
@user_errors
def split(
    trace_file: Annotated[Path, typer.Argument(help="Trace file to split.")],
    planning_out: Annotated[Path, typer.Option("--planning-out")],
    evaluation_out: Annotated[Path, typer.Option("--evaluation-out")],
    planning_fraction: Annotated[float, typer.Option("--planning-fraction")] = 0.25,
    as_json: bool = JSON_OPTION,
) -> None:
    """Cut a trace by time into a planning part and an evaluation part."""
    planning, evaluation = split_trace(load_trace(trace_file), planning_fraction)
    save_trace(planning, planning_out)
    save_trace(evaluation, evaluation_out)
    if as_json:
        print_json({"planning": describe(planning), "evaluation": describe(evaluation)})
    else:
        _report(planning, False, planning_out)
        _report(evaluation, False, evaluation_out)


@app.command("info")
@user_errors
def info(
    trace_file: Annotated[Path, typer.Argument(help="Trace file.")],
    as_json: bool = JSON_OPTION,
) -> None:
    """Queries, duration, mean and peak rate, burstiness."""
    _report(load_trace(trace_file), as_json)
