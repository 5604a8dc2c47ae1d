"""``inferline profile``: measure a bundle's stages and routing, and the engine's overhead.

Steps (docs/profiler.md): call the bundle's samples function; run the samples through
the real stages in replica workers to record each query's path and capture each stage's
inputs; time every stage alone on every hardware type of the catalogue that exists on
this machine across batch sizes; serve the DAG with no-op stages to measure the
engine's own overhead; write ``profiles.yaml`` and ``paths.yaml``. A re-run reuses
every measurement whose key is unchanged, unless ``force``: a profile point's is its
stage, hardware and batch size, the stage's import path and module source, the sample
bodies, the replica's threads and device, the idle time before a batch, the inferline
version and the machine (docs/profiler.md, "Caching").
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import yaml

from inferline._bundle import BundleFiles, read_bundle_files
from inferline.engine import ReplicaResources, TensorSpec, resources_for
from inferline.errors import ConfigError, InferLineError
from inferline.pipeline import (
    MeasuredPaths,
    Pipeline,
    load_measured_paths,
    measured_paths_to_mapping,
)
from inferline.profiler._errors import ProfilerError
from inferline.profiler._harness import StageWorker
from inferline.profiler._measure import measure_stage
from inferline.profiler._overhead import OverheadOptions, measure_overhead
from inferline.profiler._probe import machine_speed_probe, speed_drift
from inferline.profiler._samples import (
    encode_bodies,
    load_samples,
    module_source_hash,
    parse_requests,
)
from inferline.profiler._stats import (
    LatencySummary,
    RepetitionPolicy,
    batch_sizes,
    cached_points,
    code_key,
    digest,
    json_digest,
    machine_fingerprint,
    measured_on,
    measurement_key,
    scheduling_priority,
)
from inferline.profiler._trace import run_samples, summarise_paths
from inferline.profiles import (
    BatchProfile,
    EngineOverhead,
    HardwareCatalogue,
    ProfilePoint,
    Profiles,
    load_hardware,
    load_profiles,
    profiles_to_mapping,
)

__all__ = [
    "NullProgress",
    "ProfileOptions",
    "ProfileProgress",
    "ProfileReport",
    "StageProfileReport",
    "available_hardware",
    "capture_and_time",
    "profile_bundle",
    "run_async",
]

T = TypeVar("T")

#: Bump when the way the engine overhead is measured changes: cached figures are redone.
_OVERHEAD_METHOD = "3"

_PROFILES_HEADER = """\
# Written by `inferline profile` (docs/profiler.md); the format is in docs/bundles.md.
# Each point is the round trip of one batch of captured sample inputs through the
# engine's replica worker (socketpair + pickle, predict and route in the worker):
# what a replica is busy for. `engine_overhead` is the serving engine's own time on
# top (per batch and per query), which the Estimator adds. A re-run reuses points
# whose key (code_hash: the stage's import path and module source, the samples, the
# replica's threads, the idle time, the inferline version) and machine are unchanged;
# `--force` re-measures.
"""
_PATHS_HEADER = """\
# Written by `inferline profile` (docs/profiler.md): the routing the real stages chose
# on the bundle's sample queries. pipeline.yaml's `paths:` names this file to plan with
# these probabilities; `sample_paths[i]` is the path (index into `paths`) of sample i.
"""


class ProfileProgress(Protocol):
    """Where the Profiler reports progress (the command line draws rich progress bars)."""

    def start(self, description: str, total: int | None) -> int: ...

    def advance(self, task: int, amount: int = 1, description: str | None = None) -> None: ...

    def finish(self, task: int) -> None: ...

    def note(self, message: str) -> None: ...


class NullProgress:
    """Reports nothing."""

    def start(self, description: str, total: int | None) -> int:
        return 0

    def advance(self, task: int, amount: int = 1, description: str | None = None) -> None:
        pass

    def finish(self, task: int) -> None:
        pass

    def note(self, message: str) -> None:
        pass


@dataclass(frozen=True)
class ProfileOptions:
    """What ``inferline profile`` measures and how (times in seconds)."""

    hardware: tuple[str, ...] = ()  # empty: every catalogue type that exists here
    max_batch: int = 32
    samples: int = 500
    seed: int = 0
    force: bool = False
    repetitions: RepetitionPolicy = field(default_factory=RepetitionPolicy)
    overhead: bool = True
    overhead_options: OverheadOptions = field(default_factory=OverheadOptions)
    start_timeout_s: float = 300.0
    batch_timeout_s: float = 300.0
    sample_chunk: int = 16
    nice: int | None = None  # scheduling priority of the Profiler and its processes

    def __post_init__(self) -> None:
        batch_sizes(self.max_batch)  # checks it
        if self.samples < 1:
            raise ConfigError(
                f"must be at least 1, got {self.samples}", source="<argument>", field="--samples"
            )


@dataclass(frozen=True)
class StageProfileReport:
    stage: str
    hardware: str
    threads: int
    points: tuple[ProfilePoint, ...]
    measured_sizes: tuple[int, ...]
    reused_sizes: tuple[int, ...]


@dataclass(frozen=True)
class ProfileReport:
    """What a profiling run measured, reused and wrote."""

    bundle: Path
    profiles_file: Path
    paths_file: Path
    paths: MeasuredPaths
    paths_reused: bool
    profiles: tuple[StageProfileReport, ...]
    skipped_hardware: dict[str, str]
    overhead: EngineOverhead | None
    overhead_reused: bool
    overhead_details: dict[str, Any]
    pipeline_names_paths: bool
    wall_s: float
    #: The machine-speed probe before and after measuring (s), when anything was measured.
    probe_s: tuple[float, float] | None = None

    @property
    def speed_drift(self) -> float | None:
        """How much slower (positive) the machine ran at the end than at the start."""
        return None if self.probe_s is None else speed_drift(*self.probe_s)

    def summary(self) -> dict[str, Any]:
        return {
            "bundle": str(self.bundle),
            "profiles_file": str(self.profiles_file),
            "paths_file": str(self.paths_file),
            "pipeline_names_paths_file": self.pipeline_names_paths,
            "samples": self.paths.samples,
            "seed": self.paths.seed,
            "paths_reused": self.paths_reused,
            "edges": [
                {"from": a, "to": b, "probability": p, "taken": self.paths.edge_counts[(a, b)][0]}
                for (a, b), p in self.paths.edge_probability.items()
            ],
            "scale_factors": dict(self.paths.scale_factors),
            "profiles": [
                {
                    "stage": r.stage,
                    "hardware": r.hardware,
                    "threads": r.threads,
                    "measured_batch_sizes": list(r.measured_sizes),
                    "reused_batch_sizes": list(r.reused_sizes),
                    "points": [
                        {
                            "batch_size": p.batch_size,
                            "median_s": p.median_s,
                            "p99_s": p.p99_s,
                            "mean_s": p.mean_s,
                            "predict_median_s": p.predict_median_s,
                            "reps": p.reps,
                        }
                        for p in r.points
                    ],
                }
                for r in self.profiles
            ],
            "skipped_hardware": dict(self.skipped_hardware),
            "machine_probe_s": list(self.probe_s) if self.probe_s is not None else None,
            "machine_speed_drift": self.speed_drift,
            "engine_overhead": None
            if self.overhead is None
            else {
                "per_batch_s": self.overhead.per_batch_s,
                "per_query_s": self.overhead.per_query_s,
                "per_query_p99_s": self.overhead.per_query_p99_s,
                "reused": self.overhead_reused,
                **({"details": self.overhead_details} if self.overhead_details else {}),
            },
            "wall_s": self.wall_s,
        }


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on a fresh event loop (uvloop when installed, as the engine does)."""
    from inferline.engine import run_loop

    result: T = run_loop(main)
    return result


