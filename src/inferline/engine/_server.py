"""Run the engine behind uvicorn in one process: ``inferline serve`` calls :func:`serve`.

Serving needs pipeline.yaml and the plan: each stage's import path and its hardware,
batch size and replica count (the hardware name alone decides a replica's threads,
``_hardware.py``). The bundle's hardware.yaml and profiles.yaml, when it has them, are
read too, for live calibration (``_calibration.py``); serving goes on without them.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import logging
import math
import signal
import socket
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import uvicorn

from inferline._bundle import read_bundle_files
from inferline.engine._autoscale import Autoscaler
from inferline.engine._calibration import CalibrationOptions
from inferline.engine._control import ControlAccess, ControlOptions, check_exposure, resolve_token
from inferline.engine._engine import Engine, EngineOptions
from inferline.engine._errors import EngineError
from inferline.engine._http import EngineApp
from inferline.errors import ConfigError, InferLineError
from inferline.pipeline import (
    Pipeline,
    PipelineConfig,
    check_stage_names,
    load_config,
    load_pipeline,
)
from inferline.profiles import Profiles, load_hardware, load_profiles
from inferline.tuner import Policy

__all__ = ["load_serving_inputs", "load_serving_profiles", "run_loop", "serve"]

log = logging.getLogger("inferline.engine")


def load_serving_inputs(
    bundle: str | Path, plan: str | Path
) -> tuple[Pipeline, PipelineConfig, Path]:
    """The pipeline (from a bundle folder or its pipeline.yaml), the plan, the bundle folder."""
    bundle = Path(bundle)
    pipeline_file = bundle if bundle.is_file() else bundle / "pipeline.yaml"
    if not pipeline_file.exists():
        raise ConfigError(
            "no pipeline.yaml here; give a bundle folder or its pipeline.yaml", source=bundle
        )
    pipeline, config = load_pipeline(pipeline_file), load_config(plan)
    check_stage_names(config, pipeline.stage_names, source=str(plan))
    return pipeline, config, pipeline_file.parent


def load_serving_profiles(bundle: str | Path, pipeline: Pipeline) -> Profiles | None:
    """The bundle's profiles for live calibration; None (with a warning when they are
    there but unreadable) if it has none."""
    try:
        files = read_bundle_files(bundle)
        if not (files.hardware_file.is_file() and files.profiles_file.is_file()):
            return None
        hardware = load_hardware(files.hardware_file)
        return load_profiles(files.profiles_file, hardware, pipeline.stage_names)
    except InferLineError as exc:
        log.warning("serving without profiles (no live estimate): %s", exc)
        return None


def run_loop(main: Coroutine[Any, Any, Any]) -> Any:
    """Run ``main`` on uvloop when installed (faster I/O), else on asyncio's default loop."""
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        pass
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        hint = (
            " (another server is using it; pick another --port)"
            if exc.errno == errno.EADDRINUSE
            else ""
        )
        raise EngineError(f"cannot listen on {host}:{port}: {exc.strerror}{hint}") from None
    sock.listen(4096)
    sock.setblocking(False)
    return sock


@contextlib.contextmanager
def _quiet_signals() -> Iterator[None]:
    """Absorb the SIGINT/SIGTERM that uvicorn re-raises after its graceful shutdown.

    uvicorn restores the handlers it found and raises the signal again once it has
    drained; with these handlers in place that re-raise is a no-op and we go on to stop
    the replicas instead of dying with them still running.
    """
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


