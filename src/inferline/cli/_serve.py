"""``inferline serve``: run a pipeline with a plan behind the HTTP API (docs/engine.md)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from inferline.cli._common import stderr, user_errors
from inferline.errors import ConfigError


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
) -> None:
    """Serve a pipeline over HTTP (Open Inference Protocol V2) with the given plan."""
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
    logging.basicConfig(level=logging.INFO, format="inferline: %(message)s")
    options = EngineOptions(
        slo_s=slo_s, max_queue=max_queue, shed_late=shed, drain_timeout_s=drain_timeout_s
    )

    def announce(line: str) -> None:
        stderr.print(line, highlight=False, soft_wrap=True)

    serve(
        bundle,
        config,
        host=host,
        port=port,
        options=options,
        max_body_bytes=max_body_bytes,
        announce=announce,
    )
