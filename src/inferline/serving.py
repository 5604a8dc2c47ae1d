"""Serve a bundle from Python: :func:`serve` starts ``inferline serve`` in a child process.

The child is the same program the command line runs (the engine's front-end and its replica
processes, in their own session), so a served pipeline behaves exactly as ``inferline serve``
does and cannot take the calling process down with it. The handle speaks the engine's HTTP
API: :attr:`ServedPipeline.url` for queries (``inferline.replay``, any OIP V2 client),
:meth:`~ServedPipeline.apply` and :meth:`~ServedPipeline.status` through the control API.

::

    with il.serve("examples/text-pipeline", "examples/text-pipeline/plan.yaml") as served:
        print(served.url, served.status()["stages"])
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from inferline._bundle import Bundle
from inferline.engine import REPLICA_NICE, EngineError, EngineOptions, RequestError
from inferline.engine.process import EngineProcess, start_engine
from inferline.errors import ConfigError
from inferline.pipeline import PipelineConfig, load_config, save_config
from inferline.planner import Plan
from inferline.tuner import policy_for_bundle, policy_options
from inferline.workload import Trace, save_trace

__all__ = ["ServedPipeline", "serve"]


class ServedPipeline:
    """A running ``inferline serve`` child process; stop it with :meth:`stop` or a ``with``."""

    def __init__(
        self, engine: EngineProcess, stack: contextlib.ExitStack, stop_timeout_s: float
    ) -> None:
        self._engine = engine
        self._stack = stack
        self._stop_timeout_s = stop_timeout_s
        self._final_log: str | None = None
        self.url = engine.url
        self.returncode: int | None = None

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        if self.returncode is not None:
            raise EngineError("the served pipeline has been stopped")
        payload = json.dumps(body) if body is not None else None
        try:
            code, answer = self._engine.request(method, path, payload)
        except OSError as exc:
            raise EngineError(f"the engine at {self.url} does not answer ({exc})") from None
        if code != 200:
            error = answer.get("error", answer) if isinstance(answer, dict) else answer
            raise RequestError(code, f"{method} {path}: {error}")
        return answer

    def status(self) -> dict[str, Any]:
        """The engine's ``/v2/control/status``: the plan in force, replicas, queues, tuner."""
        return dict(self._call("GET", "/v2/control/status"))

    def plan(self) -> PipelineConfig:
        """The plan in force (the tuner changes its replica counts)."""
        return PipelineConfig.model_validate(self._call("GET", "/v2/control/plan"))

    def apply(self, plan: PipelineConfig | Plan | str | Path) -> dict[str, Any]:
        """Switch to ``plan`` while serving; returns the status once its replicas serve
        (:class:`~inferline.engine.RequestError` with the HTTP status if it is refused)."""
        config = _config(plan)
        stages = {name: c.model_dump() for name, c in config.stages.items()}
        return dict(self._call("POST", "/v2/control/plan", {"stages": stages}))

    def log(self) -> str:
        """What the child process has printed (its announcements, tuner changes); after
        :meth:`stop`, all of it."""
        return self._final_log if self._final_log is not None else self._engine.log()

    def stop(self) -> int:
        """Drain in-flight queries, stop the replicas and the process; returns its exit code."""
        if self.returncode is None:
            try:
                self._engine.stop(timeout_s=self._stop_timeout_s)
                with contextlib.suppress(OSError):
                    self._final_log = self._engine.log()
            finally:
                self._stack.close()  # the log's folder, and any process left in the session
            self.returncode = int(self._engine.process.wait())
        return self.returncode

    def __enter__(self) -> ServedPipeline:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _config(plan: PipelineConfig | Plan | str | Path) -> PipelineConfig:
    if isinstance(plan, Plan):
        return plan.config
    if isinstance(plan, PipelineConfig):
        return plan
    return load_config(plan)


