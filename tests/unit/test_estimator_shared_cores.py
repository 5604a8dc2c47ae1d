"""The Estimator's shared cores (processor sharing), on cases small enough to work by hand."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from inferline.errors import ConfigError
from inferline.estimator import Estimator
from inferline.pipeline import Pipeline, PipelineConfig, StageConfig
from inferline.profiles import (
    BatchProfile,
    EngineOverhead,
    HardwareCatalogue,
    HardwareType,
    MachinePool,
    ProfilePoint,
    Profiles,
)
from inferline.workload import Trace

CATALOGUE = HardwareCatalogue(
    (
        HardwareType("cpu-1", price_per_hour=1.0),
        HardwareType("cpu-2", price_per_hour=2.0),
        HardwareType("gpu-t4", price_per_hour=3.0, accelerator=True),
    )
)


def one_stage(hardware: str = "cpu-1", service_s: float = 1.0) -> tuple[Pipeline, Profiles]:
    pipeline = Pipeline.chain("one", ["work"])
    profile = BatchProfile("work", hardware, (ProfilePoint(1, service_s, service_s),))
    # no front-end CPU per query: the shared cores are the machine less the idle floor
    overhead = EngineOverhead(frontend_cpu_s_per_query=0.0)
    return pipeline, Profiles(CATALOGUE, {("work", hardware): profile}, overhead=overhead)


def latencies(
    arrivals: list[float],
    replicas: int,
    cores: int,
    hardware: str = "cpu-1",
    **machine: Any,
) -> tuple[np.ndarray, float]:
    pipeline, profiles = one_stage(hardware)
    config = PipelineConfig(
        stages={"work": StageConfig(hardware=hardware, batch_size=1, replicas=replicas)}
    )
    pool = MachinePool(cores=cores, memory_bytes=None, **machine)
    est = Estimator(pipeline, profiles, Trace(np.array(arrivals)), machine=pool)
    return est.run(config).latency_s, est.shared_cores


def test_two_batches_on_fewer_cores_share_them() -> None:
    got, cores = latencies([0.0, 0.0, 10.0], replicas=2, cores=1)
    assert cores == pytest.approx(0.95)  # the front-end's idle floor is kept out
    both = 2.0 / cores  # 2 s of work at 0.95 core
    assert got[0] == pytest.approx(both) and got[1] == pytest.approx(both)
    assert got[2] == pytest.approx(1.0 / cores)  # alone, still only 0.95 of a core


def test_a_batch_speeds_up_when_the_other_finishes() -> None:
    # on 1.95 cores: A (t=0) and B (t=0.5) share at 0.975 each from 0.5 until A is done
    got, cores = latencies([0.0, 0.5], replicas=2, cores=2)
    assert cores == pytest.approx(1.95)
    share = cores / 2
    a_done = 0.5 + (1.0 - 0.5) / share
    assert got[0] == pytest.approx(a_done)
    b_left = 1.0 - (a_done - 0.5) * share
    assert got[1] == pytest.approx(a_done + b_left - 0.5)


def test_cores_enough_for_every_replica_change_nothing() -> None:
    arrivals = [0.0, 0.0, 0.1, 0.3, 0.31, 2.0]
    shared, _ = latencies(arrivals, replicas=3, cores=8)
    pipeline, profiles = one_stage()
    config = PipelineConfig(
        stages={"work": StageConfig(hardware="cpu-1", batch_size=1, replicas=3)}
    )
    dedicated = Estimator(pipeline, profiles, Trace(np.array(arrivals))).run(config).latency_s
    np.testing.assert_array_equal(shared, dedicated)


def test_a_replica_asks_for_its_threads_and_a_gpu_replica_for_none() -> None:
    # one cpu-2 batch on 2 cores (1.95 shared) runs at 1.95/2 of its speed
    got, cores = latencies([0.0], replicas=1, cores=2, hardware="cpu-2")
    assert got[0] == pytest.approx(2.0 / cores)
    got, _ = latencies([0.0, 0.0, 0.0], replicas=3, cores=1, hardware="gpu-t4")
    np.testing.assert_array_equal(got, [1.0, 1.0, 1.0])


def test_without_a_machine_every_replica_is_dedicated() -> None:
    pipeline, profiles = one_stage()
    est = Estimator(pipeline, profiles, Trace(np.array([0.0, 0.0])))
    assert math.isinf(est.shared_cores)


def test_three_batches_on_two_cores_run_two_to_a_core() -> None:
    # per-core run queues: A and C share core 0, B has core 1 alone; both cores busy, so
    # each gives 1.95 / 2 of its time. With no balancing delay, core 1 takes A once B is done.
    got, cores = latencies(
        [0.0, 0.0, 0.0], replicas=3, cores=2, core_sharing="per-core", idle_balance_s=0.0
    )
    share = cores / 2
    b_done = 1.0 / share
    assert got[1] == pytest.approx(b_done)
    left = 1.0 - b_done * share / 2  # A and C ran at half the core until then
    assert got[0] == pytest.approx(b_done + left / share)
    assert got[2] == pytest.approx(got[0])


def test_an_idle_core_takes_a_waiting_batch_after_the_balancing_delay() -> None:
    got, cores = latencies(
        [0.0, 0.0, 0.0], replicas=3, cores=2, core_sharing="per-core", idle_balance_s=0.25
    )
    share = cores / 2
    b_done = 1.0 / share
    # for 0.25 s core 1 stays idle, so core 0 has the whole core for A and C (1/2 each)
    left = 1.0 - b_done * share / 2 - 0.25 / 2
    assert got[0] == pytest.approx(b_done + 0.25 + left / share)
    assert got[2] == pytest.approx(got[0])


def test_fair_sharing_runs_three_batches_on_two_cores_at_two_thirds() -> None:
    got, cores = latencies([0.0, 0.0, 0.0], replicas=3, cores=2)  # the default
    np.testing.assert_allclose(got, [3.0 / cores] * 3)


def test_replicas_of_several_threads_share_the_cores_fairly() -> None:
    # a cpu-2 batch spreads over two cores, which one run queue per core cannot show
    pipeline, profiles = one_stage("cpu-2")
    config = PipelineConfig(
        stages={"work": StageConfig(hardware="cpu-2", batch_size=1, replicas=3)}
    )
    trace = Trace(np.array([0.0, 0.0, 0.0]))
    per_core = Estimator(
        pipeline,
        profiles,
        trace,
        machine=MachinePool(cores=4, memory_bytes=None, core_sharing="per-core"),
    )
    fair = Estimator(pipeline, profiles, trace, machine=MachinePool(cores=4, memory_bytes=None))
    np.testing.assert_array_equal(per_core.run(config).latency_s, fair.run(config).latency_s)


def test_an_unknown_core_sharing_or_a_negative_balancing_delay_is_refused() -> None:
    with pytest.raises(ConfigError, match="core sharing 'round-robin'"):
        MachinePool(cores=2, memory_bytes=None, core_sharing="round-robin")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="idle_balance_s must be >= 0"):
        MachinePool(cores=2, memory_bytes=None, idle_balance_s=-1.0)