def _cuda_available() -> tuple[bool, str]:
    if importlib.util.find_spec("torch") is None:
        return False, "torch is not installed"
    import torch

    if not torch.cuda.is_available():
        return False, "no CUDA device here (torch.cuda.is_available() is False)"
    return True, ""


def available_hardware(
    catalogue: HardwareCatalogue, wanted: Sequence[str] = (), cores: int | None = None
) -> tuple[list[tuple[str, ReplicaResources]], dict[str, str]]:
    """The catalogue's types that exist on this machine (with their replica resources),
    and why each other one is skipped. ``wanted`` (if given) restricts and must exist."""
    cores = cores or os.cpu_count() or 1
    for name in wanted:
        if name not in catalogue.names:
            raise ConfigError(
                f"unknown hardware '{name}'; the catalogue has {', '.join(catalogue.names)}",
                source="<argument>",
                field="--hardware",
            )
    usable: list[tuple[str, ReplicaResources]] = []
    skipped: dict[str, str] = {}
    cuda: tuple[bool, str] | None = None
    for hw in catalogue:
        if wanted and hw.name not in wanted:
            skipped[hw.name] = "not asked for (--hardware)"
            continue
        if hw.max_units == 0:
            skipped[hw.name] = "max_units is 0 in the catalogue"
            continue
        requested = resources_for(hw.name, cores=1 << 20)
        if requested.device == "cuda":
            cuda = cuda or _cuda_available()
            if not cuda[0]:
                skipped[hw.name] = cuda[1]
                continue
        elif hw.accelerator:
            skipped[hw.name] = "an accelerator type with no device on this machine"
            continue
        elif requested.threads > cores:
            skipped[hw.name] = f"needs {requested.threads} threads; this machine has {cores} cores"
            continue
        usable.append((hw.name, resources_for(hw.name, cores=cores)))
    return usable, skipped


