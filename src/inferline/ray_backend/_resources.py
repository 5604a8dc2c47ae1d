"""What a replica asks Ray for, and whether a cluster can host a plan (pure, no ``ray`` import).

A hardware name becomes Ray resources through the engine's own reading of it
(:func:`inferline.engine.resources_for`, uncapped by this machine's cores):
``cpu-N``/``...-Nvcpu``/c5 sizes → ``num_cpus=N``; a GPU name → ``num_gpus=1`` (and one
CPU for the host thread), plus ``accelerator_type`` when the name contains a GPU model Ray
knows (``v100`` → ``V100``, ``a100-80g`` → ``A100``, ...), so the replica lands on a node of
that type. A generic ``gpu``/``cuda`` name asks for any GPU.

:func:`check_plan_resources` compares a plan with the cluster *before* anything is
deployed and names the first stage that does not fit, the resource and how much is
missing; :func:`fit_to_capacity` trims a tuner's scale-up to what the cluster has free.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from inferline.engine import resources_for
from inferline.pipeline import PipelineConfig
from inferline.ray_backend._errors import InsufficientResourcesError

__all__ = [
    "ClusterResources",
    "NodeResources",
    "RayReplicaResources",
    "check_available_resources",
    "check_plan_resources",
    "fit_to_capacity",
    "plan_demand",
    "ray_resources_for",
]

#: GPU models whose Ray ``accelerator_type`` is the upper-cased name (ray.util.accelerators).
_ACCELERATOR = re.compile(
    r"(?<![a-z0-9])(k80|m60|p4|p100|v100|t4|a10g|a10|l4|l40s|a100|h100|h200|h20|b200)"
    r"(?![a-z0-9])",
    re.IGNORECASE,
)
_ACCELERATOR_PREFIX = "accelerator_type:"
#: Ray's own demand for an accelerator type (a fraction of the node's marker resource).
_ACCELERATOR_UNIT = 0.001
_UNCAPPED_CORES = 1 << 20


@dataclass(frozen=True, slots=True)
class RayReplicaResources:
    """What one replica of a stage on ``hardware`` asks Ray for."""

    hardware: str
    num_cpus: int
    num_gpus: int = 0
    accelerator_type: str | None = None

    @property
    def threads(self) -> int:
        """Threads the stage's numeric libraries get (= the CPUs reserved)."""
        return self.num_cpus

    @property
    def device(self) -> str:
        return "cuda" if self.num_gpus else "cpu"

    def actor_options(self) -> dict[str, Any]:
        """Keyword arguments for ``ActorClass.options``."""
        options: dict[str, Any] = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}
        if self.accelerator_type is not None:
            options["accelerator_type"] = self.accelerator_type
        return options

    def demand(self) -> dict[str, float]:
        """Ray resources one replica holds (the accelerator marker counted as GPUs of that
        type, which is what a cluster can supply)."""
        out: dict[str, float] = {"CPU": float(self.num_cpus)}
        if self.num_gpus:
            out["GPU"] = float(self.num_gpus)
        if self.accelerator_type is not None:
            out[_ACCELERATOR_PREFIX + self.accelerator_type] = float(self.num_gpus)
        return out


def ray_resources_for(hardware: str) -> RayReplicaResources:
    """Ray resources of one replica on ``hardware`` (see the module docstring)."""
    local = resources_for(hardware, cores=_UNCAPPED_CORES)
    model = _ACCELERATOR.search(hardware)
    if local.device == "cuda" or model is not None:
        return RayReplicaResources(
            hardware, 1, 1, model.group(1).upper() if model is not None else None
        )
    return RayReplicaResources(hardware, max(1, local.threads))


@dataclass(frozen=True)
class NodeResources:
    """One alive node: its id, address and total resources."""

    node_id: str
    address: str
    resources: Mapping[str, float]


