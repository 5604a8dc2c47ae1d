"""Prometheus metrics of one engine, in its own registry (no process-global state)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = ["EngineMetrics", "StageMetrics"]

_LATENCY_BUCKETS_S = (
    0.001,
    0.002,
    0.005,
    0.01,
    0.02,
    0.05,
    0.1,
    0.15,
    0.2,
    0.3,
    0.5,
    1.0,
    2.0,
    5.0,
    10.0,
)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class StageMetrics:
    """Pre-bound children for one stage, so the hot path does no label lookups."""

    __slots__ = ("batch_size", "service_s", "stage_latency_s")

    def __init__(self, metrics: EngineMetrics, stage: str) -> None:
        self.batch_size = metrics.batch_size.labels(stage)
        self.service_s = metrics.service_s.labels(stage)
        self.stage_latency_s = metrics.stage_latency_s.labels(stage)


class _StateCollector(Collector):
    """Queue lengths, replicas and in-flight queries, read from the engine at scrape time."""

    def __init__(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        status = self._snapshot()
        queue = GaugeMetricFamily(
            "inferline_stage_queue_length", "Queries waiting in the stage's queue", labels=["stage"]
        )
        replicas = GaugeMetricFamily(
            "inferline_stage_replicas", "Replicas of the stage by state", labels=["stage", "state"]
        )
        target = GaugeMetricFamily(
            "inferline_stage_target_replicas",
            "Replicas the plan in force (posted or set by the tuner) asks for",
            labels=["stage"],
        )
        busy = GaugeMetricFamily(
            "inferline_stage_busy_replicas", "Replicas running a batch", labels=["stage"]
        )
        for name, stage in status["stages"].items():
            queue.add_metric([name], stage["queue_length"])
            busy.add_metric([name], stage["busy"])
            target.add_metric([name], stage["replicas"])
            for state in ("ready", "starting", "draining"):
                replicas.add_metric([name, state], stage[state])
        in_flight = GaugeMetricFamily("inferline_in_flight", "Queries admitted and not answered")
        in_flight.add_metric([], status["in_flight"])
        yield from (queue, replicas, target, busy, in_flight)
        activation = status.get("activation_s", {}).get("median")
        if activation is not None:
            act = GaugeMetricFamily(
                "inferline_replica_activation_seconds",
                "Median measured time from a replica's start request to its ready message",
            )
            act.add_metric([], activation)
            yield act
        machine = status.get("machine")
        if machine is not None:
            threads = GaugeMetricFamily(
                "inferline_machine_replica_threads",
                "Replica threads the plan in force uses ('planned') and the machine allows ('max')",
                labels=["kind"],
            )
            threads.add_metric(["planned"], machine["planned_threads"])
            threads.add_metric(["max"], machine["max_threads"])
            yield threads
        calibration = status.get("calibration")
        if calibration is not None:
            yield from _calibration(calibration)
        tuner = status.get("tuner")
        if tuner is not None:
            changes = GaugeMetricFamily(
                "inferline_tuner_changes", "Replica-count changes the live tuner has made"
            )
            changes.add_metric([], tuner["n_changes"])
            yield changes
            limited = tuner.get("capacity_limited")
            if limited is not None:
                yield from _capacity_limited(limited, list(status["stages"]))

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(())


def _calibration(section: dict[str, Any]) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
    """Live calibration (engine/_calibration.py): values of its latest refresh."""
    ratio = GaugeMetricFamily(
        "inferline_stage_speed_ratio",
        "Measured / profiled predict time of the stage's recent batches (1 = as profiled)",
        labels=["stage"],
    )
    drifts = CounterMetricFamily(
        "inferline_stage_speed_drift_warnings",
        "Times the stage's speed ratio stayed beyond the drift threshold (one per episode)",
        labels=["stage"],
    )
    for name, stage in section["stages"].items():
        if stage["speed_ratio"] is not None:
            ratio.add_metric([name], stage["speed_ratio"])
        drifts.add_metric([name], stage["drift_warnings"])
    yield from (ratio, drifts)
    pipeline = section["pipeline"]
    for key, metric, text in (
        (
            "estimated_p99_s",
            "inferline_estimated_p99_seconds",
            "The Estimator's P99 for the plan in force on the recent arrivals and paths, "
            "with the calibrated profiles",
        ),
        (
            "estimated_uncalibrated_p99_s",
            "inferline_estimated_uncalibrated_p99_seconds",
            "The same with the profiles as given (before calibration)",
        ),
        (
            "estimated_shared_p99_s",
            "inferline_estimated_shared_p99_seconds",
            "The same with the CPU work calibrated per batch, the host's cores shared (the "
            "model plans are made with)",
        ),
        (
            "tail_bias",
            "inferline_tail_bias",
            "Measured over the shared-cores estimate, clamped to [1, 1.5]: what to plan "
            "with (inferline plan --tail-bias)",
        ),
        (
            "measured_p99_s",
            "inferline_measured_p99_seconds",
            "Measured P99 (admission to answer) of the same recent queries",
        ),
    ):
        value = pipeline.get(key)
        if value is not None:
            gauge = GaugeMetricFamily(metric, text)
            gauge.add_metric([], value)
            yield gauge


def _capacity_limited(
    limited: dict[str, Any], stages: list[str]
) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
    count = CounterMetricFamily(
        "inferline_tuner_capacity_limited",
        "Tuner decisions capped at what fits the machine",
        labels=["stage"],
    )
    now = GaugeMetricFamily(
        "inferline_tuner_capacity_limited_now",
        "1 while the stage's latest tuner decision was capped at what fits the machine",
        labels=["stage"],
    )
    for stage in stages:
        count.add_metric([stage], limited["decisions"].get(stage, 0))
        now.add_metric([stage], 1 if stage in limited["now"] else 0)
    yield from (count, now)


class EngineMetrics:
    """Counters and histograms the engine updates; ``render()`` is the /metrics body."""

    def __init__(self, stages: Sequence[str]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "inferline_requests",
            "Inference requests answered, by HTTP status",
            ["code"],
            registry=r,
        )
        self.latency_s = Histogram(
            "inferline_request_latency_seconds",
            "End-to-end latency of answered queries (admission to answer)",
            buckets=_LATENCY_BUCKETS_S,
            registry=r,
        )
        self.slo_misses = Counter(
            "inferline_slo_misses",
            "Queries answered after their deadline, shed, or failed",
            registry=r,
        )
        self.batch_size = Histogram(
            "inferline_stage_batch_size",
            "Queries per dispatched batch",
            ["stage"],
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.service_s = Histogram(
            "inferline_stage_service_seconds",
            "predict() time per batch, measured in the replica",
            ["stage"],
            buckets=_LATENCY_BUCKETS_S,
            registry=r,
        )
        self.stage_latency_s = Histogram(
            "inferline_stage_latency_seconds",
            "Time from entering the stage's queue to its result reaching the front-end",
            ["stage"],
            buckets=_LATENCY_BUCKETS_S,
            registry=r,
        )
        self.replica_failures = Counter(
            "inferline_replica_failures",
            "Replica processes that exited without being asked to",
            ["stage"],
            registry=r,
        )
        self.failed_queries = Counter(
            "inferline_failed_queries",
            "Queries answered 500 by the stage that failed them and how: 'batch' (predict "
            "raised or returned the wrong number of outputs), 'output' (one output could not "
            "be converted or routed), 'replica_died' (the replica died running it, retries spent)",
            ["stage", "kind"],
            registry=r,
        )
        self.stages = {name: StageMetrics(self, name) for name in stages}
        self._codes: dict[int, Any] = {}

    def watch(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        """Report the engine's live state (queues, replicas, in-flight) at each scrape."""
        self.registry.register(_StateCollector(snapshot))

    def answered(self, status: int) -> None:
        child = self._codes.get(status)
        if child is None:
            child = self._codes[status] = self.requests.labels(str(status))
        child.inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