def _load_existing(files: BundleFiles, hardware: HardwareCatalogue, force: bool) -> Profiles | None:
    if not files.profiles_file.exists():
        return None
    try:
        return load_profiles(files.profiles_file, hardware, files.pipeline.stage_names)
    except InferLineError as exc:
        if force:
            return None
        raise ConfigError(
            f"the existing profiles file cannot be read ({exc}); fix it, delete it or "
            "re-run with --force to start afresh",
            source=files.profiles_file,
        ) from None


def _load_existing_paths(path: Path, pipeline: Pipeline) -> MeasuredPaths | None:
    if not path.exists():
        return None
    try:
        return load_measured_paths(path, pipeline)
    except InferLineError:
        return None  # stale or broken: measured afresh and overwritten


def _overhead_key(
    pipeline: Pipeline, paths_key: str, machine: str, options: OverheadOptions
) -> str:
    """What the engine overhead depends on: the DAG, the sample paths, the machine, how."""
    from inferline import __version__

    structure = {
        "stages": list(pipeline.stage_names),
        "edges": [[e.source, e.target] for e in pipeline.edges],
        "rates_qps": list(options.rates_qps),
        "duration_s": options.duration_s,
        "rounds": options.rounds,
    }
    return digest([json_digest(structure), paths_key, machine, __version__, _OVERHEAD_METHOD])


async def _start_workers(workers: Sequence[StageWorker]) -> None:
    """Start every worker (setups run in parallel); the first failure is raised."""
    results = await asyncio.gather(*(w.start() for w in workers), return_exceptions=True)
    for r in results:
        if isinstance(r, BaseException):
            raise r


async def _close(workers: Sequence[StageWorker]) -> None:
    await asyncio.gather(*(w.close() for w in workers), return_exceptions=True)


def profile_bundle(
    bundle: str | Path,
    options: ProfileOptions | None = None,
    progress: ProfileProgress | None = None,
) -> ProfileReport:
    """Profile ``bundle`` (a folder or its pipeline.yaml) and write its profiles and paths."""
    options = options or ProfileOptions()
    with scheduling_priority(options.nice):
        return _profile_bundle(bundle, options, progress or NullProgress())


