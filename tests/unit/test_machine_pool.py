"""The machine as a resource pool: the one capacity check the engine and the Tuner share."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from inferline.errors import CapacityError, ConfigError, ProfileError
from inferline.pipeline import PipelineConfig, load_config
from inferline.profiles import (
    FRONTEND_FLOOR_CORES,
    MAX_BATCH_SIZE,
    BatchProfile,
    EngineOverhead,
    HardwareCatalogue,
    HardwareType,
    MachinePool,
    ProfilePoint,
    Profiles,
    check_plan_fits,
    fit_plan,
    load_hardware,
    load_profiles,
    machine_pool_for_host,
    parse_machine,
    profiles_to_mapping,
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
LITERAL = MachinePool(cores=2, memory_bytes=24 * GIB, fit="threads")


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


# --- the pool a Planner plans for --------------------------------------------------------------


def test_a_planning_pool_keeps_the_front_ends_measured_share_and_one_thread_per_core() -> None:
    planning = LITERAL.for_planning(140.0, 0.8e-3)
    # 0.05 floor + 140 q/s × 0.8 ms = 0.162 core for the front-end, 1.838 for replicas
    assert planning.frontend_reserve_cores == pytest.approx(FRONTEND_FLOOR_CORES + 0.112)
    assert planning.replica_cores == pytest.approx(1.838)
    assert planning.max_threads == 1  # one thread per core: no oversubscription
    eight = MachinePool(cores=8, memory_bytes=None, fit="threads")
    assert eight.for_planning(140.0, 0.8e-3).max_threads == 7
    # at 2,000 q/s the front-end alone takes 1.65 cores of 8
    busy = eight.for_planning(2000.0, 0.8e-3)
    assert busy.frontend_reserve_cores == pytest.approx(1.65) and busy.max_threads == 6
    relaxed = MachinePool(cores=2, memory_bytes=None, planning_threads_per_core=2.0, fit="threads")
    assert relaxed.for_planning(140.0, 0.8e-3).max_threads == 3
    assert MachinePool(cores=2, memory_bytes=None).max_replicas >= 1 << 30  # memory not a bound
    with pytest.raises(ValueError, match="threads per core"):
        MachinePool(cores=2, memory_bytes=None, planning_threads_per_core=5.0)
    with pytest.raises(ValueError, match="planning rate"):
        TWO_CORES.for_planning(-1.0)


def test_a_busy_planning_pool_keeps_the_engines_thread_bound_and_a_busy_target() -> None:
    planning = TWO_CORES.for_planning(140.0, 0.8e-3)
    assert planning.fit == "shared" and planning.max_busy_fraction == 0.8
    assert planning.bounds_busy_cores and planning.shares_cores
    # threads: the engine's own bound, (2 cores - 1 for the front-end) × 8, so it starts
    assert planning.max_threads == TWO_CORES.max_threads == 8
    # busy: 80 % of 2 cores less the front-end's 0.162
    assert planning.busy_cores_allowed == pytest.approx(1.438)
    assert planning.busy_cores_needed(1.438) == 2 and planning.busy_cores_needed(1.5) == 3
    four = plan(a=("cpu-1", 1, 2), b=("cpu-2", 1, 1))
    busy = planning.busy_cores_of(four, {"a": 0.25, "b": 0.5})
    assert busy == {"a": pytest.approx(0.5), "b": pytest.approx(1.0)}  # × replicas × threads


def test_a_planning_pool_allots_gpus_and_the_engines_pool_does_not() -> None:
    two_gpu_replicas = plan(a=("cpu-1", 1, 1), b=("v100", 4, 2))
    check_plan_fits(two_gpu_replicas, MachinePool(cores=8, memory_bytes=GIB, gpus=1))
    one_gpu = MachinePool(cores=8, memory_bytes=None, gpus=1).for_planning(10.0)
    with pytest.raises(CapacityError) as caught:
        check_plan_fits(two_gpu_replicas, one_gpu)
    assert caught.value.resource == "gpus" and caught.value.stage == "b"
    assert "2 GPU replicas; this machine has 1 GPU(s)" in str(caught.value)
    assert one_gpu.gpus_needed(two_gpu_replicas) == 2


def test_cores_needed_is_the_smallest_machine_that_fits() -> None:
    pool = LITERAL.for_planning(100.0, 0.8e-3)  # 0.13 core for the front-end
    five = plan(a=("cpu-1", 1, 3), b=("cpu-2", 1, 1))  # 3 + 2 threads
    assert pool.cores_needed(five) == 6
    check_plan_fits(five, dataclasses.replace(pool, cores=6))
    with pytest.raises(CapacityError):
        check_plan_fits(five, dataclasses.replace(pool, cores=5))
    # a cpu-8 replica is 8 threads on a machine big enough, though 2 on this one
    assert pool.cores_needed(plan(a=("cpu-8", 1, 1))) == 9


@given(
    cores=st.integers(1, 64),
    rate=st.floats(0.0, 5000.0),
    cpu_ms=st.floats(0.0, 2.0),
    per_core=st.sampled_from([0.5, 1.0, 2.0, 4.0]),
    threads=st.lists(st.sampled_from(["cpu-1", "cpu-2", "cpu-4", "t4"]), min_size=1, max_size=4),
    replicas=st.lists(st.integers(1, 40), min_size=4, max_size=4),
)
def test_a_plan_that_fits_a_planning_pool_passes_the_engines_start_up_check(
    cores: int,
    rate: float,
    cpu_ms: float,
    per_core: float,
    threads: list[str],
    replicas: list[int],
) -> None:
    """The planner's bound is inside the engine's: a plan made for a machine always starts."""
    machine = MachinePool(cores=cores, memory_bytes=64 * GIB, planning_threads_per_core=per_core)
    planning = machine.for_planning(rate, cpu_ms / 1000)
    config = plan(**{f"s{i}": (hw, 1, replicas[i]) for i, hw in enumerate(threads)})
    try:
        check_plan_fits(config, planning)
    except CapacityError:
        needed = planning.cores_needed(config)
        assert needed > cores or planning.gpus_needed(config) > 0
        return
    check_plan_fits(config, machine)  # the engine's own pool of the same host
    assert planning.cores_needed(config) <= cores


# --- naming a machine: --machine and the catalogue ---------------------------------------------


def test_parse_machine_reads_local_and_described_machines() -> None:
    local = parse_machine("local")
    host = machine_pool_for_host()
    assert (local.cores, local.gpus, local.label) == (host.cores, host.gpus, "local")
    assert local.planning_threads_per_core == 1.0
    assert local.fit == "shared" and local.max_busy_fraction == 0.8
    assert parse_machine("local,fit=busy").fit == "busy"
    literal = parse_machine("local,fit=threads,threads-per-core=2")
    assert literal.planning_threads_per_core == 2.0 and literal.fit == "threads"
    assert parse_machine("cores=4,max-busy-fraction=0.6").max_busy_fraction == 0.6
    assert parse_machine("cores=4,fit=THREADS").fit == "threads"
    big = parse_machine("cores=16, memory=64G, gpus=2")
    assert (big.cores, big.memory_bytes, big.gpus) == (16, 64 * GIB, 2)
    assert parse_machine("cores=4").memory_bytes is None
    assert parse_machine("cores=4,memory=512M").memory_bytes == 512 << 20
    assert local.core_sharing == "fair"
    assert parse_machine("local,sharing=per-core").core_sharing == "per-core"
    assert parse_machine("cores=4,sharing=PER-CORE").core_sharing == "per-core"
    assert local.threads_per_replica is None
    assert parse_machine("cores=2,threads-per-replica=2").threads_per_replica == 2
    assert parse_machine("local,fit=busy,threads-per-replica=3").threads_per_replica == 3


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "needs cores=N"),
        ("gpus=1", "needs cores=N"),
        ("cores=0", "at least 1"),
        ("cores=two", "invalid literal"),
        ("cores=2,cores=3", "given once"),
        ("cores=2,disk=1T", "'disk=1T' is not one of"),
        ("cores=2,memory=lots", "not a size like 16G"),
        ("cores=2,gpus=-1", "gpus must be >= 0"),
        ("local,cores=4", "'local' reads cores from this host"),
        ("cores=2,fit=threads,threads-per-core=8", "threads-per-core must be in (0, 4]"),
        ("cores=2,fit=cores", "fit must be one of busy, shared, threads, got 'cores'"),
        ("cores=2,sharing=equal", "sharing must be one of per-core, fair, got 'equal'"),
        ("local,threads-per-core=2", "threads-per-core is the fit=threads rule's figure"),
        ("cores=2,fit=threads,max-busy-fraction=0.5", "max-busy-fraction is the fit=busy"),
        ("cores=2,max-busy-fraction=1.5", "max-busy-fraction must be in (0, 1]"),
        ("cores=2,threads-per-replica=2.5", "threads-per-replica must be a whole number"),
        ("cores=2,threads-per-replica=0", "threads-per-replica must be at least 1"),
        ("cores=2,fit=threads,threads-per-replica=2", "threads-per-replica is the fit=busy"),
    ],
)
def test_a_bad_machine_names_the_flag_and_what_is_expected(text: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_machine(text)
    assert caught.value.field == "--machine" and problem in str(caught.value)
    assert "expected 'local' (this host) or 'cores=N" in str(caught.value)


HARDWARE = "hardware:\n  - {name: cpu-1, price_per_hour: 0.0425}\n"


def test_the_catalogue_may_name_the_machine(tmp_path: Path) -> None:
    path = tmp_path / "hardware.yaml"
    path.write_text(HARDWARE)
    assert load_hardware(path).machine is None
    path.write_text(HARDWARE + "machine: {cores: 8, memory_gb: 16, gpus: 1}\n")
    machine = load_hardware(path).machine
    assert machine is not None
    assert (machine.cores, machine.memory_bytes, machine.gpus) == (8, 16 * GIB, 1)
    path.write_text(HARDWARE + "machine: local\n")
    local = load_hardware(path).machine
    assert local is not None and local.label == "local"
    path.write_text(HARDWARE + "machine: {cores: local, fit: threads, threads_per_core: 2}\n")
    local = load_hardware(path).machine
    assert local is not None and local.planning_threads_per_core == 2.0
    assert local.fit == "threads"
    path.write_text(HARDWARE + "machine: {cores: 4, max_busy_fraction: 0.7}\n")
    four = load_hardware(path).machine
    assert four is not None and (four.fit, four.max_busy_fraction) == ("shared", 0.7)
    path.write_text(HARDWARE + "machine: {cores: 4, fit: busy}\n")
    busy = load_hardware(path).machine
    assert busy is not None and busy.fit == "busy" and not busy.shares_cores
    path.write_text(HARDWARE + "machine: {cores: 4, sharing: per-core}\n")
    per_core = load_hardware(path).machine
    assert per_core is not None and per_core.core_sharing == "per-core"
    path.write_text(HARDWARE + "machine: {cores: 2, threads_per_replica: 2}\n")
    wide = load_hardware(path).machine
    assert wide is not None and wide.max_threads_per_replica == 2


@pytest.mark.parametrize(
    ("section", "field"),
    [
        ("machine: {cores: 0}", "machine.cores"),
        ("machine: {cores: 2, disk_gb: 10}", "machine.disk_gb"),
        ("machine: {cores: 2, threads_per_core: 9}", "machine.threads_per_core"),
        ("machine: {cores: 2, threads_per_core: 2}", "machine"),
        ("machine: {cores: 2, fit: cores}", "machine.fit"),
        ("machine: {cores: 2, max_busy_fraction: 0}", "machine.max_busy_fraction"),
        ("machine: {cores: 2, gpus: -1}", "machine.gpus"),
        ("machine: {cores: local, gpus: 1}", "machine"),
        ("machine: big", "machine"),
        ("machine: {cores: many}", "machine.cores"),
        ("machine: {cores: 2, threads_per_replica: 0}", "machine.threads_per_replica"),
        ("machine: {cores: 2, fit: threads, threads_per_replica: 2}", "machine"),
    ],
)
def test_a_bad_machine_section_names_the_file_and_field(
    tmp_path: Path, section: str, field: str
) -> None:
    path = tmp_path / "hardware.yaml"
    path.write_text(HARDWARE + section + "\n")
    with pytest.raises(ProfileError) as caught:
        load_hardware(path)
    assert caught.value.source == str(path)
    assert caught.value.field == field, caught.value


def test_the_front_ends_cpu_per_query_is_kept_in_the_profiles_file(tmp_path: Path) -> None:
    hardware = HardwareCatalogue((HardwareType("cpu-1", 0.0425),))
    point = ProfilePoint(1, 0.01, 0.01)
    profiles = Profiles(
        hardware, {("a", "cpu-1"): BatchProfile("a", "cpu-1", (point,))}
    ).with_overhead(EngineOverhead(per_query_s=0.001, frontend_cpu_s_per_query=0.00071))
    path = tmp_path / "profiles.yaml"
    path.write_text(yaml.safe_dump(profiles_to_mapping(profiles)))
    loaded = load_profiles(path, hardware)
    assert loaded.overhead is not None and loaded.overhead.frontend_cpu_s_per_query == 0.00071
    body = yaml.safe_load(path.read_text())
    body["engine_overhead"]["frontend_cpu_s_per_query"] = -1.0
    path.write_text(yaml.safe_dump(body))
    with pytest.raises(ProfileError) as caught:
        load_profiles(path, hardware)
    assert caught.value.field == "engine_overhead.frontend_cpu_s_per_query"
