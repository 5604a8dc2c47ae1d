"""``inferline bench``: the benchmarks behind SPEC §4's performance targets.

Each subcommand runs one module of :mod:`inferline.bench` and prints its figures with that
module's ``tables`` renderer, or, with ``--json``, the same figures as one JSON object on
stdout (everything else, Ray's log lines too, goes to stderr). Benchmarks that write files
write them into ``-o/--out``, by default a fresh temporary folder whose path they print.
"""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any, cast

import typer
from rich.console import RenderableType
from rich.progress import Progress

from inferline.cli._common import (
    JSON_OPTION,
    as_options,
    print_json,
    stderr,
    stdout,
    stdout_to_stderr,
    user_errors,
)
from inferline.errors import ConfigError

app = typer.Typer(help="Benchmarks that print the SPEC §4 figures.", no_args_is_help=True)

REFERENCE_OPTION = typer.Option("--reference-dir", help="Folder holding the reference bundles.")
PIPELINES_OPTION = typer.Option("--pipelines", help="Reference pipelines, comma-separated.")


@contextlib.contextmanager
def _running(as_json: bool, text: str) -> Iterator[Callable[[str], None]]:
    """A spinner for the readable output, updated through the yielded callback; with
    ``--json`` no spinner and every line written to stdout sent to stderr instead."""
    if as_json:
        with stdout_to_stderr():
            yield lambda _: None
        return
    with stdout.status(f"{text} …", spinner="dots") as status:
        yield lambda step: status.update(f"{step} …")


def _report(
    figures: dict[str, Any],
    as_json: bool,
    tables: Callable[[dict[str, Any]], Sequence[RenderableType]],
) -> None:
    if as_json:
        print_json(figures)
        return
    for table in tables(figures):
        stdout.print(table)


def _out_dir(out: Path | None, name: str) -> Path:
    """``-o/--out``, or a fresh temporary folder (never the checkout), announced on stderr."""
    if out is not None:
        return out
    path = Path(tempfile.mkdtemp(prefix=f"inferline-bench-{name}-"))
    stderr.print(f"no -o/--out given: writing into {path}", highlight=False, soft_wrap=True)
    return path


