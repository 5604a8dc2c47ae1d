"""A machine as a resource pool: what one host offers the replicas of a plan (SPEC §2.2).

Replicas served on one host share its cores and memory with the front-end. A
:class:`MachinePool` knows the host's usable cores (the CPU affinity mask, capped by
a cgroup CPU quota), its memory (``/proc/meminfo``, capped by a cgroup limit) and the
GPUs it can see, and keeps a reserve for the front-end. :func:`check_plan_fits` is
the one capacity check: the engine runs it before it starts anything (``serve``, a
plan posted to the control API), the live tuner caps its decisions with
:func:`fit_plan`. A replica's threads come from its hardware name
(:func:`resources_for`: ``cpu-N`` is N threads).

The engine's bound is deliberately loose: replicas' threads may oversubscribe the
cores left after the front-end's reserve by up to :data:`MAX_THREADS_PER_CORE`, so
every plan that merely runs slowly still starts, while a plan no machine of this
size can host (100,000 replicas, a batch of a million) is refused.

The Planner is strict instead (:meth:`MachinePool.for_planning`): the Estimator treats
every replica as a dedicated unit, which holds only while no replica waits for a core.
At an arrival rate λ it keeps ``FRONTEND_FLOOR_CORES + λ × frontend_cpu_s_per_query``
cores for the front-end (the CPU the Profiler measured it to spend per query) and one
GPU per GPU replica. How replicas fit the cores left is the pool's ``fit`` rule:

* ``busy``: the CPU the replicas *use*, Σ utilisation × replicas × threads
  from the Estimator's run on the planning trace, plus the front-end's share, stays
  within ``max_busy_fraction`` of the cores (an idle replica takes no CPU; a machine
  near 100 % busy inflates latency through contention). Threads stay within the
  engine's loose bound, so nothing absurd starts.
* ``shared`` (default): as ``busy``, and the Estimator that judges each plan simulates the
  cores as shared (processor sharing: while the busy replicas ask for more cores than
  the machine has after the front-end's share, each runs proportionally slower), so
  the latency that contention adds counts against the SLO, not only the average CPU.
* ``threads``: every replica thread gets a core of its own, up to
  ``planning_threads_per_core`` (default 1) per core left.

Under ``busy`` and ``shared`` a Planner also keeps each CPU replica narrower than the
machine (:attr:`MachinePool.max_threads_per_replica`): by default a replica gets at most
the whole cores left after the front-end's share, so on 2 cores a plan uses ``cpu-1``
replicas only. A replica that asks for every core stalls whenever anything else runs
(its threads meet at every parallel step, and one of them waits for the core another
process holds), which processor sharing does not model: over six 3-pipeline runs on the
2-core VM, plans with a two-thread replica measured 1.37-1.82x their shared-core
estimate, one-thread plans 0.99-1.20x (benchmarks/results/promise.md).
``threads-per-replica=N`` sets the bound by hand.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, get_args

from inferline._hardware_names import ReplicaResources, resources_for
from inferline.errors import CapacityError, ConfigError
from inferline.pipeline import PipelineConfig

if TYPE_CHECKING:
    from inferline.profiles._model import EngineOverhead

__all__ = [
    "CORE_SHARING",
    "DEFAULT_FRONTEND_CPU_S_PER_QUERY",
    "DEFAULT_MAX_BUSY_FRACTION",
    "FIT_RULES",
    "FRONTEND_FLOOR_CORES",
    "FRONTEND_MEMORY_BYTES",
    "FRONTEND_RESERVE_CORES",
    "MAX_BATCH_SIZE",
    "MAX_THREADS_PER_CORE",
    "REPLICA_MEMORY_BYTES",
    "CoreSharing",
    "FitRule",
    "MachinePool",
    "ReplicaResources",
    "check_plan_fits",
    "fit_plan",
    "frontend_cpu_s_per_query",
    "machine_from_fields",
    "machine_pool_for_host",
    "parse_machine",
    "parse_memory_bytes",
    "resources_for",
]

#: Largest batch size a stage may be given (a replica's batch is held in memory whole
#: and sent over a pipe in one message).
MAX_BATCH_SIZE = 4096
#: Cores the engine's loose start-up check keeps for the front-end (it does not know the
#: rate it will serve); replicas keep at least one core whatever the host.
FRONTEND_RESERVE_CORES = 1.0
#: The front-end's share when idle (event loop, control plane, the Tuner's ticks) that a
#: pool for planning keeps on top of the per-query CPU.
FRONTEND_FLOOR_CORES = 0.05
#: Front-end CPU per query when the profiles record no measured figure: the top of the
#: 0.6-0.8 ms measured on the example pipelines (HTTP parsing and answer, admission,
#: dispatch, fan-out).
DEFAULT_FRONTEND_CPU_S_PER_QUERY = 0.8e-3
#: Replica threads allowed per core left for replicas: the engine's oversubscription
#: bound. 8 keeps every shipped plan (the largest served one: 6 threads) startable on
#: 2 cores (8 threads there) while refusing plans no machine of the size can serve.
MAX_THREADS_PER_CORE = 8.0
#: Memory counted per replica process. A NoOp replica forked from its stage's template
#: is 17 MiB resident (5 MiB proportional) here, a stage with a real model far more; a
#: small figure, so that only plans no machine of the size could hold are refused.
REPLICA_MEMORY_BYTES = 32 << 20
#: Share of a machine's cores that a plan may keep busy under the ``busy`` fit rule.
DEFAULT_MAX_BUSY_FRACTION = 0.8

#: How a plan's replicas must fit the cores: by the CPU they use, or a core per thread.
FitRule = Literal["busy", "shared", "threads"]
FIT_RULES: tuple[str, ...] = get_args(FitRule)
#: How long a core stays idle, while another runs two or more batches, before the OS
#: moves one over (``per-core`` sharing): the calibrated estimates of the three example
#: pipelines on this 2-core VM were closest to measured at 20-40 ms (at once: the image
#: cascade 10-14 % low; docs/estimator.md).
IDLE_BALANCE_S = 0.02
#: How the Estimator shares a machine's cores between busy replicas (``shared`` rule):
#: ``fair`` (the default), perfect processor sharing (three batches on two cores run at
#: 2/3 each); ``per-core``, a run queue per core as the OS scheduler keeps them (1/2, 1/2
#: and 1). Which is closer to measured P99s depends on the machine: per-core on the VM of
#: 2026-12-03, fair on the faster one of 2026-12-04 (docs/estimator.md).
CoreSharing = Literal["per-core", "fair"]
CORE_SHARING: tuple[str, ...] = get_args(CoreSharing)

#: Memory kept for the front-end process.
FRONTEND_MEMORY_BYTES = 256 << 20


@dataclass(frozen=True, slots=True)
class MachinePool:
    """One host's resources for replicas, after the front-end's reserve.

    ``cores``: usable cores; ``memory_bytes``: usable memory (None: not a bound, for a
    described machine whose memory is not given); ``gpus``: visible GPUs, allotted one
    per GPU replica only when ``allot_gpus`` (pools for planning: the engine serves GPU
    names on any host; a GPU replica counts one thread against the cores either way).
    ``planning_threads_per_core``: replica threads per core a Planner allows
    (:meth:`for_planning`) under the ``threads`` fit rule; ``fit`` and
    ``max_busy_fraction``: how a planned plan must fit (module doc);
    ``thread_reserve_cores``: cores the thread bound leaves out (None: the front-end's
    reserve; a ``busy`` pool for planning keeps the engine's); ``threads_per_replica``:
    the most threads a planned CPU replica may have under ``busy``/``shared`` (None: the
    whole cores left after the front-end's share, module doc); ``label`` says
    where the pool came from, for messages.
    """

    cores: int
    memory_bytes: int | None
    gpus: int = 0
    frontend_reserve_cores: float = FRONTEND_RESERVE_CORES
    max_threads_per_core: float = MAX_THREADS_PER_CORE
    replica_memory_bytes: int = REPLICA_MEMORY_BYTES
    frontend_memory_bytes: int = FRONTEND_MEMORY_BYTES
    max_batch_size: int = MAX_BATCH_SIZE
    planning_threads_per_core: float = 1.0
    allot_gpus: bool = False
    fit: FitRule = "shared"
    max_busy_fraction: float = DEFAULT_MAX_BUSY_FRACTION
    thread_reserve_cores: float | None = None
    core_sharing: CoreSharing = "fair"
    idle_balance_s: float = IDLE_BALANCE_S
    threads_per_replica: int | None = None
    label: str = dataclasses.field(default="", compare=False)

    def __post_init__(self) -> None:
        if self.cores < 1 or (self.memory_bytes is not None and self.memory_bytes < 1):
            raise ValueError("a machine has at least one core and some memory")
        if self.gpus < 0:
            raise ValueError("a machine's GPU count is >= 0")
        if not (math.isfinite(self.frontend_reserve_cores) and self.frontend_reserve_cores >= 0):
            raise ValueError("the front-end's reserve must be >= 0 cores")
        if not self.max_threads_per_core > 0:
            raise ValueError("threads per core must be positive")
        if not 0 < self.planning_threads_per_core <= MAX_THREADS_PER_CORE / 2:
            raise ValueError(
                f"planning threads per core must be in (0, {MAX_THREADS_PER_CORE / 2:g}]: a "
                "plan made for the machine must also pass the engine's start-up check"
            )
        if self.replica_memory_bytes < 1 or self.frontend_memory_bytes < 0:
            raise ValueError("a replica needs some memory; the front-end's share is >= 0")
        if self.max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        if self.fit not in FIT_RULES:
            raise ConfigError(
                f"unknown fit rule {self.fit!r}; expected one of {', '.join(FIT_RULES)}",
                field="fit",
            )
        if self.core_sharing not in CORE_SHARING:
            raise ConfigError(
                f"unknown core sharing {self.core_sharing!r}; expected one of "
                f"{', '.join(CORE_SHARING)}",
                field="core_sharing",
            )
        if not (math.isfinite(self.idle_balance_s) and self.idle_balance_s >= 0):
            raise ConfigError(
                f"idle_balance_s must be >= 0 seconds, got {self.idle_balance_s!r}",
                field="idle_balance_s",
            )
        width = self.threads_per_replica
        if width is not None and not (isinstance(width, int) and width >= 1):
            raise ConfigError(
                f"threads_per_replica must be a whole number >= 1, got {width!r}",
                field="threads_per_replica",
            )
        fraction = self.max_busy_fraction
        if not (isinstance(fraction, int | float) and 0 < fraction <= 1):
            raise ConfigError(
                f"max_busy_fraction is the share of the cores a plan may keep busy, in (0, 1], "
                f"got {fraction!r}",
                field="max_busy_fraction",
            )

    @property
    def replica_cores(self) -> float:
        """Cores left for replicas after the front-end's reserve (at least one)."""
        return max(1.0, self.cores - self.frontend_reserve_cores)

    @property
    def max_threads(self) -> int:
        """Replica threads this pool allows in all."""
        reserve = self.thread_reserve_cores
        cores = self.replica_cores if reserve is None else max(1.0, self.cores - reserve)
        return max(1, math.floor(cores * self.max_threads_per_core + 1e-9))

    @property
    def max_replicas(self) -> int:
        """Replica processes the memory left after the front-end's share can hold."""
        if self.memory_bytes is None:
            return _UNBOUNDED
        left = self.memory_bytes - self.frontend_memory_bytes
        return max(1, left // self.replica_memory_bytes)

    @property
    def max_gpus(self) -> int:
        """GPU replicas this pool allows (unbounded when it does not allot GPUs)."""
        return self.gpus if self.allot_gpus else _UNBOUNDED

    @property
    def busy_cores_allowed(self) -> float:
        """Cores the replicas may keep busy under the ``busy`` rule: the target share of
        the machine less the front-end's (for a pool from :meth:`for_planning`)."""
        return self.cores * self.max_busy_fraction - self.frontend_reserve_cores

    @property
    def bounds_busy_cores(self) -> bool:
        """Whether a plan's busy cores must stay within ``busy_cores_allowed``."""
        return self.fit in ("busy", "shared")

    @property
    def max_threads_per_replica(self) -> int | None:
        """The most threads a planned CPU replica may have (None: no bound of its own, the
        ``threads`` rule, whose core per thread already bounds it)."""
        if not self.bounds_busy_cores:
            return None
        if self.threads_per_replica is not None:
            return self.threads_per_replica
        return max(1, math.floor(self.cores - self.frontend_reserve_cores + 1e-9))

    def too_wide(self, hardware: str) -> bool:
        """Whether a replica on ``hardware`` has more threads than a planned replica may."""
        limit = self.max_threads_per_replica
        if limit is None:
            return False
        resources = resources_for(hardware, self.cores)
        return resources.device == "cpu" and resources.threads > limit

    @property
    def shares_cores(self) -> bool:
        """Whether the Estimator should simulate this machine's cores as shared."""
        return self.fit == "shared"

    def shared_cores_at(self, rate_qps: float, frontend_cpu_s_per_query: float) -> float:
        """Cores the replicas share at ``rate_qps``: the machine less the front-end's
        measured share (never below a tenth of the machine)."""
        reserve = FRONTEND_FLOOR_CORES + max(rate_qps, 0.0) * frontend_cpu_s_per_query
        return max(0.1 * self.cores, self.cores - reserve)

    def cores_per_busy_replica(self, hardware: str) -> float:
        """Cores a busy replica on ``hardware`` takes from the shared cores (its threads;
        0 for a GPU replica, whose work runs on its own device)."""
        resources = resources_for(hardware, self.cores)
        return float(resources.threads) if resources.device == "cpu" else 0.0

    def busy_cores_needed(self, replica_busy_cores: float) -> int:
        """The fewest cores that keep ``replica_busy_cores`` plus the front-end's share
        within the target share (the ``busy`` rule's "needs N cores")."""
        total = replica_busy_cores + self.frontend_reserve_cores
        return max(1, math.ceil(total / self.max_busy_fraction - 1e-9))

    def for_planning(
        self, rate_qps: float, frontend_cpu_s_per_query: float = DEFAULT_FRONTEND_CPU_S_PER_QUERY
    ) -> MachinePool:
        """This machine as a Planner sees it at ``rate_qps``: the front-end keeps its measured
        share, GPUs are allotted; under ``threads`` replicas get
        ``planning_threads_per_core`` threads per core left, under ``busy`` the engine's
        loose thread bound stays (the busy cores are checked on the Estimator's run)."""
        if not (math.isfinite(rate_qps) and rate_qps >= 0):
            raise ValueError(f"the planning rate must be >= 0 q/s, got {rate_qps!r}")
        if not (math.isfinite(frontend_cpu_s_per_query) and frontend_cpu_s_per_query >= 0):
            raise ValueError("the front-end's CPU per query must be >= 0 s")
        literal = self.fit == "threads"
        return dataclasses.replace(
            self,
            frontend_reserve_cores=round(
                FRONTEND_FLOOR_CORES + rate_qps * frontend_cpu_s_per_query, 4
            ),
            max_threads_per_core=(
                self.planning_threads_per_core if literal else self.max_threads_per_core
            ),
            thread_reserve_cores=None if literal else self.frontend_reserve_cores,
            allot_gpus=True,
        )

    def cores_needed(self, plan: PipelineConfig) -> int:
        """The fewest cores a machine like this one needs for ``plan`` (its reserve and
        threads per core kept), so a user knows what machine to get."""
        threads = sum(self.threads_of(plan, cores=_UNBOUNDED).values())

        def enough(cores: int) -> bool:
            return dataclasses.replace(self, cores=cores).max_threads >= threads

        cores = max(1, math.ceil(threads / self.max_threads_per_core + self.frontend_reserve_cores))
        while cores > 1 and enough(cores - 1):  # replicas keep one core whatever the host
            cores -= 1
        while not enough(cores):
            cores += 1
        if cores > self.cores and sum(self.threads_of(plan).values()) <= self.max_threads:
            return self.cores  # fits here: cpu-N is capped at this machine's cores
        return cores

    def busy_cores_of(
        self, plan: PipelineConfig, utilization: Mapping[str, float]
    ) -> dict[str, float]:
        """Cores each stage of ``plan`` keeps busy: its replicas' busy fraction
        (``utilization``, e.g. the Estimator's per stage) × replicas × threads."""
        return {
            name: utilization[name] * c.replicas * resources_for(c.hardware, self.cores).threads
            for name, c in plan.stages.items()
        }

    def gpus_needed(self, plan: PipelineConfig) -> int:
        """GPU replicas in ``plan``."""
        return sum(
            c.replicas
            for c in plan.stages.values()
            if resources_for(c.hardware, self.cores).device == "cuda"
        )

    def threads_of(self, plan: PipelineConfig, cores: int | None = None) -> dict[str, int]:
        """Replica threads per stage of ``plan`` on this machine (or one with ``cores``)."""
        return {
            name: c.replicas * resources_for(c.hardware, cores or self.cores).threads
            for name, c in plan.stages.items()
        }

    def as_dict(self) -> dict[str, float | int | None]:
        """The pool as JSON (the ``machine`` section of the engine's status)."""
        return {
            "cores": self.cores,
            "memory_bytes": self.memory_bytes,
            "gpus": self.gpus,
            "frontend_reserve_cores": self.frontend_reserve_cores,
            "max_threads_per_core": self.max_threads_per_core,
            "max_threads": self.max_threads,
            "max_replicas": self.max_replicas,
            "max_batch_size": self.max_batch_size,
        }


#: Stands for "no bound" in the counts a pool allows.
_UNBOUNDED = 1 << 40


def frontend_cpu_s_per_query(overhead: EngineOverhead | None) -> tuple[float, bool]:
    """The front-end's CPU per query from the profiles' engine overhead, and whether the
    Profiler measured it (else :data:`DEFAULT_FRONTEND_CPU_S_PER_QUERY`)."""
    if overhead is not None and overhead.frontend_cpu_s_per_query is not None:
        return overhead.frontend_cpu_s_per_query, True
    return DEFAULT_FRONTEND_CPU_S_PER_QUERY, False


def check_plan_fits(plan: PipelineConfig, pool: MachinePool | None) -> None:
    """Raise :class:`CapacityError` naming the stage and resource if ``plan`` cannot run
    on ``pool``; with no pool (replicas elsewhere, e.g. on Ray) only batch sizes are
    bounded, by :data:`MAX_BATCH_SIZE`."""
    max_batch = pool.max_batch_size if pool is not None else MAX_BATCH_SIZE
    for name, c in plan.stages.items():
        if c.batch_size > max_batch:
            raise CapacityError(
                f"stage '{name}' exceeds the batch_size limit: batch_size {c.batch_size} > "
                f"{max_batch}, the largest a stage may be given",
                stage=name,
                resource="batch_size",
            )
    if pool is None:
        return
    threads = pool.threads_of(plan)
    total = sum(threads.values())
    if total > pool.max_threads:
        stage = max(threads, key=lambda s: threads[s])
        c = plan.stages[stage]
        raise CapacityError(
            f"stage '{stage}' exceeds the machine's cpu threads: {c.replicas} replica(s) × "
            f"{resources_for(c.hardware, pool.cores).threads} thread(s) on '{c.hardware}' "
            f"bring the plan to {total} replica threads; this machine allows "
            f"{pool.max_threads} ({pool.cores} usable cores, "
            f"{pool.frontend_reserve_cores:g} kept for the front-end, "
            f"× {pool.max_threads_per_core:g} threads per core)",
            stage=stage,
            resource="cpu threads",
        )
    if pool.allot_gpus:
        gpu_replicas = {
            name: c.replicas
            for name, c in plan.stages.items()
            if resources_for(c.hardware, pool.cores).device == "cuda"
        }
        if sum(gpu_replicas.values()) > pool.gpus:
            stage = max(gpu_replicas, key=lambda s: gpu_replicas[s])
            raise CapacityError(
                f"stage '{stage}' exceeds the machine's GPUs: {gpu_replicas[stage]} replica(s) "
                f"on '{plan.stages[stage].hardware}' bring the plan to "
                f"{sum(gpu_replicas.values())} GPU replicas; this machine has {pool.gpus} GPU(s)",
                stage=stage,
                resource="gpus",
            )
    replicas = {name: c.replicas for name, c in plan.stages.items()}
    count = sum(replicas.values())
    if count > pool.max_replicas:
        stage = max(replicas, key=lambda s: replicas[s])
        raise CapacityError(
            f"stage '{stage}' exceeds the machine's memory: {replicas[stage]} replica(s) "
            f"bring the plan to {count} "
            f"replica processes; this machine's memory ({(pool.memory_bytes or 0) >> 20} MiB, "
            f"{pool.frontend_memory_bytes >> 20} MiB kept for the front-end) holds at most "
            f"{pool.max_replicas} at {pool.replica_memory_bytes >> 20} MiB each",
            stage=stage,
            resource="memory",
        )


def _fits(plan: PipelineConfig, pool: MachinePool) -> bool:
    try:
        check_plan_fits(plan, pool)
    except CapacityError:
        return False
    return True


def fit_plan(
    plan: PipelineConfig, pool: MachinePool, current: PipelineConfig
) -> tuple[PipelineConfig, dict[str, int]]:
    """``plan`` with its replica increases over ``current`` cut back until it fits.

    Decreases are kept; the increases are granted one replica at a time, stage by stage
    in turn, while the plan fits. Returns the fitted plan and, per stage that got fewer
    replicas than asked, the count asked for (empty when ``plan`` fits as it is).
    """
    if _fits(plan, pool):
        return plan, {}
    wanted = {name: c.replicas for name, c in plan.stages.items()}
    counts = {
        name: min(k, current.stages[name].replicas) if name in current.stages else 1
        for name, k in wanted.items()
    }

    def with_counts(counts: Mapping[str, int]) -> PipelineConfig:
        return PipelineConfig(
            stages={
                name: c.model_copy(update={"replicas": counts[name]})
                for name, c in plan.stages.items()
            }
        )

    growing = [name for name in wanted if wanted[name] > counts[name]]
    progress = True
    while progress:
        progress = False
        for name in growing:
            if counts[name] >= wanted[name]:
                continue
            counts[name] += 1
            if _fits(with_counts(counts), pool):
                progress = True
            else:
                counts[name] -= 1
    limited = {name: wanted[name] for name in wanted if counts[name] < wanted[name]}
    return with_counts(counts), limited


# --- the host -------------------------------------------------------------------------------


def _usable_cores() -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    with contextlib.suppress(OSError, ValueError):
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    return max(1, cores)


def _memory_bytes() -> int:
    total = 0
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                total = int(line.split()[1]) * 1024
                break
    if not total:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    with contextlib.suppress(OSError, ValueError):
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            total = min(total, int(limit)) if total else int(limit)
    return max(1, total)


def _visible_gpus() -> int:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = [v for v in visible.split(",") if v.strip() and v.strip() != "-1"]
        if not ids or visible.strip() == "NoDevFiles":
            return 0
        gpus_here = _nvidia_gpus()
        return min(len(ids), gpus_here) if gpus_here else len(ids)
    return _nvidia_gpus()


def _nvidia_gpus() -> int:
    try:
        return len(list(Path("/proc/driver/nvidia/gpus").iterdir()))
    except OSError:
        return 0


def machine_pool_for_host(
    *,
    frontend_reserve_cores: float = FRONTEND_RESERVE_CORES,
    max_threads_per_core: float = MAX_THREADS_PER_CORE,
    planning_threads_per_core: float = 1.0,
    fit: FitRule = "shared",
    max_busy_fraction: float = DEFAULT_MAX_BUSY_FRACTION,
) -> MachinePool:
    """This host as a pool: usable cores, memory and visible GPUs, read now."""
    return MachinePool(
        cores=_usable_cores(),
        memory_bytes=_memory_bytes(),
        gpus=_visible_gpus(),
        frontend_reserve_cores=frontend_reserve_cores,
        max_threads_per_core=max_threads_per_core,
        planning_threads_per_core=planning_threads_per_core,
        fit=fit,
        max_busy_fraction=max_busy_fraction,
        label="local",
    )


# --- a machine named on the command line or in the hardware catalogue -----------------------

_MACHINE_KEYS = (
    "cores",
    "memory",
    "gpus",
    "fit",
    "max-busy-fraction",
    "threads-per-core",
    "sharing",
    "threads-per-replica",
)
_LOCAL_KEYS = ("fit", "max-busy-fraction", "threads-per-core", "sharing", "threads-per-replica")
_MEMORY = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?$", re.IGNORECASE)
_MACHINE_HELP = (
    "'local' (this host) or 'cores=N[,memory=16G][,gpus=K]', either optionally with "
    "',fit=shared|busy|threads' (shared, the default: the CPU replicas use stays within "
    "max-busy-fraction=F of the cores, default 0.8, and the Estimator simulates the cores "
    "as shared; busy: the same bound without the simulated contention; threads: a core "
    "per replica thread, "
    "',threads-per-core=T' per core, default 1), ',sharing=fair|per-core' (how the "
    "Estimator shares the cores: fairly, the default, or a run queue per core) and, for "
    "fit=shared|busy, ',threads-per-replica=N' (the most threads one CPU replica may have; "
    "default: the whole cores left after the front-end's share)"
)


def parse_memory_bytes(text: str) -> int:
    """``16G``, ``512M``, ``1.5T`` or a number of bytes; ValueError otherwise."""
    match = _MEMORY.match(text.strip())
    if not match:
        raise ValueError(f"memory {text!r} is not a size like 16G or 512M")
    scale = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[match[2].lower()]
    value = int(float(match[1]) * scale)
    if value < 1:
        raise ValueError(f"memory {text!r} must be positive")
    return value


def machine_from_fields(
    *,
    cores: int | None,
    memory_bytes: int | None = None,
    gpus: int = 0,
    threads_per_core: float | None = None,
    fit: str = "shared",
    max_busy_fraction: float | None = None,
    sharing: str = "fair",
    threads_per_replica: int | None = None,
    label: str = "",
) -> MachinePool:
    """A pool for a described machine, or this host when ``cores`` is None (then only the
    fit rule, its figure and the core sharing apply); ValueError saying what is wrong."""
    if fit not in FIT_RULES:
        raise ValueError(f"fit must be one of {', '.join(FIT_RULES)}, got {fit!r}")
    if sharing not in CORE_SHARING:
        raise ValueError(f"sharing must be one of {', '.join(CORE_SHARING)}, got {sharing!r}")
    core_sharing: CoreSharing = "fair" if sharing == "fair" else "per-core"
    rule: FitRule = "threads" if fit == "threads" else "shared" if fit == "shared" else "busy"
    if threads_per_core is not None and rule != "threads":
        raise ValueError("threads-per-core is the fit=threads rule's figure; add fit=threads")
    if max_busy_fraction is not None and rule == "threads":
        raise ValueError("max-busy-fraction is the fit=busy/shared rules' figure; drop fit=threads")
    if threads_per_replica is not None and rule == "threads":
        raise ValueError(
            "threads-per-replica is the fit=busy/shared rules' figure (under fit=threads every "
            "thread has a core); drop fit=threads"
        )
    if threads_per_replica is not None and threads_per_replica < 1:
        raise ValueError(f"threads-per-replica must be at least 1, got {threads_per_replica}")
    tpc = 1.0 if threads_per_core is None else threads_per_core
    if not 0 < tpc <= MAX_THREADS_PER_CORE / 2:
        raise ValueError(
            f"threads-per-core must be in (0, {MAX_THREADS_PER_CORE / 2:g}], got {tpc:g}"
        )
    fraction = DEFAULT_MAX_BUSY_FRACTION if max_busy_fraction is None else max_busy_fraction
    if not (math.isfinite(fraction) and 0 < fraction <= 1):
        raise ValueError(f"max-busy-fraction must be in (0, 1], got {fraction:g}")
    if cores is None:
        return dataclasses.replace(
            machine_pool_for_host(
                planning_threads_per_core=tpc, fit=rule, max_busy_fraction=fraction
            ),
            core_sharing=core_sharing,
            threads_per_replica=threads_per_replica,
        )
    if cores < 1:
        raise ValueError(f"cores must be at least 1, got {cores}")
    if gpus < 0:
        raise ValueError(f"gpus must be >= 0, got {gpus}")
    return MachinePool(
        cores=cores,
        memory_bytes=memory_bytes,
        gpus=gpus,
        planning_threads_per_core=tpc,
        fit=rule,
        max_busy_fraction=fraction,
        core_sharing=core_sharing,
        threads_per_replica=threads_per_replica,
        label=label or f"{cores} cores",
    )


def parse_machine(
    text: str, *, source: str = "<argument>", field: str = "--machine"
) -> MachinePool:
    """``local`` or ``cores=N[,memory=..G][,gpus=K]``, with ``fit=busy|shared|threads`` and its
    figure (``max-busy-fraction=F`` / ``threads-per-core=T``), as a pool;
    :class:`ConfigError` naming ``field`` otherwise."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    values: dict[str, str] = {}
    local = bool(parts) and parts[0].lower() == "local"
    try:
        for part in parts[1:] if local else parts:
            key, sep, value = part.partition("=")
            key = key.strip().lower().replace("_", "-")
            if not sep or key not in _MACHINE_KEYS or key in values:
                raise ValueError(f"{part!r} is not one of {', '.join(_MACHINE_KEYS)} given once")
            if local and key not in _LOCAL_KEYS:
                raise ValueError(
                    f"'local' reads {key} from this host; only {', '.join(_LOCAL_KEYS)} go"
                )
            values[key] = value.strip()
        if not local and "cores" not in values:
            raise ValueError("a described machine needs cores=N")
        return machine_from_fields(
            cores=None if local else int(values["cores"]),
            memory_bytes=parse_memory_bytes(values["memory"]) if "memory" in values else None,
            gpus=int(values.get("gpus", "0")),
            threads_per_core=_number(values.get("threads-per-core")),
            fit=values.get("fit", "shared").lower(),
            max_busy_fraction=_number(values.get("max-busy-fraction")),
            sharing=values.get("sharing", "fair").lower(),
            threads_per_replica=_whole(values.get("threads-per-replica")),
            label="local" if local else "",
        )
    except ValueError as exc:
        raise ConfigError(f"{exc}; expected {_MACHINE_HELP}", source=source, field=field) from None


def _number(text: str | None) -> float | None:
    return None if text is None else float(text)


def _whole(text: str | None) -> int | None:
    if text is None:
        return None
    if not text.strip().isdigit():
        raise ValueError(f"threads-per-replica must be a whole number >= 1, got {text!r}")
    return int(text)