async def serve_async(
    pipeline: Pipeline,
    config: PipelineConfig,
    *,
    bundle_root: Path | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    options: EngineOptions | None = None,
    max_body_bytes: int = 8 << 20,
    announce: Callable[[str], None] = print,
    policy: Policy | None = None,
    tick_s: float = 1.0,
    engine: Engine | None = None,
    tuner_apply: Callable[[PipelineConfig], Awaitable[None]] | None = None,
    control: ControlOptions | None = None,
    profiles: Profiles | None = None,
    calibration: CalibrationOptions | None = None,
) -> None:
    """Start the replicas, serve HTTP until SIGINT/SIGTERM, drain, stop the replicas.

    ``profiles`` (the bundle's) turn on the live estimate: every
    ``calibration.interval_s`` the engine calibrates them on its measured ``predict``
    times and runs the Estimator on the recent arrivals (docs/engine.md).

    ``control``: where the control endpoints are served and the token they need
    (default: on the data listener, token from ``INFERLINE_CONTROL_TOKEN`` if set).
    Before anything is bound or started, control reachable from a network without a
    token is refused (ConfigError), and so is a plan beyond the machine (CapacityError).

    With ``policy``, a live tuner (:class:`Autoscaler`) sets the replica counts
    every ``tick_s`` seconds from the arrivals the engine sees, applying them with
    ``tuner_apply`` (default: ``engine.apply(config, wait=False)``). ``engine``: a
    prepared, not yet started engine (e.g. with the Ray backend's replicas) instead of
    one built from ``pipeline``, ``config`` and ``options``.
    """
    control = control or ControlOptions.from_environment()
    if control.token is not None:
        resolve_token(control.token)  # the same checks as the CLI's
    check_exposure(host, control.host, control.port, control.token)
    if control.port is not None and control.port == port and port != 0:
        raise ConfigError(
            f"--control-port {port} is the data port; give the control listener its own",
            source="<argument>",
            field="--control-port",
        )
    options = engine.options if engine is not None else (options or EngineOptions())
    if engine is None:
        engine = Engine(
            pipeline,
            config,
            options,
            bundle_root=bundle_root,
            profiles=profiles,
            calibration=calibration,
        )
    sockets = [_listen(host, port)]
    if control.port is not None:
        try:
            sockets.append(_listen(control.host, control.port))
        except EngineError:
            sockets[0].close()
            raise
    tuner: Autoscaler | None = None
    try:
        await engine.start()
        if policy is not None:
            tuner = Autoscaler(
                engine,
                policy,
                clock=engine.elapsed_s,
                tick_s=tick_s,
                apply=tuner_apply,
                machine=engine.machine,
                on_change=lambda c: announce(f"tuner: {c.describe()}"),
            )
            engine.status_extras["tuner"] = tuner.status
            tuner.warm_up()
            tuner.start()
        engine.calibrator.warm_up(engine.config, options.slo_s)
        engine.calibrator.start(lambda: engine.config, options.slo_s)
        gc.freeze()  # startup objects leave the collector's view: shorter full collections
        control_port = sockets[1].getsockname()[1] if len(sockets) > 1 else None
        access = ControlAccess(token=control.token, control_port=control_port)
        app = EngineApp(engine, max_body_bytes=max_body_bytes, access=access)
        server = uvicorn.Server(
            uvicorn.Config(
                app,
                loop="none",
                http="httptools",
                lifespan="off",
                access_log=False,
                log_level="warning",
                timeout_graceful_shutdown=math.ceil(options.drain_timeout_s),
                timeout_keep_alive=30,
                proxy_headers=False,  # no proxy in front; saves a middleware hop per request
                server_header=False,
                date_header=False,
            )
        )
        bound_host, bound_port = sockets[0].getsockname()[:2]
        replicas = sum(c.replicas for c in config.stages.values())
        tuned = f"; tuner '{policy.name}' on" if policy is not None else ""
        announce(
            f"serving '{pipeline.name}' ({len(pipeline.stages)} stages, {replicas} replicas) on "
            f"http://{bound_host}:{bound_port}  (SLO {options.slo_s:g} s{tuned}; "
            "Ctrl-C drains and stops)"
        )
        announce(_describe_control(sockets, access))
        with _quiet_signals():
            await server.serve(sockets=sockets)
        announce("draining: waiting for in-flight queries, then stopping the replicas")
    finally:
        for sock in sockets:
            sock.close()
        if tuner is not None:
            await tuner.stop()
        await engine.calibrator.stop()
        await engine.stop()


def _describe_control(sockets: list[socket.socket], access: ControlAccess) -> str:
    where = (
        "on the data port"
        if len(sockets) == 1
        else "on http://{}:{}".format(*sockets[1].getsockname()[:2])
    )
    token = "bearer token required" if access.token is not None else "no token"
    return f"control (POST /v2/control/plan, DELETE /v2/control/stats): {where}, {token}"


def serve(
    bundle: str | Path,
    plan: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    options: EngineOptions | None = None,
    max_body_bytes: int = 8 << 20,
    announce: Callable[[str], None] = print,
    policy: Policy | None = None,
    control: ControlOptions | None = None,
    calibration: CalibrationOptions | None = None,
) -> None:
    """Serve ``bundle``'s pipeline with ``plan`` until interrupted (blocking); ``control``
    and ``calibration`` as in :func:`serve_async`; the bundle's profiles when it has them."""
    pipeline, config, root = load_serving_inputs(bundle, plan)
    profiles = load_serving_profiles(root, pipeline)
    run_loop(
        serve_async(
            pipeline,
            config,
            bundle_root=root,
            host=host,
            port=port,
            options=options,
            max_body_bytes=max_body_bytes,
            announce=announce,
            policy=policy,
            control=control,
            profiles=profiles,
            calibration=calibration,
        )
    )