@dataclass(frozen=True)
class ClusterResources:
    """A snapshot of a cluster: its alive nodes (totals) and what is free now, cluster-wide."""

    nodes: tuple[NodeResources, ...]
    available: Mapping[str, float] = field(default_factory=dict)

    @property
    def total(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for node in self.nodes:
            for key, value in node.resources.items():
                out[key] = out.get(key, 0.0) + float(value)
        return out

    def supply(self, resource: str, *, free: bool = False) -> float:
        """How much of ``resource`` the cluster has (in all, or free now). An accelerator
        type is counted as the GPUs of the nodes that carry that type."""
        if resource.startswith(_ACCELERATOR_PREFIX) and not free:
            return float(
                sum(n.resources.get("GPU", 0.0) for n in self.nodes if resource in n.resources)
            )
        if free:
            if resource.startswith(_ACCELERATOR_PREFIX):
                # Ray's marker is fractional: bound the free GPUs of that type by both
                if resource not in self.available:
                    return 0.0
                return min(float(self.available.get("GPU", 0.0)), self.supply(resource))
            return float(self.available.get(resource, 0.0))
        return self.total.get(resource, 0.0)

    @classmethod
    def from_ray(cls) -> ClusterResources:
        """Snapshot of the cluster the driver is connected to (``ray.init`` done)."""
        import ray

        api: Any = ray
        nodes = tuple(
            NodeResources(
                node_id=str(n["NodeID"]),
                address=str(n.get("NodeManagerAddress", "")),
                resources={str(k): float(v) for k, v in n.get("Resources", {}).items()},
            )
            for n in api.nodes()
            if n.get("Alive", False)
        )
        available = {str(k): float(v) for k, v in api.available_resources().items()}
        return cls(nodes=nodes, available=available)


def _fits(node: NodeResources, demand: Mapping[str, float]) -> bool:
    return all(node.resources.get(k, 0.0) >= v for k, v in demand.items())


def plan_demand(config: PipelineConfig) -> dict[str, dict[str, float]]:
    """Per stage, the Ray resources all its planned replicas hold."""
    out: dict[str, dict[str, float]] = {}
    for name, stage in config.stages.items():
        per = ray_resources_for(stage.hardware).demand()
        out[name] = {k: v * stage.replicas for k, v in per.items()}
    return out


def _amount(value: float, resource: str) -> str:
    unit = "GPU" if resource.startswith(_ACCELERATOR_PREFIX) else resource
    text = f"{value:g}"
    plural = "" if value == 1 else "s"
    if resource.startswith(_ACCELERATOR_PREFIX):
        return f"{text} {resource[len(_ACCELERATOR_PREFIX) :]} {unit}{plural}"
    return f"{text} {unit}{plural}"


def _describe_gpus(cluster: ClusterResources) -> str:
    types = sorted(
        {
            key[len(_ACCELERATOR_PREFIX) :]
            for n in cluster.nodes
            for key in n.resources
            if key.startswith(_ACCELERATOR_PREFIX)
        }
    )
    gpus = cluster.total.get("GPU", 0.0)
    return f"{gpus:g} GPU{'' if gpus == 1 else 's'} in all" + (
        f", of type {', '.join(types)}" if types else ""
    )


def check_plan_resources(config: PipelineConfig, cluster: ClusterResources) -> None:
    """Raise :class:`InsufficientResourcesError` unless the cluster, as a whole, can host
    every planned replica: each replica fits on some node, and the plan's total of each
    resource is within the cluster's. Packing replicas onto nodes is left to Ray."""
    order = list(config.stages)
    per_replica = {n: ray_resources_for(config.stages[n].hardware) for n in order}
    # 1. each stage's replica must fit on one node
    for name in order:
        res = per_replica[name]
        replicas = config.stages[name].replicas
        demand = res.demand()
        if any(_fits(node, demand) for node in cluster.nodes):
            continue
        hw = config.stages[name].hardware
        if res.accelerator_type is not None:
            key = _ACCELERATOR_PREFIX + res.accelerator_type
            have = cluster.supply(key)
            if have < res.num_gpus:
                raise InsufficientResourcesError(
                    f"stage '{name}' (hardware '{hw}') asks for a {res.accelerator_type} GPU per "
                    f"replica (Ray resource '{key}'), but no node of the cluster has one "
                    f"({_describe_gpus(cluster)}); missing: "
                    f"{_amount(replicas * res.num_gpus, key)} for its {replicas} replica"
                    f"{'' if replicas == 1 else 's'}",
                    stage=name,
                    resource=key,
                    needed=float(replicas * res.num_gpus),
                    available=0.0,
                )
        for key in ("GPU", "CPU"):
            need = demand.get(key, 0.0)
            largest = max((n.resources.get(key, 0.0) for n in cluster.nodes), default=0.0)
            if need > largest:
                where = (
                    f"the cluster has no {key}"
                    if largest == 0
                    else f"the largest node has {_amount(largest, key)}"
                )
                raise InsufficientResourcesError(
                    f"stage '{name}' (hardware '{hw}') needs {_amount(need, key)} on one node "
                    f"per replica, but {where}; missing: {_amount(need - largest, key)} per "
                    f"replica ({_amount(replicas * (need - largest), key)} for its {replicas} "
                    f"replica{'' if replicas == 1 else 's'})",
                    stage=name,
                    resource=key,
                    needed=need,
                    available=largest,
                )
        raise InsufficientResourcesError(  # pragma: no cover - a mix no single node has
            f"stage '{name}' (hardware '{hw}') needs {demand} on one node per replica, but no "
            "node has all of it",
            stage=name,
            resource="+".join(demand),
            needed=1.0,
            available=0.0,
        )
    # 2. the plan's totals must be within the cluster's
    _check_totals(
        config,
        per_replica,
        cluster.supply,
        lambda key, have: f"the cluster has {_amount(have, key)}",
    )


def check_available_resources(config: PipelineConfig, cluster: ClusterResources) -> None:
    """Like the totals check of :func:`check_plan_resources`, against what is *free* now
    (other jobs on the cluster may hold part of it)."""
    per_replica = {n: ray_resources_for(c.hardware) for n, c in config.stages.items()}

    def describe(key: str, have: float) -> str:
        return (
            f"only {_amount(have, key)} of the cluster's {_amount(cluster.supply(key), key)} "
            "are free now (other jobs hold the rest)"
        )

    _check_totals(config, per_replica, lambda key: cluster.supply(key, free=True), describe)


def _check_totals(
    config: PipelineConfig,
    per_replica: Mapping[str, RayReplicaResources],
    supply: Callable[[str], float],
    describe: Callable[[str, float], str],
) -> None:
    order = list(config.stages)
    keys: list[str] = []
    for name in order:
        for key in per_replica[name].demand():
            if key not in keys:
                keys.append(key)
    for key in keys:
        have = float(supply(key))
        cumulative = 0.0
        parts = []
        first_over: str | None = None
        for name in order:
            need = per_replica[name].demand().get(key, 0.0)
            if not need:
                continue
            replicas = config.stages[name].replicas
            cumulative += need * replicas
            parts.append(f"{name} {replicas} × {need:g}")
            if first_over is None and cumulative > have + 1e-9:
                first_over = name
        if first_over is None:
            continue
        raise InsufficientResourcesError(
            f"the plan needs {_amount(cumulative, key)} in all ({', '.join(parts)}), but "
            f"{describe(key, have)}: {_amount(cumulative - have, key)} missing; "
            f"stage '{first_over}' is the first that does not fit",
            stage=first_over,
            resource=key,
            needed=cumulative,
            available=have,
        )


def fit_to_capacity(
    target: PipelineConfig,
    current: PipelineConfig,
    cluster: ClusterResources,
) -> tuple[PipelineConfig, dict[str, int]]:
    """Trim ``target``'s scale-ups so that the *added* replicas fit in what the cluster has
    free now (``cluster.available``).

    Stages only lose replicas they would have gained (never below ``current``), the
    largest increase first (ties: plan order). Returns the fitted configuration and,
    per trimmed stage, how many replicas it wanted.
    """
    counts = {n: c.replicas for n, c in target.stages.items()}
    base = {n: current.stages[n].replicas if n in current.stages else 0 for n in counts}
    per = {n: ray_resources_for(target.stages[n].hardware).demand() for n in counts}
    held_before = {n: current.stages[n].hardware for n in current.stages}

    def extra() -> dict[str, float]:
        out: dict[str, float] = {}
        for n, k in counts.items():
            same_hw = held_before.get(n) == target.stages[n].hardware
            added = k - base[n] if same_hw else k
            for key, v in per[n].items():
                out[key] = out.get(key, 0.0) + v * max(0, added)
        return out

    wanted = dict(counts)
    while True:
        over = [key for key, v in extra().items() if v > cluster.supply(key, free=True) + 1e-9]
        if not over:
            break
        growing = [n for n in counts if counts[n] > base[n] and any(per[n].get(k) for k in over)]
        if not growing:
            break
        victim = max(growing, key=lambda n: (counts[n] - base[n], -list(counts).index(n)))
        counts[victim] -= 1
    trimmed = {n: wanted[n] for n in counts if counts[n] != wanted[n]}
    if not trimmed:
        return target, {}
    fitted = PipelineConfig(
        stages={
            n: c.model_copy(update={"replicas": counts[n]}) if n in trimmed else c
            for n, c in target.stages.items()
        }
    )
    return fitted, trimmed


def cpu_summary(cluster: ClusterResources) -> str:
    """``2 nodes, 7 CPUs, 0 GPUs`` for start-up messages."""
    total = cluster.total
    cpus = total.get("CPU", 0.0)
    n = len(cluster.nodes)
    return (
        f"{n} node{'' if n == 1 else 's'}, {math.floor(cpus):d} CPU{'' if cpus == 1 else 's'}, "
        f"{_describe_gpus(cluster)}"
    )
