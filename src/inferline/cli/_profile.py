"""``inferline profile``: measure a bundle's real stages, routing and the engine's overhead."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from inferline.cli._common import (
    JSON_OPTION,
    print_json,
    stderr,
    stdout,
    stdout_to_stderr,
    user_errors,
)
from inferline.errors import ConfigError
from inferline.profiler import DRIFT_WARNING

if TYPE_CHECKING:
    from inferline.profiler import InPlaceReport, ProfileReport


class RichProgress:
    """The Profiler's progress as rich progress bars on stderr."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress

    def start(self, description: str, total: int | None) -> int:
        return int(self._progress.add_task(description, total=total))

    def advance(self, task: int, amount: int = 1, description: str | None = None) -> None:
        self._progress.update(task, advance=amount, description=description)  # type: ignore[arg-type]

    def finish(self, task: int) -> None:
        done = self._progress.tasks[task].completed if task < len(self._progress.tasks) else 0
        self._progress.update(task, total=max(done, 1), completed=max(done, 1))  # type: ignore[arg-type]

    def note(self, message: str) -> None:
        self._progress.console.print(message, highlight=False)


def progress_bars() -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=stderr,
    )


@user_errors
def profile_command(
    bundle: Annotated[
        Path, typer.Argument(help="Bundle folder (pipeline.yaml with stage models and samples).")
    ],
    hardware: Annotated[
        list[str] | None,
        typer.Option(
            "--hardware", help="Measure only this hardware type (repeatable); default: all here."
        ),
    ] = None,
    max_batch: Annotated[
        int, typer.Option("--max-batch", help="Largest batch size (1, 2, 4, … up to it).")
    ] = 32,
    samples: Annotated[
        int, typer.Option("--samples", help="Sample queries to route and capture inputs from.")
    ] = 500,
    seed: Annotated[int, typer.Option("--seed", help="Seed passed to the samples function.")] = 0,
    force: Annotated[
        bool, typer.Option("--force", help="Measure everything again, ignoring what is cached.")
    ] = False,
    reps: Annotated[
        int, typer.Option("--reps", help="Timed batches per batch size, at least.")
    ] = 20,
    min_time_s: Annotated[
        float,
        typer.Option("--min-time-s", help="Time more batches until this much was timed, s."),
    ] = 0.5,
    idle_ms: Annotated[
        float,
        typer.Option("--idle-ms", help="Idle time before each timed batch, ms (as when serving)."),
    ] = 2.0,
    overhead: Annotated[
        bool,
        typer.Option(
            "--overhead/--no-overhead", help="Measure the engine's own overhead (no-op DAG)."
        ),
    ] = True,
    overhead_rate: Annotated[
        list[float] | None,
        typer.Option(
            "--overhead-rate",
            help="Rate of the no-op overhead run, q/s (repeatable; default 50, 150, 400).",
        ),
    ] = None,
    overhead_duration_s: Annotated[
        float,
        typer.Option(
            "--overhead-duration-s", help="Length of the no-op run per rate (3 rounds), s."
        ),
    ] = 9.0,
    nice: Annotated[
        int | None,
        typer.Option(
            "--nice",
            help="Scheduling priority for this command and every process it starts (e.g. -10; "
            "negative needs root): keeps other jobs on a shared machine out of the timings.",
        ),
    ] = None,
    in_place: Annotated[
        bool,
        typer.Option(
            "--in-place",
            help="Profile under serving conditions: serve the pipeline on the engine with its "
            "plan, replay the sample queries at --rates, and write each stage's batch "
            "latencies as measured there (needs the isolated profiles first).",
        ),
    ] = False,
    rates: Annotated[
        str | None,
        typer.Option(
            "--rates",
            help="With --in-place: rates as fractions of the plan's estimated capacity, "
            "comma-separated (default 0.3,0.6,0.9).",
        ),
    ] = None,
    rates_qps: Annotated[
        str | None,
        typer.Option(
            "--rates-qps", help="With --in-place: the rates in q/s instead, comma-separated."
        ),
    ] = None,
    duration_s: Annotated[
        float,
        typer.Option("--duration-s", help="With --in-place: seconds of traffic per rate."),
    ] = 10.0,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="With --in-place: the plan to serve (default: the bundle's plan.yaml, else "
            "one replica per stage).",
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "-o",
            "--output",
            help="With --in-place: write the profiles here (default: the bundle's profiles file).",
        ),
    ] = None,
    as_json: bool = JSON_OPTION,
) -> None:
    """Profile each stage on each hardware type here, record routing and engine overhead."""
    if in_place:
        _in_place(
            bundle, rates, rates_qps, duration_s, config, output, samples, seed, nice, as_json
        )
        return
    given = {"--rates": rates, "--rates-qps": rates_qps, "--config": config, "-o": output}
    extra = [flag for flag, value in given.items() if value is not None]
    if extra:
        raise ConfigError(
            f"{', '.join(extra)} only with --in-place", source="<argument>", field=extra[0]
        )
    from inferline.profiler import (
        NullProgress,
        OverheadOptions,
        ProfileOptions,
        RepetitionPolicy,
        profile_bundle,
    )

    options = ProfileOptions(
        nice=nice,
        hardware=tuple(hardware or ()),
        max_batch=max_batch,
        samples=samples,
        seed=seed,
        force=force,
        repetitions=RepetitionPolicy(
            min_reps=reps, max_reps=max(reps, 200), min_time_s=min_time_s, idle_s=idle_ms / 1000
        ),
        overhead=overhead,
        overhead_options=OverheadOptions(
            rates_qps=tuple(overhead_rate or OverheadOptions().rates_qps),
            duration_s=overhead_duration_s,
        ),
    )
    if as_json:
        report = profile_bundle(bundle, options, NullProgress())
        print_json(report.summary())
        return
    with progress_bars() as bars:
        report = profile_bundle(bundle, options, RichProgress(bars))
    _print_report(report)


