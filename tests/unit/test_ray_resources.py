"""The Ray backend's pure parts: hardware → Ray resources, the plan-vs-cluster check, the
tuner's fit to free resources, address parsing and a refused address (no Ray needed)."""

from __future__ import annotations

import socket

import pytest

from inferline.pipeline import PipelineConfig
from inferline.ray_backend import (
    ClusterResources,
    ClusterUnreachableError,
    InsufficientResourcesError,
    NodeResources,
    check_available_resources,
    check_plan_resources,
    fit_to_capacity,
    plan_demand,
    ray_resources_for,
)
from inferline.ray_backend._cluster import probe, split_address


def config(**stages: tuple[str, int]) -> PipelineConfig:
    return PipelineConfig.model_validate(
        {
            "stages": {
                name: {"hardware": hw, "batch_size": 4, "replicas": n}
                for name, (hw, n) in stages.items()
            }
        }
    )


def node(node_id: str, **resources: float) -> NodeResources:
    return NodeResources(
        node_id, "10.0.0.1", {k.replace("__", ":"): v for k, v in resources.items()}
    )


TWO_CPU_NODES = ClusterResources((node("a", CPU=3.0), node("b", CPU=4.0)), available={"CPU": 7.0})


@pytest.mark.parametrize(
    ("hardware", "cpus", "gpus", "accelerator"),
    [
        ("cpu-1", 1, 0, None),
        ("cpu-2", 2, 0, None),
        ("c5-1vcpu", 1, 0, None),
        ("c5.2xlarge", 8, 0, None),  # not capped by this machine's cores
        ("cpu-16", 16, 0, None),
        ("v100", 1, 1, "V100"),
        ("gpu-t4", 1, 1, "T4"),
        ("a100-80g", 1, 1, "A100"),
        ("K80", 1, 1, "K80"),
        ("p100", 1, 1, "P100"),
        ("gpu", 1, 1, None),
        ("cuda", 1, 1, None),
    ],
)
def test_hardware_names_map_to_ray_resources(
    hardware: str, cpus: int, gpus: int, accelerator: str | None
) -> None:
    res = ray_resources_for(hardware)
    assert (res.num_cpus, res.num_gpus, res.accelerator_type) == (cpus, gpus, accelerator)
    options = res.actor_options()
    assert options["num_cpus"] == cpus and options["num_gpus"] == gpus
    assert options.get("accelerator_type") == accelerator
    assert res.device == ("cuda" if gpus else "cpu") and res.threads == cpus


def test_plan_demand_sums_replicas() -> None:
    demand = plan_demand(config(a=("cpu-2", 3), b=("v100", 2)))
    assert demand["a"] == {"CPU": 6.0}
    assert demand["b"] == {"CPU": 2.0, "GPU": 2.0, "accelerator_type:V100": 2.0}


def test_a_plan_that_fits_passes() -> None:
    check_plan_resources(config(a=("cpu-1", 2), b=("cpu-2", 2)), TWO_CPU_NODES)


def test_a_missing_gpu_type_names_the_stage_and_the_type() -> None:
    cluster = ClusterResources(
        (node("a", CPU=8.0, GPU=1.0, accelerator_type__T4=1.0), node("b", CPU=4.0)),
        available={"CPU": 12.0, "GPU": 1.0},
    )
    with pytest.raises(InsufficientResourcesError) as caught:
        check_plan_resources(config(pre=("cpu-1", 1), model=("v100", 2)), cluster)
    err = caught.value
    assert (err.stage, err.resource, err.missing) == ("model", "accelerator_type:V100", 2.0)
    assert "stage 'model'" in str(err) and "V100" in str(err) and "of type T4" in str(err)
    assert err.exit_code == 2


def test_too_few_gpus_of_a_present_type() -> None:
    cluster = ClusterResources(
        (node("a", CPU=8.0, GPU=1.0, accelerator_type__T4=1.0),), available={}
    )
    with pytest.raises(InsufficientResourcesError) as caught:
        check_plan_resources(config(model=("t4", 3)), cluster)
    err = caught.value
    assert (err.stage, err.resource, err.needed, err.available) == (
        "model",
        "GPU",
        3.0,
        1.0,
    )
    assert "2 GPUs missing" in str(err)


def test_total_cpus_name_the_first_stage_that_does_not_fit() -> None:
    with pytest.raises(InsufficientResourcesError) as caught:
        check_plan_resources(config(a=("cpu-1", 4), b=("cpu-1", 2), c=("cpu-1", 3)), TWO_CPU_NODES)
    err = caught.value
    assert (err.stage, err.resource, err.needed, err.available) == ("c", "CPU", 9.0, 7.0)
    assert "2 CPUs missing" in str(err) and "stage 'c' is the first" in str(err)


def test_a_replica_larger_than_any_node() -> None:
    with pytest.raises(InsufficientResourcesError) as caught:
        check_plan_resources(config(big=("cpu-6", 1)), TWO_CPU_NODES)
    err = caught.value
    assert (err.stage, err.resource, err.needed, err.available) == ("big", "CPU", 6.0, 4.0)
    assert "on one node" in str(err) and "largest node has 4 CPUs" in str(err)


def test_free_resources_are_checked_separately() -> None:
    busy = ClusterResources(TWO_CPU_NODES.nodes, available={"CPU": 2.0})
    plan = config(a=("cpu-1", 3))
    check_plan_resources(plan, busy)  # the cluster has them ...
    with pytest.raises(InsufficientResourcesError) as caught:  # ... but others hold them
        check_available_resources(plan, busy)
    assert "only 2 CPUs of the cluster's 7 CPUs are free" in str(caught.value)


def test_fit_trims_the_largest_scale_up_to_the_free_resources() -> None:
    current = config(a=("cpu-1", 1), b=("cpu-1", 1))
    target = config(a=("cpu-1", 4), b=("cpu-1", 2))
    cluster = ClusterResources(TWO_CPU_NODES.nodes, available={"CPU": 2.0})
    fitted, trimmed = fit_to_capacity(target, current, cluster)
    # 4 added replicas wanted, 2 CPUs free: a loses its extra first (largest increase)
    assert {n: c.replicas for n, c in fitted.stages.items()} == {"a": 2, "b": 2}
    assert trimmed == {"a": 4}
    same, none = fit_to_capacity(target, current, TWO_CPU_NODES)
    assert same == target and none == {}


def test_fit_never_goes_below_the_current_counts() -> None:
    current = config(a=("cpu-1", 3))
    target = config(a=("cpu-1", 5))
    fitted, _ = fit_to_capacity(target, current, ClusterResources((), available={}))
    assert fitted.stages["a"].replicas == 3


@pytest.mark.parametrize(
    ("address", "expected"),
    [("127.0.0.1:6380", ("127.0.0.1", 6380)), ("head", ("head", 6379)), ("[::1]:7", ("::1", 7))],
)
def test_split_address(address: str, expected: tuple[str, int]) -> None:
    assert split_address(address) == expected


@pytest.mark.parametrize("address", ["ray://head:10001", "head:notaport", ":6379", "h:70000"])
def test_bad_addresses_are_clear_errors(address: str) -> None:
    with pytest.raises(ClusterUnreachableError) as caught:
        split_address(address)
    assert address in str(caught.value) and caught.value.exit_code == 2


def test_a_refused_address_fails_at_once() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        with pytest.raises(ClusterUnreachableError) as caught:
            probe(f"127.0.0.1:{port}", 5.0)
    message = str(caught.value)
    assert f"cannot reach the Ray cluster at 127.0.0.1:{port}" in message
    assert "ray start --head" in message
