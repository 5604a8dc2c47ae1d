"""The InferLine Planner: Initialize, then greedy MinimizeCost (paper §4.3, SPEC §2.6).

**Initialize** puts every stage at batch 1 on its lowest batch-1-latency hardware
(ties: cheaper, then catalogue order). If the batch-1 critical path already
exceeds the SLO, the plan is infeasible. (The paper's pseudocode has this
comparison reversed; we follow its prose.) Otherwise replicas are added one at a
time to the throughput bottleneck until the Estimator says the P99 meets the SLO.
The bottleneck is the stage with the least ``replicas · μ(batch, hw) / s``
(ties: pipeline order).

Every stage starts at its *work floor*, the fewest replicas that could process
the trace's work in time (see ``_search``). The bottleneck rule would add those
replicas first anyway: a stage below its floor has less capacity than any stage
at or above it.

The loop is bounded per stage: at most twice the replicas that serve the
trace's peak rate over an SLO-long window at batch 1, and at least 4. It also
respects the hardware limits. If a stage's hardware runs out of units, the
stage moves to its next-fastest hardware that has units left. Hitting a bound
raises :class:`~inferline.errors.InfeasibleError`, saying what blocked it.

**MinimizeCost** repeats rounds. In each round every stage offers candidates
that change only that stage:

* ``RemoveReplica``: one replica fewer (if it has more than one).
* ``IncreaseBatch``: the next profiled batch size ≥ 2 × the current one, capped at
  the largest profiled size. Cost-neutral.
* ``DowngradeHW``: the next cheaper hardware (by unit price) that the stage has a
  profile for. With the other stages frozen, the stage is re-initialised there:
  batch 1, at the smallest feasible replica count within the bounds. The count
  is found by galloping, then bisection. (The paper adds one replica at a time;
  both give the same count when more replicas never hurt.) Then the stage is
  locally minimised. The result is kept only if it is feasible and strictly
  cheaper than the current configuration.

The feasible candidate with the lowest cost wins. Ties go by action, in the
order RemoveReplica < BatchRemove < DowngradeHW < IncreaseBatch, then by
pipeline order, then by the smaller batch. So IncreaseBatch is taken only when no
cost-reducing action is feasible. The search stops when no candidate is
accepted.

Candidates are examined lazily, cheapest first; a DowngradeHW is placed by a
lower bound on its cost. A round ends at the first feasible candidate that no
later candidate can beat. This makes the same choice as evaluating every
candidate, with fewer Estimator calls.

**Departures from the published algorithm** (all on by default; ``paper=True``
turns them off). Each one was needed on the reference pipelines, either to stay
within 10 % of the exhaustive optimum or to plan within the time budget.

1. *BatchRemove* (IncreaseBatch's purpose, made explicit). For a stage with
   ``k > 1`` replicas: the candidates ``(b', k − 1)``, for the next few
   batch sizes ``b'`` along its doubling chain (at most ``_LOOKAHEAD`` = 3
   doublings, and only sizes that raise the stage's peak throughput). It is
   IncreaseBatch, perhaps several times, then RemoveReplica, as one step. The
   paper reaches these through a series of cost-neutral IncreaseBatch steps,
   each costing a round of simulations. Those steps are often useless
   (trimmed back afterwards) and are not always feasible on the way. The local
   minimisation inside DowngradeHW uses RemoveReplica, else the first feasible
   BatchRemove.
2. *A bare IncreaseBatch must lower the estimated P99.* It is cost-neutral,
   and its only use is to create latency slack for a later RemoveReplica on
   some stage. A step that leaves the P99 where it is creates no slack; it
   would only start a long chain of rounds.
3. *Rebalanced DowngradeHW.* If no replica count on the cheaper hardware is
   feasible with the others frozen, it is usually because the other stages'
   queueing leaves too little latency. The stage is then moved with its
   current capacity, and up to one replica per stage is added by the
   bottleneck rule before the local minimisation. The attempt is abandoned
   as soon as it cannot end up cheaper.
4. *Every cheaper hardware.* DowngradeHW is offered for each cheaper
   hardware the stage has a profile for, not only the next cheaper one. The
   paper's choice assumes that hardware sorted by price is also sorted by
   speed. Under that assumption, if the next cheaper type cannot meet the SLO,
   no cheaper one can. The reference catalogues break it: a K80 is cheaper
   than an M60 but slower, and a CPU instance is cheaper still. Two CPU
   replicas can then beat one K80, which cannot keep up.
5. *Trim.* After MinimizeCost stops, each stage's batch is lowered while the
   plan stays feasible and its P99 does not rise. This is cost-neutral. A
   smaller maximum batch bounds the worst batch latency, which makes the plan
   less fragile on traffic other than the planning trace.
6. *Compensated DowngradeHW.* When neither the frozen nor the rebalanced move
   is cheaper, the move is retried with one other stage given one or two more
   replicas, at its batch or at batch 1: a slower cheap stage needs latency
   slack, and buying it on another stage is often cheaper (tf-cascade at
   200 q/s, cv 2, SLO 0.1 s: ResNet-50 V100 → 2 × M60 paid for by one more
   Inception CPU replica at batch 1, 10 % cheaper).

It terminates: every accepted step lowers the cost, or keeps it and strictly
raises one bounded batch size. Trim only lowers batch sizes. A round guard
backs this up.
"""