def _floats(text: str, flag: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ConfigError(
            f"expected numbers separated by commas, got {text!r}", source="<argument>", field=flag
        ) from None


def _in_place(
    bundle: Path,
    rates: str | None,
    rates_qps: str | None,
    duration_s: float,
    config: Path | None,
    output: Path | None,
    samples: int,
    seed: int,
    nice: int | None,
    as_json: bool,
) -> None:
    from inferline.profiler import InPlaceOptions, profile_in_place

    if rates is not None and rates_qps is not None:
        raise ConfigError("give --rates or --rates-qps, not both", source="<argument>")
    fields: dict[str, Any] = {}
    if rates is not None:
        fields["rates"] = _floats(rates, "--rates")
    if rates_qps is not None:
        fields["rates_qps"] = _floats(rates_qps, "--rates-qps")
    options = InPlaceOptions(
        duration_s=duration_s,
        config=config,
        output=output,
        samples=min(samples, 200),
        seed=seed,
        nice=nice,
        **fields,
    )
    if as_json:
        with stdout_to_stderr():
            report = profile_in_place(bundle, options)
        print_json(report.summary())
        return
    with stderr.status("profiling in place …", spinner="dots") as spinner:
        report = profile_in_place(bundle, options, status=spinner.update)
    print_in_place(report)


def print_in_place(report: InPlaceReport) -> None:
    """The rates served and every stage's isolated against served ``predict`` time."""
    runs = Table(
        title=f"{report.pipeline} served in place (capacity ~{report.capacity_qps:.1f} q/s)"
    )
    for col in ("rate q/s", "queries", "errors", "P50 ms", "P99 ms"):
        runs.add_column(col, justify="right")
    for r in report.runs:
        runs.add_row(
            f"{r['rate_qps']:.1f}",
            str(r["queries"]),
            str(r["errors"]),
            _ms(r["p50_s"]),
            _ms(r["p99_s"]),
        )
    stdout.print(runs)
    table = Table(title="predict per batch: isolated profile vs served (median, ms)")
    for col in ("stage", "hardware", "batch sizes seen (batches)", "isolated", "served", "ratio"):
        table.add_column(col, justify="left" if col in ("stage", "hardware") else "right")
    for name, s in report.stages.items():
        seen = " ".join(f"{x['batch_size']}({x['count']})" for x in s.get("batch_sizes", []))
        ratio = s.get("ratio")
        table.add_row(
            name,
            s.get("hardware", ""),
            seen or "-",
            _ms(s.get("profiled_s")),
            _ms(s.get("predict_s")),
            "-" if ratio is None else f"{ratio:.2f}",
        )
    stdout.print(table)
    kept = [name for name, s in report.stages.items() if s.get("ratio") is None]
    if kept:
        stdout.print(
            f"[yellow]note:[/] {', '.join(kept)} ran too few batches to measure: kept as "
            "profiled in isolation (serve longer with --duration-s, or at higher --rates)",
            highlight=False,
        )
    stdout.print(f"wrote {report.profiles_file} in {report.wall_s:.1f} s", highlight=False)


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.3f}"