def _profile_bundle(
    bundle: str | Path, options: ProfileOptions, progress: ProfileProgress
) -> ProfileReport:
    started = time.monotonic()
    files = read_bundle_files(bundle)
    pipeline, spec, root = files.pipeline, files.spec, files.root
    if spec.samples is None:
        raise ConfigError(
            'the Profiler needs sample queries: add `samples: "module:function"` naming a '
            "function (n, seed) -> list of request bodies (docs/bundles.md)",
            source=files.pipeline_file,
            field="samples",
        )
    models = {s.name: s.model for s in pipeline.stages}
    missing = [name for name, model in models.items() if not model]
    if missing:
        raise ConfigError(
            f"stage(s) {', '.join(missing)} have no 'model' import path; the Profiler runs "
            "each stage's class",
            source=files.pipeline_file,
            field="stages",
        )
    hardware = load_hardware(files.hardware_file)
    existing = _load_existing(files, hardware, options.force)
    paths_file = files.paths_file or root / "paths.yaml"
    sizes = batch_sizes(options.max_batch)
    usable, skipped = available_hardware(hardware, options.hardware)
    from inferline import __version__

    machine = machine_fingerprint()
    # The samples are always called: what they return is part of every cache key.
    task = progress.start(f"calling {spec.samples}({options.samples}, {options.seed})", 1)
    bodies = load_samples(root, spec.samples, options.samples, options.seed)
    progress.finish(task)
    samples_hash = json_digest(bodies)
    stage_code = {
        s: code_key(str(models[s]), module_source_hash(str(models[s]), root))
        for s in pipeline.stage_names
    }
    paths_key = digest(
        [spec.samples, samples_hash, *(stage_code[s] for s in pipeline.stage_names), __version__]
    )
    point_key = {
        (stage, hw_name): measurement_key(
            stage_code[stage],
            samples_hash,
            resources.threads,
            resources.device,
            options.repetitions.idle_s,
            __version__,
        )
        for hw_name, resources in usable
        for stage in pipeline.stage_names
    }

    reuse: dict[tuple[str, str], dict[int, ProfilePoint]] = {}
    todo: dict[tuple[str, str], list[int]] = {}
    for hw_name, _ in usable:
        for stage in pipeline.stage_names:
            key = (stage, hw_name)
            prior = None if options.force or existing is None else existing.entries.get(key)
            cached = cached_points(prior, point_key[key], machine, sizes)
            reuse[key] = cached
            left = [b for b in sizes if b not in cached]
            if left:
                todo[key] = left
    old_paths = None if options.force else _load_existing_paths(paths_file, pipeline)
    paths_ok = (
        old_paths is not None
        and old_paths.samples == options.samples
        and old_paths.seed == options.seed
        and old_paths.code_hash == paths_key
    )
    old_overhead = None if existing is None else existing.overhead
    overhead_key = _overhead_key(pipeline, paths_key, machine, options.overhead_options)
    overhead_cached = (
        not options.force and old_overhead is not None and old_overhead.key == overhead_key
    )
    need_run = bool(todo) or not paths_ok
    when = measured_on()
    measured: dict[tuple[str, str], dict[int, LatencySummary]] = {}
    probe_before = machine_speed_probe() if need_run else None
    if need_run:
        paths, measured = run_async(
            capture_and_time(
                pipeline,
                root,
                bodies,
                usable,
                todo,
                options,
                progress,
                paths_meta={
                    "samples_function": spec.samples,
                    "code_hash": paths_key,
                    "samples_hash": samples_hash,
                    "measured_on": when,
                },
            )
        )
    else:
        assert old_paths is not None
        paths = old_paths
        progress.note(
            f"routing: reusing {paths_file.name} (same samples, stage import paths and code)"
        )

    overhead = old_overhead
    overhead_reused = False
    details: dict[str, Any] = {}
    if options.overhead:
        if overhead_cached:
            overhead_reused = True
            progress.note("engine overhead: reusing the measured one (same DAG and machine)")
        else:
            task = progress.start("engine overhead: no-op DAG on the real engine", None)
            result = measure_overhead(
                pipeline,
                paths,
                bodies,
                options=options.overhead_options,
                key=overhead_key,
                measured_on=when,
                run_async=run_async,
                status=lambda msg: progress.advance(task, 0, f"engine overhead: {msg}"),
            )
            progress.finish(task)
            overhead, details = result.overhead, result.details

    entries: dict[tuple[str, str], BatchProfile] = {}
    reports = []
    threads = dict(usable)
    for stage in pipeline.stage_names:
        for hw_name in hardware.names:
            key = (stage, hw_name)
            if hw_name in threads:
                fresh = measured.get(key, {})
                points = tuple(fresh[b].point(b) if b in fresh else reuse[key][b] for b in sizes)
                entries[key] = BatchProfile(
                    stage=stage,
                    hardware=hw_name,
                    points=points,
                    source=_profile_source(options, paths.samples),
                    measured_on=measured_on(threads[hw_name].threads)
                    if fresh
                    else (existing.entries[key].measured_on if existing is not None else when),
                    code_hash=point_key[key],
                    machine=machine,
                )
                reports.append(
                    StageProfileReport(
                        stage,
                        hw_name,
                        threads[hw_name].threads,
                        points,
                        tuple(sorted(fresh)),
                        tuple(sorted(reuse[key])),
                    )
                )
            elif existing is not None and key in existing.entries:
                entries[key] = existing.entries[key]  # another machine's or a published one
    for stage in pipeline.stage_names:
        if not any(s == stage for s, _ in entries):
            raise ProfilerError(
                f"stage '{stage}' has no profile: no hardware of {files.hardware_file.name} "
                f"could be measured here ({'; '.join(f'{k}: {v}' for k, v in skipped.items())})",
                stage=stage,
            )
    written = Profiles(hardware, entries, str(files.profiles_file), overhead)
    _write_yaml(files.profiles_file, _PROFILES_HEADER, profiles_to_mapping(written))
    load_profiles(files.profiles_file, hardware, pipeline.stage_names)  # reads back
    if need_run:
        _write_yaml(paths_file, _PATHS_HEADER, measured_paths_to_mapping(paths, pipeline))
    probe = None if probe_before is None else (probe_before, machine_speed_probe())
    return ProfileReport(
        bundle=root,
        profiles_file=files.profiles_file,
        paths_file=paths_file,
        paths=paths,
        paths_reused=not need_run,
        profiles=tuple(reports),
        skipped_hardware=skipped,
        overhead=overhead,
        overhead_reused=overhead_reused,
        overhead_details=details,
        pipeline_names_paths=files.spec.paths is not None,
        wall_s=time.monotonic() - started,
        probe_s=probe,
    )