from __future__ import annotations

import dataclasses
import math
import time

from inferline.errors import ConfigError, InfeasibleError
from inferline.pipeline import Pipeline
from inferline.planner._bias import biased_margin
from inferline.planner._machine import plan_on_machine
from inferline.planner._result import Plan
from inferline.planner._search import Key, Outcome, Search
from inferline.profiles import LatencyStat, MachinePool, Profiles
from inferline.workload import Trace

__all__ = [
    "initialize",
    "minimize_cost",
    "next_batch",
    "next_cheaper_hardware",
    "plan_inferline",
    "with_batch_headroom",
]

_EPS = 1e-9
_MAX_ROUNDS = 100_000  # a guard only; the loop terminates on its own (see the module doc)
_LOOKAHEAD = 3  # BatchRemove looks at most this many batch doublings ahead
_RANK = {"RemoveReplica": 0, "BatchRemove": 1, "DowngradeHW": 2, "IncreaseBatch": 3}

RankKey = tuple[float, int, int, int]  # (cost, action rank, stage index, batch size)
Downgrade = tuple[Key, str] | None


def plan_inferline(
    pipeline: Pipeline,
    profiles: Profiles,
    trace: Trace,
    slo_s: float,
    *,
    seed: int = 0,
    margin: float = 0.0,
    latency_stat: LatencyStat = "median",
    paper: bool = False,
    machine: MachinePool | None = None,
) -> Plan:
    """The cheapest configuration the InferLine Planner finds whose estimated P99 meets the SLO.

    ``paper=True`` runs the published algorithm without the departures listed in
    the module doc (for comparison). ``machine``: plan for that machine (``_machine``);
    :class:`~inferline.errors.MachineInfeasibleError` when no plan found fits it.

    Raises :class:`~inferline.errors.InfeasibleError` when the SLO is below the
    pipeline's batch-1 service time or no configuration within the bounds meets it.
    """

    def run(pool: MachinePool | None) -> Plan:
        return _plan_inferline(
            pipeline, profiles, trace, slo_s, seed, margin, latency_stat, paper, pool
        )

    if machine is None:
        return run(None)
    name = "inferline" if not paper else "inferline-paper"
    return plan_on_machine(run, name, machine, profiles, trace, searches=True)


