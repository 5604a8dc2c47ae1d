"""Planning for a machine: every planner's answer bounded by what one host offers.

Without a machine the Estimator treats each replica as a dedicated unit, so a plan is
only as good as that assumption on the machine it runs on. With ``machine=`` a planner
first plans as without one; if that plan fits the machine (``check_plan_fits`` on the
pool ``MachinePool.for_planning`` makes for the trace's mean rate, and under the
``busy`` fit rule the cores its replicas keep busy in the Estimator's run that judged
it) it is the answer, so a machine that is big enough never changes a plan. Otherwise
the searching planners (inferline, exhaustive) search again with the machine as a limit on every
configuration they consider; the coarse-grained ones cannot trade one stage for
another and only check. Under the ``shared`` fit rule the searching planners always
search again, with an Estimator that simulates the machine's cores as shared (the
unbounded plan's estimate left contention out). When nothing fits,
:class:`MachineInfeasibleError` says how many cores the cheapest unbounded plan needs
and carries that plan.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

from inferline.errors import CapacityError, InfeasibleError, MachineInfeasibleError
from inferline.planner._result import MachineUse, Plan
from inferline.planner._search import usable_hardware
from inferline.profiles import (
    MachinePool,
    Profiles,
    check_plan_fits,
    frontend_cpu_s_per_query,
    resources_for,
)
from inferline.workload import Trace

__all__ = ["plan_on_machine", "planning_pool"]


def planning_pool(machine: MachinePool, profiles: Profiles, trace: Trace) -> MachinePool:
    """``machine`` as the Planner sees it for ``trace`` (front-end share at its mean rate)."""
    cpu, _ = frontend_cpu_s_per_query(profiles.overhead)
    return machine.for_planning(float(trace.mean_rate_qps), cpu)


def busy_cores(plan: Plan, pool: MachinePool) -> float | None:
    """Cores ``plan``'s replicas keep busy on its planning trace (None: not estimated)."""
    if plan.estimated_utilization is None:
        return None
    return sum(pool.busy_cores_of(plan.config, plan.estimated_utilization).values())


def _use(pool: MachinePool, plan: Plan, profiles: Profiles, trace: Trace) -> MachineUse:
    cpu, measured = frontend_cpu_s_per_query(profiles.overhead)
    return MachineUse(
        pool=pool,
        rate_qps=float(trace.mean_rate_qps),
        frontend_cpu_s_per_query=cpu,
        cpu_measured=measured,
        replica_threads=sum(pool.threads_of(plan.config).values()),
        gpu_replicas=pool.gpus_needed(plan.config),
        replica_busy_cores=busy_cores(plan, pool),
    )


def _fits(plan: Plan, pool: MachinePool, profiles: Profiles) -> bool:
    if any(
        c.hardware not in usable_hardware(profiles, name, pool)
        for name, c in plan.config.stages.items()
    ):
        return False
    try:
        check_plan_fits(plan.config, pool)
    except CapacityError:
        return False
    if not pool.bounds_busy_cores:
        return True
    busy = busy_cores(plan, pool)
    return busy is not None and busy <= pool.busy_cores_allowed + 1e-9


def plan_on_machine(
    run: Callable[[MachinePool | None], Plan],
    planner: str,
    machine: MachinePool,
    profiles: Profiles,
    trace: Trace,
    *,
    searches: bool,
) -> Plan:
    """``run(None)`` if it fits ``machine``, else ``run(pool)`` (``searches``), else
    :class:`MachineInfeasibleError`. ``run`` raising InfeasibleError without the machine
    means the SLO cannot be met anywhere: that error is the answer."""
    pool = planning_pool(machine, profiles, trace)
    unbounded = run(None)
    # on shared cores the unbounded plan was estimated without the contention: search again
    if _fits(unbounded, pool, profiles) and not (pool.shares_cores and searches):
        return dataclasses.replace(
            unbounded,
            machine=_use(pool, unbounded, profiles, trace),
            log=(*unbounded.log, f"{planner}: fits the machine as planned without it"),
        )
    why: str
    within = " in its busy cores" if pool.bounds_busy_cores else ""
    if searches:
        try:
            bounded = run(pool)
        except InfeasibleError:
            why = f"the search within the machine found no plan that meets the SLO{within}"
        else:
            if bounded.feasible and _fits(bounded, pool, profiles):
                note = (
                    f"{planner}: the plan without the machine bound "
                    f"(${unbounded.cost_per_hour:.4f}/h, {_demand(pool, unbounded)}) does "
                    f"not fit {_supply(pool)}; searched again within the machine"
                )
                return dataclasses.replace(
                    bounded,
                    machine=_use(pool, bounded, profiles, trace),
                    log=(note, *_narrowing(pool, profiles, bounded), *bounded.log),
                    planning_time_s=bounded.planning_time_s + unbounded.planning_time_s,
                    estimator_calls=bounded.estimator_calls + unbounded.estimator_calls,
                )
            why = f"the search within the machine found no plan that meets the SLO{within}"
    else:
        why = f"{planner} replicates the whole pipeline and does not search within a machine"
    raise _infeasible(planner, pool, profiles, unbounded, why)


