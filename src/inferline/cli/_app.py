"""The top-level ``inferline`` command."""

from __future__ import annotations

import typer

from inferline.cli import _bench, _trace
from inferline.cli._calibrate import calibrate_command
from inferline.cli._plan import plan_command
from inferline.cli._profile import profile_command
from inferline.cli._replay import replay_command
from inferline.cli._serve import serve_command
from inferline.cli._simulate import simulate_command
from inferline.cli._sweep import sweep_command
from inferline.cli._tune import tune_sim_command
from inferline.cli._validate import validate_command

app = typer.Typer(
    name="inferline",
    help="Plan, simulate and serve ML inference pipelines under a P99 latency SLO.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(_trace.app, name="trace")
app.add_typer(_bench.app, name="bench")
app.command("simulate")(simulate_command)
app.command("plan")(plan_command)
app.command("sweep")(sweep_command)
app.command("tune-sim")(tune_sim_command)
app.command("serve")(serve_command)
app.command("replay")(replay_command)
app.command("profile")(profile_command)
app.command("validate")(validate_command)
app.command("calibrate")(calibrate_command)


def main() -> None:
    app()
