"""Exhaustive search: the cheapest feasible (hardware, batch, replicas) per stage.

It measures the greedy planner's gap on pipelines small enough to search.

1. The InferLine plan gives an upper bound ``U`` on the optimum (its
   Estimator results are reused).
2. Each stage gets a list of options ``(hardware, batch, replicas)``, sorted by
   cost. The batch sizes are every profiled size. The replicas run from the
   stage's work floor, the fewest that can do its share of the trace's work in
   time (the mean-rate stability bound, see ``_search``), up to the most the
   budget allows: ``(U − the other stages' cheapest options) / unit price``.
3. Whole configurations are enumerated in ascending total cost, with a heap
   over index vectors, each generated exactly once. So every configuration
   whose cost is at least that of the best one found is pruned without being
   built.
4. The first feasible configuration cheaper than ``U`` is the optimum. If there
   is none, the InferLine plan is optimal.

Configurations that break a hardware limit are skipped. The search stops after
``max_seconds``; it then returns the best plan found so far, with
``exhaustive_complete=False``.
"""

from __future__ import annotations

import heapq
import math
import time

from inferline.pipeline import Pipeline
from inferline.planner._inferline import finish_plan, initialize, minimize_cost
from inferline.planner._machine import plan_on_machine
from inferline.planner._result import Plan
from inferline.planner._search import Key, Search, Setting
from inferline.profiles import LatencyStat, MachinePool, Profiles
from inferline.workload import Trace

__all__ = ["plan_exhaustive"]

_EPS = 1e-9


def plan_exhaustive(
    pipeline: Pipeline,
    profiles: Profiles,
    trace: Trace,
    slo_s: float,
    *,
    seed: int = 0,
    margin: float = 0.0,
    latency_stat: LatencyStat = "median",
    max_seconds: float = 300.0,
    machine: MachinePool | None = None,
) -> Plan:
    """The optimum over per-stage (hardware, profiled batch, replicas), within ``max_seconds``.

    Raises :class:`~inferline.errors.InfeasibleError` like :func:`plan_inferline`
    when the SLO cannot be met at all; ``machine`` as there (configurations that do not
    fit it are skipped).
    """

    def run(pool: MachinePool | None) -> Plan:
        return _plan_exhaustive(
            pipeline, profiles, trace, slo_s, seed, margin, latency_stat, max_seconds, pool
        )

    if machine is None:
        return run(None)
    return plan_on_machine(run, "exhaustive", machine, profiles, trace, searches=True)


def _plan_exhaustive(
    pipeline: Pipeline,
    profiles: Profiles,
    trace: Trace,
    slo_s: float,
    seed: int,
    margin: float,
    latency_stat: LatencyStat,
    max_seconds: float,
    pool: MachinePool | None,
) -> Plan:
    started = time.perf_counter()
    search = Search(
        pipeline,
        profiles,
        trace,
        slo_s,
        seed=seed,
        margin=margin,
        latency_stat=latency_stat,
        machine=pool,
    )
    greedy_log: list[str] = []
    upper = minimize_cost(search, initialize(search, greedy_log), greedy_log)
    bound = search.cost(upper)
    greedy_calls = search.calls
    log = [
        f"exhaustive: upper bound = the InferLine plan, ${bound:.4f}/h "
        f"({search.describe(upper)}; {greedy_calls} estimator calls)"
    ]
    options = _stage_options(search, bound)
    sizes = [len(o) for o in options]
    log.append(
        "exhaustive: options per stage (hardware x profiled batch x replicas within the "
        "budget, above the work floor): "
        + ", ".join(f"{n}={size}" for n, size in zip(search.names, sizes, strict=True))
    )
    best: Key = upper
    complete = True
    examined = 0
    if all(sizes):
        start = (0,) * len(options)
        heap: list[tuple[float, tuple[int, ...]]] = [(_cost(options, start), start)]
        deadline = started + max_seconds
        while heap:
            cost, index = heapq.heappop(heap)
            if cost >= bound - _EPS:
                break
            if time.perf_counter() > deadline:
                complete = False
                break
            examined += 1
            key = tuple(options[i][j][1] for i, j in enumerate(index))
            if search.units_ok(key) and search.evaluate(key).feasible:
                best = key
                break
            last = max((i for i, j in enumerate(index) if j > 0), default=0)
            for i in range(last, len(options)):
                if index[i] + 1 < sizes[i]:
                    child = (*index[:i], index[i] + 1, *index[i + 1 :])
                    heapq.heappush(heap, (_cost(options, child), child))
    optimum = search.cost(best)
    gap = bound / optimum - 1.0 if optimum > 0 else 0.0
    if complete:
        verdict = (
            "the InferLine plan is optimal"
            if best == upper
            else f"optimum {search.describe(best)}; InferLine is {gap:.1%} above it"
        )
    else:
        verdict = (
            f"time budget of {max_seconds:g} s spent; best found {search.describe(best)} "
            "(not proven optimal)"
        )
    log.append(
        f"exhaustive: {examined} configuration(s) cheaper than the bound examined in "
        f"ascending cost ({search.calls - greedy_calls} simulated, the rest ruled out by a "
        f"hardware limit, the work floor or the cache); ${optimum:.4f}/h; {verdict}"
    )
    return finish_plan(search, best, "exhaustive", log, started, exhaustive_complete=complete)


def _cost(options: list[list[tuple[float, Setting]]], index: tuple[int, ...]) -> float:
    return round(sum(options[i][j][0] for i, j in enumerate(index)), 9)


def _stage_options(search: Search, bound: float) -> list[list[tuple[float, Setting]]]:
    floors: list[dict[tuple[str, int], int]] = []
    cheapest: list[float] = []
    for name in search.names:
        floor = {
            (hw, b): search.work_floor(name, hw, b)
            for hw in search.usable[name]
            for b in search.profile(name, hw).batch_sizes
        }
        floors.append(floor)
        cheapest.append(min(search.prices[hw] * k for (hw, _), k in floor.items()))
    options: list[list[tuple[float, Setting]]] = []
    for i, _name in enumerate(search.names):
        budget = bound - (sum(cheapest) - cheapest[i])
        stage: list[tuple[float, int, Setting]] = []
        for (hw, b), low in floors[i].items():
            price = search.prices[hw]
            high = math.floor(budget / price + _EPS) if price > 0 else low
            limit = search.free_units((), hw)  # max_units and the machine, stage alone
            if limit is not None:
                high = min(high, limit)
            for k in range(low, high + 1):
                stage.append((round(price * k, 9), search.catalogue_index[hw], (hw, b, k)))
        stage.sort(key=lambda o: (o[0], o[1], o[2][1], o[2][2]))
        options.append([(cost, setting) for cost, _, setting in stage])
    return options
