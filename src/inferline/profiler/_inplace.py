"""``inferline profile --in-place``: stage profiles taken under serving conditions.

Isolated timings are not serving conditions: stages served side by side (and next to the
front-end) run slower than alone. Here the pipeline is served on the real engine with a
plan, Poisson traffic carrying the bundle's sample payloads is replayed at a few rates
(so the stages run the batch sizes that load brings), and the engine's live calibration
(measured ``predict`` times per stage and batch size; :mod:`inferline.profiles`
``calibrate_profiles``) is read back and written as the profiles: sizes run often enough
get their measured median and P99, the others the isolated profile scaled by the stage's
measured/profiled ratio (docs/profiler.md, "Profiles taken in place").
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from inferline._bundle import Bundle, load_bundle, load_plan_for, read_bundle_files
from inferline.errors import ConfigError, InferLineError
from inferline.pipeline import PipelineConfig, StageConfig, save_config
from inferline.profiler._errors import ProfilerError
from inferline.profiler._samples import encode_bodies, load_samples
from inferline.profiler._stats import scheduling_priority
from inferline.profiles import Profiles, profiles_to_mapping

__all__ = ["InPlaceOptions", "InPlaceReport", "capacity_qps", "profile_in_place"]


@dataclass(frozen=True)
class InPlaceOptions:
    """How the in-place profile loads the served pipeline (times in seconds).

    ``rates``: fractions of the plan's estimated capacity (:func:`capacity_qps`), or with
    ``rates_qps`` the rates themselves.
    """

    rates: tuple[float, ...] = (0.3, 0.6, 0.9)
    rates_qps: tuple[float, ...] = ()
    duration_s: float = 10.0
    warmup_s: float = 2.0
    config: Path | None = None
    output: Path | None = None
    samples: int = 200
    seed: int = 0
    start_timeout_s: float = 300.0
    nice: int | None = None

    def __post_init__(self) -> None:
        def bad(name: str, problem: str) -> ConfigError:
            return ConfigError(problem, source="<argument>", field=name)

        if self.rates_qps:
            if not all(math.isfinite(r) and r > 0 for r in self.rates_qps):
                raise bad("--rates-qps", f"rates must be positive q/s, got {list(self.rates_qps)}")
        elif not self.rates or not all(0 < r <= 1.5 for r in self.rates):
            raise bad(
                "--rates",
                f"fractions of the estimated capacity in (0, 1.5], got {list(self.rates)}",
            )
        if not self.duration_s > 0:
            raise bad("--duration-s", f"must be positive, got {self.duration_s}")
        if not self.warmup_s >= 0:
            raise bad("--warmup-s", f"must be >= 0, got {self.warmup_s}")
        if self.samples < 1:
            raise bad("--samples", f"must be at least 1, got {self.samples}")


@dataclass(frozen=True)
class InPlaceReport:
    """What an in-place profile served, measured and wrote."""

    bundle: Path
    pipeline: str
    config: PipelineConfig
    capacity_qps: float
    rates_qps: tuple[float, ...]
    runs: tuple[dict[str, Any], ...]
    stages: dict[str, Any]
    profiles: Profiles
    profiles_file: Path
    wall_s: float

    def summary(self) -> dict[str, Any]:
        return {
            "bundle": str(self.bundle),
            "pipeline": self.pipeline,
            "in_place": True,
            "config": {
                name: {"hardware": c.hardware, "batch_size": c.batch_size, "replicas": c.replicas}
                for name, c in self.config.stages.items()
            },
            "capacity_qps": self.capacity_qps,
            "rates_qps": list(self.rates_qps),
            "runs": list(self.runs),
            "stages": self.stages,
            "profiles_file": str(self.profiles_file),
            "wall_s": self.wall_s,
        }


def capacity_qps(bundle: Bundle, config: PipelineConfig) -> float:
    """The highest rate the plan sustains by its profiles: each stage's replicas running
    full batches, over the fraction of queries that reach it; the smallest over stages."""
    factors = bundle.pipeline.scale_factors
    out = math.inf
    for name, c in config.stages.items():
        profile = bundle.profiles.get(name, c.hardware)
        per_replica = profile.throughput_qps(c.batch_size)
        share = factors.get(name, 1.0)
        if share > 0:
            out = min(out, c.replicas * per_replica / share)
    return out


def _default_config(bundle: Bundle) -> PipelineConfig:
    """One replica per stage, on its first profiled hardware, batches of up to 8."""
    stages = {}
    for name in bundle.pipeline.stage_names:
        hardware = bundle.profiles.hardware_for(name)[0]
        top = bundle.profiles.get(name, hardware).max_batch_size
        stages[name] = StageConfig(hardware=hardware, batch_size=min(8, top), replicas=1)
    return PipelineConfig(stages=stages)


def profile_in_place(
    bundle_dir: str | Path,
    options: InPlaceOptions | None = None,
    status: Callable[[str], None] | None = None,
) -> InPlaceReport:
    """Serve ``bundle_dir`` with its plan, replay its samples at each rate, and write the
    profiles the engine calibrated (to ``options.output``, default the bundle's
    profiles file). The bundle needs isolated profiles (``inferline profile``) first:
    they size the rates and fill in the batch sizes the load never produced."""
    options = options or InPlaceOptions()
    with scheduling_priority(options.nice):
        return _profile_in_place(bundle_dir, options, status or (lambda _: None))


def _profile_in_place(
    bundle_dir: str | Path, options: InPlaceOptions, status: Callable[[str], None]
) -> InPlaceReport:
    from inferline.engine import fetch_calibration, replay, replay_summary
    from inferline.engine.process import start_engine

    started = time.monotonic()
    files = read_bundle_files(bundle_dir)
    if not files.profiles_file.is_file():
        raise ConfigError(
            "an in-place profile starts from the isolated one: run `inferline profile` "
            "(without --in-place) first",
            source=files.profiles_file,
        )
    bundle = load_bundle(bundle_dir)
    if bundle.samples is None:
        raise ConfigError(
            "an in-place profile replays the bundle's sample queries: give pipeline.yaml "
            "`samples: module:function`",
            source=files.pipeline_file,
            field="samples",
        )
    plan_file = options.config or (bundle.root / "plan.yaml")
    config = load_plan_for(plan_file, bundle) if plan_file.is_file() else _default_config(bundle)
    capacity = capacity_qps(bundle, config)
    if options.rates_qps:
        rates = options.rates_qps
    else:
        if not math.isfinite(capacity):
            raise ConfigError("the plan's capacity is unknown; give --rates-qps")
        rates = tuple(f * capacity for f in options.rates)
    bodies = encode_bodies(load_samples(bundle.root, bundle.samples, options.samples, options.seed))
    rng = np.random.default_rng([options.seed, 17])
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="inferline-inplace-") as tmp:
        served_plan = Path(tmp) / "plan.yaml"
        save_config(config, served_plan)
        status(f"starting the engine ({sum(c.replicas for c in config.stages.values())} replicas)")
        try:
            with start_engine(
                bundle.root,
                served_plan,
                "--slo-s",
                "60",
                "--max-queue",
                "1000000",
                "--calibration-window-s",
                "86400",  # every batch since the reset below
                start_timeout_s=options.start_timeout_s,
            ) as engine:
                if options.warmup_s > 0:
                    status(f"warming up for {options.warmup_s:g} s")
                    _replay(engine.url, rates[0], options.warmup_s, bodies, rng, bundle, replay)
                engine.reset_stats()
                for rate in rates:
                    status(f"serving {rate:.1f} q/s for {options.duration_s:g} s")
                    result = _replay(
                        engine.url, rate, options.duration_s, bodies, rng, bundle, replay
                    )
                    measured = replay_summary(result)
                    runs.append(
                        {
                            "rate_qps": rate,
                            "queries": measured["sent"],
                            "errors": measured["errors"],
                            "p50_s": measured["p50_s"],
                            "p99_s": measured["p99_s"],
                        }
                    )
                report = fetch_calibration(engine.url)
        except InferLineError:
            raise
        except (OSError, RuntimeError, TimeoutError) as exc:
            raise ProfilerError(f"could not serve the plan: {exc}") from None
    where = ", ".join(f"{r:.1f}" for r in rates) + " q/s"
    if not options.rates_qps:
        fractions = ", ".join(f"{f:g}" for f in options.rates)
        where += f" ({fractions} of its capacity by the isolated profiles, {capacity:.1f} q/s)"
    source = (
        f"inferline profile --in-place: predict times measured on the engine serving "
        f"{config_text(config)} at {where}, {options.duration_s:g} s each"
    )
    entries = dict(report.profiles.entries)
    for name, stage in report.stages.items():
        key = (name, config.stages[name].hardware)
        if stage.get("ratio") is not None and key in entries:  # else kept as isolated
            measured_on = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")
            entries[key] = dataclasses.replace(entries[key], source=source, measured_on=measured_on)
    profiles = Profiles(
        report.profiles.hardware, entries, report.profiles.source, report.profiles.overhead
    )
    out = options.output or files.profiles_file
    header = (
        f"# Taken in place (inferline profile --in-place) at {where}:\n"
        "# each stage's predict times measured while the pipeline was served; batch sizes the\n"
        "# load never produced are the isolated profile scaled by the stage's measured ratio.\n"
    )
    if (report.raw.get("frontend") or {}).get("calibrated"):
        header += "# engine_overhead: the front-end's time per query, measured under that load.\n"
    text = yaml.safe_dump(
        profiles_to_mapping(profiles), sort_keys=False, width=100, default_flow_style=None
    )
    try:
        out.write_text(header + text, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write the profiles ({exc.strerror})", source=out) from None
    return InPlaceReport(
        bundle=bundle.root,
        pipeline=bundle.pipeline.name,
        config=config,
        capacity_qps=capacity,
        rates_qps=tuple(rates),
        runs=tuple(runs),
        stages=report.stages,
        profiles=profiles,
        profiles_file=out,
        wall_s=time.monotonic() - started,
    )


def config_text(config: PipelineConfig) -> str:
    """``stage: replicas x hardware (batch b)`` for each stage."""
    return ", ".join(
        f"{name} {c.replicas}x{c.hardware} (batch {c.batch_size})"
        for name, c in config.stages.items()
    )


def _replay(
    url: str,
    rate: float,
    duration_s: float,
    bodies: list[bytes],
    rng: np.random.Generator,
    bundle: Bundle,
    replay: Any,
) -> Any:
    n = max(1, int(rate * duration_s))
    arrivals = np.cumsum(rng.exponential(1.0 / rate, n))
    chosen = [bodies[i] for i in rng.integers(0, len(bodies), n)]
    return replay(url, arrivals, chosen, slo_s=60.0, model=bundle.pipeline.name, timeout_s=60.0)
