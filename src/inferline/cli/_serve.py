"""``inferline serve``: run a pipeline with a plan behind the HTTP API (docs/engine.md)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from inferline._files import load_yaml_mapping
from inferline.cli._common import stderr, user_errors
from inferline.errors import ConfigError

if TYPE_CHECKING:
    from inferline.tuner import InferLineTuner


@user_errors
def serve_command(
    bundle: Annotated[
        Path,
        typer.Argument(help="Bundle folder (or its pipeline.yaml); only the pipeline is read."),
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
    holdoff_s: Annotated[
        float,
        typer.Option("--holdoff-s", help="With --tune: seconds between a change and a scale-down."),
    ] = 15.0,
    lookback_s: Annotated[
        float,
        typer.Option(
            "--lookback-s",
            help="With --tune: a scale-down provisions for the busiest 5-s bucket of this window.",
        ),
    ] = 30.0,
    tuner_opt_in: Annotated[
        bool,
        typer.Option(
            "--tuner-opt-in",
            help="With --tune: also the Tuner's opt-in rules, departures from SPEC §2.7 "
            "(scale up for the rate expected when a new replica serves; never below the "
            "plan); docs/tuner.md.",
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
) -> None:
    """Serve a pipeline over HTTP (Open Inference Protocol V2) with the given plan."""
    from inferline.engine._control import ControlOptions, check_exposure, resolve_token
    from inferline.engine._engine import EngineOptions
    from inferline.engine._server import serve

    for value, name in ((slo_s, "--slo-s"), (drain_timeout_s, "--drain-timeout-s")):
        if not value > 0:
            raise ConfigError(f"must be positive, got {value}", source="<argument>", field=name)
    for count, name in ((max_queue, "--max-queue"), (max_body_bytes, "--max-body-bytes")):
        if count < 1:
            raise ConfigError(f"must be at least 1, got {count}", source="<argument>", field=name)
    if not 0 <= port <= 65535:
        raise ConfigError(f"not a TCP port: {port}", source="<argument>", field="--port")
    if control_port is None and control_host != "127.0.0.1":
        raise ConfigError(
            "only applies with --control-port", source="<argument>", field="--control-host"
        )
    control = ControlOptions(
        token=resolve_token(control_token), host=control_host, port=control_port
    )
    check_exposure(host, control.host, control.port, control.token)  # before anything starts
    for value, name in ((holdoff_s, "--holdoff-s"), (lookback_s, "--lookback-s")):
        if not value >= 0:
            raise ConfigError(f"must be ≥ 0, got {value}", source="<argument>", field=name)
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
    if placement not in ("spread", "pack"):
        raise ConfigError(
            f"unknown placement {placement!r}; use 'spread' or 'pack'",
            source="<argument>",
            field="--placement",
        )
    if num_cpus is not None and address is not None:
        raise ConfigError(
            "--num-cpus sizes a local cluster; a cluster at --address has the CPUs its "
            "nodes were started with (ray start --num-cpus)",
            source="<argument>",
            field="--num-cpus",
        )
    if num_cpus is not None and num_cpus < 1:
        raise ConfigError(
            f"must be at least 1, got {num_cpus}", source="<argument>", field="--num-cpus"
        )
    if not tune and (planning_trace is not None or planning_rate is not None or tuner_opt_in):
        raise ConfigError(
            "--planning-trace, --planning-rate and --tuner-opt-in only apply with --tune",
            source="<argument>",
            field="--tune",
        )
    policy = (
        live_tuner(
            bundle,
            config,
            planning_trace,
            planning_rate,
            holdoff_s,
            lookback_s,
            slo_s,
            opt_in=tuner_opt_in,
        )
        if tune
        else None
    )
    logging.basicConfig(level=logging.INFO, format="inferline: %(message)s")
    options = EngineOptions(
        slo_s=slo_s,
        max_queue=max_queue,
        shed_late=shed,
        drain_timeout_s=drain_timeout_s,
        fork_replicas=fork_replicas,
    )

    def announce(line: str) -> None:
        stderr.print(line, highlight=False, soft_wrap=True)

    if backend == "ray":
        from inferline.ray_backend._serve import RayBackendOptions, serve_on_ray

        serve_on_ray(
            bundle,
            config,
            ray_options=RayBackendOptions(
                address=address,
                num_cpus=num_cpus,
                placement="pack" if placement == "pack" else "spread",
            ),
            host=host,
            port=port,
            options=options,
            max_body_bytes=max_body_bytes,
            announce=announce,
            policy=policy,
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
        policy=policy,
        control=control,
    )


#: Length of the Poisson planning trace ``--planning-rate`` stands for.
PLANNING_RATE_DURATION_S = 300.0


def live_tuner(
    bundle: Path,
    plan: Path,
    planning_trace: Path | None,
    planning_rate: float | None,
    holdoff_s: float = 15.0,
    lookback_s: float = 30.0,
    slo_s: float | None = None,
    *,
    opt_in: bool = False,
) -> InferLineTuner:
    """The InferLine Tuner for ``inferline serve --tune`` (ConfigError, exit 2, if an input
    it needs is missing)."""
    from inferline._bundle import load_bundle
    from inferline.pipeline import load_config, load_pipeline
    from inferline.tuner import InferLineTuner, TunerConfig
    from inferline.tuner._scenarios import OPT_IN_POLICY
    from inferline.workload import gamma_trace, load_trace

    pipeline_file = bundle if bundle.is_file() else bundle / "pipeline.yaml"
    if pipeline_file.exists():
        from inferline.pipeline._io import pipeline_from_mapping

        _, spec = pipeline_from_mapping(
            load_yaml_mapping(pipeline_file, ConfigError), pipeline_file
        )
        missing = [
            name
            for name in (spec.hardware, spec.profiles)
            if not (pipeline_file.parent / name).exists()
        ]
        if missing:
            raise ConfigError(
                f"--tune needs the bundle's profiles, but {' and '.join(missing)} "
                f"{'is' if len(missing) == 1 else 'are'} missing from {pipeline_file.parent} "
                "(their format: docs/bundles.md)",
                source=bundle,
                field="--tune",
            )
    if planning_trace is None and planning_rate is None:
        raise ConfigError(
            "--tune needs the workload the plan was made for: give --planning-trace FILE "
            "or --planning-rate QPS",
            source="<argument>",
            field="--tune",
        )
    if planning_trace is not None and planning_rate is not None:
        raise ConfigError(
            "give --planning-trace or --planning-rate, not both",
            source="<argument>",
            field="--planning-rate",
        )
    loaded = load_bundle(bundle)
    load_pipeline(pipeline_file)  # the same checks serving makes
    plan_config = load_config(plan)
    if planning_trace is not None:
        trace = load_trace(planning_trace)
    else:
        assert planning_rate is not None
        if not planning_rate > 0:
            raise ConfigError(
                f"must be positive, got {planning_rate}",
                source="<argument>",
                field="--planning-rate",
            )
        trace = gamma_trace(planning_rate, 1.0, PLANNING_RATE_DURATION_S, seed=0)
    config = TunerConfig.from_plan(
        loaded.pipeline,
        loaded.profiles,
        plan_config,
        trace,
        scale_down_holdoff_s=holdoff_s,
        lookback_s=lookback_s,
        slo_s=slo_s,
        anticipate_growth=opt_in,
        floor_at_plan=opt_in,
    )
    return InferLineTuner(config, name=OPT_IN_POLICY if opt_in else "inferline")
