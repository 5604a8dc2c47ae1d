"""``inferline validate``: plan, serve on the real engine, replay, compare with the Estimator."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from inferline.cli._common import JSON_OPTION, print_json, stderr, stdout, user_errors

if TYPE_CHECKING:
    from inferline.profiler import ValidationReport


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f}"


def _sig(seconds: float | None) -> str:
    """Milliseconds with three significant digits (0.0112, 2.35, 27.4, 151)."""
    return "-" if seconds is None else f"{seconds * 1000:#.3g}".rstrip(".")


def _stage_speeds(report: ValidationReport) -> Table:
    """Every stage's measured against profiled ``predict`` time, per run."""
    from inferline.profiler import DRIFT_LIMIT

    table = Table(
        title="predict per batch in the engine vs the profile, every stage (ms)",
        caption=f"measured / profiled (ratio), over the batch sizes the stage ran; ! = more "
        f"than {DRIFT_LIMIT:.0%} off",
    )
    table.add_column("stage")
    for r in report.runs:
        table.add_column(r.label, justify="right")
    for name in report.config.stages:
        cells = []
        for r in report.runs:
            s = r.service.get(name, {})
            ratio = s.get("ratio")
            engine_s = s.get("engine_predict_s", s.get("engine_predict_median_s"))
            profiled_s = s.get("profiled_predict_s", s.get("profiled_predict_median_s"))
            if ratio is None:
                cells.append("-")
                continue
            flag = " [bold red]![/]" if name in r.drifted_stages else ""
            cells.append(f"{_sig(engine_s)} / {_sig(profiled_s)} ({ratio:.2f}){flag}")
        table.add_row(name, *cells)
    return table


