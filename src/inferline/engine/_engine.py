"""The front-end's core: queries flow through the DAG over per-stage queues and replicas.

Everything here runs on one asyncio event loop; there are no locks around state. A
query enters every source stage's queue; when a stage's batch result comes back, each
query's output is routed to the successors its ``route`` chose, a successor is queued
once all of its predecessors are resolved (finished, or known not to be visited), and
the query is answered when every stage is resolved (join = max, as in the Estimator).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import statistics
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inferline._files import parse_model
from inferline.engine._admission import EstimateError, completion_estimate_s
from inferline.engine._calibration import CalibrationOptions, Calibrator
from inferline.engine._errors import EngineError, RequestError, StageLoadError
from inferline.engine._failures import FailureLog
from inferline.engine._hardware import REPLICA_NICE, resources_for
from inferline.engine._launcher import WorkerLauncher
from inferline.engine._metrics import EngineMetrics, StageMetrics
from inferline.engine._queue import StageDispatcher
from inferline.engine._replica import Batch, Replica, ReplicaState
from inferline.engine._stage import Tensor, TensorSpec
from inferline.engine._tensor import InferRequest
from inferline.errors import CapacityError, ConfigError
from inferline.pipeline import Pipeline, PipelineConfig, StageConfig, check_stage_names
from inferline.profiles import MachinePool, Profiles, check_plan_fits, machine_pool_for_host

__all__ = ["Answer", "Engine", "EngineOptions", "ReplicaFactory"]

#: Makes one replica: (replica id, stage, hardware, on_message, on_lost) -> Replica. The
#: default starts a local worker process; the Ray backend passes one that creates an actor;
#: unit tests pass ``inferline.engine.testing.InMemoryReplicaFactory`` (no processes).
ReplicaFactory = Callable[
    [int, str, str, Callable[[Replica, Any], None], Callable[[Replica], None]], Replica
]


def local_replica(
    replica_id: int,
    stage: str,
    hardware: str,
    on_message: Callable[[Replica, Any], None],
    on_lost: Callable[[Replica], None],
    launcher: WorkerLauncher | None = None,
) -> Replica:
    """A replica that is a worker process on this machine (the embedded engine's)."""
    resources = resources_for(hardware)
    return Replica(replica_id, stage, hardware, resources, on_message, on_lost, launcher)


log = logging.getLogger("inferline.engine")

_LIVE = (ReplicaState.STARTING, ReplicaState.READY)
_STATS_SAMPLES = 100_000
_MAX_START_FAILURES = 3


@dataclass(frozen=True, slots=True)
class EngineOptions:
    """How the engine orders, bounds and sheds work (times in seconds)."""

    slo_s: float = 1.0  # deadline = arrival + slo_s: EDF order and (optional) shedding
    max_queue: int = 10_000  # per stage; a query that finds its stage's queue full gets 503
    max_in_flight: int = 50_000  # admitted, unanswered queries; beyond it 503 at once
    shed_late: bool = False  # 503 a query that cannot meet its deadline instead of serving it
    shed_slack: float = 0.1  # admission keeps this fraction of the SLO for estimate errors
    retries: int = 1  # times a query is re-run after its replica died under it
    start_timeout_s: float = 120.0  # a replica's process start + setup()
    fork_replicas: bool = True  # fork local replicas from a per-stage template (Linux)
    #: niceness added to local replica processes: the front-end dispatches every batch and
    #: answers every query, so a replica computing should not keep it from a core
    replica_nice: int = REPLICA_NICE
    drain_timeout_s: float = 30.0  # graceful shutdown: wait this long for in-flight queries

    def __post_init__(self) -> None:
        for name in ("slo_s", "start_timeout_s", "drain_timeout_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"must be positive, got {getattr(self, name)!r}", field=name)
        for name, low in (("max_queue", 1), ("max_in_flight", 1), ("retries", 0)):
            if getattr(self, name) < low:
                raise ConfigError(f"must be ≥ {low}, got {getattr(self, name)!r}", field=name)
        if not 0.0 <= self.shed_slack < 1.0:
            raise ConfigError(f"must be in [0, 1), got {self.shed_slack!r}", field="shed_slack")
        if not 0 <= self.replica_nice <= 19:
            raise ConfigError(
                f"must be in [0, 19] (added niceness), got {self.replica_nice!r}",
                field="replica_nice",
            )


@dataclass(frozen=True, slots=True)
class Answer:
    """The one answer a query gets: 200 with outputs, or an HTTP error status and message."""

    status: int
    outputs: list[dict[str, Any]] | None = None
    path: tuple[str, ...] = ()
    error: str | None = None
    latency_s: float = 0.0


class _Query:
    __slots__ = (
        "arrival_s",
        "deadline_s",
        "done",
        "estimate_s",
        "future",
        "pending",
        "resolved",
        "routed_from",
        "seq",
        "sinks",
        "values",
        "visited",
        "want",
    )

    def __init__(
        self,
        seq: int,
        arrival_s: float,
        deadline_s: float,
        n_preds: list[int],
        want: tuple[str, ...] | None,
        future: asyncio.Future[Answer],
    ) -> None:
        self.seq = seq
        self.arrival_s = arrival_s
        self.deadline_s = deadline_s
        self.future = future
        self.done = False
        self.estimate_s: float | None = None  # admission's estimated finish (shedding)
        self.pending = list(n_preds)  # unresolved predecessors per stage
        self.routed_from: dict[int, list[int]] = {}  # stage -> predecessors that chose it
        self.values: dict[int, Any] = {}  # outputs that feed a successor
        self.sinks: list[tuple[int, list[dict[str, Any]]]] = []  # outputs that end a branch
        self.visited: list[int] = []
        self.resolved = 0
        self.want = want


class _Visit:
    """One query at one stage: what the stage's replica receives, and its timing."""

    __slots__ = ("attempts", "enqueued_s", "query", "value")

    def __init__(self, query: _Query, value: Any, enqueued_s: float) -> None:
        self.query = query
        self.value = value
        self.enqueued_s = enqueued_s
        self.attempts = 0


def _visit_alive(visit: _Visit) -> bool:
    return not visit.query.done


class _StageRuntime:
    """A stage's queue, replicas, plan entry and measurements."""

    def __init__(
        self,
        index: int,
        name: str,
        model: str,
        config: StageConfig,
        dispatcher: StageDispatcher[_Visit, Replica],
        metrics: StageMetrics,
    ) -> None:
        self.index = index
        self.name = name
        self.model = model
        self.config = config
        self.dispatcher = dispatcher
        self.metrics = metrics
        self.replicas: list[Replica] = []
        self.preds: tuple[int, ...] = ()
        self.succs: tuple[int, ...] = ()
        self.succ_by_name: dict[str, int] = {}
        self.certain_succs: tuple[int, ...] = ()  # successors every query visits (p = 1)
        self.join = False
        self.start_failures = 0
        self.broken: str | None = None
        self.queue_wait_s: deque[float] = deque(maxlen=_STATS_SAMPLES)
        self.residence_s: deque[float] = deque(maxlen=_STATS_SAMPLES)
        self.overhead_s: deque[float] = deque(maxlen=_STATS_SAMPLES)
        self.predict_s: deque[float] = deque(maxlen=_STATS_SAMPLES)

    def count(self, *states: ReplicaState) -> int:
        return sum(1 for r in self.replicas if r.state in states)


class Engine:
    """Serves one pipeline under one plan; see docs/engine.md.

    Create it inside a running event loop, ``await start()``, ``submit()`` queries,
    ``await apply(config)`` to change the plan, ``await stop()`` to drain and shut down.
    ``replica_factory`` makes each replica: a local worker process by default, a Ray actor
    with the Ray backend (``inferline.ray_backend``); queues and dispatch are the same.
    ``machine``: the pool the replicas draw from; every plan (the first and each one
    applied) must fit it (:func:`~inferline.profiles.check_plan_fits`). Default: this
    host when replicas are local worker processes; none (batch sizes bounded only) with
    a ``replica_factory``, whose replicas live elsewhere.
    ``profiles``: the stages' profiles (the bundle's), which live calibration compares
    the measured ``predict`` times with and the Estimator runs on (:attr:`calibrator`);
    without them the engine only measures.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        config: PipelineConfig,
        options: EngineOptions | None = None,
        *,
        bundle_root: str | Path | None = None,
        clock: Callable[[], float] = time.monotonic,
        replica_factory: ReplicaFactory | None = None,
        machine: MachinePool | None = None,
        profiles: Profiles | None = None,
        calibration: CalibrationOptions | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.options = options or EngineOptions()
        _check_plan(pipeline, config, source="<plan>")
        if machine is None and replica_factory is None:
            machine = machine_pool_for_host()
        #: The machine the replicas draw from (``None``: they live elsewhere).
        self.machine = machine
        check_plan_fits(config, machine)  # CapacityError before anything is started
        self._launcher: WorkerLauncher | None = None
        if replica_factory is None:
            launcher = WorkerLauncher(fork=self.options.fork_replicas)
            self._launcher = launcher
            replica_factory = functools.partial(local_replica, launcher=launcher)
        self._replica_factory = replica_factory
        self._clock = clock
        self._sys_path = [str(Path(bundle_root).resolve())] if bundle_root is not None else []
        missing = [s.name for s in pipeline.stages if not s.model]
        if missing:
            raise EngineError(
                f"stage(s) {', '.join(missing)} have no 'model' import path in the pipeline "
                f"file ({pipeline.source}); the engine needs 'module:Class' for each stage"
            )
        self.metrics = EngineMetrics(pipeline.stage_names)
        #: Rolling measured ``predict`` times and answered queries; see _calibration.py.
        self.calibrator = Calibrator(pipeline, profiles, calibration, clock=clock, machine=machine)
        self._failure_log = FailureLog(clock=clock)
        self._estimate_error = EstimateError()
        self.metrics.watch(self.status)
        names = pipeline.stage_names
        self._stages: list[_StageRuntime] = []
        for i, stage in enumerate(pipeline.stages):
            cfg = config.stages[stage.name]
            dispatcher: StageDispatcher[_Visit, Replica] = StageDispatcher(
                cfg.batch_size,
                self.options.max_queue,
                clock,
                shed_late=self.options.shed_late,
                alive=_visit_alive,
            )
            self._stages.append(
                _StageRuntime(
                    i,
                    stage.name,
                    stage.model or "",
                    cfg,
                    dispatcher,
                    self.metrics.stages[stage.name],
                )
            )
        index = {name: i for i, name in enumerate(names)}
        for st in self._stages:
            st.preds = tuple(index[p] for p in pipeline.predecessors(st.name))
            st.succs = tuple(index[s] for s in pipeline.successors(st.name))
            st.succ_by_name = {names[s]: s for s in st.succs}
            st.certain_succs = tuple(
                index[e.target]
                for e in pipeline.edges
                if e.source == st.name and e.probability >= 1.0
            )
            st.join = len(st.preds) > 1
        self._stage_index = index
        self._sources = tuple(index[s] for s in pipeline.sources)
        self._topo_rank = {index[n]: k for k, n in enumerate(pipeline.topological_order)}
        self._n_preds = [len(st.preds) for st in self._stages]
        self._seq = itertools.count()
        self._batch_ids = itertools.count()
        self._replica_ids = itertools.count()
        self._queries: dict[int, _Query] = {}
        self._dispatch_pending = False
        self._closing = False
        self._started = False
        self._changed = asyncio.Event()
        self._drained = asyncio.Event()
        self._plan_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.input_specs: dict[str, TensorSpec] = {}
        self.output_specs: list[TensorSpec] = []
        #: Clock reading the engine's relative times (arrivals, tuner changes) count from.
        self.t0_s = clock()
        #: Arrival times (relative to ``t0_s``) since the last :meth:`take_arrivals`;
        #: ``None`` (nothing recorded) until something asks for them.
        self._arrival_log: list[float] | None = None
        #: Measured activation times: start request → ready message, per replica started.
        self.activation_s: deque[float] = deque(maxlen=256)
        #: The same for replicas started while serving (plan changes, tuner, replacements):
        #: what a scale-up waits for. Start-up ones also pay each stage's template import.
        self.serving_activation_s: deque[float] = deque(maxlen=256)
        #: Extra status sections (e.g. the tuner's), merged into :meth:`status`.
        self.status_extras: dict[str, Callable[[], Any]] = {}

    # --- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        """Start every planned replica and wait until all are ready (or one fails to load)."""
        starts = [
            self._start_replica(st, st.config.hardware)
            for st in self._stages
            for _ in range(st.config.replicas)
        ]
        results = await asyncio.gather(*starts, return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            await self._kill_all()
            first = errors[0]
            if isinstance(first, EngineError):
                raise first
            raise EngineError(f"a replica failed to start: {first!r}") from first
        self._collect_specs()
        self._started = True

    def _collect_specs(self) -> None:
        for i in self._sources:
            for r in self._stages[i].replicas:
                for name, datatype, shape in r.info.get("inputs", ()):
                    self.input_specs.setdefault(name, TensorSpec(name, datatype, tuple(shape)))
                break
        declared: dict[str, tuple[str, TensorSpec]] = {}  # output name -> (stage, spec)
        for st in self._stages:
            if st.succs or not st.replicas:
                continue
            for name, datatype, shape in st.replicas[0].info.get("outputs", ()):
                spec = TensorSpec(name, datatype, tuple(shape))
                if name not in declared:  # end stages of other branches may share names
                    declared[name] = (st.name, spec)
                    self.output_specs.append(spec)
                elif declared[name][1] != spec:
                    log.warning(
                        "output %r is declared as %s %s by stage '%s' but as %s %s by '%s'; "
                        "the model metadata shows the first",
                        name,
                        declared[name][1].datatype,
                        list(declared[name][1].shape),
                        declared[name][0],
                        datatype,
                        list(shape),
                        st.name,
                    )

    @property
    def ready(self) -> bool:
        return (
            self._started
            and not self._closing
            and all(st.count(ReplicaState.READY) > 0 for st in self._stages)
        )

    async def stop(self) -> None:
        """Refuse new queries, let in-flight ones finish (bounded), then stop every replica."""
        self._closing = True
        if self._queries:
            self._drained.clear()
            try:
                await asyncio.wait_for(self._drained.wait(), self.options.drain_timeout_s)
            except TimeoutError:
                log.warning(
                    "%d queries still in flight after the drain timeout", len(self._queries)
                )
            for query in list(self._queries.values()):
                self._fail(query, 503, "the engine shut down before this query finished")
        for st in self._stages:
            for r in list(st.replicas):
                if r.state is ReplicaState.STARTING:
                    r.terminate()
                elif r.batch is None:
                    self._stop_replica(r)
                else:
                    r.state = ReplicaState.DRAINING
        replicas = [r for st in self._stages for r in st.replicas]
        await asyncio.gather(*(r.wait_exit(10.0) for r in replicas), return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        if self._launcher is not None:
            await self._launcher.close()

    async def _kill_all(self) -> None:
        self._closing = True  # a failed start: the replicas are killed, not lost or replaced
        replicas = [r for st in self._stages for r in st.replicas]
        for r in replicas:
            r.terminate()
        await asyncio.gather(*(r.wait_exit(5.0) for r in replicas), return_exceptions=True)
        if self._launcher is not None:
            await self._launcher.close()

    # --- queries -------------------------------------------------------------------------------
    @property
    def in_flight(self) -> int:
        return len(self._queries)

    def submit(self, request: InferRequest) -> asyncio.Future[Answer]:
        """Admit one query; the future always resolves (never raises) with its Answer."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Answer] = loop.create_future()
        now = self._clock()
        seq = next(self._seq)
        query = _Query(seq, now, now + self.options.slo_s, self._n_preds, request.outputs, future)
        if self._closing:
            self._answer(query, Answer(503, error="the engine is shutting down"))
            return future
        if len(self._queries) >= self.options.max_in_flight:
            self._answer(
                query,
                Answer(
                    503,
                    error=f"overloaded: {len(self._queries)} queries in flight "
                    f"(limit {self.options.max_in_flight}); retry later",
                ),
            )
            return future
        self._queries[seq] = query
        if self._arrival_log is not None:
            self._arrival_log.append(now - self.t0_s)
        inputs: dict[str, Tensor] = request.inputs
        for i in self._sources:
            self._enqueue(query, self._stages[i], inputs, now)
        return future

    def _enqueue(self, query: _Query, st: _StageRuntime, value: Any, now: float) -> None:
        if query.done:
            return
        if st.broken is not None and st.count(*_LIVE) == 0:
            self._fail(query, 503, f"stage '{st.name}' has no running replica ({st.broken})")
            return
        if self.options.shed_late and self._shed_at_admission(st, query, now):
            return
        if not st.dispatcher.enqueue(_Visit(query, value, now), query.deadline_s, query.seq):
            self._fail(
                query,
                503,
                f"overloaded: stage '{st.name}' has {self.options.max_queue} queries queued "
                "(its limit); retry later",
            )
            return
        self._request_dispatch()

    def _shed_at_admission(self, st: _StageRuntime, query: _Query, now: float) -> bool:
        """Answer 503 now if ``query``, queued at ``st``, would finish past its deadline.

        Entering the pipeline (a source stage), the estimate plus the margin recent errors
        call for must leave the slack free; at a later stage, where the query has used
        replica time already, only a query that would miss the deadline itself is shed.
        The error margin learns from the estimates made on entry.
        """
        finish_s = self._finish_estimate_s(st, query, now)
        if finish_s is None:
            return False
        entering = not st.preds
        if entering and query.estimate_s is None:
            query.estimate_s = finish_s
        slo_s = self.options.slo_s
        finish_s += self._estimate_error.margin_s
        limit_s = query.deadline_s - (self.options.shed_slack * slo_s if entering else 0.0)
        if finish_s <= limit_s:
            return False
        self._fail(
            query,
            503,
            f"shed: the query would finish about {finish_s - query.arrival_s:.3f} s after "
            f"arrival (stage '{st.name}' has {len(st.dispatcher.queue)} queued), past its "
            f"deadline ({slo_s:g} s)",
        )
        return True

    def _finish_estimate_s(self, st: _StageRuntime, query: _Query, now: float) -> float | None:
        """When ``query`` would finish its path if queued at ``st`` now (None: no basis yet)."""
        times = st.dispatcher.times
        if not times:
            return None
        free_at_s = [
            now if r.batch is None else r.batch.sent_s + times.estimate_s(len(r.batch.visits))
            for r in st.replicas
            if r.state is ReplicaState.READY
        ]
        if not free_at_s:
            return None
        queue = st.dispatcher.queue
        # Entering the pipeline now, a query's deadline (now + the one SLO) is the latest
        # so far: all the queue is ahead of it. Later stages count (a scan of the queue).
        ahead = len(queue) if not st.preds else queue.count_ahead(query.deadline_s, query.seq)
        return completion_estimate_s(
            now,
            ahead,
            st.dispatcher.batch_size,
            free_at_s,
            times.estimate_s,
            self._path_s(st),
        )

    def _path_s(self, st: _StageRuntime) -> float:
        """Expected service of the stages every query visits after ``st`` (their recent
        batch times along the longest such chain)."""
        return max(
            (
                self._stages[j].dispatcher.service_estimate_s + self._path_s(self._stages[j])
                for j in st.certain_succs
            ),
            default=0.0,
        )

    def _request_dispatch(self) -> None:
        # Deferred to the end of this loop iteration so that every arrival and result
        # read in it is queued first (the Estimator's order within one instant).
        if not self._dispatch_pending:
            self._dispatch_pending = True
            asyncio.get_running_loop().call_soon(self._dispatch)

    def _dispatch(self) -> None:
        self._dispatch_pending = False
        now = self._clock()
        for st in self._stages:
            if not st.dispatcher.queue:
                continue
            assignment = st.dispatcher.assign(self._path_s(st) if self.options.shed_late else 0.0)
            for visit in assignment.shed:
                self._fail(
                    visit.query,
                    503,
                    f"shed: the query cannot finish stage '{st.name}' before its deadline "
                    f"({self.options.slo_s:g} s after arrival)",
                )
            for replica, visits in assignment.batches:
                batch = Batch(next(self._batch_ids), visits, now)
                replica.batch = batch
                replica.send(("batch", batch.id, [v.value for v in visits]))
                st.metrics.batch_size.observe(len(visits))

    def _on_done(
        self,
        r: Replica,
        st: _StageRuntime,
        batch_id: int,
        results: list[Any],
        predict_s: float,
        predict_cpu_s: float | None = None,
    ) -> None:
        batch = self._take_batch(r, st, batch_id)
        if batch is None:
            return
        now = self._clock()
        # the replica's whole turn (IPC and pickling included) is what the queue waits for
        turn_s = now - batch.sent_s
        st.dispatcher.record_service(turn_s, len(batch.visits))
        st.metrics.service_s.observe(predict_s)
        st.predict_s.append(predict_s)
        self.calibrator.record_batch(
            st.name, r.hardware, len(batch.visits), predict_s, predict_cpu_s, turn_s
        )
        observe = st.metrics.stage_latency_s.observe
        failed, first_error = 0, ""
        for visit, (value, routes, tensors, error) in zip(batch.visits, results, strict=True):
            residence_s = now - visit.enqueued_s
            observe(residence_s)
            st.queue_wait_s.append(batch.sent_s - visit.enqueued_s)
            st.residence_s.append(residence_s)
            st.overhead_s.append(residence_s - predict_s)
            query = visit.query
            if query.done:
                continue
            if error is not None:
                failed, first_error = failed + 1, first_error or error
                self._fail(query, 500, f"stage '{st.name}': {error}")
                continue
            self._finish_visit(query, st, value, routes, tensors, now)
        if failed:
            self._report_failure(st, "output", first_error, failed)
        self._request_dispatch()

    def _on_failed(self, r: Replica, st: _StageRuntime, batch_id: int, message: str) -> None:
        batch = self._take_batch(r, st, batch_id)
        if batch is None:
            return
        live = [visit.query for visit in batch.visits if not visit.query.done]
        for query in live:
            self._fail(query, 500, f"stage '{st.name}' failed on its batch: {message}")
        if live:
            self._report_failure(st, "batch", message, len(live))
        self._request_dispatch()

    def _report_failure(self, st: _StageRuntime, kind: str, error: str, n_queries: int) -> None:
        """Count ``n_queries`` failed at ``st`` and log it (rate-limited per stage)."""
        self.metrics.failed_queries.labels(st.name, kind).inc(n_queries)
        line = self._failure_log.line(st.name, kind, error, n_queries)
        if line is not None:
            log.error("%s", line)

    def _take_batch(self, r: Replica, st: _StageRuntime, batch_id: int) -> Batch | None:
        batch = r.batch
        if batch is None or batch.id != batch_id:
            log.error("replica %s answered batch %s it was not running", r, batch_id)
            return None
        r.batch = None
        r.batches_done += 1
        if r.state is ReplicaState.READY:
            st.dispatcher.replica_idle(r)
        elif r.state is ReplicaState.DRAINING:
            self._stop_replica(r)
        return batch

    def _finish_visit(
        self,
        query: _Query,
        st: _StageRuntime,
        value: Any,
        routes: tuple[str, ...],
        tensors: list[dict[str, Any]] | None,
        now: float,
    ) -> None:
        i = st.index
        query.visited.append(i)
        query.resolved += 1
        if tensors is not None:
            query.sinks.append((i, tensors))
        else:
            query.values[i] = value
        chosen = {st.succ_by_name[name] for name in routes}
        for j in st.succs:
            if j in chosen:
                query.routed_from.setdefault(j, []).append(i)
            self._resolve_pred(query, j, now)
        if query.resolved == len(self._stages) and not query.done:
            self._complete(query, now)

    def _resolve_pred(self, query: _Query, j: int, now: float) -> None:
        query.pending[j] -= 1
        if query.pending[j]:
            return
        st = self._stages[j]
        senders = query.routed_from.get(j)
        if senders:
            if st.join:
                value: Any = {self._stages[p].name: query.values[p] for p in senders}
            else:
                value = query.values[senders[0]]
            self._enqueue(query, st, value, now)
            return
        query.resolved += 1  # not visited: resolve its successors in turn
        for k in st.succs:
            self._resolve_pred(query, k, now)

    def _complete(self, query: _Query, now: float) -> None:
        rank = self._topo_rank
        outputs = [
            t for _, tensors in sorted(query.sinks, key=lambda s: rank[s[0]]) for t in tensors
        ]
        if query.want is not None:
            outputs = [t for t in outputs if t["name"] in query.want]
        path = tuple(self._stages[i].name for i in sorted(query.visited, key=rank.__getitem__))
        self._answer(query, Answer(200, outputs, path, latency_s=now - query.arrival_s))
        self.calibrator.record_query(query.arrival_s, now - query.arrival_s, path)
        if query.estimate_s is not None:
            self._estimate_error.record(now - query.estimate_s)

    def _fail(self, query: _Query, status: int, message: str) -> None:
        if not query.done:
            latency_s = self._clock() - query.arrival_s
            self._answer(query, Answer(status, error=message, latency_s=latency_s))

    def _answer(self, query: _Query, answer: Answer) -> None:
        query.done = True
        if self._queries.pop(query.seq, None) is not None and not self._queries:
            self._drained.set()
        if not query.future.done():
            query.future.set_result(answer)
        metrics = self.metrics
        metrics.answered(answer.status)
        metrics.latency_s.observe(answer.latency_s)
        if answer.status != 200 or answer.latency_s > self.options.slo_s:
            metrics.slo_misses.inc()

    # --- replicas ----------------------------------------------------------------------------
    async def _start_replica(self, st: _StageRuntime, hardware: str) -> Replica:
        r = self._replica_factory(
            next(self._replica_ids),
            st.name,
            hardware,
            lambda rep, msg: self._on_message(rep, st, msg),
            lambda rep: self._on_lost(rep, st),
        )
        st.replicas.append(r)
        spec = {
            "stage": st.name,
            "model": st.model,
            "hardware": hardware,
            "threads": r.resources.threads,
            "device": r.resources.device,
            "successors": [self._stages[j].name for j in st.succs],
            "sys_path": self._sys_path,
            "nice": self.options.replica_nice,
        }
        requested = self._clock()
        try:
            await r.launch(spec)
            await asyncio.wait_for(asyncio.shield(r.ready), self.options.start_timeout_s)
            self.activation_s.append(self._clock() - requested)
            if self._started:
                self.serving_activation_s.append(self.activation_s[-1])
        except BaseException as exc:
            r.terminate()
            if r in st.replicas and r.state is ReplicaState.STARTING:
                st.replicas.remove(r)
            self._changed_now()
            if isinstance(exc, TimeoutError):
                raise StageLoadError(
                    f"stage '{st.name}' ({st.model}): the replica was not ready within "
                    f"{self.options.start_timeout_s:g} s (setup too slow?)"
                ) from None
            raise
        return r

    def _on_message(self, r: Replica, st: _StageRuntime, message: Any) -> None:
        kind = message[0]
        if kind == "done":
            cpu_s = message[4] if len(message) > 4 else None
            self._on_done(r, st, message[1], message[2], message[3], cpu_s)
        elif kind == "failed":
            self._on_failed(r, st, message[1], message[2])
        elif kind == "ready":
            r.info = message[1]
            st.start_failures = 0
            st.broken = None
            if r.state is ReplicaState.STARTING:
                r.state = ReplicaState.READY
                st.dispatcher.replica_idle(r)
                self._request_dispatch()
            elif r.state is ReplicaState.DRAINING:
                self._stop_replica(r)
            if not r.ready.done():
                r.ready.set_result(r.info)
            self._reconcile(st)
            self._changed_now()
        elif kind == "fatal":
            r.fatal = message[1]
            if not r.ready.done():
                r.ready.set_exception(
                    StageLoadError(f"stage '{st.name}' ({st.model}) cannot start: {message[1]}")
                )
        else:
            log.error("unknown message %r from %s", kind, r)

    def _on_lost(self, r: Replica, st: _StageRuntime) -> None:
        previous = r.state
        r.state = ReplicaState.EXITED
        if r in st.replicas:
            st.replicas.remove(r)
        st.dispatcher.remove_replica(r)
        self._spawn_task(r.wait_exit(5.0))
        if not r.ready.done():
            r.ready.set_exception(
                StageLoadError(
                    f"stage '{st.name}' ({st.model}) cannot start: "
                    + (r.fatal or "the replica process exited during setup")
                )
            )
            r.ready.exception()  # mark retrieved: nobody may await a replaced replica
        unexpected = previous in _LIVE
        if unexpected:
            self.metrics.replica_failures.labels(st.name).inc()
            if previous is ReplicaState.STARTING:
                st.start_failures += 1
                if st.start_failures >= _MAX_START_FAILURES:
                    st.broken = r.fatal or "its replicas keep exiting during setup"
            elif not self._closing:
                log.warning("replica %s of stage '%s' died; replacing it", r.pid, st.name)
        batch, r.batch = r.batch, None
        if batch is not None:
            self._retry(st, batch, r)
        if not self._closing:
            self._reconcile(st)
            if st.broken is not None and st.count(*_LIVE) == 0:
                for visit in st.dispatcher.queue.drain():
                    self._fail(
                        visit.query, 503, f"stage '{st.name}' has no running replica ({st.broken})"
                    )
        self._changed_now()

    def _retry(self, st: _StageRuntime, batch: Batch, r: Replica) -> None:
        lost = 0
        for visit in batch.visits:
            query = visit.query
            if query.done:
                continue
            visit.attempts += 1
            if visit.attempts > self.options.retries or self._closing:
                lost += 1
                self._fail(
                    query,
                    500,
                    f"stage '{st.name}': replica process {r.pid} died while running this query"
                    + (" and the retry failed too" if self.options.retries else ""),
                )
            elif not st.dispatcher.enqueue(visit, query.deadline_s, query.seq):
                self._fail(query, 503, f"stage '{st.name}' queue is full; cannot retry")
        if lost:
            self._report_failure(
                st, "replica_died", f"replica process {r.pid} died running the batch", lost
            )
        self._request_dispatch()

    def _stop_replica(self, r: Replica) -> None:
        r.state = ReplicaState.STOPPING
        self._stages[self._stage_index[r.stage]].dispatcher.remove_replica(r)
        r.send(("stop",))

    def _drain_replica(self, r: Replica, st: _StageRuntime) -> None:
        """Take ``r`` out of service without losing its batch: it stops once the batch is done."""
        if r.state is ReplicaState.STARTING:
            r.state = ReplicaState.DRAINING  # stopped when ready (or killed if it never is)
            r.terminate()
        elif r.state is ReplicaState.READY:
            r.state = ReplicaState.DRAINING
            st.dispatcher.remove_replica(r)
            if r.batch is None:
                self._stop_replica(r)

    def _reconcile(self, st: _StageRuntime) -> None:
        """Start or drain replicas until the stage matches its plan entry."""
        if self._closing or not self._started:
            return
        target, hardware = st.config.replicas, st.config.hardware
        current = [r for r in st.replicas if r.state in _LIVE and r.hardware == hardware]
        old = [r for r in st.replicas if r.state in _LIVE and r.hardware != hardware]
        if len(current) < target and st.broken is None:
            for _ in range(target - len(current)):
                self._spawn_task(self._start_quietly(st, hardware))
        elif len(current) > target:
            # Prefer replicas still starting, then idle ones, then the newest busy ones.
            order = sorted(
                current,
                key=lambda r: (r.state is ReplicaState.READY, r.batch is not None, -r.id),
            )
            for r in order[: len(current) - target]:
                self._drain_replica(r, st)
        ready_new = sum(1 for r in current if r.state is ReplicaState.READY)
        if old and ready_new >= target:  # new hardware serving: retire the old
            for r in old:
                self._drain_replica(r, st)

    async def _start_quietly(self, st: _StageRuntime, hardware: str) -> None:
        # Failures are counted (and replacements started) when the process ends (_on_lost).
        try:
            await self._start_replica(st, hardware)
        except Exception as exc:
            log.error("could not start a replica of stage '%s': %s", st.name, exc)

    def _spawn_task(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _changed_now(self) -> None:
        self._changed.set()

    # --- control ----------------------------------------------------------------------------
    async def apply(
        self, config: PipelineConfig, timeout_s: float | None = None, *, wait: bool = True
    ) -> None:
        """Switch to a new plan while serving; returns once exactly the planned replicas
        take batches (removed ones may still be finishing their last batch), or, with
        ``wait=False``, as soon as the change is under way (the live tuner's way).

        Batch sizes change at once; added replicas serve as soon as they are ready;
        removed replicas finish their current batch first; a hardware change starts the
        new replicas before draining the old ones. No queued or running query is lost.
        """
        try:
            _check_plan(self.pipeline, config, source="plan")
        except ConfigError as exc:
            raise RequestError(400, str(exc)) from None
        try:
            check_plan_fits(config, self.machine)
        except CapacityError as exc:
            raise RequestError(409, f"the plan does not fit this machine: {exc}") from None
        if self._closing:
            raise RequestError(503, "the engine is shutting down")
        async with self._plan_lock:
            for st in self._stages:
                cfg = config.stages[st.name]
                st.config = cfg
                st.dispatcher.batch_size = cfg.batch_size
                st.broken = None
                st.start_failures = 0
                self._reconcile(st)
            self._request_dispatch()
            if not wait:
                return
            deadline = self._clock() + (timeout_s or self.options.start_timeout_s)
            while not all(self._settled(st) for st in self._stages):
                broken = [st for st in self._stages if st.broken is not None]
                if broken:
                    raise EngineError(
                        f"stage '{broken[0].name}' cannot start replicas: {broken[0].broken}"
                    )
                remaining = deadline - self._clock()
                if remaining <= 0:
                    raise EngineError("the new plan was not in place before the timeout")
                self._changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), min(remaining, 0.5))

    def _settled(self, st: _StageRuntime) -> bool:
        """The plan is in force: exactly the planned replicas take batches (others may
        still be finishing their last batch)."""
        live = [r for r in st.replicas if r.state in _LIVE]
        return len(live) == st.config.replicas and all(
            r.state is ReplicaState.READY and r.hardware == st.config.hardware for r in live
        )

    @property
    def config(self) -> PipelineConfig:
        return PipelineConfig(stages={st.name: st.config for st in self._stages})

    def elapsed_s(self) -> float:
        """Seconds since the engine was created, on its clock."""
        return self._clock() - self.t0_s

    def take_arrivals(self) -> list[float]:
        """Arrival times (seconds since ``t0_s``) since the previous call; the first call
        starts the recording and returns nothing."""
        out = self._arrival_log if self._arrival_log is not None else []
        self._arrival_log = []
        return out

    def outstanding(self) -> dict[str, int]:
        """Per stage: queries queued plus in flight on a replica."""
        return {
            st.name: len(st.dispatcher.queue)
            + sum(len(r.batch.visits) for r in st.replicas if r.batch is not None)
            for st in self._stages
        }

    def activation_median_s(self) -> float | None:
        """Median measured activation time (start request → ready), ``None`` before any.

        Replicas started while serving count alone once there are any: a scale-up forks
        from a warm template, while the first replicas also waited for its imports.
        """
        measured = self.serving_activation_s or self.activation_s
        return statistics.median(measured) if measured else None

    def status(self) -> dict[str, Any]:
        """Replicas per stage and state, queue lengths and in-flight queries (JSON-ready)."""
        stages: dict[str, Any] = {}
        for st in self._stages:
            stages[st.name] = {
                "hardware": st.config.hardware,
                "batch_size": st.config.batch_size,
                "replicas": st.config.replicas,
                "ready": st.count(ReplicaState.READY),
                "starting": st.count(ReplicaState.STARTING),
                "draining": st.count(ReplicaState.DRAINING, ReplicaState.STOPPING),
                "busy": sum(1 for r in st.replicas if r.batch is not None),
                "queue_length": len(st.dispatcher.queue),
                "error": st.broken,
                "replica_list": [
                    {
                        "id": r.id,
                        "pid": r.pid,
                        "state": r.state.value,
                        "hardware": r.hardware,
                        "threads": r.resources.threads,
                        "busy": r.batch is not None,
                        "batches": r.batches_done,
                    }
                    for r in st.replicas
                ],
            }
        return {
            "model": self.pipeline.name,
            "ready": self.ready,
            "slo_s": self.options.slo_s,
            "shed_late": self.options.shed_late,
            "shed_slack": self.options.shed_slack,
            "shed_margin_s": self._estimate_error.margin_s,
            "in_flight": len(self._queries),
            "uptime_s": round(self.elapsed_s(), 3),
            "activation_s": {
                "median": self.activation_median_s(),
                "count": len(self.activation_s),
                "while_serving": len(self.serving_activation_s),
            },
            "stages": stages,
            **({"machine": self._machine_status()} if self.machine is not None else {}),
            "calibration": self.calibrator.status(),
            **{name: section() for name, section in self.status_extras.items()},
        }

    def _machine_status(self) -> dict[str, Any]:
        assert self.machine is not None
        threads = self.machine.threads_of(self.config)
        return {**self.machine.as_dict(), "planned_threads": sum(threads.values())}

    def stats(self) -> dict[str, Any]:
        """Per-stage time split of recent visits: queue wait, residence, predict, overhead.

        Overhead = residence − predict(): queueing plus IPC and (de)serialisation, the
        part of a stage's latency a profile of ``predict`` alone does not show.
        """
        out: dict[str, Any] = {}
        for st in self._stages:
            out[st.name] = {
                "visits": len(st.residence_s),
                "queue_wait_s": _summary(st.queue_wait_s),
                "residence_s": _summary(st.residence_s),
                "predict_s": _summary(st.predict_s),
                "overhead_s": _summary(st.overhead_s),
            }
        return {"stages": out}

    def reset_stats(self) -> None:
        """Forget the visits measured so far, and calibration's batches and queries."""
        self.calibrator.reset()
        for st in self._stages:
            for samples in (st.queue_wait_s, st.residence_s, st.overhead_s, st.predict_s):
                samples.clear()


def _summary(samples: deque[float]) -> dict[str, float | None]:
    if not samples:
        return {"mean": None, "p50": None, "p99": None, "max": None}
    ordered = sorted(samples)
    n = len(ordered)
    return {
        "mean": sum(ordered) / n,
        "p50": ordered[(n - 1) // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) / 2,
        "p99": ordered[min(n - 1, int(0.99 * n))],
        "max": ordered[-1],
    }


def _check_plan(pipeline: Pipeline, config: PipelineConfig, source: str) -> None:
    """Every stage planned and no other (the plan file's other checks need profiles)."""
    check_stage_names(config, pipeline.stage_names, source)


def plan_from_mapping(data: Any, source: str = "plan") -> PipelineConfig:
    """A plan posted to the control API: ``{"stages": {...}}`` or the stages mapping itself."""
    body = data.get("stages", data) if isinstance(data, Mapping) else data
    try:
        return parse_model(PipelineConfig, {"stages": body}, source=source)
    except ConfigError as exc:
        raise RequestError(400, str(exc)) from None
