"""``inferline serve``: run a pipeline with a plan behind the HTTP API (docs/engine.md)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Literal, cast

import typer

from inferline.cli._common import as_options, stderr, user_errors
from inferline.engine import REPLICA_NICE
from inferline.errors import ConfigError


@user_errors
def serve_command(
    bundle: Annotated[
        Path,
        typer.Argument(
            help="Bundle folder (or its pipeline.yaml); its hardware.yaml and profiles.yaml, "
            "when there, turn on the live estimate."
        ),
    ],
    config: Annotated[
        Path, typer.Option("--config", help="Plan or configuration file (its 'stages').")
    ],
    port: Annotated[int, typer.Option("--port", help="TCP port; 0 picks a free one.")] = 8000,
    host: Annotated[
        str, typer.Option("--host", help="Address to bind; the default serves this machine only.")
    ] = "127.0.0.1",
    control_port: Annotated[
        int | None,
        typer.Option(
            "--control-port",
            help="Serve the control endpoints that change the deployment (POST "
            "/v2/control/plan, DELETE /v2/control/stats) on their own listener at this port "
            "(0 picks a free one) instead of the data port.",
        ),
    ] = None,
    control_host: Annotated[
        str,
        typer.Option(
            "--control-host", help="With --control-port: the address the control listener binds."
        ),
    ] = "127.0.0.1",
    control_token: Annotated[
        str | None,
        typer.Option(
            "--control-token",
            help="Bearer token the control endpoints require (Authorization: Bearer TOKEN); "
            "default: $INFERLINE_CONTROL_TOKEN, which other users cannot read from the "
            "process list. Needed when control is reachable from a network.",
            show_default=False,
        ),
    ] = None,
    slo_s: Annotated[
        float,
        typer.Option("--slo-s", help="Per-query deadline = arrival + this: EDF order, shedding."),
    ] = 1.0,
    shed: Annotated[
        bool,
        typer.Option("--shed/--no-shed", help="Answer 503 to queries that can no longer meet it."),
    ] = False,
    max_queue: Annotated[
        int, typer.Option("--max-queue", help="Queued queries per stage before 503s.")
    ] = 10_000,
    max_body_bytes: Annotated[
        int, typer.Option("--max-body-bytes", help="Larger request bodies get 413.")
    ] = 8 << 20,
    drain_timeout_s: Annotated[
        float, typer.Option("--drain-timeout-s", help="On shutdown, wait this long for queries.")
    ] = 30.0,
    tune: Annotated[
        bool,
        typer.Option(
            "--tune",
            help="Run the InferLine Tuner live: replica counts follow the real arrivals "
            "(needs the bundle's hardware.yaml and profiles.yaml and a planning workload).",
        ),
    ] = False,
    planning_trace: Annotated[
        Path | None,
        typer.Option(
            "--planning-trace",
            help="With --tune: the trace the plan was made for (its envelope is the baseline).",
        ),
    ] = None,
    planning_rate: Annotated[
        float | None,
        typer.Option(
            "--planning-rate",
            help="With --tune and no --planning-trace: plan for a Poisson workload at this "
            "rate (qps; 300 s, seed 0).",
        ),
    ] = None,
    policy: Annotated[
        str | None,
        typer.Option(
            "--policy",
            help="With --tune: the replica policy (inferline, inferline+opt-in, none, "
            "cg-autoscale, queue-length, simulate; docs/tuner.md). Default: "
            "inferline.tuner.DEFAULT_POLICY, the one that keeps the SLO in bench tuner.",
        ),
    ] = None,
    holdoff_s: Annotated[
        float | None,
        typer.Option(
            "--holdoff-s",
            help="With --tune: seconds between a change and a scale-down (InferLine, 15).",
        ),
    ] = None,
    lookback_s: Annotated[
        float | None,
        typer.Option(
            "--lookback-s",
            help="With --tune: a scale-down provisions for the busiest 5-s bucket of this "
            "window (InferLine, 30).",
        ),
    ] = None,
    tuner_opt_in: Annotated[
        bool,
        typer.Option(
            "--tuner-opt-in",
            help="With --tune: also the Tuner's opt-in rules, departures from SPEC §2.7 "
            "(scale up for the rate expected when a new replica serves; never below the "
            "plan); docs/tuner.md. Same as --policy inferline+opt-in.",
        ),
    ] = False,
    backend: Annotated[
        str,
        typer.Option(
            "--backend",
            help="Where replicas run: 'engine' (worker processes on this machine) or 'ray' "
            "(actors on a Ray cluster; docs/ray.md).",
        ),
    ] = "engine",
    address: Annotated[
        str | None,
        typer.Option(
            "--address",
            help="With --backend ray: the cluster's head HOST:PORT (ray start --head --port), "
            "or 'auto'; without it a local cluster is started and stopped.",
        ),
    ] = None,
    num_cpus: Annotated[
        int | None,
        typer.Option(
            "--num-cpus",
            help="With --backend ray and no --address: logical CPUs of the local cluster "
            "(default: this machine's cores).",
        ),
    ] = None,
    placement: Annotated[
        str,
        typer.Option(
            "--placement",
            help="With --backend ray: 'spread' replicas over nodes, or 'pack' them.",
        ),
    ] = "spread",
    fork_replicas: Annotated[
        bool,
        typer.Option(
            "--fork-replicas/--fresh-replicas",
            help="Fork new replicas from a per-stage process that has imported the stage "
            "(fast scale-ups), or start each in a fresh interpreter.",
        ),
    ] = True,
    replica_nice: Annotated[
        int,
        typer.Option(
            "--replica-nice",
            help="Niceness added to local replica processes, so the front-end that "
            "dispatches their batches is not kept from a core by them (0: same priority).",
        ),
    ] = REPLICA_NICE,
    calibration_interval_s: Annotated[
        float,
        typer.Option(
            "--calibration-interval-s",
            help="Live calibration (with the bundle's profiles.yaml): recompute the "
            "stages' speed ratios and the Estimator's P99 this often (docs/engine.md).",
        ),
    ] = 5.0,
    calibration_window_s: Annotated[
        float,
        typer.Option(
            "--calibration-window-s",
            help="Live calibration: over the batches and queries of this many seconds.",
        ),
    ] = 60.0,
    drift_ratio: Annotated[
        float,
        typer.Option(
            "--drift-ratio",
            help="Warn when a stage's measured/profiled predict time stays above this "
            "(or below its inverse) ...",
        ),
    ] = 1.25,
    drift_sustain_s: Annotated[
        float,
        typer.Option("--drift-sustain-s", help="... for this many seconds."),
    ] = 15.0,
) -> None:
    """Serve a pipeline over HTTP (Open Inference Protocol V2) with the given plan."""
    from inferline.engine import (
        CalibrationOptions,
        ControlOptions,
        EngineOptions,
        check_exposure,
        resolve_token,
        serve,
    )
    from inferline.tuner import DEFAULT_POLICY, policy_for_bundle, policy_options

    if not 0 <= port <= 65535:
        raise ConfigError(f"not a TCP port: {port}", source="<argument>", field="--port")
    if max_body_bytes < 1:
        raise ConfigError(
            f"must be at least 1, got {max_body_bytes}",
            source="<argument>",
            field="--max-body-bytes",
        )
    if control_port is None and control_host != "127.0.0.1":
        raise ConfigError(
            "only applies with --control-port", source="<argument>", field="--control-host"
        )
    control = ControlOptions(
        token=resolve_token(control_token), host=control_host, port=control_port
    )
    check_exposure(host, control.host, control.port, control.token)  # before anything starts
    if backend not in ("engine", "ray"):
        raise ConfigError(
            f"unknown backend {backend!r}; use 'engine' or 'ray'",
            source="<argument>",
            field="--backend",
        )
    if backend != "ray":
        for given, name in (
            (address is not None, "--address"),
            (num_cpus is not None, "--num-cpus"),
            (placement != "spread", "--placement"),
        ):
            if given:
                raise ConfigError(
                    "only applies with --backend ray", source="<argument>", field=name
                )
    tuning = {
        "--policy": policy,
        "--planning-trace": planning_trace,
        "--planning-rate": planning_rate,
        "--holdoff-s": holdoff_s,
        "--lookback-s": lookback_s,
        "--tuner-opt-in": tuner_opt_in or None,
    }
    if not tune and any(v is not None for v in tuning.values()):
        only = [flag for flag, v in tuning.items() if v is not None]
        raise ConfigError(
            f"{', '.join(only)} only {'applies' if len(only) == 1 else 'apply'} with --tune",
            source="<argument>",
            field="--tune",
        )
    if tuner_opt_in and policy not in (None, OPT_IN):
        raise ConfigError(
            f"--tuner-opt-in means --policy {OPT_IN}; give one of them",
            source="<argument>",
            field="--tuner-opt-in",
        )
    with as_options(OPTION_FLAGS):
        options = EngineOptions(
            slo_s=slo_s,
            max_queue=max_queue,
            shed_late=shed,
            drain_timeout_s=drain_timeout_s,
            fork_replicas=fork_replicas,
            replica_nice=replica_nice,
        )
        calibration = CalibrationOptions(
            interval_s=calibration_interval_s,
            window_s=calibration_window_s,
            drift_ratio=drift_ratio,
            drift_sustain_s=drift_sustain_s,
        )
        ray_options = None
        if backend == "ray":
            from inferline.ray_backend import RayBackendOptions

            ray_options = RayBackendOptions(
                address=address,
                num_cpus=num_cpus,
                placement=cast(Literal["spread", "pack"], placement),  # checked there
            )
        chosen = None
        if tune:
            name = policy or (OPT_IN if tuner_opt_in else DEFAULT_POLICY)
            fields = {"scale_down_holdoff_s": holdoff_s, "lookback_s": lookback_s}
            chosen = policy_for_bundle(
                name,
                bundle,
                config,
                planning_trace=planning_trace,
                planning_rate=planning_rate,
                slo_s=slo_s,
                options=policy_options(name, **{k: v for k, v in fields.items() if v is not None}),
            )
    logging.basicConfig(level=logging.INFO, format="inferline: %(message)s")

    def announce(line: str) -> None:
        stderr.print(line, highlight=False, soft_wrap=True)

    if ray_options is not None:
        from inferline.ray_backend import serve_on_ray

        serve_on_ray(
            bundle,
            config,
            ray_options=ray_options,
            host=host,
            port=port,
            options=options,
            max_body_bytes=max_body_bytes,
            announce=announce,
            policy=chosen,
            control=control,
        )
        return
    serve(
        bundle,
        config,
        host=host,
        port=port,
        options=options,
        max_body_bytes=max_body_bytes,
        announce=announce,
        policy=chosen,
        control=control,
        calibration=calibration,
    )


OPT_IN = "inferline+opt-in"
#: Option fields the command fills from its options, for errors that name the option.
OPTION_FLAGS = {
    "slo_s": "--slo-s",
    "max_queue": "--max-queue",
    "drain_timeout_s": "--drain-timeout-s",
    "replica_nice": "--replica-nice",
    "address": "--address",
    "num_cpus": "--num-cpus",
    "placement": "--placement",
    "policy": "--policy",
    "planning_trace": "--planning-trace",
    "planning_rate": "--planning-rate",
    "scale_down_holdoff_s": "--holdoff-s",
    "lookback_s": "--lookback-s",
    "interval_s": "--calibration-interval-s",
    "window_s": "--calibration-window-s",
    "drift_ratio": "--drift-ratio",
    "drift_sustain_s": "--drift-sustain-s",
}