def _numbers(text: str, option: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ConfigError(
            f"not a list of numbers: {text!r}", source="<argument>", field=option
        ) from None
    if not values:
        raise ConfigError("give at least one number", source="<argument>", field=option)
    return values


def _names(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


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
    from inferline.bench.estimator import run_estimator_benchmark, tables

    with _running(as_json, "running the estimator benchmark"):
        figures = run_estimator_benchmark(
            duration_s=duration_s, simpy_queries=simpy_queries, repeats=repeats, seed=seed
        )
    _report(figures, as_json, tables)


@app.command("planner")
@user_errors
def planner(
    reference_dir: Annotated[Path, REFERENCE_OPTION] = Path("examples/reference"),
    pipelines: Annotated[
        str, PIPELINES_OPTION
    ] = "image-processing,video-monitoring,social-media,tf-cascade",
    slos_s: Annotated[str, typer.Option("--slos-s", help="SLOs, s, comma-separated.")] = (
        "0.1,0.15,0.3"
    ),
    rates: Annotated[str, typer.Option("--rates", help="Mean rates, q/s.")] = "100,200",
    cvs: Annotated[str, typer.Option("--cvs", help="Gap coefficients of variation.")] = "1,2",
    duration_s: Annotated[float, typer.Option("--duration-s", help="Trace length, s.")] = 600.0,
    exhaustive_max_s: Annotated[float, typer.Option("--exhaustive-max-s")] = 30.0,
    margin: Annotated[
        float, typer.Option("--margin", help="Plan for a P99 of SLO × (1 − margin).")
    ] = 0.05,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    out: Annotated[
        Path | None,
        typer.Option(
            "-o",
            "--out",
            "--output",
            help="Folder for the sweep tables and plots (default: a fresh temporary folder).",
        ),
    ] = None,
    as_json: bool = JSON_OPTION,
) -> None:
    """InferLine against CG-Mean, CG-Peak and the optimum on the four reference pipelines."""
    from inferline.bench.planner import PLANNERS, run_planner_benchmark, tables

    names, slos, rates_qps, cv_values = (
        _names(pipelines),
        _numbers(slos_s, "--slos-s"),
        _numbers(rates, "--rates"),
        _numbers(cvs, "--cvs"),
    )
    total = len(names) * len(slos) * len(rates_qps) * len(cv_values) * len(PLANNERS)
    done = 0
    with _running(as_json, "planning the reference pipelines") as progress:

        def on_point(_: object) -> None:
            nonlocal done
            done += 1
            progress(f"planning the reference pipelines: {done} of {total} plans")

        figures = run_planner_benchmark(
            reference_dir,
            pipelines=names,
            slos_s=slos,
            rates_qps=rates_qps,
            cvs=cv_values,
            duration_s=duration_s,
            exhaustive_max_s=exhaustive_max_s,
            margin=margin,
            seed=seed,
            out_dir=_out_dir(out, "planner"),
            on_point=on_point,
        )
    _report(figures, as_json, tables)


@app.command("engine")
@user_errors
def engine(
    rates: Annotated[
        str, typer.Option("--rates", help="Offered rates, q/s.")
    ] = "200,500,1000,1500,2000",
    duration_s: Annotated[float, typer.Option("--duration-s", help="Length of each run, s.")] = 5.0,
    repeats: Annotated[int, typer.Option("--repeats")] = 3,
    overhead_duration_s: Annotated[
        float,
        typer.Option("--overhead-duration-s", help="Length of the per-stage overhead run, s."),
    ] = 10.0,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 32,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    as_json: bool = JSON_OPTION,
) -> None:
    """Engine overhead: a 2-stage no-op pipeline under open-loop Poisson load."""
    from inferline.bench.engine import run_engine_benchmark, tables

    rates_qps = _numbers(rates, "--rates")
    with _running(as_json, "running the engine benchmark"):
        figures = run_engine_benchmark(
            rates_qps=rates_qps,
            duration_s=duration_s,
            repeats=repeats,
            overhead_duration_s=overhead_duration_s,
            batch_size=batch_size,
            seed=seed,
        )
    _report(figures, as_json, tables)


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
    from inferline.bench.replica_start import run_replica_start_benchmark, tables

    with _running(as_json, "adding and removing replicas"):
        figures = run_replica_start_benchmark(bundle, stage, hardware=hardware, repeats=repeats)
    _report(figures, as_json, tables)


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
    out: Annotated[
        Path | None,
        typer.Option("-o", "--out", help="Also write overload.json into this folder."),
    ] = None,
    as_json: bool = JSON_OPTION,
) -> None:
    """Goodput and P99 at 1×–3× a stage's capacity, with and without shedding."""
    from inferline.bench.overload import OverloadSettings, run_overload_benchmark, tables

    with as_options(
        {"load_factors": "--factors", "duration_s": "--duration-s", "slo_s": "--slo-s",
         "stages": "--stages"}
    ):  # fmt: skip
        settings = OverloadSettings(
            load_factors=_numbers(factors, "--factors"),
            duration_s=duration_s,
            slo_s=slo_s,
            stages=stages,
            seed=seed,
        )
    with _running(as_json, "running the overload benchmark") as progress:
        figures = run_overload_benchmark(settings, out_dir=out, progress=progress)
    _report(figures, as_json, tables)


@app.command("fuzz")
@user_errors
def fuzz(
    requests: Annotated[int, typer.Option("--requests", help="Malformed requests to send.")] = 2000,
    valid_after: Annotated[
        int, typer.Option("--valid-after", help="Valid requests sent afterwards.")
    ] = 50,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    as_json: bool = JSON_OPTION,
) -> None:
    """Malformed requests over real HTTP to a served engine: status classes, drops, and after."""
    from inferline.bench.fuzz import run_fuzz_benchmark, tables

    with Progress(console=stdout, disable=as_json, transient=True) as progress:
        task = progress.add_task("sending malformed requests", total=requests)
        figures = run_fuzz_benchmark(
            requests,
            valid_after=valid_after,
            seed=seed,
            on_progress=lambda n: progress.update(task, completed=n),
        )
    _report(figures, as_json, tables)
    if not figures["passed"]:
        raise typer.Exit(1)


@app.command("wire")
@user_errors
def wire(
    queries: Annotated[int, typer.Option("--queries", help="Requests per encoding.")] = 50,
    as_json: bool = JSON_OPTION,
) -> None:
    """One 224×224×3 FP32 image as JSON against binary tensor data: bytes, latency, CPU."""
    from inferline.bench.wire import run_wire_benchmark, tables

    with _running(as_json, "sending images"):
        figures = run_wire_benchmark(queries)
    _report(figures, as_json, tables)


@app.command("tuner")
@user_errors
def tuner(
    reference_dir: Annotated[Path, REFERENCE_OPTION] = Path("examples/reference"),
    pipelines: Annotated[str, PIPELINES_OPTION] = "image-processing,social-media",
    out: Annotated[
        Path | None,
        typer.Option(
            "-o",
            "--out",
            "--out-dir",
            help="Folder for the PNGs, tuner.json and tuner.md (default: a fresh temporary "
            "folder).",
        ),
    ] = None,
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
    from inferline.bench.tuner import run_tuner_benchmark, run_tuner_seeds, tables

    if not 0.0 <= margin < 1.0:
        raise ConfigError(
            f"must be a fraction in [0, 1), got {margin}", source="<argument>", field="--margin"
        )
    if seeds < 1:
        raise ConfigError(f"must be at least 1, got {seeds}", source="<argument>", field="--seeds")
    out_dir = _out_dir(out, "tuner")
    with _running(as_json, "simulating the tuner scenarios"):
        if seeds > 1:
            figures = run_tuner_seeds(
                reference_dir,
                range(seed, seed + seeds),
                out_dir,
                pipelines=_names(pipelines),
                margin=margin,
                after_s=after_s,
            )
        else:
            figures = run_tuner_benchmark(
                reference_dir,
                _names(pipelines),
                out_dir,
                after_s=after_s,
                seed=seed,
                margin=margin,
            )
    figures["out_dir"] = str(out_dir)
    _report(figures, as_json, tables)


@app.command("ray")
@user_errors
def ray_bench(
    out: Annotated[
        Path | None,
        typer.Option(
            "-o",
            "--out",
            "--output",
            help="Folder for ray.json and ray_autoscaling.png (default: a fresh temporary folder).",
        ),
    ] = None,
    rate: Annotated[
        float, typer.Option("--rate", help="Part 1: the plan's and the trace's rate, q/s.")
    ] = 16.0,
    duration_s: Annotated[
        float, typer.Option("--duration-s", help="Part 1: length of the measured trace, s.")
    ] = 20.0,
    low_rate: Annotated[float, typer.Option("--low-rate", help="Part 2: step from, q/s.")] = 4.0,
    high_rate: Annotated[float, typer.Option("--high-rate", help="Part 2: step to, q/s.")] = 16.0,
    step_s: Annotated[
        str,
        typer.Option("--step-s", help="Part 2: seconds at the low, high and low rate again."),
    ] = "10,30,10",
    slo_s: Annotated[float, typer.Option("--slo-s", help="End-to-end latency objective, s.")] = 0.4,
    no_ray_serve: Annotated[
        bool, typer.Option("--no-ray-serve", help="Skip the Ray Serve application runs.")
    ] = False,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    as_json: bool = JSON_OPTION,
) -> None:
    """InferLine on Ray vs the embedded engine vs Ray Serve: estimated and measured P99 for one
    plan, and the InferLine Tuner vs Ray Serve's autoscaler on a rate step (docs/ray.md)."""
    from inferline.bench.ray import RayBenchmarkSettings, run_ray_benchmark, tables
    from inferline.ray_backend import import_ray

    import_ray()  # a readable error, before anything runs, where Ray is not installed

    steps = _numbers(step_s, "--step-s")
    if len(steps) != 3:
        raise ConfigError(
            f"give three durations (low, high, low again), got {step_s!r}",
            source="<argument>",
            field="--step-s",
        )
    try:
        settings = RayBenchmarkSettings(
            slo_s=slo_s,
            rate_qps=rate,
            duration_s=duration_s,
            low_rate_qps=low_rate,
            high_rate_qps=high_rate,
            low_s=steps[0],
            high_s=steps[1],
            tail_s=steps[2],
            include_ray_serve=not no_ray_serve,
            seed=seed,
        )
    except ValueError as exc:
        raise ConfigError(str(exc), source="<argument>") from None
    out_dir = _out_dir(out, "ray")
    with _running(as_json, "running the Ray benchmark") as progress:
        figures = run_ray_benchmark(settings, out_dir=out_dir, progress=progress)
    _report(figures, as_json, tables)


@app.command("promise")
@user_errors
def promise(
    bundles: Annotated[
        list[Path] | None,
        typer.Argument(help="Bundle folders (default: the three real example pipelines)."),
    ] = None,
    loads: Annotated[
        str, typer.Option("--loads", help="Loads, as fractions of the machine's capacity.")
    ] = "0.5,0.8",
    duration_s: Annotated[
        float, typer.Option("--duration-s", help="Seconds of held-out arrivals per run.")
    ] = 60.0,
    repeats: Annotated[int, typer.Option("--repeats", help="Runs per load (medians).")] = 3,
    slo_s: Annotated[
        float | None,
        typer.Option(
            "--slo-s",
            help="Latency objective for every load, s (default: --slo-factor × the tightest).",
        ),
    ] = None,
    one_slo: Annotated[
        bool,
        typer.Option(
            "--one-slo", help="Serve every load at the capacity's SLO, not each at its tightest."
        ),
    ] = False,
    machine: Annotated[
        str,
        typer.Option(
            "--machine",
            help="The machine to plan for, as `inferline plan --machine` takes it "
            "(local, or cores=N[,fit=busy|shared|threads,...]).",
        ),
    ] = "local",
    max_rate: Annotated[
        float | None,
        typer.Option("--max-rate", help="Highest rate the capacity search tries, q/s."),
    ] = None,
    planning_duration_s: Annotated[
        float, typer.Option("--planning-duration-s", help="Length of each planning trace, s.")
    ] = 180.0,
    ramp_s: Annotated[
        float, typer.Option("--ramp-s", help="Length of the 0.4 → 0.8 × capacity ramp, s.")
    ] = 60.0,
    ramp_hold_s: Annotated[
        float, typer.Option("--ramp-hold-s", help="Flat load before and after the ramp, s.")
    ] = 5.0,
    no_ramp: Annotated[bool, typer.Option("--no-ramp", help="Skip the Tuner's ramp.")] = False,
    policy: Annotated[
        str | None,
        typer.Option("--policy", help="The Tuner's policy on the ramp (default: serve's)."),
    ] = None,
    warmup_s: Annotated[
        float, typer.Option("--warmup-s", help="Warm-up traffic before each run, s.")
    ] = 3.0,
    max_reruns: Annotated[
        int,
        typer.Option(
            "--max-reruns",
            help="Run again, at most this many times per load, a run during which other "
            "processes kept more than 0.25 cores busy or the hypervisor stole over 5 %.",
        ),
    ] = 2,
    no_replan: Annotated[
        bool,
        typer.Option(
            "--no-replan",
            help="Skip planning again from the profiles the engine calibrated (and serving "
            "that plan).",
        ),
    ] = False,
    profile_here: Annotated[
        bool,
        typer.Option(
            "--profile-here",
            help="Profile a copy of each bundle on this machine first (the bundles' "
            "profiles are from the machine they were taken on); about 1.5 min a bundle.",
        ),
    ] = False,
    plan_from: Annotated[
        str,
        typer.Option(
            "--plan-from",
            help="'calibrated': serve a first plan, plan from what the engine calibrated "
            "on it (profile, serve, calibrate, plan); 'isolated': from the bundle's profiles.",
        ),
    ] = "calibrated",
    calibration_s: Annotated[
        float,
        typer.Option("--calibration-s", help="How long the first plan serves, s."),
    ] = 60.0,
    slo_factor: Annotated[
        float,
        typer.Option(
            "--slo-factor",
            help="Without --slo-s, serve at this × the tightest SLO (with the margin, the "
            "plan's estimate is then ≤ 85 % of it).",
        ),
    ] = 1.0,
    no_bias_correction: Annotated[
        bool,
        typer.Option(
            "--no-bias-correction",
            help="Plan from the calibrated profiles alone: do not correct plans and "
            "estimates by the calibration serve's measured ÷ estimated P99.",
        ),
    ] = False,
    bias_from_first_plan: Annotated[
        bool,
        typer.Option(
            "--bias-from-first-plan",
            help="Measure the tail bias on the first plan's serve instead of on a second "
            "serve of a plan made from the calibrated profiles (one calibration serve less "
            "per bundle; the first plan's ratio was no guide to the levels').",
        ),
    ] = False,
    no_live_bias: Annotated[
        bool,
        typer.Option(
            "--no-live-bias",
            help="Judge each run's estimate corrected by the Planner's tail bias instead of "
            "by the measured ÷ estimated P99 the served plan itself showed on the window "
            "before the run (the engine's live calibration).",
        ),
    ] = False,
    priming_s: Annotated[
        float,
        typer.Option(
            "--priming-s",
            help="Seconds served before each load's first run to learn the plan's own tail "
            "ratio on (0: the first run is judged with the Planner's tail bias).",
        ),
    ] = 20.0,
    margin: Annotated[
        float | None,
        typer.Option(
            "--margin",
            help="Plan for an estimated P99 ≤ SLO × (1 − margin): headroom for the "
            "machine's speed moving between minutes; 0 plans to the SLO itself "
            "(default: 0.15, the best measured; docs/planner.md).",
        ),
    ] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    out: Annotated[
        Path | None,
        typer.Option("-o", "--out", help="Also write promise.json into this folder."),
    ] = None,
    as_json: bool = JSON_OPTION,
) -> None:
    """Does a feasible plan hold when served? Capacity, a binding SLO, estimated against
    measured P99 and misses at 50 % and 80 % of capacity, and a ramp with the Tuner."""
    from inferline.bench.promise import (
        DEFAULT_BUNDLES,
        PlanFrom,
        PromiseSettings,
        run_promise_benchmark,
        tables,
    )
    from inferline.profiles import parse_machine

    with as_options(
        {"loads": "--loads", "duration_s": "--duration-s", "repeats": "--repeats",
         "slo_s": "--slo-s", "machine": "--machine", "max_rate_qps": "--max-rate",
         "planning_duration_s": "--planning-duration-s", "ramp_s": "--ramp-s",
         "warmup_s": "--warmup-s", "ramp_hold_s": "--ramp-hold-s", "bundles": "BUNDLES",
         "max_reruns": "--max-reruns", "plan_from": "--plan-from",
         "calibration_s": "--calibration-s", "margin": "--margin",
         "slo_factor": "--slo-factor", "priming_s": "--priming-s"}
    ):  # fmt: skip
        settings = PromiseSettings(
            bundles=tuple(bundles) if bundles else DEFAULT_BUNDLES,
            loads=_numbers(loads, "--loads"),
            duration_s=duration_s,
            repeats=repeats,
            slo_s=slo_s,
            slo_per_load=not one_slo,
            machine=parse_machine(machine),
            max_rate_qps=max_rate,
            planning_duration_s=planning_duration_s,
            ramp=not no_ramp,
            ramp_s=ramp_s,
            ramp_hold_s=ramp_hold_s,
            policy=policy,
            warmup_s=warmup_s,
            max_reruns=max_reruns,
            replan=not no_replan,
            profile_here=profile_here,
            plan_from=cast(PlanFrom, plan_from),
            calibration_s=calibration_s,
            slo_factor=slo_factor,
            correct_bias=not no_bias_correction,
            bias_serve=not bias_from_first_plan,
            live_bias=not no_live_bias,
            priming_s=priming_s,
            seed=seed,
        )
        if margin is not None:
            settings = dataclasses.replace(settings, margin=margin)
    if policy is not None:
        from inferline.tuner import policy_spec

        with as_options({"policy": "--policy"}):
            policy_spec(policy)
    quiet = stdout_to_stderr() if as_json else contextlib.nullcontext()
    with quiet, Progress(console=stdout, disable=as_json, transient=True) as bar:
        task = bar.add_task("the promise", total=None)

        def progress(text: str, done: int, total: int) -> None:
            bar.update(task, description=text, completed=done, total=total)

        figures = run_promise_benchmark(settings, out_dir=out, progress=progress)
    _report(figures, as_json, tables)
    if any("infeasible" in b for b in figures["bundles"]):
        raise typer.Exit(3)