def serve(
    bundle: str | Path | Bundle,
    plan: PipelineConfig | Plan | str | Path,
    *,
    slo_s: float = 1.0,
    shed: bool = False,
    max_queue: int = 10_000,
    drain_timeout_s: float = 30.0,
    fork_replicas: bool = True,
    replica_nice: int = REPLICA_NICE,
    tune: str | None = None,
    planning_trace: Trace | str | Path | None = None,
    planning_rate: float | None = None,
    holdoff_s: float | None = None,
    lookback_s: float | None = None,
    backend: Literal["engine", "ray"] = "engine",
    address: str | None = None,
    num_cpus: int | None = None,
    placement: Literal["spread", "pack"] = "spread",
    start_timeout_s: float = 120.0,
    control_token: str | None = None,
) -> ServedPipeline:
    """Serve ``bundle``'s pipeline with ``plan`` on a free port of 127.0.0.1, as
    ``inferline serve BUNDLE --config PLAN`` does; returns once it answers queries.

    The options are the command's: ``slo_s`` (deadline per query), ``shed``, ``max_queue``,
    ``drain_timeout_s``, ``fork_replicas``, ``replica_nice``; ``tune`` names a replica
    policy (:func:`inferline.tuner.available_policies`) run live on the workload the plan
    was made for (``planning_trace`` or ``planning_rate``), with the InferLine Tuner's
    ``holdoff_s`` and ``lookback_s``. ``backend="ray"`` runs the replicas as Ray actors
    (docs/ray.md) on the cluster at ``address`` or on a local one of ``num_cpus`` CPUs,
    ``placement`` ``spread`` or ``pack``. Options are checked here (ConfigError naming the
    field) before a process starts; :class:`~inferline.engine.EngineError` if the engine
    does not start within ``start_timeout_s`` (its log in the message). The engine's control
    endpoints need ``control_token`` (a random one by default, known to the handle only), so
    other local users cannot change the deployment.
    """
    root = bundle.root if isinstance(bundle, Bundle) else Path(bundle)
    config = _config(plan)
    EngineOptions(
        slo_s=slo_s,
        max_queue=max_queue,
        drain_timeout_s=drain_timeout_s,
        replica_nice=replica_nice,
    )
    ray_args: list[str] = []
    if backend == "ray":
        from inferline.ray_backend import RayBackendOptions

        RayBackendOptions(address=address, num_cpus=num_cpus, placement=placement)
        ray_args = ["--backend", "ray", "--placement", placement]
        ray_args += ["--address", address] if address is not None else []
        ray_args += ["--num-cpus", str(num_cpus)] if num_cpus is not None else []
    elif backend != "engine":
        raise ConfigError(f"unknown backend {backend!r}; use 'engine' or 'ray'", field="backend")
    elif address is not None or num_cpus is not None or placement != "spread":
        raise ConfigError(
            "address, num_cpus and placement apply to the Ray backend", field="backend"
        )
    args = [
        *ray_args,
        *("--slo-s", repr(slo_s), "--max-queue", str(max_queue)),
        *("--drain-timeout-s", repr(drain_timeout_s)),
        "--shed" if shed else "--no-shed",
        "--fork-replicas" if fork_replicas else "--fresh-replicas",
        *("--replica-nice", str(replica_nice)),
    ]
    stack = contextlib.ExitStack()
    try:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="inferline-serve-")))
        plan_file = folder / "plan.yaml"
        save_config(config, plan_file)
        if tune is not None:
            fields = {"scale_down_holdoff_s": holdoff_s, "lookback_s": lookback_s}
            policy_for_bundle(  # the same checks the child makes, as exceptions here
                tune,
                root,
                config,
                planning_trace=planning_trace,
                planning_rate=planning_rate,
                slo_s=slo_s,
                options=policy_options(tune, **{k: v for k, v in fields.items() if v is not None}),
            )
            args += ["--tune", "--policy", tune]
            if isinstance(planning_trace, Trace):
                save_trace(planning_trace, folder / "planning.csv")
                planning_trace = folder / "planning.csv"
            if planning_trace is not None:
                args += ["--planning-trace", str(planning_trace)]
            if planning_rate is not None:
                args += ["--planning-rate", repr(planning_rate)]
            for flag, value in (("--holdoff-s", holdoff_s), ("--lookback-s", lookback_s)):
                if value is not None:
                    args += [flag, repr(value)]
        try:
            engine = stack.enter_context(
                start_engine(
                    root,
                    plan_file,
                    *args,
                    start_timeout_s=start_timeout_s,
                    control_token=control_token if control_token is not None else True,
                )
            )
        except (RuntimeError, TimeoutError) as exc:
            raise EngineError(f"inferline serve did not start: {exc}") from None
        return ServedPipeline(engine, stack, stop_timeout_s=drain_timeout_s + 15.0)
    except BaseException:
        stack.close()
        raise