def _profile_source(options: ProfileOptions, samples: int) -> str:
    r = options.repetitions
    return (
        f"inferline profile: round trip of a batch of captured inputs ({samples} sample "
        f"queries) through the engine's replica worker; {r.warmup} warm-up batches, then "
        f">= {r.min_reps} timed (more until {r.min_time_s:g} s, at most {r.max_reps}) per size, "
        f"each after {r.idle_s * 1000:g} ms idle"
    )


def _write_yaml(path: Path, header: str, body: dict[str, Any]) -> None:
    """Rows (profile points, edges, lists of numbers) in flow style, the rest as blocks."""
    text = yaml.safe_dump(body, sort_keys=False, width=100, default_flow_style=None)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(header + text, encoding="utf-8")
    tmp.replace(path)


async def capture_and_time(
    pipeline: Pipeline,
    root: Path,
    bodies: list[dict[str, Any]],
    usable: Sequence[tuple[str, ReplicaResources]],
    todo: dict[tuple[str, str], list[int]],
    options: ProfileOptions,
    progress: ProfileProgress,
    paths_meta: dict[str, str],
) -> tuple[MeasuredPaths, dict[tuple[str, str], dict[int, LatencySummary]]]:
    """Route the samples through one worker per stage (recording paths and capturing each
    stage's inputs), then time each (stage, hardware) of ``todo`` at its batch sizes."""
    models = {s.name: s.model for s in pipeline.stages}
    measured: dict[tuple[str, str], dict[int, LatencySummary]] = {}
    first_hw, first_res = usable[0] if usable else ("cpu-1", resources_for("cpu-1"))

    def worker(stage: str, hw: str, res: ReplicaResources) -> StageWorker:
        return StageWorker(
            stage,
            str(models[stage]),
            hw,
            res,
            pipeline.successors(stage),
            root,
            start_timeout_s=options.start_timeout_s,
        )

    live: list[StageWorker] = []
    try:
        first = {s: worker(s, first_hw, first_res) for s in pipeline.stage_names}
        live.extend(first.values())
        task = progress.start(f"starting {len(first)} stage workers on {first_hw}", None)
        await _start_workers(list(first.values()))
        progress.finish(task)
        declared: dict[str, TensorSpec] = {}
        for s in pipeline.sources:
            for name, datatype, shape in first[s].info.get("inputs", ()):
                declared.setdefault(name, TensorSpec(name, datatype, tuple(shape)))
        requests = parse_requests(
            encode_bodies(bodies), declared, f"samples function '{paths_meta['samples_function']}'"
        )
        task = progress.start(f"routing {len(requests)} sample queries through the stages", None)
        run = await run_samples(
            pipeline,
            first,
            requests,
            chunk=options.sample_chunk,
            on_batch=lambda stage, n: progress.advance(task, n, f"routing samples: {stage}"),
        )
        progress.finish(task)
        unreached = [s for s in pipeline.stage_names if not run.inputs[s]]
        if unreached:
            raise ProfilerError(
                f"no sample query reached stage(s) {', '.join(unreached)}, so there is nothing "
                f"to time them on; make {paths_meta['samples_function']} produce queries that "
                "take every branch (or raise --samples)",
                stage=unreached[0],
            )
        paths = summarise_paths(pipeline, run, seed=options.seed, **paths_meta)
        for hw, res in usable:
            for stage in pipeline.stage_names:
                sizes = todo.get((stage, hw))
                if not sizes:
                    continue
                if hw == first_hw:
                    w = first[stage]
                else:
                    w = worker(stage, hw, res)
                    live.append(w)
                    await w.start()
                name = f"{stage} on {hw}"
                task = progress.start(name, len(sizes))

                def done(b: int, s: LatencySummary, task: int = task, name: str = name) -> None:
                    progress.advance(task, 1, f"{name}: batch {b} median {s.median_s * 1e3:.2f} ms")

                measured[(stage, hw)] = await measure_stage(
                    w,
                    run.inputs[stage],
                    sizes,
                    options.repetitions,
                    timeout_s=options.batch_timeout_s,
                    on_size=done,
                )
                progress.finish(task)
                await w.close()
                live.remove(w)
        return paths, measured
    finally:
        await _close(live)
