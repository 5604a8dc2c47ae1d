"""The engine's per-stage queue and dispatch decisions, with an injected clock (no sleeps)."""

from __future__ import annotations

import pytest

from inferline.engine._queue import StageDispatcher, StageQueue


class Clock:
    def __init__(self, now_s: float = 0.0) -> None:
        self.now_s = now_s

    def __call__(self) -> float:
        return self.now_s


def make(
    batch_size: int = 4, max_queue: int = 100, **kwargs: object
) -> tuple[StageDispatcher[str, str], Clock]:
    clock = Clock()
    return StageDispatcher(batch_size, max_queue, clock, **kwargs), clock  # type: ignore[arg-type]


def test_queue_is_earliest_deadline_first_with_ties_in_arrival_order() -> None:
    queue: StageQueue[str] = StageQueue(10)
    queue.push("late", 5.0, seq=0)
    queue.push("tie-second", 2.0, seq=7)
    queue.push("early", 1.0, seq=9)
    queue.push("tie-first", 2.0, seq=3)
    assert [queue.pop()[1] for _ in range(4)] == ["early", "tie-first", "tie-second", "late"]


def test_queue_is_bounded() -> None:
    queue: StageQueue[int] = StageQueue(2)
    assert queue.push(1, 1.0, 1) and queue.push(2, 2.0, 2)
    assert not queue.push(3, 0.5, 3)
    assert len(queue) == 2
    with pytest.raises(ValueError, match="max_length"):
        StageQueue(0)


def test_idle_replica_takes_up_to_batch_size_at_once_without_waiting() -> None:
    d, _ = make(batch_size=3)
    for k in range(5):
        d.enqueue(f"q{k}", deadline_s=float(k), seq=k)
    d.replica_idle("r1")
    first = d.assign()
    assert first.batches == [("r1", ["q0", "q1", "q2"])]
    assert d.assign().batches == []  # r1 is busy until it reports back
    d.replica_idle("r1")
    assert d.assign().batches == [("r1", ["q3", "q4"])]  # a partial batch goes at once


def test_several_idle_replicas_share_one_central_queue_in_edf_order() -> None:
    d, _ = make(batch_size=2)
    for k in (3, 1, 4, 0, 2):
        d.enqueue(f"q{k}", deadline_s=float(k), seq=k)
    d.replica_idle("a")
    d.replica_idle("b")
    d.replica_idle("c")
    result = d.assign()
    assert result.batches == [("a", ["q0", "q1"]), ("b", ["q2", "q3"]), ("c", ["q4"])]
    assert d.idle == ()


def test_nothing_is_dispatched_without_an_idle_replica_or_a_query() -> None:
    d, _ = make()
    d.replica_idle("a")
    assert d.assign().batches == []
    assert d.idle == ("a",)
    d.remove_replica("a")
    d.enqueue("q", 1.0, 0)
    assert d.assign().batches == []
    assert len(d.queue) == 1


def test_removed_replica_gets_no_batch_and_reports_whether_it_was_idle() -> None:
    d, _ = make()
    d.replica_idle("a")
    d.replica_idle("b")
    assert d.remove_replica("a") is True
    assert d.remove_replica("a") is False
    d.enqueue("q", 1.0, 0)
    assert d.assign().batches == [("b", ["q"])]


def test_batch_size_change_applies_to_the_next_dispatch() -> None:
    d, _ = make(batch_size=1)
    for k in range(4):
        d.enqueue(f"q{k}", float(k), k)
    d.replica_idle("a")
    assert d.assign().batches == [("a", ["q0"])]
    d.batch_size = 8
    d.replica_idle("a")
    assert d.assign().batches == [("a", ["q1", "q2", "q3"])]
    with pytest.raises(ValueError, match="batch_size"):
        d.batch_size = 0


def test_answered_queries_are_dropped_not_dispatched() -> None:
    answered = {"q1"}
    d, _ = make(alive=lambda item: item not in answered)
    for k in range(3):
        d.enqueue(f"q{k}", float(k), k)
    d.replica_idle("a")
    assert d.assign().batches == [("a", ["q0", "q2"])]


def test_deadline_shedding_uses_the_clock_and_the_measured_service_time() -> None:
    d, clock = make(batch_size=10, shed_late=True)
    d.record_service(0.05)  # first measurement is taken as is
    assert d.service_estimate_s == pytest.approx(0.05)
    d.enqueue("hopeless", deadline_s=1.04, seq=0)  # 1.00 + 0.05 > 1.04
    d.enqueue("tight", deadline_s=1.05, seq=1)  # exactly makes it
    d.enqueue("fine", deadline_s=2.0, seq=2)
    clock.now_s = 1.0
    d.replica_idle("a")
    result = d.assign()
    assert result.shed == ["hopeless"]
    assert result.batches == [("a", ["tight", "fine"])]


def test_without_shedding_late_queries_are_still_served() -> None:
    d, clock = make(shed_late=False)
    d.record_service(1.0)
    d.enqueue("late", deadline_s=0.5, seq=0)
    clock.now_s = 10.0
    d.replica_idle("a")
    result = d.assign()
    assert result.shed == [] and result.batches == [("a", ["late"])]


def test_service_estimate_is_an_exponential_average() -> None:
    d, _ = make(service_smoothing=0.5)
    d.record_service(0.1)
    d.record_service(0.3)
    assert d.service_estimate_s == pytest.approx(0.2)


def test_shed_queries_do_not_take_a_replica() -> None:
    d, clock = make(shed_late=True)
    d.record_service(1.0)
    d.enqueue("a", 0.5, 0)
    d.enqueue("b", 0.6, 1)
    clock.now_s = 0.0
    d.replica_idle("r")
    result = d.assign()
    assert result.shed == ["a", "b"] and result.batches == []
    assert d.idle == ("r",)


def test_drain_returns_everything_in_queue_order() -> None:
    queue: StageQueue[str] = StageQueue(5)
    queue.push("b", 2.0, 1)
    queue.push("a", 1.0, 0)
    assert queue.drain() == ["a", "b"]
    assert len(queue) == 0
