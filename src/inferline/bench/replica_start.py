"""``inferline bench replica-start``: what one scale-up costs, forked against fresh.

A replica that the Tuner adds helps only once it is ready, and on a small machine the
CPU it burns while starting is taken from the replicas already serving. This serves a
bundle with one replica per stage, then adds and removes one replica of the chosen
stage ``repeats`` times, once with replicas forked from the stage's template process and
once with each replica a fresh interpreter, and reports per mode the median activation
time (request → ready) and the median CPU seconds the new process used to get there.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.table import Table

from inferline import Bundle, load_bundle
from inferline.engine import Engine, EngineOptions
from inferline.errors import ConfigError
from inferline.pipeline import PipelineConfig, StageConfig

__all__ = ["run_replica_start_benchmark", "tables"]

_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of ``pid`` so far (Linux /proc), None elsewhere."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            fields = f.read().rpartition(")")[2].split()  # the fields after the command name
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _TICKS_PER_S


def _plan(pipeline_stages: Sequence[str], hardware: str, stage: str, extra: int) -> PipelineConfig:
    return PipelineConfig(
        stages={
            name: StageConfig(
                hardware=hardware, batch_size=1, replicas=1 + (extra if name == stage else 0)
            )
            for name in pipeline_stages
        }
    )


async def _one_mode(
    bundle: Bundle, stage: str, hardware: str, repeats: int, fork: bool
) -> dict[str, Any]:
    names = bundle.pipeline.stage_names
    engine = Engine(
        bundle.pipeline,
        _plan(names, hardware, stage, 0),
        EngineOptions(fork_replicas=fork),
        bundle_root=bundle.root,
    )
    started = time.perf_counter()
    await engine.start()
    start_s = time.perf_counter() - started
    activation: list[float] = []
    cpu: list[float] = []
    try:
        for _ in range(repeats):
            before = {r["pid"] for r in engine.status()["stages"][stage]["replica_list"]}
            count = len(engine.activation_s)
            await engine.apply(_plan(names, hardware, stage, 1))
            activation.append(list(engine.activation_s)[count])
            for replica in engine.status()["stages"][stage]["replica_list"]:
                if replica["pid"] not in before:
                    used = _cpu_s(replica["pid"])
                    if used is not None:
                        cpu.append(used)
            await engine.apply(_plan(names, hardware, stage, 0))
            await asyncio.sleep(0.5)  # let the removed replica exit before the next round
    finally:
        await engine.stop()
    return {
        "mode": "forked" if fork else "fresh",
        "engine_start_s": start_s,
        "activation_s": activation,
        "activation_median_s": statistics.median(activation),
        "cpu_s": cpu,
        "cpu_median_s": statistics.median(cpu) if cpu else None,
    }


def run_replica_start_benchmark(
    bundle_dir: Path, stage: str, *, hardware: str = "cpu-1", repeats: int = 3
) -> dict[str, Any]:
    """Both modes, fresh first (so the forked run cannot profit from a warm page cache
    the fresh one did not have: both have read the files once by then)."""
    bundle = load_bundle(bundle_dir)
    if stage not in bundle.pipeline.stage_names:
        raise ConfigError(
            f"no stage {stage!r}; the pipeline has {', '.join(bundle.pipeline.stage_names)}",
            source="<argument>",
            field="--stage",
        )
    if repeats < 1:
        raise ConfigError("must be at least 1", source="<argument>", field="--repeats")
    runs = [
        asyncio.run(_one_mode(bundle, stage, hardware, repeats, fork)) for fork in (False, True)
    ]
    fresh, forked = runs
    speedup = fresh["activation_median_s"] / forked["activation_median_s"]
    return {
        "bundle": str(bundle_dir),
        "stage": stage,
        "hardware": hardware,
        "repeats": repeats,
        "runs": runs,
        "activation_speedup": speedup,
    }


def tables(figures: dict[str, Any]) -> list[Table]:
    """The readable output of :func:`run_replica_start_benchmark`'s figures."""
    table = Table(
        title=f"adding one '{figures['stage']}' replica ({figures['hardware']}), "
        f"medians of {figures['repeats']}"
    )
    for column in ("replicas", "engine start s", "activation s", "new process CPU s"):
        table.add_column(column, justify="right")
    for run in figures["runs"]:
        cpu = run["cpu_median_s"]
        table.add_row(
            run["mode"],
            f"{run['engine_start_s']:.2f}",
            f"{run['activation_median_s']:.2f}",
            "n/a" if cpu is None else f"{cpu:.2f}",
        )
    table.caption = f"forked replicas are ready {figures['activation_speedup']:.1f}x sooner"
    return [table]