@user_errors
def validate_command(
    bundle: Annotated[
        Path, typer.Argument(help="Profiled bundle folder (samples and paths in pipeline.yaml).")
    ],
    trace: Annotated[
        Path,
        typer.Option(
            "--trace", help="Trace file; planned on its first part, replayed on the rest."
        ),
    ],
    slo_s: Annotated[float, typer.Option("--slo-s", help="End-to-end P99 latency objective, s.")],
    config: Annotated[
        Path | None,
        typer.Option("--config", help="Serve this plan instead of planning one."),
    ] = None,
    utilisation: Annotated[
        list[float] | None,
        typer.Option(
            "--utilisation",
            help="Rescale the evaluation trace so the plan's busiest stage runs at this "
            "utilisation (repeatable: one run each). Default: the trace's own rate.",
        ),
    ] = None,
    duration_s: Annotated[
        float, typer.Option("--duration-s", help="Seconds of evaluation traffic per run.")
    ] = 60.0,
    warmup_s: Annotated[
        float, typer.Option("--warmup-s", help="Warm-up traffic before each run, s.")
    ] = 5.0,
    planning_fraction: Annotated[
        float,
        typer.Option("--planning-fraction", help="Share of the trace's duration planned on."),
    ] = 0.25,
    service_time: Annotated[
        str,
        typer.Option(
            "--service-time",
            help="Estimator service time: lognormal (fitted to each profiled median and P99) "
            "or fixed (the median).",
        ),
    ] = "lognormal",
    margin: Annotated[
        float, typer.Option("--margin", help="Planner safety margin (plan for SLO x (1 - m)).")
    ] = 0.0,
    hardware: Annotated[
        list[str] | None,
        typer.Option("--hardware", help="Plan only on this hardware type (repeatable)."),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed for paths and payload choice.")] = 0,
    retime: Annotated[
        bool,
        typer.Option(
            "--retime/--no-retime",
            help="Time the planned stages again just before serving and estimate with those "
            "figures too (separates machine drift from the Estimator's error).",
        ),
    ] = False,
    repeat: Annotated[
        int,
        typer.Option("--repeat", help="Runs per load level (same arrivals); medians are reported."),
    ] = 1,
    pin: Annotated[
        bool,
        typer.Option(
            "--pin/--no-pin",
            help="Give the busiest single-thread replicas a CPU core each; the front-end, "
            "the replayer and the other replicas share core 0 (when that fits).",
        ),
    ] = True,
    nice: Annotated[
        int | None,
        typer.Option(
            "--nice",
            help="Scheduling priority for this command and every process it starts (e.g. -10; "
            "negative needs root): keeps other jobs on a shared machine out of the timings.",
        ),
    ] = None,
    as_json: bool = JSON_OPTION,
) -> None:
    """Serve a plan on the real engine and compare measured with estimated P50/P99/misses."""
    from inferline.profiler import ValidateOptions, validate_bundle

    options = ValidateOptions(
        nice=nice,
        slo_s=slo_s,
        config=config,
        utilisations=tuple(utilisation or ()),
        planning_fraction=planning_fraction,
        duration_s=duration_s,
        warmup_s=warmup_s,
        seed=seed,
        service_time=service_time,  # type: ignore[arg-type]  # checked by ValidateOptions
        margin=margin,
        hardware=tuple(hardware or ()),
        retime=retime,
        pin=pin,
        repeat=repeat,
    )
    if as_json:
        report = validate_bundle(bundle, trace, options)
        print_json(report.summary())
        return
    with stderr.status("validating …", spinner="dots") as spinner:
        report = validate_bundle(bundle, trace, options, status=spinner.update)
    plan = Table(title=f"plan for {report.pipeline} ({report.config_source})")
    for col in ("stage", "hardware", "batch", "replicas"):
        plan.add_column(col, justify="right")
    for name, c in report.config.stages.items():
        plan.add_row(name, c.hardware, str(c.batch_size), str(c.replicas))
    plan.caption = f"${report.cost_per_hour:.4f}/hour"
    if report.cores is not None:
        pinned = "; ".join(
            f"{name} on core {', '.join(str(c) for c in cores if c is not None)}"
            for name, cores in report.cores.dedicated.items()
        )
        plan.caption += f"; pinned: {pinned}; the rest on core {report.cores.shared[0]}"
    stdout.print(plan)
    table = Table(
        title=f"estimated vs measured on the real engine (SLO {slo_s * 1000:.0f} ms)",
        caption="send lag: how late the replayer sent its P99 query; speed: predict in the "
        "engine against the profile, of the stage furthest off (else the busiest); "
        "! = disturbed run",
    )
    for col in (
        "run",
        "q/s",
        "queries",
        "busiest util",
        "P50 est / meas ms",
        "P99 est / meas ms",
        "P99 error",
        "miss est / meas",
        "errors",
        "send lag P99",
        "speed",
    ):
        table.add_column(col, justify="right")
    for r in report.runs:
        m = r.measured
        err = r.p99_error
        table.add_row(
            r.label,
            f"{r.rate_qps:.1f}",
            str(r.queries),
            f"{max(r.utilisation.values()):.0%}",
            f"{_ms(r.estimated['p50_s'])} / {_ms(m['p50_s'])}",
            f"{_ms(r.estimated['p99_s'])} / {_ms(m['p99_s'])}",
            "-" if err is None else f"{err:+.1%}",
            f"{r.estimated['miss_rate']:.2%} / {m['miss_rate']:.2%}",
            str(m["errors"]),
            f"{_ms(m['send_lag_p99_s'])}{' !' if r.stalled else ''}",
            "-" if r.speed_drift is None else f"{r.speed_drift:+.0%}{' !' if r.drifted else ''}",
        )
    stdout.print(table)
    stdout.print(_stage_speeds(report))
    if len(report.runs) > len(report.levels()):
        summary = Table(title="per level: median measured P99 over the undisturbed runs")
        for col in ("level", "runs", "P99 est ms", "P99 meas ms", "P99 error (median)"):
            summary.add_column(col, justify="right")
        for level in report.levels():
            err = level["p99_error"]
            summary.add_row(
                level["label"],
                f"{level['undisturbed_runs']}/{level['runs']}",
                _ms(level["estimated_p99_s_median"]),
                _ms(level["measured_p99_s_median"]),
                "-" if err is None else f"{err:+.1%}",
            )
        stdout.print(summary)
    for note in report.notes:
        stdout.print(f"[yellow]note:[/] {note}", highlight=False)
