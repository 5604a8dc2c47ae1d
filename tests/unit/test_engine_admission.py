"""Queue-aware admission (the finish estimate), observed batch times and the failure-log
limiter, on made-up numbers and an injected clock."""

from __future__ import annotations

import pytest

from inferline.engine._admission import BatchTimes, EstimateError, completion_estimate_s
from inferline.engine._failures import FailureLog
from inferline.engine._queue import StageDispatcher, StageQueue


def flat(seconds: float) -> BatchTimes:
    """Every batch size takes ``seconds`` (one observation)."""
    times = BatchTimes()
    times.record(1, seconds)
    return times


def test_an_idle_replica_and_an_empty_queue_finish_after_one_batch_and_the_path() -> None:
    finish = completion_estimate_s(10.0, 0, 4, [10.0], flat(0.02).estimate_s, path_s=0.05)
    assert finish == pytest.approx(10.07)


def test_the_queue_ahead_leaves_in_full_batches_before_the_query() -> None:
    times = BatchTimes()
    times.record(4, 0.02)
    times.record(2, 0.012)
    # 9 ahead in batches of 4: two full batches go first, the query's batch holds 1 + 1
    finish = completion_estimate_s(0.0, 9, 4, [0.0], times.estimate_s)
    assert finish == pytest.approx(2 * 0.02 + 0.012)


def test_batches_go_to_the_replica_free_earliest() -> None:
    est = flat(0.02).estimate_s
    # replica free at 0.0 and 0.015: batch 0 on the first, batch 1 on the second,
    # batch 2 on the first again after its batch 0
    assert completion_estimate_s(0.0, 0, 4, [0.015, 0.0], est) == pytest.approx(0.02)
    assert completion_estimate_s(0.0, 4, 4, [0.015, 0.0], est) == pytest.approx(0.035)
    assert completion_estimate_s(0.0, 8, 4, [0.015, 0.0], est) == pytest.approx(0.04)


def test_a_replica_overdue_on_its_batch_counts_as_free_now() -> None:
    assert completion_estimate_s(1.0, 0, 4, [0.5], flat(0.1).estimate_s) == pytest.approx(1.1)


def test_no_replica_taking_batches_means_no_estimate() -> None:
    assert completion_estimate_s(0.0, 3, 4, [], flat(0.1).estimate_s) is None


def test_estimate_rejects_impossible_inputs() -> None:
    with pytest.raises(ValueError, match="ahead"):
        completion_estimate_s(0.0, -1, 4, [0.0], flat(0.1).estimate_s)
    with pytest.raises(ValueError, match="batch_size"):
        completion_estimate_s(0.0, 0, 0, [0.0], flat(0.1).estimate_s)


def test_batch_times_average_per_size_and_fall_back_to_the_nearest_size() -> None:
    times = BatchTimes(smoothing=0.5)
    assert not times and times.estimate_s(4) == 0.0
    times.record(1, 0.010)
    times.record(4, 0.020)
    times.record(4, 0.030)
    assert times
    assert times.estimate_s(4) == pytest.approx(0.025)
    assert times.estimate_s(1) == pytest.approx(0.010)
    assert times.estimate_s(8) == pytest.approx(0.025)  # nearest observed: 4
    assert times.estimate_s(2) == pytest.approx(0.010)  # nearest: 1
    times.record(3, 0.018)
    assert times.estimate_s(2) == pytest.approx(0.018)  # tie 1 / 3: the larger
    # typical: every batch, whatever its size: 0.01 -> 0.015 -> 0.0225 -> 0.02025
    assert times.typical_s == pytest.approx(0.02025)
    with pytest.raises(ValueError, match="smoothing"):
        BatchTimes(smoothing=0.0)


def test_estimate_error_margin_is_a_recent_high_quantile_updated_in_steps() -> None:
    errors = EstimateError(window=10, every=5, quantile=0.9)
    for e in (0.01, 0.02, 0.03, 0.04):
        errors.record(e)
    assert errors.margin_s == 0.0  # not updated before 5 samples
    errors.record(0.05)
    assert errors.margin_s == pytest.approx(0.05)  # 0.9 quantile of 5: the largest
    for _ in range(10):  # the window forgets: answers now come early
        errors.record(-0.01)
    assert errors.margin_s == 0.0  # never negative: the slack is a floor
    with pytest.raises(ValueError, match="quantile"):
        EstimateError(quantile=1.5)


def test_count_ahead_counts_what_leaves_the_queue_first() -> None:
    queue: StageQueue[str] = StageQueue(10)
    for seq, deadline in enumerate((1.0, 3.0, 2.0, 2.0)):
        queue.push(f"q{seq}", deadline, seq)
    assert queue.count_ahead(2.0, 3) == 2  # q0 (1.0) and q2 (2.0, seq 2)
    assert queue.count_ahead(0.5, 9) == 0
    assert queue.count_ahead(5.0, 9) == 4


def test_dispatch_sheds_a_query_that_the_rest_of_its_path_would_make_late() -> None:
    now = [1.0]
    d: StageDispatcher[str, str] = StageDispatcher(4, 10, lambda: now[0], shed_late=True)
    d.record_service(0.05, batch_size=2)
    d.enqueue("late-after-path", 1.10, 0)  # 1.0 + 0.05 + 0.06 > 1.10
    d.enqueue("fine", 1.20, 1)
    d.replica_idle("r")
    result = d.assign(path_s=0.06)
    assert result.shed == ["late-after-path"]
    assert result.batches == [("r", ["fine"])]


class Clock:
    def __init__(self) -> None:
        self.now_s = 0.0

    def __call__(self) -> float:
        return self.now_s


def test_failure_log_writes_one_line_per_stage_per_interval_and_reports_what_it_held() -> None:
    clock = Clock()
    log = FailureLog(interval_s=1.0, clock=clock)
    first = log.line("a", "batch", "TypeError: boom", 4)
    assert first == "stage 'a' failed 4 queries (batch): TypeError: boom"
    clock.now_s = 0.5
    assert log.line("a", "batch", "TypeError: boom", 4) is None
    assert log.line("a", "output", "ValueError: bad", 1) is None
    assert log.line("b", "batch", "OSError: x", 1) == "stage 'b' failed 1 query (batch): OSError: x"
    clock.now_s = 1.0
    again = log.line("a", "batch", "TypeError: boom", 2)
    assert again == (
        "stage 'a' failed 2 queries (batch): TypeError: boom "
        "[2 more failures of this stage (5 queries) not logged since the last line]"
    )
    clock.now_s = 2.5
    assert log.line("a", "batch", "TypeError: boom", 1) == (
        "stage 'a' failed 1 query (batch): TypeError: boom"
    )


def test_failure_log_with_no_interval_writes_every_line() -> None:
    log = FailureLog(interval_s=0.0, clock=lambda: 0.0)
    assert log.line("a", "batch", "e", 1) is not None
    assert log.line("a", "batch", "e", 1) is not None
    with pytest.raises(ValueError, match="interval_s"):
        FailureLog(interval_s=-1.0)
