"""The machine as a resource pool: the one capacity check the engine and the Tuner share."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from inferline.errors import CapacityError
from inferline.pipeline import PipelineConfig, load_config
from inferline.profiles import (
    MAX_BATCH_SIZE,
    MachinePool,
    check_plan_fits,
    fit_plan,
    machine_pool_for_host,
    resources_for,
)

ROOT = Path(__file__).resolve().parents[2]
GIB = 1 << 30


def plan(**stages: tuple[str, int, int]) -> PipelineConfig:
    return PipelineConfig.model_validate(
        {
            "stages": {
                name: {"hardware": hw, "batch_size": batch, "replicas": n}
                for name, (hw, batch, n) in stages.items()
            }
        }
    )


TWO_CORES = MachinePool(cores=2, memory_bytes=24 * GIB)


def test_the_pool_keeps_a_core_for_the_front_end_and_bounds_threads() -> None:
    assert TWO_CORES.replica_cores == 1.0
    assert TWO_CORES.max_threads == 8  # 1 core left × 8 threads per core
    assert MachinePool(cores=16, memory_bytes=GIB).max_threads == 120
    assert MachinePool(cores=1, memory_bytes=GIB).max_threads == 8  # replicas keep 1 core
    strict = MachinePool(cores=4, memory_bytes=GIB, max_threads_per_core=1)
    assert strict.max_threads == 3
    # memory: (1 GiB - 256 MiB for the front-end) / 32 MiB per replica
    assert MachinePool(cores=64, memory_bytes=GIB).max_replicas == 24


def test_a_plan_within_the_pool_fits() -> None:
    check_plan_fits(plan(a=("cpu-1", 8, 2), b=("cpu-2", 4, 2), c=("cpu-1", 1, 2)), TWO_CORES)


def test_a_hundred_thousand_replicas_are_refused_naming_the_stage_and_resource() -> None:
    with pytest.raises(CapacityError) as caught:
        check_plan_fits(plan(a=("cpu-1", 4, 1), big=("cpu-1", 4, 100_000)), TWO_CORES)
    assert caught.value.stage == "big" and caught.value.resource == "cpu threads"
    assert "stage 'big' exceeds the machine's cpu threads" in str(caught.value)
    assert "100001 replica threads" in str(caught.value)
    assert caught.value.exit_code == 2


def test_threads_count_by_hardware_name_capped_at_the_cores() -> None:
    # cpu-2 is 2 threads: 5 of them are 10 threads > 8
    with pytest.raises(
        CapacityError, match="stage 'a' exceeds the machine's cpu threads: 5 replica"
    ):
        check_plan_fits(plan(a=("cpu-2", 1, 5)), TWO_CORES)
    # cpu-64 on 2 cores runs 2 threads, so 4 of them fit
    check_plan_fits(plan(a=("cpu-64", 1, 4)), TWO_CORES)


def test_memory_bounds_the_replica_count() -> None:
    small = MachinePool(cores=256, memory_bytes=GIB)
    with pytest.raises(CapacityError) as caught:
        check_plan_fits(plan(a=("cpu-1", 1, 25)), small)
    assert caught.value.resource == "memory" and "at most 24" in str(caught.value)


def test_batch_sizes_are_bounded_with_or_without_a_pool() -> None:
    check_plan_fits(plan(a=("cpu-1", MAX_BATCH_SIZE, 1)), TWO_CORES)
    for pool in (TWO_CORES, None):
        with pytest.raises(CapacityError) as caught:
            check_plan_fits(plan(a=("cpu-1", 1, 1), b=("cpu-1", MAX_BATCH_SIZE + 1, 1)), pool)
        assert caught.value.stage == "b" and caught.value.resource == "batch_size"
    check_plan_fits(plan(a=("cpu-1", 1, 100_000)), None)  # replicas elsewhere: not counted


def test_fit_plan_keeps_decreases_and_grants_increases_in_turn() -> None:
    current = plan(a=("cpu-1", 4, 2), b=("cpu-1", 4, 2), c=("cpu-1", 4, 3))
    wanted = plan(a=("cpu-1", 4, 6), b=("cpu-1", 4, 6), c=("cpu-1", 4, 1))
    fitted, limited = fit_plan(wanted, TWO_CORES, current)
    counts = {n: c.replicas for n, c in fitted.stages.items()}
    assert counts == {"a": 4, "b": 3, "c": 1}  # 8 threads: c drops to 1, a and b share 7
    assert limited == {"a": 6, "b": 6}
    check_plan_fits(fitted, TWO_CORES)
    same, none = fit_plan(current, TWO_CORES, current)
    assert same == current and none == {}


def test_the_host_pool_reads_this_machine() -> None:
    pool = machine_pool_for_host()
    assert 1 <= pool.cores <= (os.cpu_count() or 1)
    assert pool.memory_bytes > 256 << 20
    assert pool.gpus >= 0
    assert resources_for("cpu-2", pool.cores).threads == min(2, pool.cores)


def test_every_shipped_plan_fits_a_two_core_machine() -> None:
    """The engine's bound never refuses a plan the examples and tests serve (the reference
    bundles are cluster-scale, for simulation only: their stages have no model to serve)."""
    files = sorted((ROOT / "examples").rglob("plan.yaml")) + sorted(
        (ROOT / "tests").rglob("plan.yaml")
    )
    plans = [f for f in files if "reference" not in f.parts]
    assert len(plans) >= 4, plans
    for path in plans:
        check_plan_fits(load_config(path), TWO_CORES)
