"""One simulation in progress: every array the kernel reads and mutates, prepared once.

Both :meth:`Estimator.run` (a fixed configuration: one ``advance`` to t = ∞) and
``simulate_timevarying`` (``advance`` in slices, ``set_target`` between them)
build their state here, so the two cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from inferline.estimator import _kernel as k

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True)
class PreparedTrace:
    """The arrays a run is computed from, for other simulators of the same semantics.

    Shared, not copied: treat every array as read-only.
    """

    arrival_s: np.ndarray  # float64[n], sorted
    visit_mask: np.ndarray  # int64[n], bit s = the query visits stage s
    pending: np.ndarray  # int8[n, S], visited predecessors per visited stage
    succ_ptr: np.ndarray  # int64[S + 1], successors of stage s: succ_idx[succ_ptr[s]:succ_ptr[s+1]]
    succ_idx: np.ndarray  # int64[E]
    stage_capacity: np.ndarray  # int64[S], queries that visit each stage
    log_scale: np.ndarray  # float64[n * S] or empty: service-time multipliers (log)
    extra_s: np.ndarray | None = None  # float64[n]: the engine's per-query overhead, or None


@dataclass(frozen=True)
class StageArrays:
    """A configuration as the kernel sees it (per stage, in pipeline order)."""

    latency: F64  # [S, bmax + 1]: service time of a batch of b queries
    sigma: F64  # [S, bmax + 1]: spread of the service-time multiplier
    max_batch: I64  # [S]
    replicas: I64  # [S]: replicas serving at the start
    # [S]: cores a busy batch of each stage asks for on the shared machine (0: dedicated)
    demand: F64 | None = None
    shared_cores: float = float("inf")  # cores the stages with demand > 0 share
    # run queues the shared cores keep: 1 (fair sharing) or one per core (see _kernel)
    run_queues: int = 1
    # how long a core stays idle, with batches waiting on another, before it takes one
    balance_s: float = 0.0


class KernelRun:
    """The kernel's state for one trace and one starting configuration.

    ``slot_cap[s]`` is the most replica slots stage s can use (serving, starting,
    draining and cancelled ones together); a fixed configuration needs exactly its
    replicas. Arrays are public for the driver to observe; only the kernel writes them.
    """

    def __init__(
        self,
        prepared: PreparedTrace,
        *,
        stages: StageArrays,
        slot_cap: I64,
        fifo: bool,
        slo_s: float,
        max_misses: int,
    ) -> None:
        stage_capacity = prepared.stage_capacity
        n = prepared.arrival_s.shape[0]
        S = stage_capacity.shape[0]
        bmax = stages.latency.shape[1] - 1
        self.arrival = prepared.arrival_s
        self.visit_mask = prepared.visit_mask
        self.pending = prepared.pending.reshape(n * S).copy()
        self.succ_ptr = prepared.succ_ptr
        self.succ_idx = prepared.succ_idx
        self.log_scale = prepared.log_scale
        self.stages = stages
        self.fifo = fifo
        self.slo_s = float(slo_s)
        self.max_misses = int(max_misses)
        # stage queues: stage s in [heap_base[s], heap_base[s] + stage_capacity[s])
        self.heap_base = np.zeros(S, dtype=np.int64)
        self.heap_base[1:] = np.cumsum(stage_capacity)[:-1]
        total = max(int(stage_capacity.sum()), 1)
        self.hq = np.empty(total, dtype=np.int64)
        self.ht = np.empty(total, dtype=np.float64)
        self.qsize = np.zeros(S, dtype=np.int64)
        # replica slots: stage s in [slot_base[s], slot_base[s] + slot_cap[s]); the first
        # replicas[s] of them serve from the start
        self.slot_cap = slot_cap
        self.slot_base = np.zeros(S, dtype=np.int64)
        self.slot_base[1:] = np.cumsum(slot_cap)[:-1]
        R = max(int(slot_cap.sum()), 1)
        self.slot_stage = np.repeat(np.arange(S, dtype=np.int64), slot_cap)
        self.status = np.full(R, k.OFF, dtype=np.int64)
        self.free_stack = np.zeros(R, dtype=np.int64)
        self.free_count = stages.replicas.astype(np.int64).copy()
        for s in range(S):
            b = int(self.slot_base[s])
            c = int(stages.replicas[s])
            self.status[b : b + c] = k.ACTIVE
            self.free_stack[b : b + c] = np.arange(b, b + c)
        self.batch_q = np.empty(R * max(bmax, 1), dtype=np.int64)
        self.batch_n = np.zeros(R, dtype=np.int64)
        self.removed_at = np.zeros(R)
        self.drain_billed_s = np.zeros(S)
        C = max(int(stages.run_queues), 1)
        # one event per replica slot, and a balancing check per run queue
        self.et = np.empty(R + C)
        self.es = np.empty(R + C, dtype=np.int64)
        self.er = np.empty(R + C, dtype=np.int64)
        # results
        self.finish = np.full(n, np.nan)
        self.remaining = np.zeros(n, dtype=np.int8)
        self.busy_s = np.zeros(S)
        self.wait_s = np.zeros(S)
        self.visits = np.zeros(S, dtype=np.int64)
        self.batches = np.zeros(S, dtype=np.int64)
        self.scal = np.zeros(k.N_SCALARS, dtype=np.int64)
        self.ready = np.empty(max(S, 1), dtype=np.int64)
        self.is_ready = np.zeros(max(S, 1), dtype=np.bool_)
        # shared cores (processor sharing, see _kernel)
        self.demand = np.zeros(S) if stages.demand is None else stages.demand.astype(np.float64)
        self.shared_cores = float(stages.shared_cores)
        self.vt = np.empty(C * R)
        self.vs = np.empty(C * R, dtype=np.int64)
        self.vr = np.empty(C * R, dtype=np.int64)
        self.csize = np.zeros(C, dtype=np.int64)
        self.clag = np.zeros(C)
        self.cdemand = np.zeros(C)
        self.crate = np.ones(C)
        self.cbalance = np.zeros(C, dtype=np.int64)
        self.fscal = np.zeros(k.N_FSCALARS)

    def advance(self, t_stop: float) -> None:
        """Simulate every event strictly before ``t_stop`` (``math.inf``: to the end)."""
        k.advance(
            float(t_stop), self.arrival, self.visit_mask, self.pending, self.succ_ptr,
            self.succ_idx, self.heap_base, self.hq, self.ht, self.qsize, self.status,
            self.slot_stage, self.free_stack, self.slot_base, self.free_count, self.batch_q,
            self.batch_n, self.removed_at, self.drain_billed_s, self.et, self.es, self.er,
            self.stages.max_batch, self.stages.latency, self.log_scale, self.stages.sigma,
            self.fifo, self.slo_s, self.max_misses, self.finish, self.remaining, self.busy_s,
            self.wait_s, self.visits, self.batches, self.scal, self.ready, self.is_ready,
            self.shared_cores, self.demand, self.vt, self.vs, self.vr, self.csize, self.clag,
            self.cdemand, self.crate, self.cbalance, self.stages.balance_s,
            self.fscal,
        )  # fmt: skip

    def set_target(self, stage: int, target: int, t: float, activation_s: float) -> tuple[int, int]:
        """Move ``stage`` to ``target`` replicas at ``t``; returns (added, removed)."""
        added, removed = k.set_target(
            stage, target, float(t), float(activation_s), self.status, self.slot_base,
            self.slot_cap, self.free_stack, self.free_count, self.removed_at, self.et, self.es,
            self.er, self.scal,
        )  # fmt: skip
        return int(added), int(removed)

    @property
    def admitted(self) -> int:
        """Arrivals simulated so far."""
        return int(self.scal[k.AI])

    @property
    def events_pending(self) -> bool:
        return bool(self.scal[k.ESIZE] > 0 or self.scal[k.VSIZE] > 0)

    @property
    def misses(self) -> int:
        return int(self.scal[k.MISSES])

    @property
    def stopped(self) -> bool:
        return bool(self.scal[k.STOPPED])

    def allocated(self) -> I64:
        """Replicas per stage that are billed and count as present (starting or serving)."""
        live = (self.status == k.STARTING) | (self.status == k.ACTIVE)
        return np.bincount(self.slot_stage[live], minlength=self.qsize.shape[0]).astype(np.int64)
