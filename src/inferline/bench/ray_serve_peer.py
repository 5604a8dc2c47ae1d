"""The same pipeline as a plain Ray Serve application: the baseline ``inferline bench ray``
compares with (Ray Serve's own batching, routing and default autoscaler).

One deployment per stage runs the stage class with ``@serve.batch`` (``max_batch_size`` =
the plan's batch size, Ray's default ``batch_wait_timeout_s`` of 10 ms), plus an ingress
deployment that speaks the same OIP V2 infer endpoint and walks the DAG for each query
through ``DeploymentHandle`` calls (``route()`` on real outputs, join = max). Unlike
InferLine there is no central queue per stage: each replica has its own queue (up to
``max_ongoing_requests``) and the caller's router picks a replica (power of two
choices). Autoscaling, when asked for, is Ray Serve's default request-based policy with
the :class:`RayServeAutoscaling` settings.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray import serve as _serve

from inferline.engine import parse_infer_request, thread_environment
from inferline.engine.batching import declared_outputs, load_stage, run_batch
from inferline.pipeline import Pipeline, PipelineConfig
from inferline.ray_backend import ray_resources_for

__all__ = ["RayServeAutoscaling", "build_serve_app", "serve_batch_stats", "serve_replica_counts"]

serve: Any = _serve  # ray.serve's annotations are partial; calls go through Any


@dataclass(frozen=True, slots=True)
class RayServeAutoscaling:
    """Ray Serve's default (request-based) autoscaler, as configured for the comparison.

    ``target_ongoing_requests``: Ray's default, 2 requests per replica (queued + running).
    ``max_ongoing_requests_per_batch``: a replica's queue bound, × the stage's batch size
    (it must be at least the batch size or batches never fill; Ray's default bound is 5).
    Ray's default delays are 30 s up and 600 s down; the shorter ones here (those of the
    simulated queue-length baseline, docs/tuner.md) let it react within a benchmark.
    ``look_back_period_s`` must exceed Ray's 10-s metrics interval.
    """

    target_ongoing_requests: float = 2.0
    max_ongoing_requests_per_batch: float = 2.0
    upscale_delay_s: float = 5.0
    downscale_delay_s: float = 60.0
    look_back_period_s: float = 15.0
    min_replicas: int = 1

    def config_for(self, initial: int, maximum: int) -> dict[str, Any]:
        return {
            "min_replicas": self.min_replicas,
            "initial_replicas": initial,
            "max_replicas": max(initial, maximum),
            "target_ongoing_requests": self.target_ongoing_requests,
            "upscale_delay_s": self.upscale_delay_s,
            "downscale_delay_s": self.downscale_delay_s,
            "look_back_period_s": self.look_back_period_s,
        }


class _StageDeployment:
    """One stage: the stage class behind ``@serve.batch``."""

    def __init__(self, spec: dict[str, Any]) -> None:
        for folder in reversed(spec.get("sys_path", [])):
            if folder not in sys.path and os.path.isdir(folder):
                sys.path.insert(0, folder)
        self._stage: str = spec["stage"]
        self._successors = tuple(spec["successors"])
        self._model = load_stage(spec)
        self._declared = declared_outputs(self._model)
        # one replica per process: the batch queue of this process takes the plan's size
        run: Any = self.run
        run.set_max_batch_size(int(spec["batch_size"]))
        run.set_batch_wait_timeout_s(float(spec["batch_wait_timeout_s"]))
        self._batch_sizes: dict[int, int] = {}
        self._predict_s = 0.0

    @_serve.batch(max_batch_size=1, batch_wait_timeout_s=0.0)
    async def run(self, items: list[Any]) -> list[Any]:
        # predict() blocks: run it off the replica's event loop, which keeps queueing
        results, predict_s, _ = await asyncio.to_thread(
            run_batch, self._model, self._stage, items, self._successors, self._declared
        )
        self._batch_sizes[len(items)] = self._batch_sizes.get(len(items), 0) + 1
        self._predict_s += predict_s
        return results

    def stats(self) -> dict[str, Any]:
        """Batches run by this replica, by size, and their total predict time."""
        return {
            "pid": os.getpid(),
            "batch_sizes": dict(self._batch_sizes),
            "predict_s": self._predict_s,
        }


class _Ingress:
    """The OIP V2 front door: walks the DAG for each query through the stage handles."""

    def __init__(self, graph: dict[str, Any], *handles: Any) -> None:
        self._model: str = graph["model"]
        self._order: list[str] = graph["order"]
        self._preds: dict[str, list[str]] = graph["preds"]
        self._handles = dict(zip(self._order, handles, strict=True))

    async def __call__(self, request: Any) -> Any:
        from starlette.responses import JSONResponse

        path: str = request.url.path
        if path.endswith("/infer") and request.method == "POST":
            try:
                parsed = parse_infer_request(await request.body(), {})
            except Exception as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
            try:
                outputs, visited = await self._run(parsed.inputs)
            except RuntimeError as exc:
                return JSONResponse({"error": str(exc)}, status_code=500)
            body: dict[str, Any] = {"model_name": self._model, "model_version": "1"}
            if parsed.id is not None:
                body["id"] = parsed.id
            body["parameters"] = {"path": "+".join(visited)}
            body["outputs"] = outputs
            return JSONResponse(body)
        if path.startswith("/v2/health/") or path.endswith("/ready"):
            return JSONResponse({"ready": True, "live": True})
        if path == "/v2/control/status":
            return JSONResponse({"model": self._model})
        return JSONResponse({"error": f"no such endpoint: {request.method} {path}"}, 404)

    async def _run(self, inputs: Any) -> tuple[list[Any], list[str]]:
        loop = asyncio.get_running_loop()
        done: dict[str, asyncio.Future[Any]] = {n: loop.create_future() for n in self._order}

        async def visit(stage: str) -> None:
            preds = self._preds[stage]
            if preds:
                outs = {p: await done[p] for p in preds}
                senders = [p for p in preds if outs[p] is not None and stage in outs[p][1]]
                if not senders:
                    done[stage].set_result(None)
                    return
                value = {p: outs[p][0] for p in senders} if len(preds) > 1 else outs[senders[0]][0]
            else:
                value = inputs
            try:
                result = await self._handles[stage].run.remote(value)
            except Exception as exc:
                done[stage].set_exception(RuntimeError(f"stage '{stage}': {exc}"))
                raise
            value_out, routes, tensors, error = result
            if error is not None:
                done[stage].set_exception(RuntimeError(f"stage '{stage}': {error}"))
                return
            done[stage].set_result((value_out, routes, tensors))

        tasks = [asyncio.ensure_future(visit(s)) for s in self._order]
        await asyncio.gather(*tasks, return_exceptions=True)
        outputs: list[Any] = []
        visited: list[str] = []
        for stage in self._order:
            result = done[stage].result()  # raises the stage's error
            if result is None:
                continue
            visited.append(stage)
            if result[2] is not None:
                outputs.extend(result[2])
        return outputs, visited


def build_serve_app(
    pipeline: Pipeline,
    config: PipelineConfig,
    *,
    bundle_root: Path | None = None,
    autoscaling: RayServeAutoscaling | None = None,
    max_replicas: Mapping[str, int] | None = None,
    batch_wait_timeout_s: float = 0.01,
) -> Any:
    """The Ray Serve application (``serve.run(app, route_prefix="/")``): fixed planned
    replicas, or Ray Serve's autoscaler starting from them with ``autoscaling``.

    ``batch_wait_timeout_s``: Ray's default 10 ms; 0 is InferLine's "never wait", with which
    Ray Serve formed even smaller batches here (requests reach a replica one by one)."""
    order = list(pipeline.topological_order)
    sys_path = [str(Path(bundle_root).resolve())] if bundle_root is not None else []
    stage_apps = []
    for name in order:
        stage = next(s for s in pipeline.stages if s.name == name)
        cfg = config.stages[name]
        res = ray_resources_for(cfg.hardware)
        spec = {
            "stage": name,
            "model": stage.model,
            "hardware": cfg.hardware,
            "threads": res.threads,
            "device": res.device,
            "successors": list(pipeline.successors(name)),
            "sys_path": sys_path,
            "batch_size": cfg.batch_size,
            "batch_wait_timeout_s": batch_wait_timeout_s,
        }
        actor_options: dict[str, Any] = {
            **res.actor_options(),
            "runtime_env": {"env_vars": thread_environment(res.threads)},
        }
        if not actor_options.get("num_gpus"):
            actor_options.pop("num_gpus", None)
        options: dict[str, Any] = {
            "name": f"stage-{name}",
            "ray_actor_options": actor_options,
        }
        if autoscaling is None:
            options["num_replicas"] = cfg.replicas
            options["max_ongoing_requests"] = max(5, 2 * cfg.batch_size)
        else:
            limit = (max_replicas or {}).get(name, 4 * cfg.replicas)
            options["autoscaling_config"] = autoscaling.config_for(cfg.replicas, limit)
            options["max_ongoing_requests"] = max(
                5, math.ceil(autoscaling.max_ongoing_requests_per_batch * cfg.batch_size)
            )
        deployment = serve.deployment(_StageDeployment).options(**options)
        stage_apps.append(deployment.bind(spec))
    graph = {
        "model": pipeline.name,
        "order": order,
        "preds": {n: list(pipeline.predecessors(n)) for n in order},
    }
    ingress = serve.deployment(_Ingress).options(
        name="ingress",
        num_replicas=1,
        max_ongoing_requests=10_000,
        ray_actor_options={"num_cpus": 0},
    )
    return ingress.bind(json.loads(json.dumps(graph)), *stage_apps)


def serve_replica_counts(app_name: str) -> dict[str, dict[str, int]]:
    """Per stage deployment: replica counts by state (RUNNING, STARTING, ...) now."""
    status = serve.status()
    app = status.applications.get(app_name)
    if app is None:
        return {}
    out: dict[str, dict[str, int]] = {}
    for name, dep in app.deployments.items():
        if not name.startswith("stage-"):
            continue
        out[name[len("stage-") :]] = {
            str(k.value if hasattr(k, "value") else k): int(v)
            for k, v in dep.replica_states.items()
        }
    return out


def serve_batch_stats(app_name: str, stages: list[str], calls: int = 12) -> dict[str, Any]:
    """Per stage and replica (pid): batches by size so far (asks ``calls`` times, so that
    the router reaches every replica of a small deployment)."""
    out: dict[str, Any] = {}
    for name in stages:
        handle = serve.get_deployment_handle(f"stage-{name}", app_name=app_name)
        seen: dict[int, Any] = {}
        for _ in range(calls):
            stats = handle.stats.remote().result()
            seen[int(stats["pid"])] = stats["batch_sizes"]
        out[name] = seen
    return out
