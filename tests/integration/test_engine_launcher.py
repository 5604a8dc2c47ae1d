"""Replicas forked from a per-stage template process: the stage is imported and
``preload()`` runs once per stage, replicas are its children, failures fall back to fresh
interpreters, and nothing outlives the engine."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from inferline.engine.testing import ServedEngine, served_engine, write_bundle

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

STAGES = """
import os
from pathlib import Path

from inferline.engine import StageModel

MARKS = Path({marks!r})


class Counted(StageModel):
    @classmethod
    def preload(cls):
        (MARKS / f"preload-{{os.getpid()}}").touch()

    def setup(self):
        (MARKS / f"setup-{{os.getpid()}}-{{os.getppid()}}").touch()

    def predict(self, inputs):
        return [{{"pid": os.getpid()}} for _ in inputs]


class BadPreload(Counted):
    @classmethod
    def preload(cls):
        raise RuntimeError("preload is broken")
"""


def parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        return int(f.read().rpartition(")")[2].split()[1])


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def wait_until(condition: object, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def marks(folder: Path, kind: str) -> list[list[int]]:
    return [[int(p) for p in m.name.split("-")[1:]] for m in folder.glob(f"{kind}-*")]


def bundle(tmp: Path, model: str, replicas: int) -> tuple[Path, Path, Path]:
    folder = tmp / "bundle"
    mark_dir = tmp / "marks"
    mark_dir.mkdir()
    folder.mkdir()
    (folder / "launcher_stages.py").write_text(STAGES.format(marks=str(mark_dir)))
    pipeline, plan = write_bundle(
        folder,
        "forked",
        {"a": f"launcher_stages:{model}"},
        [],
        {"a": {"hardware": "cpu-1", "batch_size": 1, "replicas": replicas}},
    )
    return pipeline, plan, mark_dir


def scale(engine: ServedEngine, replicas: int) -> None:
    body = (
        f'{{"stages": {{"a": {{"hardware": "cpu-1", "batch_size": 1, "replicas": {replicas}}}}}}}'
    )
    code, answer = engine.request("POST", "/v2/control/plan", body)
    assert code == 200, answer


def answered_by(engine: ServedEngine) -> int:
    code, body = engine.infer(
        "forked", [{"name": "x", "shape": [1], "datatype": "FP64", "data": [1.0]}]
    )
    assert code == 200, body
    return int(next(o for o in body["outputs"] if o["name"] == "pid")["data"][0])


@pytest.fixture
def counted(tmp_path: Path) -> Iterator[tuple[ServedEngine, Path]]:
    pipeline, plan, mark_dir = bundle(tmp_path, "Counted", 2)
    with served_engine(pipeline, plan) as engine:
        yield engine, mark_dir


def test_replicas_fork_from_one_template_that_preloaded_once(
    counted: tuple[ServedEngine, Path],
) -> None:
    engine, mark_dir = counted
    (template,) = [pid for (pid,) in marks(mark_dir, "preload")]
    setups = marks(mark_dir, "setup")
    assert len(setups) == 2
    assert all(parent == template for _, parent in setups)
    assert template != engine.process.pid
    assert sorted(pid for pid, _ in setups) == sorted(engine.replica_pids("a"))

    scale(engine, 3)  # a scale-up forks again; preload does not run again
    assert len(marks(mark_dir, "setup")) == 3
    assert len(marks(mark_dir, "preload")) == 1
    assert answered_by(engine) in engine.replica_pids("a")


def test_a_killed_forked_replica_is_reaped_and_replaced(
    counted: tuple[ServedEngine, Path],
) -> None:
    engine, mark_dir = counted
    (template,) = [pid for (pid,) in marks(mark_dir, "preload")]
    victim = engine.replica_pids("a")[0]
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: not alive(victim))  # the template reaps it: no zombie is left
    wait_until(
        lambda: victim not in engine.replica_pids("a") and len(engine.replica_pids("a")) == 2
    )
    assert all(parent_of(pid) == template for pid in engine.replica_pids("a"))
    assert answered_by(engine) in engine.replica_pids("a")


def test_a_killed_template_leaves_replicas_serving_and_scale_ups_working(
    counted: tuple[ServedEngine, Path],
) -> None:
    engine, mark_dir = counted
    (template,) = [pid for (pid,) in marks(mark_dir, "preload")]
    serving = engine.replica_pids("a")
    os.kill(template, signal.SIGKILL)
    wait_until(lambda: not alive(template))
    assert answered_by(engine) in serving
    scale(engine, 3)  # a new template is started for the stage
    assert len(marks(mark_dir, "preload")) == 2
    assert answered_by(engine) in engine.replica_pids("a")
    scale(engine, 1)  # replicas of the dead template are stopped and waited for
    wait_until(lambda: len(engine.replica_pids("a")) == 1)


def test_nothing_outlives_a_stopped_or_killed_front_end(tmp_path: Path) -> None:
    pipeline, plan, mark_dir = bundle(tmp_path, "Counted", 2)
    with served_engine(pipeline, plan) as engine:
        processes = [pid for (pid,) in marks(mark_dir, "preload")] + engine.replica_pids("a")
    wait_until(lambda: not any(alive(pid) for pid in processes), timeout_s=10.0)

    (tmp_path / "again").mkdir()
    pipeline, plan, mark_dir = bundle(tmp_path / "again", "Counted", 2)
    with served_engine(pipeline, plan) as engine:
        processes = [pid for (pid,) in marks(mark_dir, "preload")] + engine.replica_pids("a")
        engine.process.kill()  # SIGKILL the front-end only, not its session
        wait_until(lambda: not any(alive(pid) for pid in processes), timeout_s=10.0)


def test_a_failing_preload_falls_back_to_fresh_replicas(tmp_path: Path) -> None:
    pipeline, plan, mark_dir = bundle(tmp_path, "BadPreload", 2)
    with served_engine(pipeline, plan) as engine:
        setups = marks(mark_dir, "setup")
        assert len(setups) == 2
        assert all(parent == engine.process.pid for _, parent in setups)
        assert answered_by(engine) in engine.replica_pids("a")


def test_fresh_replicas_on_request(tmp_path: Path) -> None:
    pipeline, plan, mark_dir = bundle(tmp_path, "Counted", 2)
    with served_engine(pipeline, plan, "--fresh-replicas") as engine:
        assert marks(mark_dir, "preload") == []
        assert all(parent == engine.process.pid for _, parent in marks(mark_dir, "setup"))
        assert answered_by(engine) in engine.replica_pids("a")


def niceness(pid: int) -> int:
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        return int(f.read().rpartition(")")[2].split()[16])


@pytest.mark.parametrize("how", ["--fork-replicas", "--fresh-replicas"])
def test_replicas_run_below_the_front_end(tmp_path: Path, how: str) -> None:
    """The front-end dispatches every batch: replicas, forked or fresh, run at the
    niceness asked for above it; the front-end and the template keep theirs."""
    pipeline, plan, mark_dir = bundle(tmp_path, "Counted", 2)
    base = os.getpriority(os.PRIO_PROCESS, 0)
    with served_engine(pipeline, plan, how, "--replica-nice", "7") as engine:
        assert [niceness(pid) for pid in engine.replica_pids("a")] == [min(base + 7, 19)] * 2
        assert niceness(engine.process.pid) == base
        assert all(niceness(pid) == base for (pid,) in marks(mark_dir, "preload"))
        scale(engine, 3)  # a scale-up's replica too
        assert all(niceness(pid) == min(base + 7, 19) for pid in engine.replica_pids("a"))
        assert answered_by(engine) in engine.replica_pids("a")
    with served_engine(pipeline, plan, "--replica-nice", "0") as engine:
        assert all(niceness(pid) == base for pid in engine.replica_pids("a"))


GC_STAGES = """
import gc

from inferline.engine import StageModel


class Big(StageModel):
    def setup(self):
        self.weights = [[float(i)] for i in range(200_000)]  # a model's worth of objects

    def predict(self, inputs):
        return [{"frozen": gc.get_freeze_count()} for _ in inputs]
"""


def test_a_replica_freezes_its_loaded_model_out_of_the_garbage_collector(tmp_path: Path) -> None:
    """A full collection over a loaded model stalled queued queries for 0.4–0.5 s: the
    objects setup() made are frozen before the replica says it is ready."""
    (tmp_path / "gc_stages.py").write_text(GC_STAGES)
    pipeline, plan = write_bundle(
        tmp_path,
        "frozen",
        {"a": "gc_stages:Big"},
        [],
        {"a": {"hardware": "cpu-1", "batch_size": 1, "replicas": 1}},
    )
    with served_engine(pipeline, plan) as engine:
        code, body = engine.infer(
            "frozen", [{"name": "x", "shape": [1], "datatype": "FP64", "data": [1.0]}]
        )
    assert code == 200, body
    frozen = next(o for o in body["outputs"] if o["name"] == "frozen")["data"][0]
    assert frozen >= 200_000
