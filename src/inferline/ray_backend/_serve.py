"""``inferline serve --backend ray``: the engine's front-end as a Ray driver, replicas as actors.

The front-end is the embedded engine's (:class:`~inferline.engine.Engine` behind
the same ASGI app and uvicorn server): the same OIP V2 / control / metrics API, the
same central EDF queue per stage and dispatch, the same live tuner. Only the replicas
differ: each is a Ray actor (:mod:`inferline.ray_backend._replica`) with the stage's
resources, placed by Ray on any node of the cluster. Design and measurements:
docs/ray.md.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from inferline.engine import (
    ControlOptions,
    Engine,
    EngineOptions,
    RequestError,
    load_serving_inputs,
    run_loop,
    serve_async,
)
from inferline.errors import ConfigError
from inferline.pipeline import Pipeline, PipelineConfig
from inferline.ray_backend._cluster import RayConnection, connect
from inferline.ray_backend._errors import InsufficientResourcesError
from inferline.ray_backend._replica import RayReplicaFactory
from inferline.ray_backend._resources import (
    ClusterResources,
    check_available_resources,
    check_plan_resources,
    cpu_summary,
    fit_to_capacity,
    plan_demand,
)
from inferline.tuner import Policy

__all__ = ["RayBackendOptions", "RayEngine", "RayServing", "serve_on_ray"]

log = logging.getLogger("inferline.ray")


@dataclass(frozen=True, slots=True)
class RayBackendOptions:
    """Where and how the replicas run on Ray (times in seconds).

    ``address``: the head's GCS address ``HOST:PORT`` (``ray start --head --port``), or
    ``auto`` for the cluster started on this machine; ``None`` starts a local
    single-node cluster with ``num_cpus`` logical CPUs (default: this machine's cores),
    stopped again on shutdown. ``placement``: ``spread`` places a stage's replicas on
    different nodes where possible (Ray's SPREAD strategy), ``pack`` fills nodes first
    (Ray's default). ``ship_bundle``: upload the bundle folder to the cluster as the
    job's ``working_dir`` so that stage modules next to pipeline.yaml import on every
    node. ``resource_wait_s``: how long to wait for resources other jobs hold before
    giving up.
    """

    address: str | None = None
    num_cpus: int | None = None
    placement: Literal["spread", "pack"] = "spread"
    ship_bundle: bool = True
    connect_timeout_s: float = 15.0
    resource_wait_s: float = 10.0

    def __post_init__(self) -> None:
        if self.placement not in ("spread", "pack"):
            raise ConfigError(
                f"unknown placement {self.placement!r}; use 'spread' or 'pack'", field="placement"
            )
        if self.num_cpus is not None and self.address is not None:
            raise ConfigError(
                "num_cpus sizes a local cluster; a cluster at an address has the CPUs its "
                "nodes were started with (ray start --num-cpus)",
                field="num_cpus",
            )
        if self.num_cpus is not None and self.num_cpus < 1:
            raise ConfigError(f"must be at least 1, got {self.num_cpus}", field="num_cpus")
        if not self.connect_timeout_s > 0:
            raise ConfigError(
                f"must be positive, got {self.connect_timeout_s}", field="connect_timeout_s"
            )
        if not self.resource_wait_s >= 0:
            raise ConfigError(f"must be ≥ 0, got {self.resource_wait_s}", field="resource_wait_s")


class RayServing:
    """The Ray side of one served pipeline: the replica factory, the tuner's capacity
    check and the ``ray`` section of ``/v2/control/status``."""

    def __init__(self, connection: RayConnection, options: RayBackendOptions) -> None:
        self.connection = connection
        self.options = options
        self.factory = RayReplicaFactory(
            scheduling_strategy="SPREAD" if options.placement == "spread" else "DEFAULT"
        )
        self.engine: Engine | None = None
        self.trimmed: list[dict[str, Any]] = []

    def make_engine(
        self,
        pipeline: Pipeline,
        config: PipelineConfig,
        options: EngineOptions,
        bundle_root: Path | None,
    ) -> Engine:
        self.engine = RayEngine(self, pipeline, config, options, bundle_root=bundle_root)
        self.engine.status_extras["ray"] = self.status
        return self.engine

    async def check_capacity(self, config: PipelineConfig) -> None:
        """Raise :class:`InsufficientResourcesError` if ``config`` asks for more than the
        cluster has, or more than is free now plus what this pipeline's replicas hold."""
        engine = self.engine
        assert engine is not None
        current = engine.config
        if set(config.stages) != set(current.stages):
            return  # the engine rejects it with a 400 naming the stages
        grows = any(
            config.stages[n].replicas > c.replicas or config.stages[n].hardware != c.hardware
            for n, c in current.stages.items()
        )
        if not grows:
            return
        cluster = await asyncio.to_thread(self.connection.refresh)
        check_plan_resources(config, cluster)
        held: dict[str, float] = dict(cluster.available)
        for demand in plan_demand(current).values():
            for key, value in demand.items():
                if not key.startswith("accelerator_type:"):
                    held[key] = held.get(key, 0.0) + value
        check_available_resources(config, ClusterResources(cluster.nodes, held))

    async def tuner_apply(self, config: PipelineConfig) -> None:
        """Apply the tuner's counts, trimming scale-ups to the resources free on the
        cluster now (a replica Ray cannot place would only wait; see docs/ray.md)."""
        engine = self.engine
        assert engine is not None
        current = engine.config
        if any(config.stages[n].replicas > c.replicas for n, c in current.stages.items()):
            cluster = await asyncio.to_thread(self.connection.refresh)
            config, trimmed = fit_to_capacity(config, current, cluster)
            for stage, wanted in trimmed.items():
                got = config.stages[stage].replicas
                log.warning(
                    "tuner: stage '%s' wants %d replicas; the cluster has room for %d now",
                    stage,
                    wanted,
                    got,
                )
                self.trimmed.append(
                    {"time_s": round(engine.elapsed_s(), 3), "stage": stage, "wanted": wanted}
                )
                del self.trimmed[:-50]
        await engine.apply(config, wait=False)

    def status(self) -> dict[str, Any]:
        cluster = self.connection.cluster
        return {
            "address": self.connection.address,
            "started_local": self.connection.started_local,
            "placement": self.options.placement,
            "nodes": [
                {
                    "node_id": n.node_id,
                    "address": n.address,
                    "CPU": n.resources.get("CPU", 0.0),
                    "GPU": n.resources.get("GPU", 0.0),
                }
                for n in cluster.nodes
            ],
            "replicas": self.factory.placement(),
            "tuner_trimmed": list(self.trimmed),
        }


class RayEngine(Engine):
    """The engine with actors as replicas; a plan posted to the control API is checked
    against the cluster first (409 naming the stage and the resource)."""

    def __init__(
        self,
        serving: RayServing,
        pipeline: Pipeline,
        config: PipelineConfig,
        options: EngineOptions,
        *,
        bundle_root: Path | None,
    ) -> None:
        super().__init__(
            pipeline, config, options, bundle_root=bundle_root, replica_factory=serving.factory
        )
        self._serving = serving

    async def apply(
        self, config: PipelineConfig, timeout_s: float | None = None, *, wait: bool = True
    ) -> None:
        try:
            await self._serving.check_capacity(config)
        except InsufficientResourcesError as exc:
            raise RequestError(409, f"the cluster cannot host this plan: {exc}") from None
        await super().apply(config, timeout_s, wait=wait)


def wait_for_free_resources(
    config: PipelineConfig, connection: RayConnection, wait_s: float
) -> ClusterResources:
    """Check the plan against what is free now; retry for ``wait_s`` (resources of a job
    that just ended are freed a moment later), then raise."""
    import time

    deadline = time.monotonic() + wait_s
    while True:
        cluster = connection.refresh()
        try:
            check_available_resources(config, cluster)
            return cluster
        except InsufficientResourcesError:
            if time.monotonic() >= deadline:
                raise
        time.sleep(0.5)


def serve_on_ray(
    bundle: str | Path,
    plan: str | Path,
    *,
    ray_options: RayBackendOptions | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    options: EngineOptions | None = None,
    max_body_bytes: int = 8 << 20,
    announce: Callable[[str], None] = print,
    policy: Policy | None = None,
    control: ControlOptions | None = None,
) -> None:
    """Serve ``bundle``'s pipeline with ``plan`` on a Ray cluster until interrupted.

    Connects (or starts a local cluster), checks the plan against the cluster's
    resources before deploying anything, then serves as ``inferline serve`` does. On
    shutdown the in-flight queries drain, every actor is killed and the driver
    disconnects (a local cluster it started stops).
    """
    ray_options = ray_options or RayBackendOptions()
    options = options or EngineOptions()
    pipeline, config, root = load_serving_inputs(bundle, plan)
    runtime_env: dict[str, Any] = {}
    if ray_options.ship_bundle:
        runtime_env["working_dir"] = str(root)
        runtime_env["excludes"] = ["__pycache__/", "*.pyc", ".git/"]
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))  # results of stage classes unpickle in the front-end
    with connect(
        ray_options.address,
        num_cpus=ray_options.num_cpus,
        runtime_env=runtime_env,
        connect_timeout_s=ray_options.connect_timeout_s,
    ) as connection:
        try:
            check_plan_resources(config, connection.cluster)
        except InsufficientResourcesError as exc:
            if connection.started_local:
                raise InsufficientResourcesError(
                    f"{exc} (this is a local cluster with {cpu_summary(connection.cluster)}; "
                    "give --num-cpus to oversubscribe this machine's cores, or --address "
                    "to use a bigger cluster)",
                    stage=exc.stage,
                    resource=exc.resource,
                    needed=exc.needed,
                    available=exc.available,
                ) from None
            raise
        wait_for_free_resources(config, connection, ray_options.resource_wait_s)
        where = "a local Ray cluster" if connection.started_local else "the Ray cluster"
        announce(
            f"ray: connected to {where} at {connection.address} "
            f"({cpu_summary(connection.cluster)}); placing "
            f"{sum(c.replicas for c in config.stages.values())} replicas ({ray_options.placement})"
        )
        serving = RayServing(connection, ray_options)
        run_loop(
            _serve(
                serving,
                pipeline,
                config,
                root,
                host=host,
                port=port,
                options=options,
                max_body_bytes=max_body_bytes,
                announce=announce,
                policy=policy,
                control=control,
            )
        )


async def _serve(
    serving: RayServing,
    pipeline: Pipeline,
    config: PipelineConfig,
    root: Path,
    *,
    host: str,
    port: int,
    options: EngineOptions,
    max_body_bytes: int,
    announce: Callable[[str], None],
    policy: Policy | None,
    control: ControlOptions | None,
) -> None:
    engine = serving.make_engine(pipeline, config, options, root)
    await serve_async(
        pipeline,
        config,
        bundle_root=root,
        host=host,
        port=port,
        max_body_bytes=max_body_bytes,
        announce=announce,
        policy=policy,
        engine=engine,
        tuner_apply=serving.tuner_apply,
        control=control,
    )