def _narrowing(pool: MachinePool, profiles: Profiles, plan: Plan) -> tuple[str, ...]:
    """The log line naming each stage's profiled hardware left out as too wide, if any."""
    left_out: dict[str, list[str]] = {}
    for stage in plan.config.stages:
        usable = usable_hardware(profiles, stage, pool)
        dropped = [hw for hw in profiles.hardware_for(stage) if hw not in usable]
        if dropped:
            left_out[stage] = dropped
    if not left_out:
        return ()
    stages = "; ".join(f"{stage}: {', '.join(hws)}" for stage, hws in left_out.items())
    why = (
        "the whole cores left after the front-end's share; threads-per-replica=N changes it"
        if pool.threads_per_replica is None
        else "threads-per-replica"
    )
    return (
        f"machine: a CPU replica has at most {pool.max_threads_per_replica} thread(s) here "
        f"({why}), so these were left out: {stages}",
    )


def _infeasible(
    planner: str, pool: MachinePool, profiles: Profiles, unbounded: Plan, why: str
) -> MachineInfeasibleError:
    threads = sum(pool.threads_of(unbounded.config, cores=1 << 20).values())
    needs = pool.cores_needed(unbounded.config)
    gpus = pool.gpus_needed(unbounded.config)
    needs_text = f"needs {needs} cores, has {pool.cores}"
    busy = busy_cores(unbounded, pool)
    if pool.bounds_busy_cores and busy is not None:
        allowed = pool.cores * pool.max_busy_fraction
        if busy > pool.busy_cores_allowed + 1e-9 or needs <= pool.cores:
            needs = max(pool.busy_cores_needed(busy), needs)
            needs_text = (
                f"needs {busy + pool.frontend_reserve_cores:.2f} busy cores, has {allowed:.2f} "
                f"({pool.max_busy_fraction * 100:.0f} % of {pool.cores} cores; "
                f"{needs} cores would do)"
            )
        else:
            needs_text += f" for {threads} replica threads (the engine's bound)"
    widest = max(
        (
            resources_for(c.hardware, 1 << 20).threads
            for name, c in unbounded.config.stages.items()
            if c.hardware not in usable_hardware(profiles, name, pool)
        ),
        default=0,
    )
    if widest and pool.threads_per_replica is None:
        wide_cores = math.ceil(widest + pool.frontend_reserve_cores - 1e-9)
        if wide_cores > needs:
            needs = wide_cores
            needs_text = (
                f"needs {needs} cores, has {pool.cores}, for a {widest}-thread replica next "
                "to the front-end"
            )
    elif widest:
        needs_text += (
            f"; uses {widest}-thread replicas, threads-per-replica={pool.threads_per_replica}"
        )
    if gpus > pool.gpus:
        needs_text += f"; needs {gpus} GPUs, has {pool.gpus}"
    share = pool.frontend_reserve_cores
    if pool.bounds_busy_cores:
        runs = f"keeps {_demand(pool, unbounded)} plus {share:.2f} core for the front-end"
        leaves = (
            f"this machine's target of {pool.max_busy_fraction * 100:.0f} % busy leaves "
            f"{pool.busy_cores_allowed:.2f} busy cores for replicas"
        )
        last = "or raise max-busy-fraction=F knowingly (latency grows as the cores fill)"
    else:
        per_core = (
            "" if pool.max_threads_per_core == 1 else f" at {pool.max_threads_per_core:g} per core"
        )
        runs = f"runs {threads} replica thread(s){per_core} plus {share:.2f} core for the front-end"
        leaves = f"this machine leaves {pool.replica_cores:.2f} cores for replicas"
        last = "or knowingly oversubscribe (threads-per-core=T), or plan by busy cores (fit=busy)"
    return MachineInfeasibleError(
        f"{planner}: infeasible on this machine: {needs_text}. The cheapest plan that meets the "
        f"SLO without the machine bound costs ${unbounded.cost_per_hour:.4f}/h and {runs}; "
        f"{leaves} ({why}). Plan for a bigger machine (--machine cores=N), serve on a Ray "
        f"cluster, raise the SLO, {last}.",
        needs_cores=needs,
        has_cores=pool.cores,
        needs_gpus=gpus,
        has_gpus=pool.gpus,
        unbounded=unbounded,
    )


def _demand(pool: MachinePool, plan: Plan) -> str:
    threads = sum(pool.threads_of(plan.config).values())
    busy = busy_cores(plan, pool)
    if not pool.bounds_busy_cores or busy is None:
        return f"{threads} replica threads"
    return f"{busy:.2f} busy cores in {threads} replica threads"


def _supply(pool: MachinePool) -> str:
    if not pool.bounds_busy_cores:
        return f"{pool.max_threads}"
    return f"{pool.busy_cores_allowed:.2f} busy cores in {pool.max_threads} threads"
