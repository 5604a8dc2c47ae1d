"""Coarse-grained baselines (CG-Mean, CG-Peak) and the latency-blind lower bound.

The coarse-grained planners treat the whole pipeline as one unit, as serving
systems without per-stage planning do (paper §2, "Baselines"):

* **Hardware**: each stage runs on its lowest batch-1-latency hardware (ties:
  cheaper, then catalogue order) — the same choice as InferLine's Initialize.
* **Batch size**: one size ``b`` for every stage: the largest batch size profiled
  for every stage on its chosen hardware whose no-queueing latency (the critical
  path of ``latency(b)``) fits in the SLO (after the safety margin).
* **Unit**: one replica of every stage (a stage with scale factor < 1 still gets
  one); its throughput is ``min over stages of μ(b) / s``.
* **Replicas**: ``k = ceil(rate / unit throughput)`` units, with rate = the trace's
  mean rate (CG-Mean) or its peak rate over a sliding window equal to the SLO
  (CG-Peak).

The plan is then simulated on the planning trace (full run) and its feasibility
reported, but never repaired: CG-Mean typically misses the SLO under bursts. With a
machine the plan is checked against it and refused when it does not fit
(:class:`~inferline.errors.MachineInfeasibleError`), never shrunk to fit.
"""

from __future__ import annotations

import math
import time
from typing import Literal

from inferline.errors import InfeasibleError
from inferline.pipeline import Pipeline
from inferline.planner._inferline import finish_plan
from inferline.planner._machine import plan_on_machine
from inferline.planner._result import Plan
from inferline.planner._search import Key, Search
from inferline.profiles import LatencyStat, MachinePool, Profiles
from inferline.workload import Trace

__all__ = ["lower_bound_cost", "plan_cg_mean", "plan_cg_peak"]


def plan_cg_mean(
    pipeline: Pipeline,
    profiles: Profiles,
    trace: Trace,
    slo_s: float,
    *,
    seed: int = 0,
    margin: float = 0.0,
    latency_stat: LatencyStat = "median",
    machine: MachinePool | None = None,
) -> Plan:
    """Coarse-grained plan replicated for the trace's mean rate."""
    return _on_machine(
        "mean", pipeline, profiles, trace, slo_s, seed, margin, latency_stat, machine
    )


def plan_cg_peak(
    pipeline: Pipeline,
    profiles: Profiles,
    trace: Trace,
    slo_s: float,
    *,
    seed: int = 0,
    margin: float = 0.0,
    latency_stat: LatencyStat = "median",
    machine: MachinePool | None = None,
) -> Plan:
    """Coarse-grained plan replicated for the peak rate over an SLO-long sliding window."""
    return _on_machine(
        "peak", pipeline, profiles, trace, slo_s, seed, margin, latency_stat, machine
    )


def _on_machine(
    rate_kind: Literal["mean", "peak"],
    pipeline: Pipeline,
    profiles: Profiles,
    trace: Trace,
    slo_s: float,
    seed: int,
    margin: float,
    latency_stat: LatencyStat,
    machine: MachinePool | None,
) -> Plan:
    """With a machine the plan is checked against it, not changed: the coarse-grained
    planners replicate the whole pipeline and have nothing to trade."""

    def run(_pool: MachinePool | None) -> Plan:
        return _plan_cg(rate_kind, pipeline, profiles, trace, slo_s, seed, margin, latency_stat)

    if machine is None:
        return run(None)
    return plan_on_machine(run, f"cg-{rate_kind}", machine, profiles, trace, searches=False)


def _plan_cg(
    rate_kind: Literal["mean", "peak"],
    pipeline: Pipeline,
    profiles: Profiles,
    trace: Trace,
    slo_s: float,
    seed: int,
    margin: float,
    latency_stat: LatencyStat,
) -> Plan:
    started = time.perf_counter()
    planner = f"cg-{rate_kind}"
    search = Search(
        pipeline, profiles, trace, slo_s, seed=seed, margin=margin, latency_stat=latency_stat
    )
    hardware = search.check_service_time(planner)
    names = search.names
    common = set.intersection(*(set(search.profile(n, hardware[n]).batch_sizes) for n in names)) | {
        1
    }
    batch, service_s = 1, math.inf
    for b in sorted(common, reverse=True):
        times = {n: search.latency_s(n, hardware[n], b) for n in names}
        service_s = pipeline.longest_path_s(times)
        if service_s <= search.target_s:
            batch = b
            break
    unit_qps = min(search.mu(n, hardware[n], batch) / search.scale[n] for n in names)
    rate = search.mean_rate_qps if rate_kind == "mean" else search.peak_rate_qps
    units = max(1, math.ceil(rate / unit_qps - 1e-9))
    key: Key = tuple((hardware[n], batch, units) for n in names)
    if not search.units_ok(key):
        raise InfeasibleError(
            f"{planner}: {units} pipeline replicas would exceed a hardware limit "
            f"({search.describe(key)}); raise max_units in the hardware catalogue"
        )
    outcome = search.simulate_full(key)
    rate_text = (
        f"mean rate {rate:.1f} q/s"
        if rate_kind == "mean"
        else f"peak rate {rate:.1f} q/s over a {search.slo_s:g} s window"
    )
    log = [
        f"{planner}: hardware = each stage's lowest batch-1 latency: "
        + ", ".join(f"{n}={hardware[n]}" for n in names),
        f"{planner}: batch {batch} for every stage (largest common profiled size whose "
        f"no-queueing latency {service_s * 1000:.1f} ms "
        f"fits {search.target_s * 1000:.1f} ms)",
        f"{planner}: one pipeline replica serves {unit_qps:.1f} q/s; {rate_text} -> "
        f"{units} pipeline replica(s); ${search.cost(key):.4f}/h",
        f"{planner}: estimated P99 {outcome.p99_s * 1000:.1f} ms, miss rate "
        f"{outcome.miss_rate:.2%} -> {'feasible' if outcome.feasible else 'INFEASIBLE'} "
        "(not repaired: this is the baseline)",
    ]
    return finish_plan(search, key, planner, log, started)


def lower_bound_cost(
    pipeline: Pipeline, profiles: Profiles, trace: Trace, *, latency_stat: LatencyStat = "median"
) -> float:
    """$/hour to sustain the trace's mean rate, latency ignored, fractional replicas allowed.

    Σ over stages of ``rate · s / μ(b, hw) · price(hw)`` at each stage's most
    cost-efficient (hardware, profiled batch size). No plan that keeps up with the
    trace can cost less.
    """
    rate = float(trace.mean_rate_qps)
    prices = profiles.hardware.price_per_hour
    scale = pipeline.scale_factors
    total = 0.0
    for name in pipeline.stage_names:
        best = math.inf
        for hw in profiles.hardware_for(name):
            prof = profiles.get(name, hw)
            for b in prof.batch_sizes:
                best = min(best, prices[hw] / prof.throughput_qps(b, latency_stat))
        total += rate * scale[name] * best
    return total
