"""``inferline bench overload``: goodput under overload, with and without shedding (SPEC §4).

A chain of ``stages`` (1 by default) stages of :class:`~inferline.engine.testing.Echo`
replicas, each batch sleeping ``batch_time_s`` whatever its size, so the capacity is
known: replicas × batch size / batch time (200 q/s by default: 20 ms per batch of up
to 4, the same at every stage). Each run
serves it in a fresh ``inferline serve`` child process (``--shed`` or ``--no-shed``),
replays open-loop Poisson arrivals at a multiple of that capacity from this process,
and counts the answers within the SLO. Without shedding an overloaded queue grows
without bound; the replay stops waiting ``tail_s`` after its last send and the queries
still unanswered then count as late.
"""

from __future__ import annotations

import itertools
import json
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.table import Table

from inferline.engine import replay
from inferline.engine.process import start_engine
from inferline.engine.testing import write_bundle
from inferline.errors import ConfigError

__all__ = ["OverloadSettings", "run_overload_benchmark", "tables"]

_MODEL = "overload"


@dataclass(frozen=True, slots=True)
class OverloadSettings:
    """What the benchmark serves and sends (times in seconds)."""

    batch_time_s: float = 0.02
    batch_size: int = 4
    replicas: int = 1
    stages: int = 1  # a chain of this many identical stages
    slo_s: float = 0.2
    load_factors: tuple[float, ...] = (1.0, 1.5, 2.0, 3.0)
    shed_modes: tuple[bool, ...] = (False, True)  # serve --no-shed, --shed
    duration_s: float = 6.0  # arrivals per run
    tail_s: float = 2.0  # after the last send, wait this long for answers
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("batch_time_s", "slo_s", "duration_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"must be positive, got {getattr(self, name)!r}", field=name)
        for name in ("batch_size", "replicas", "stages"):
            if getattr(self, name) < 1:
                raise ConfigError(f"must be ≥ 1, got {getattr(self, name)!r}", field=name)
        if not self.load_factors or min(self.load_factors) <= 0:
            raise ConfigError(
                f"give positive multiples of capacity, got {self.load_factors!r}",
                field="load_factors",
            )

    @property
    def capacity_qps(self) -> float:
        return self.replicas * self.batch_size / self.batch_time_s


def poisson_arrivals(rate_qps: float, duration_s: float, seed: int) -> np.ndarray:
    """Poisson arrival times in [0, duration_s): a Poisson count, placed uniformly."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.uniform(0.0, duration_s, rng.poisson(rate_qps * duration_s)))


def run_overload_benchmark(
    settings: OverloadSettings | None = None,
    *,
    out_dir: Path | None = None,
    progress: Callable[[str], None] = lambda _text: None,
) -> dict[str, Any]:
    """One run per load factor and shedding mode; figures as a JSON-ready dict, and with
    ``out_dir`` written to ``overload.json`` there."""
    s = settings or OverloadSettings()
    body = json.dumps(
        {
            "inputs": [
                {"name": "sleep_s", "shape": [1], "datatype": "FP64", "data": [s.batch_time_s]}
            ]
        }
    ).encode()
    started = time.perf_counter()
    runs = []
    with tempfile.TemporaryDirectory(prefix="inferline-overload-") as tmp:
        names = [f"s{k + 1}" for k in range(s.stages)]
        entry = {"hardware": "cpu-1", "batch_size": s.batch_size, "replicas": s.replicas}
        pipeline, plan = write_bundle(
            Path(tmp),
            _MODEL,
            dict.fromkeys(names, "inferline.engine.testing:Echo"),
            list(itertools.pairwise(names)),
            dict.fromkeys(names, entry),
        )
        for k, factor in enumerate(s.load_factors):
            for shed in s.shed_modes:
                progress(f"{factor:g}× capacity, {'with' if shed else 'without'} shedding")
                runs.append(_run(s, pipeline, plan, body, factor, shed, s.seed + k))
    figures: dict[str, Any] = {
        "settings": {**asdict(s), "capacity_qps": s.capacity_qps},
        "runs": runs,
        "wall_s": time.perf_counter() - started,
        "written": [],
    }
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        figures["written"] = [str(out_dir / "overload.json")]
        (out_dir / "overload.json").write_text(json.dumps(figures, indent=1) + "\n")
    return figures


def _run(
    s: OverloadSettings,
    pipeline: Path,
    plan: Path,
    body: bytes,
    factor: float,
    shed: bool,
    seed: int,
) -> dict[str, Any]:
    rate_qps = factor * s.capacity_qps
    arrivals = poisson_arrivals(rate_qps, s.duration_s, seed)
    flag = "--shed" if shed else "--no-shed"
    with start_engine(pipeline, plan, flag, "--slo-s", f"{s.slo_s:g}") as engine:
        for _ in range(4):  # the first batches give shedding its observed batch times
            engine.request("POST", f"/v2/models/{_MODEL}/infer", body)
        result = replay(
            engine.url, arrivals, [body], slo_s=s.slo_s, model=_MODEL, timeout_s=s.tail_s
        )
    return overload_figures(result.status, result.latency_s, s, factor, shed)


def overload_figures(
    status: np.ndarray,
    latency_s: np.ndarray,
    s: OverloadSettings,
    factor: float,
    shed: bool,
) -> dict[str, Any]:
    """Goodput (answers within the SLO per second of arrivals), P99 of the 200s, outcomes."""
    ok = status == 200
    answered_s = latency_s[ok & np.isfinite(latency_s)]
    within = ok & (np.nan_to_num(latency_s, nan=np.inf) <= s.slo_s)
    sent = int(status.size)
    goodput_qps = float(within.sum()) / s.duration_s
    return {
        "load_factor": factor,
        "shed": shed,
        "offered_qps": sent / s.duration_s,
        "sent": sent,
        "within_slo": int(within.sum()),
        "late": int((ok & ~within).sum()),
        "shed_503": int((status == 503).sum()),
        "other": int((~ok & (status != 503)).sum()),  # no answer in time, or another error
        "goodput_qps": goodput_qps,
        "goodput_of_capacity": goodput_qps / s.capacity_qps,
        "p99_ok_s": float(np.percentile(answered_s, 99)) if answered_s.size else None,
        "shed_fraction": float((status == 503).mean()) if sent else 0.0,
    }


def tables(figures: dict[str, Any]) -> list[Table]:
    """The readable output: one row per load factor and shedding mode."""
    settings = figures["settings"]
    table = Table(
        title=(
            f"goodput under overload: capacity {settings['capacity_qps']:g} q/s "
            f"({settings['stages']} stage(s) of {settings['replicas']} × batch "
            f"{settings['batch_size']} per {settings['batch_time_s'] * 1000:g} ms), "
            f"SLO {settings['slo_s'] * 1000:g} ms, "
            f"{settings['duration_s']:g} s of Poisson arrivals per run"
        )
    )
    columns: Sequence[str] = (
        "load",
        "shed",
        "sent/s",
        "good/s",
        "% cap",
        "P99 ms",
        "late",
        "503s",
        "lost",
    )
    for col in columns:
        table.add_column(col, justify="right")
    for run in figures["runs"]:
        p99 = run["p99_ok_s"]
        table.add_row(
            f"{run['load_factor']:g}×",
            "on" if run["shed"] else "off",
            f"{run['offered_qps']:.0f}",
            f"{run['goodput_qps']:.0f}",
            f"{run['goodput_of_capacity']:.0%}",
            "—" if p99 is None else f"{p99 * 1000:.0f}",
            str(run["late"]),
            f"{run['shed_fraction']:.0%}",
            str(run["other"]),
        )
    table.caption = f"wall time {figures['wall_s']:.0f} s" + "".join(
        f"; → {path}" for path in figures.get("written", [])
    )
    return [table]