def _sig(seconds: float) -> str:
    """Milliseconds with three significant digits (0.143, 2.35, 27.4, 151)."""
    return f"{seconds * 1000:#.3g}".rstrip(".")


def _print_report(report: ProfileReport) -> None:
    routing = Table(
        title=f"routing of {report.paths.samples} sample queries (seed {report.paths.seed})"
    )
    for col in ("edge", "probability", "taken / visits"):
        routing.add_column(col, justify="right")
    for (a, b), p in report.paths.edge_probability.items():
        taken, visits = report.paths.edge_counts[(a, b)]
        routing.add_row(f"{a} → {b}", f"{p:.3f}", f"{taken} / {visits}")
    routing.caption = "scale factors: " + ", ".join(
        f"{s} {f:.3f}" for s, f in report.paths.scale_factors.items()
    )
    stdout.print(routing)
    sizes = sorted({p.batch_size for r in report.profiles for p in r.points})
    table = Table(
        title="median batch latency, ms: round trip through the replica worker",
        caption="* measured in this run, others reused; P99s are in the profiles file (--json)",
    )
    table.add_column("stage")
    table.add_column("hardware")
    table.add_column("thr", justify="right")
    for size in sizes:
        table.add_column(f"b={size}", justify="right")
    for r in report.profiles:
        by_size = {p.batch_size: p for p in r.points}
        cells = []
        for size in sizes:
            point = by_size.get(size)
            mark = "*" if size in r.measured_sizes else ""
            cells.append("-" if point is None else f"{_sig(point.median_s)}{mark}")
        table.add_row(r.stage, r.hardware, str(r.threads), *cells)
    stdout.print(table)
    for name, why in report.skipped_hardware.items():
        stdout.print(f"skipped hardware {name}: {why}", highlight=False)
    if report.overhead is not None:
        o = report.overhead
        stdout.print(
            f"engine overhead{' (cached)' if report.overhead_reused else ''}: "
            f"{o.per_batch_s * 1e6:.0f} µs per batch, {o.per_query_s * 1e3:.3f} ms per query "
            f"(P99 {_ms(o.per_query_p99_s)} ms)",
            highlight=False,
        )
    stdout.print(f"wrote {report.profiles_file} and {report.paths_file} in {report.wall_s:.1f} s")
    drift = report.speed_drift
    if drift is not None and report.probe_s is not None:
        before, after = (x * 1e3 for x in report.probe_s)
        line = f"machine speed probe: {before:.2f} ms before, {after:.2f} ms after ({drift:+.0%})"
        if abs(drift) > DRIFT_WARNING:
            line = (
                f"[yellow]warning:[/] the machine's speed changed while profiling: {line}; "
                "figures measured at different times are not comparable (other jobs, or "
                "a shared host); re-run with --force when the machine is steady"
            )
        stdout.print(line, highlight=False)
    if not report.pipeline_names_paths:
        stdout.print(
            f"[yellow]note:[/] add `paths: {report.paths_file.name}` to pipeline.yaml to plan "
            "with the measured routing",
            highlight=False,
        )
