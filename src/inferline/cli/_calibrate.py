"""``inferline calibrate``: a running engine's calibrated profiles, to plan again from."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.table import Table

from inferline.cli._common import JSON_OPTION, as_options, print_json, stderr, stdout, user_errors
from inferline.errors import ConfigError


def _ms(value: Any) -> str:
    return "-" if value is None else f"{value * 1e3:.2f}"


def _table(stages: dict[str, Any]) -> Table:
    table = Table(title="predict time per batch: profiled vs measured (median)")
    for column in ("stage", "hardware", "batch size", "batches", "profiled ms", "measured ms"):
        table.add_column(column, justify="left" if column in ("stage", "hardware") else "right")
    table.add_column("ratio", justify="right")
    for name, stage in stages.items():
        ratio = stage.get("ratio")
        sizes = stage.get("batch_sizes") or []
        if not sizes:
            table.add_row(name, stage.get("hardware", ""), "-", "0", "-", "-", "-")
            continue
        for k, size in enumerate(sizes):
            profiled, measured = size.get("profiled_s"), size["median_s"]
            own = f"{measured / profiled:.2f}" if profiled else "-"
            table.add_row(
                name if k == 0 else "",
                stage.get("hardware", "") if k == 0 else "",
                str(size["batch_size"]),
                str(size["count"]),
                _ms(profiled),
                _ms(measured),
                own,
            )
        overall = "-" if ratio is None else f"[bold]{ratio:.2f}[/]"
        table.add_row("", "", "all", str(stage.get("samples", 0)), "", "", overall)
    return table


def _pipeline_line(pipeline: dict[str, Any], window_s: float) -> str:
    if not pipeline.get("queries"):
        return f"no answered queries in the last {window_s:g} s: no P99 to compare yet"
    rate = pipeline.get("rate_qps")
    return (
        f"last {window_s:g} s: {pipeline['queries']} queries"
        + (f" ({rate:.1f} q/s)" if rate else "")
        + f"; P99 measured {_ms(pipeline.get('measured_p99_s'))} ms, estimated "
        f"{_ms(pipeline.get('estimated_p99_s'))} ms calibrated, "
        f"{_ms(pipeline.get('estimated_uncalibrated_p99_s'))} ms with the profiles as given"
        + _bias_part(pipeline)
    )


def _bias_part(pipeline: dict[str, Any]) -> str:
    """The shared-cores estimate and the tail bias to plan with (empty without them)."""
    shared, bias = pipeline.get("estimated_shared_p99_s"), pipeline.get("tail_bias")
    if shared is None:
        return ""
    return f", {_ms(shared)} ms on CPU work with the cores shared" + (
        "; too few queries for a tail bias"
        if bias is None
        else f"; tail bias {bias:.2f} (`inferline plan --machine local --tail-bias "
        f"{bias:.2f}` with the --cpu-work file)"
    )


@user_errors
def calibrate_command(
    url: Annotated[str, typer.Argument(help="The engine, e.g. http://127.0.0.1:8000")],
    output: Annotated[
        Path | None,
        typer.Option(
            "-o",
            "--output",
            help="Write the calibrated profiles here (a profiles.yaml the planner reads "
            "with the bundle's hardware.yaml).",
        ),
    ] = None,
    cpu_work: Annotated[
        bool,
        typer.Option(
            "--cpu-work",
            help="Write each batch's CPU work, not its served time: what `inferline plan "
            "--machine` plans with where it simulates the cores as shared (fit=shared), "
            "adding each candidate plan's own contention.",
        ),
    ] = False,
    timeout_s: Annotated[
        float, typer.Option("--timeout-s", help="Wait this long for the engine's answer.")
    ] = 10.0,
    as_json: bool = JSON_OPTION,
) -> None:
    """Read the profiles a running engine calibrated on its measured predict times, and
    per stage its measured against profiled predict time (docs/engine.md)."""
    from inferline.engine import fetch_calibration
    from inferline.profiles import profiles_to_mapping

    if not timeout_s > 0:
        raise ConfigError(
            f"must be positive, got {timeout_s}", source="<argument>", field="--timeout-s"
        )
    report = fetch_calibration(url, timeout_s)
    with as_options({"cpu_work": "--cpu-work"}):
        written = report.chosen_profiles(cpu_work)
    if output is not None:
        when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        what = "CPU work per batch" if cpu_work else "measured predict times"
        header = (
            f"# Calibrated by `inferline calibrate {report.url}` at {when}: the engine's\n"
            f"# {what} of the last {report.window_s:g} s (docs/engine.md).\n"
        )
        text = yaml.safe_dump(
            profiles_to_mapping(written),
            sort_keys=False,
            width=100,
            default_flow_style=None,
        )
        try:
            output.write_text(header + text, encoding="utf-8")
        except OSError as exc:
            raise ConfigError(
                f"cannot write the profiles ({exc.strerror})", source=output, field="--output"
            ) from None
    if as_json:
        print_json(
            {
                "url": report.url,
                "model": report.model,
                "window_s": report.window_s,
                "stages": report.stages,
                "pipeline": report.pipeline,
                "output": str(output) if output is not None else None,
            }
        )
        return
    stdout.print(f"engine {report.url} serving '{report.model}'")
    stdout.print(_table(report.stages))
    stdout.print(_pipeline_line(report.pipeline, report.window_s), highlight=False)
    if output is not None:
        stderr.print(f"wrote {output}", highlight=False)
