"""``inferline bench``: the benchmarks behind SPEC §4's performance targets."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from inferline.cli._common import JSON_OPTION, print_json, stdout, user_errors

app = typer.Typer(help="Benchmarks that print the SPEC §4 figures.", no_args_is_help=True)


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


class _NoStatus:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