def _plan_inferline(
    pipeline: Pipeline,
    profiles: Profiles,
    trace: Trace,
    slo_s: float,
    seed: int,
    margin: float,
    latency_stat: LatencyStat,
    paper: bool,
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
    log: list[str] = []
    key = initialize(search, log)
    key = minimize_cost(search, key, log, paper=paper)
    if not paper:
        key = trim_batches(search, key, log)
    return finish_plan(search, key, "inferline" if not paper else "inferline-paper", log, started)


def finish_plan(
    search: Search,
    key: Key,
    planner: str,
    log: list[str],
    started: float,
    *,
    exhaustive_complete: bool | None = None,
) -> Plan:
    outcome = search.evaluate(key)
    utilization = outcome.utilization
    return Plan(
        config=search.config(key),
        feasible=outcome.feasible,
        cost_per_hour=search.cost(key),
        estimated_p50_s=outcome.p50_s,
        estimated_p99_s=outcome.p99_s,
        planner=planner,
        planning_time_s=time.perf_counter() - started,
        estimator_calls=search.calls,
        log=tuple(log),
        slo_s=search.slo_s,
        margin=search.margin,
        estimated_miss_rate=outcome.miss_rate,
        exhaustive_complete=exhaustive_complete,
        estimated_utilization=(
            None if utilization is None else dict(zip(search.names, utilization, strict=True))
        ),
    )


def _ms(seconds: float) -> str:
    return "over the SLO (run stopped early)" if math.isinf(seconds) else f"{seconds * 1000:.1f} ms"


# --- Initialize ------------------------------------------------------------------------------
def initialize(search: Search, log: list[str]) -> Key:
    """Paper Algorithm 1: a feasible configuration, regardless of cost."""
    search.check_service_time("inferline")
    names = search.names
    key: Key = ()
    for i, name in enumerate(names):
        chosen = None
        for hw in search.fastest_hardware(name):
            floor = search.work_floor(name, hw, 1)
            free = search.free_units(key, hw)
            if free is None or floor <= free:
                chosen = (hw, 1, floor)
                break
        if chosen is None:
            options = ", ".join(
                f"{hw} (needs {search.work_floor(name, hw, 1)}, "
                f"{search.free_units(key, hw)} of max_units {search.limits[hw]} left)"
                for hw in search.fastest_hardware(name)
            )
            raise InfeasibleError(
                f"inferline: stage '{name}' cannot be placed within the hardware limits: every "
                f"hardware it has a profile for has too few units left for the replicas it "
                f"needs at batch 1 to keep up with the trace: {options}. Raise max_units in "
                "the hardware catalogue."
            )
        key = (*key[:i], chosen)
    log.append(
        "initialize: batch 1 on each stage's lowest-latency hardware, replicas at the work "
        f"floor: {search.describe(key)} (${search.cost(key):.4f}/h)"
    )
    seen: set[Key] = {key}
    while True:
        outcome = search.evaluate(key)
        if outcome.feasible:
            log.append(
                f"initialize: feasible at ${search.cost(key):.4f}/h, P99 {_ms(outcome.p99_s)} "
                f"<= {search.target_s * 1000:.1f} ms"
            )
            return key
        meets_slo = outcome.utilization is not None and outcome.p99_s <= search.target_s
        if search.shares_cores:
            if len(seen) > _MAX_SHARED_STEPS:
                raise InfeasibleError(
                    f"inferline: no feasible configuration on the shared cores after "
                    f"{_MAX_SHARED_STEPS} steps; the last, {search.describe(key)}, "
                    + ("meets the SLO but " + outcome.reason if meets_slo else "misses the SLO")
                )
            stepped = _shared_cores_step(search, key, meets_slo, seen, log)
            if stepped is not None:
                seen.add(stepped)
                key = stepped
                continue
            raise InfeasibleError(
                f"inferline: no feasible configuration on the shared cores: from "
                f"{search.describe(key)}, which "
                + (f"meets the SLO but {outcome.reason}" if meets_slo else "misses the SLO")
                + ", every further step (a replica more on the bottleneck, a bigger batch"
                + (", a replica fewer" if meets_slo else "")
                + ") was tried or is out of the limits"
            )
        if meets_slo:
            # meets the SLO but keeps too many cores busy: more replicas do not help, a
            # bigger batch on the busiest stage that has one does
            key = _batch_for_busy_cores(search, key, outcome, seen, log)
            seen.add(key)
            continue
        capacity = [
            k * search.mu(name, hw, b) / search.scale[name]
            for name, (hw, b, k) in zip(names, key, strict=True)
        ]
        i = min(range(len(names)), key=lambda j: (capacity[j], j))
        name = names[i]
        hw, b, k = key[i]
        cap = search.replica_cap(name, hw)
        if k + 1 > cap:
            raise InfeasibleError(
                f"inferline: no feasible configuration within the search bounds: the bottleneck "
                f"stage '{name}' reached {k} replicas on {hw} (the bound: twice the replicas "
                f"that serve the trace's peak rate of {search.peak_rate_qps:.0f} q/s over a "
                f"{search.slo_s:g} s window at batch 1) and the estimated P99 is "
                f"{_ms(outcome.p99_s)}, above {search.target_s * 1000:.1f} ms. Raise the SLO "
                "or plan on a less bursty trace."
            )
        free = search.free_units(key, hw, skip=i)
        if free is not None and k + 1 > free:
            key = _move_off_full_hardware(search, key, i, log)
            continue
        key = search.replace(key, i, (hw, b, k + 1))
        log.append(
            f"initialize: +1 replica on bottleneck '{name}' ({capacity[i]:.0f} q/s of capacity "
            f"per pipeline query): {k}->{k + 1} on {hw}; ${search.cost(key):.4f}/h; "
            f"previous P99 {_ms(outcome.p99_s)}"
        )


def _batch_for_busy_cores(
    search: Search, key: Key, outcome: Outcome, seen: set[Key], log: list[str]
) -> Key:
    """``key`` with the busiest stage that can batch more at its next batch size."""
    utilization = outcome.utilization or ()
    busy = [u * k * search.threads[hw] for u, (hw, _, k) in zip(utilization, key, strict=True)]
    for i in sorted(range(len(key)), key=lambda j: (-busy[j], j)):
        hw, b, k = key[i]
        bigger = next_batch(search, search.names[i], hw, b)
        if bigger is not None:
            log.append(
                f"initialize: meets the SLO but {outcome.reason}; batch {b}->{bigger} on the "
                f"busiest stage that can batch more, '{search.names[i]}' ({busy[i]:.2f} cores)"
            )
            return search.replace(key, i, (hw, bigger, k))
    # every stage at its largest batch: fewer replicas fill bigger batches, which cost less CPU
    for i in sorted(range(len(key)), key=lambda j: (-busy[j], j)):
        hw, b, k = key[i]
        fewer = search.replace(key, i, (hw, b, k - 1))
        if k > search.work_floor(search.names[i], hw, b) and fewer not in seen:
            log.append(
                f"initialize: meets the SLO but {outcome.reason}; every stage is at its largest "
                f"profiled batch, so one replica fewer on '{search.names[i]}' ({k}->{k - 1}: "
                "fuller batches cost less CPU per query)"
            )
            return fewer
    raise InfeasibleError(
        f"inferline: {search.describe(key)} meets the SLO but {outcome.reason}, and every stage "
        "is at its largest profiled batch"
    )


_MAX_SHARED_STEPS = 400


def _shared_cores_step(
    search: Search, key: Key, meets_slo: bool, seen: set[Key], log: list[str]
) -> Key | None:
    """On shared cores, the next step of Initialize, chosen by simulating every candidate.

    A replica more is the paper's step, but on cores that are already full it only
    shares them thinner, while a bigger batch costs less CPU per query and one replica
    fewer fills its batches better. So each candidate is simulated over the whole trace:
    while ``key`` misses the SLO, a replica more on the bottleneck or the next batch size
    on any stage, the lowest P99 winning; while it meets the SLO but keeps too many
    cores busy, the next batch size or one replica fewer on any stage, the fewest busy
    cores among those that still meet the SLO winning (else the lowest P99). Ties: the
    cheaper. None when no candidate within the limits is new.
    """
    names = search.names
    candidates: list[tuple[Key, str]] = []
    if not meets_slo:
        capacity = [
            k * search.mu(name, hw, b) / search.scale[name]
            for name, (hw, b, k) in zip(names, key, strict=True)
        ]
        i = min(range(len(names)), key=lambda j: (capacity[j], j))
        hw, b, k = key[i]
        if k + 1 <= search.replica_cap(names[i], hw):
            candidates.append(
                (search.replace(key, i, (hw, b, k + 1)), f"+1 replica on bottleneck '{names[i]}'")
            )
    for j, (hw_j, b_j, k_j) in enumerate(key):
        bigger = next_batch(search, names[j], hw_j, b_j)
        if bigger is not None:
            candidates.append(
                (
                    search.replace(key, j, (hw_j, bigger, k_j)),
                    f"batch {b_j}->{bigger} on '{names[j]}'",
                )
            )
        if meets_slo and k_j > search.work_floor(names[j], hw_j, b_j):
            candidates.append(
                (search.replace(key, j, (hw_j, b_j, k_j - 1)), f"one replica fewer on '{names[j]}'")
            )
    allowed = search.machine.busy_cores_allowed if search.machine is not None else math.inf
    scored = []
    for n, (candidate, why) in enumerate(candidates):
        if candidate in seen or not search.units_ok(candidate):
            continue
        p99, busy = search.full_run(candidate)
        fits = p99 <= search.target_s and busy <= allowed + 1e-9
        # fitting candidates first; then (meeting the SLO) the fewest busy cores, or the P99
        rank = (0, busy) if fits else (1, p99, busy) if not meets_slo else (1, busy, p99)
        scored.append((rank, search.cost(candidate), n, candidate, why, p99, busy))
    if not scored:
        return None
    _, _, _, best, why, p99, busy = min(scored)
    log.append(
        f"initialize: {why} (the best of {len(scored)} simulated step(s) on the shared cores: "
        f"P99 {_ms(p99)}, {busy:.2f} busy cores of {allowed:.2f}); ${search.cost(best):.4f}/h"
    )
    return best


def _move_off_full_hardware(search: Search, key: Key, i: int, log: list[str]) -> Key:
    """The bottleneck's hardware has no unit left: move it to its next-fastest hardware."""
    name = search.names[i]
    hw, b, k = key[i]
    order = search.fastest_hardware(name)
    wanted = (k + 1) * search.mu(name, hw, b)
    for other in order[order.index(hw) + 1 :]:
        replicas = max(
            search.work_floor(name, other, 1), math.ceil(wanted / search.mu(name, other, 1) - _EPS)
        )
        free = search.free_units(key, other, skip=i)
        if (free is None or replicas <= free) and replicas <= search.replica_cap(name, other):
            new = search.replace(key, i, (other, 1, replicas))
            room = (
                f"the {search.limits[hw]} units of {hw}"
                if search.limits[hw] is not None
                else f"the {hw} replicas the machine has room for"
            )
            log.append(
                f"initialize: '{name}' needs more than {room}; "
                f"moved to {other} with {replicas} replicas (the same capacity or more); "
                f"${search.cost(new):.4f}/h"
            )
            return new
    raise InfeasibleError(
        f"inferline: no feasible configuration within the hardware limits: the bottleneck stage "
        f"'{name}' needs more than {k} replicas on {hw}, which has only {search.limits[hw]} "
        "units, and no slower hardware it has a profile for has enough units left. Raise "
        "max_units in the hardware catalogue or the SLO."
    )


# --- batch sizes and hardware order ---------------------------------------------------------
def next_batch(search: Search, stage: str, hardware: str, batch: int) -> int | None:
    """The next profiled batch size ≥ 2 × ``batch``, capped at the largest; None at the cap."""
    sizes = search.profile(stage, hardware).batch_sizes
    bigger = [s for s in sizes if s >= 2 * batch]
    if bigger:
        return min(bigger)
    largest = max(sizes)
    return largest if largest > batch else None


def cheaper_hardware(search: Search, stage: str, hardware: str) -> list[str]:
    """Profiled hardware cheaper than ``hardware``, most expensive first (ties: catalogue)."""
    price = search.prices[hardware]
    cheaper = [h for h in search.usable[stage] if search.prices[h] < price]
    return sorted(cheaper, key=lambda h: (-search.prices[h], search.catalogue_index[h]))


def next_cheaper_hardware(search: Search, stage: str, hardware: str) -> str | None:
    """The most expensive profiled hardware cheaper than ``hardware`` (ties: catalogue order)."""
    cheaper = cheaper_hardware(search, stage, hardware)
    return cheaper[0] if cheaper else None


def batch_chain(search: Search, stage: str, hardware: str, batch: int) -> list[int]:
    """The batch sizes IncreaseBatch reaches from ``batch``, in order."""
    chain: list[int] = []
    nb = next_batch(search, stage, hardware, batch)
    while nb is not None:
        chain.append(nb)
        nb = next_batch(search, stage, hardware, nb)
    return chain


def gaining_chain(search: Search, stage: str, hardware: str, batch: int) -> list[int]:
    """The batch chain, keeping only sizes that raise the stage's peak throughput.

    A BatchRemove to a size with no more throughput than a smaller size already
    offers cannot do better than that smaller size: same capacity, longer batches.
    """
    kept: list[int] = []
    best = search.best_mu(stage, hardware, batch)
    for nb in batch_chain(search, stage, hardware, batch)[:_LOOKAHEAD]:
        mu = search.best_mu(stage, hardware, nb)
        if mu > best * (1.0 + _EPS):
            kept.append(nb)
            best = mu
    return kept


# --- Trim (not in the paper) -----------------------------------------------------------------
def trim_batches(search: Search, key: Key, log: list[str]) -> Key:
    """Lower each stage's batch size while the plan stays feasible and its P99 does not rise."""
    for i, name in enumerate(search.names):
        while True:
            hw, b, k = key[i]
            smaller = [s for s in search.profile(name, hw).batch_sizes if s < b]
            if not smaller:
                break
            new = search.replace(key, i, (hw, max(smaller), k))
            before, after = search.evaluate(key), search.evaluate(new)
            if not (after.feasible and after.p99_s <= before.p99_s):
                break
            log.append(
                f"trim: '{name}' batch {b}->{max(smaller)} on {hw}; cost unchanged "
                f"${search.cost(new):.4f}/h; P99 {_ms(before.p99_s)}->{_ms(after.p99_s)}; a "
                "smaller maximum batch bounds the worst-case batch latency"
            )
            key = new
    return key


# --- MinimizeCost ----------------------------------------------------------------------------
def minimize_cost(search: Search, key: Key, log: list[str], *, paper: bool = False) -> Key:
    """Paper Algorithm 2 (plus the departures in the module doc unless ``paper``)."""
    downgrade = _Downgrades(search, paper)
    for round_no in range(1, _MAX_ROUNDS + 1):
        cost = search.cost(key)
        items = _candidates(search, key, paper)
        best: tuple[RankKey, str, int, Key, str] | None = None
        for rank, action, i, payload in items:
            if best is not None and rank > best[0]:
                break
            if isinstance(payload, str):
                found = downgrade(key, i, payload)
                if found is None:
                    continue
                new, note = found
                new_cost = search.cost(new)
                actual = (round(new_cost, 9), _RANK[action], i, 0)
                if new_cost < cost - _EPS and (best is None or actual < best[0]):
                    best = (actual, action, i, new, note)
            elif action == "IncreaseBatch":
                if _batch_step_ok(search, key, payload, must_help=not paper):
                    best = (rank, action, i, payload, "")
            elif search.evaluate(payload).feasible:
                best = (rank, action, i, payload, "")
        if best is None:
            log.append(
                f"stop after {round_no - 1} round(s): no candidate is feasible and cheaper "
                f"({len(items)} candidate(s) in the last round); ${cost:.4f}/h"
            )
            return key
        _, action, i, new, note = best
        log.append(_describe_step(search, round_no, action, i, key, new, note, paper))
        key = new
    log.append(f"stop: round guard ({_MAX_ROUNDS}) reached")
    return key


def _candidates(search: Search, key: Key, paper: bool) -> list[tuple[RankKey, str, int, Key | str]]:
    """Every stage's candidates, cheapest first (DowngradeHW by a lower bound on its cost)."""
    cost = search.cost(key)
    items: list[tuple[RankKey, str, int, Key | str]] = []
    for i, name in enumerate(search.names):
        hw, b, k = key[i]
        chain = batch_chain(search, name, hw, b)
        if k > 1:
            fewer = round(cost - search.prices[hw], 9)
            items.append(
                ((fewer, 0, i, b), "RemoveReplica", i, search.replace(key, i, (hw, b, k - 1)))
            )
            if not paper:
                for nb in gaining_chain(search, name, hw, b):
                    new = search.replace(key, i, (hw, nb, k - 1))
                    items.append(((fewer, 1, i, nb), "BatchRemove", i, new))
        if chain:
            new = search.replace(key, i, (hw, chain[0], k))
            items.append(((round(cost, 9), 3, i, chain[0]), "IncreaseBatch", i, new))
        for order, cheaper in enumerate(cheaper_hardware(search, name, hw)[: 1 if paper else None]):
            largest = search.profile(name, cheaper).max_batch_size
            floor = search.work_floor(name, cheaper, largest)
            bound = cost - search.prices[hw] * k + search.prices[cheaper] * floor
            if bound < cost - _EPS:
                items.append(((round(bound, 9), 2, i, order), "DowngradeHW", i, cheaper))
    items.sort(key=lambda item: item[0])
    return items


def _batch_step_ok(search: Search, key: Key, bigger: Key, *, must_help: bool) -> bool:
    """A bare IncreaseBatch is acceptable: feasible and, if ``must_help``, a lower P99."""
    after = search.evaluate(bigger)
    if not after.feasible:
        return False
    return not must_help or after.p99_s < search.evaluate(key).p99_s


def _describe_step(
    search: Search, round_no: int, action: str, i: int, old: Key, new: Key, note: str, paper: bool
) -> str:
    name = search.names[i]
    (hw, b, k), (hw2, b2, k2) = old[i], new[i]
    before, after = search.cost(old), search.cost(new)
    p99 = _ms(search.evaluate(new).p99_s)
    if action == "RemoveReplica":
        what = f"replicas {k}->{k2} on {hw}"
        why = "the cheapest feasible candidate"
    elif action == "BatchRemove":
        what = f"batch {b}->{b2} and replicas {k}->{k2} on {hw}"
        why = (
            "the cheapest feasible candidate: RemoveReplica alone is infeasible, the bigger "
            "batch's throughput makes it feasible"
        )
    elif action == "IncreaseBatch":
        what = f"batch {b}->{b2} on {hw}"
        why = "no cost-reducing action is feasible" + (
            "" if paper else "; the bigger batch lowers the P99"
        )
    else:
        what = f"{hw}/b{b}/x{k} -> {hw2}/b{b2}/x{k2}"
        why = f"{note}; the cheapest feasible candidate"
    return (
        f"round {round_no}: {action} '{name}': {what}; ${before:.4f}->${after:.4f}/h; "
        f"P99 {p99}; {why}"
    )


# --- DowngradeHW -----------------------------------------------------------------------------
class _Downgrades:
    """DowngradeHW with memoised results: the frozen (paper) form, then the rebalanced one."""

    def __init__(self, search: Search, paper: bool) -> None:
        self.search = search
        self.paper = paper
        self.frozen: dict[tuple[int, str, Key], Downgrade] = {}
        self.rebalanced: dict[tuple[int, str, Key], Downgrade] = {}

    def __call__(self, key: Key, i: int, hardware: str) -> Downgrade:
        search = self.search
        memo_key = (i, hardware, search.replace(key, i, ("", 0, 0)))
        if memo_key not in self.frozen:
            self.frozen[memo_key] = self._frozen(key, i, hardware)
        result = self.frozen[memo_key]
        if self.paper or (result is not None and search.cost(result[0]) < search.cost(key) - _EPS):
            return result
        full_key = (i, hardware, key)
        if full_key not in self.rebalanced:
            self.rebalanced[full_key] = self._rebalanced(key, i, hardware)
        options = [r for r in (result, self.rebalanced[full_key]) if r is not None]
        if not options or search.cost(min(options, key=lambda r: search.cost(r[0]))[0]) >= (
            search.cost(key) - _EPS
        ):
            compensated = self._compensated(key, i, hardware)
            if compensated is not None:
                options.append(compensated)
        if not options:
            return None
        return min(options, key=lambda r: search.cost(r[0]))

    def _compensated(self, key: Key, i: int, hardware: str) -> Downgrade:
        """Departure 6: pay for the move with latency bought on one other stage.

        A cheaper, slower stage ``i`` needs latency slack; the cheapest place to buy it is
        often another stage: one or two more replicas there, optionally at batch 1 (shorter
        batches, less waiting). Each such variant is re-initialised and minimised on ``i``
        as in the frozen move; the cheapest feasible result is kept.
        """
        search = self.search
        best: tuple[float, Key, str] | None = None
        for j, (hw_j, b_j, k_j) in enumerate(key):
            if j == i:
                continue
            for extra in (1, 2):
                for batch in dict.fromkeys((b_j, 1)):
                    free = search.free_units(key, hw_j, skip=j)
                    if k_j + extra > search.replica_cap(search.names[j], hw_j) or (
                        free is not None and k_j + extra > free
                    ):
                        continue
                    base = search.replace(key, j, (hw_j, batch, k_j + extra))
                    found = self._frozen(base, i, hardware)
                    if found is None:
                        continue
                    cost = search.cost(found[0])
                    if best is None or cost < best[0] - _EPS:
                        note = (
                            f"'{search.names[j]}' given {extra} more replica(s) at batch {batch} "
                            f"to make room, then re-initialised on {hardware} and locally minimised"
                        )
                        best = (cost, found[0], note)
        return None if best is None else (best[1], best[2])

    def _frozen(self, key: Key, i: int, hardware: str) -> Downgrade:
        """Paper: others frozen; the smallest feasible replica count at batch 1, then minimise."""
        search = self.search
        name = search.names[i]
        cap = search.replica_cap(name, hardware)
        free = search.free_units(key, hardware, skip=i)
        if free is not None:
            cap = min(cap, free)

        def feasible(replicas: int) -> bool:
            return search.evaluate(search.replace(key, i, (hardware, 1, replicas))).feasible

        start = search.work_floor(name, hardware, 1)
        lowest_infeasible, found, step, k = start - 1, None, 1, start
        while k <= cap:
            if feasible(k):
                found = k
                break
            lowest_infeasible = k
            if k == cap:
                break
            k, step = min(k + step, cap), step * 2
        if found is None:
            return None
        while found - lowest_infeasible > 1:
            mid = (found + lowest_infeasible) // 2
            if feasible(mid):
                found = mid
            else:
                lowest_infeasible = mid
        current = self._minimise_stage(search.replace(key, i, (hardware, 1, found)), i)
        return (
            current,
            f"re-initialised on {hardware} at batch 1 with {found} replica(s) (others frozen), "
            "then locally minimised",
        )

    def _rebalanced(self, key: Key, i: int, hardware: str) -> Downgrade:
        """Departure 3: move with the current capacity, add ≤ 1 replica per stage, minimise."""
        search = self.search
        names = search.names
        name = names[i]
        cost = search.cost(key)
        hw0, b0, k0 = key[i]
        largest = search.profile(name, hardware).max_batch_size
        best_own = search.prices[hardware] * search.work_floor(name, hardware, largest)
        wanted = k0 * search.mu(name, hw0, b0)
        replicas = max(
            search.work_floor(name, hardware, 1),
            math.ceil(wanted / search.mu(name, hardware, 1) - _EPS),
        )
        replicas = min(replicas, search.replica_cap(name, hardware))
        free = search.free_units(key, hardware, skip=i)
        if free is not None:
            replicas = min(replicas, free)
        current = search.replace(key, i, (hardware, 1, replicas))
        added = 0
        while not search.evaluate(current).feasible:
            others = search.cost(current) - search.prices[hardware] * current[i][2]
            if added >= len(names) or others + best_own >= cost - _EPS:
                return None
            capacity = [
                k * search.mu(n, hw, b) / search.scale[n]
                for n, (hw, b, k) in zip(names, current, strict=True)
            ]
            j = min(range(len(names)), key=lambda x: (capacity[x], x))
            hw, b, k = current[j]
            free = search.free_units(current, hw, skip=j)
            if k + 1 > search.replica_cap(names[j], hw) or (free is not None and k + 1 > free):
                return None
            current = search.replace(current, j, (hw, b, k + 1))
            added += 1
        current = self._minimise_stage(current, i)
        return (
            current,
            f"no replica count worked with the others frozen, so moved to {hardware} with its "
            f"current capacity ({replicas} replica(s) at batch 1), added {added} replica(s) by "
            f"the bottleneck rule, then locally minimised '{name}'",
        )

    def _minimise_stage(self, key: Key, i: int) -> Key:
        """MinimizeCost on stage ``i`` alone.

        Paper: RemoveReplica if feasible, else IncreaseBatch if feasible. Default:
        RemoveReplica if feasible, else the first feasible BatchRemove.
        """
        search = self.search
        name = search.names[i]
        while True:
            hw, b, k = key[i]
            if k > 1:
                fewer = search.replace(key, i, (hw, b, k - 1))
                if search.evaluate(fewer).feasible:
                    key = fewer
                    continue
            chain = batch_chain(search, name, hw, b)
            if self.paper:
                if chain:
                    bigger = search.replace(key, i, (hw, chain[0], k))
                    if search.evaluate(bigger).feasible:
                        key = bigger
                        continue
                return key
            if k == 1:
                return key
            for nb in gaining_chain(search, name, hw, b):
                candidate = search.replace(key, i, (hw, nb, k - 1))
                if search.evaluate(candidate).feasible:
                    key = candidate
                    break
            else:
                return key


# --- Headroom for the Tuner (not in the paper) -----------------------------------------------
def with_batch_headroom(
    plan: Plan,
    pipeline: Pipeline,
    profiles: Profiles,
    trace: Trace,
    *,
    seed: int = 0,
    latency_stat: LatencyStat = "median",
    max_steps: int = 1,
) -> Plan:
    """``plan`` with each stage's maximum batch raised along its profiled chain, at no
    cost, at most ``max_steps`` sizes (each the next profiled size ≥ 2×), while the plan
    stays feasible on ``trace`` and a replica's throughput grows.

    For a plan the Tuner will scale: it changes replica counts only, so a replica that
    can batch more absorbs more of a rise in load before the Tuner must buy another. A
    maximum batch is a cap, so at the planned load batches stay about as small as before.
    Trim, which lowers batches that do not lower the P99, is what it undoes (a ramp from
    115 to 229 q/s: the Tuner added an embedding replica to a plan trimmed to batch 2
    and cost 1.15× the plan sized for the peak, which batched 4). One step by default:
    raised as far as the plan stayed feasible (to 32 on most stages of tabular triage)
    its ramp missed 1.11 % where the fixed plan missed 0.66 % (run I).
    """
    if max_steps < 1:
        raise ConfigError(f"must be ≥ 1, got {max_steps}", field="max_steps")
    if not plan.feasible or plan.slo_s is None:
        return plan
    started = time.perf_counter()
    pool = plan.machine.pool if plan.machine is not None else None
    search = Search(
        pipeline,
        profiles,
        trace,
        plan.slo_s,
        seed=seed,
        margin=biased_margin(plan.margin, plan.tail_bias),
        latency_stat=latency_stat,
        machine=pool,
    )
    start = key = search.key_of(plan.config)
    log: list[str] = []
    steps = [0] * len(search.names)
    raised = True
    while raised:  # a step per stage per pass, in pipeline order, until none is feasible
        raised = False
        for i, name in enumerate(search.names):
            hw, b, k = key[i]
            bigger = next_batch(search, name, hw, b) if steps[i] < max_steps else None
            if bigger is None or not search.mu(name, hw, bigger) > search.mu(name, hw, b):
                continue
            new = search.replace(key, i, (hw, bigger, k))
            after = search.evaluate(new)
            if not after.feasible:
                continue
            log.append(
                f"headroom: '{name}' batch {b}->{bigger} on {hw}; cost unchanged "
                f"${search.cost(new):.4f}/h; P99 {_ms(after.p99_s)}; a replica serves "
                f"{search.mu(name, hw, b):.0f}->{search.mu(name, hw, bigger):.0f} q/s "
                "before the Tuner must add one"
            )
            key, raised = new, True
            steps[i] += 1
    if key == start:
        return plan
    done = finish_plan(search, key, plan.planner, [*plan.log, *log], started)
    return dataclasses.replace(
        done,
        margin=plan.margin,
        tail_bias=plan.tail_bias,
        machine=plan.machine,
        planning_time_s=plan.planning_time_s + done.planning_time_s,
        estimator_calls=plan.estimator_calls + done.estimator_calls,
    )
