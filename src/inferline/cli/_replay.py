"""``inferline replay``: send a trace open-loop to a running engine and summarise."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from inferline.cli._common import JSON_OPTION, print_json, stderr, stdout, user_errors
from inferline.errors import ConfigError


def _bodies(inputs: list[str], requests: Path | None) -> list[bytes]:
    from inferline.engine import default_body, parse_input_option

    if inputs and requests is not None:
        raise ConfigError("give --input or --requests, not both", source="<argument>")
    if inputs:
        tensors = [parse_input_option(text) for text in inputs]
        return [json.dumps({"inputs": tensors}).encode()]
    if requests is None:
        return [default_body()]
    try:
        lines = requests.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read the file ({exc.strerror})", source=requests) from None
    bodies = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
        except ValueError as exc:
            raise ConfigError(f"line {number} is not JSON ({exc})", source=requests) from None
        if not isinstance(doc, dict) or "inputs" not in doc:
            raise ConfigError(
                f"line {number} is not an infer request (an object with 'inputs')",
                source=requests,
            )
        bodies.append(json.dumps(doc).encode())
    if not bodies:
        raise ConfigError("no requests in the file", source=requests)
    return bodies


@user_errors
def replay_command(
    url: Annotated[str, typer.Argument(help="The engine, e.g. http://127.0.0.1:8000")],
    trace: Annotated[Path, typer.Option("--trace", help="Trace file (inferline trace …).")],
    slo_s: Annotated[
        float, typer.Option("--slo-s", help="Latency objective for the miss rate, s.")
    ],
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Per-query CSV to write.")
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", help="Model name (default: ask the engine).")
    ] = None,
    inputs: Annotated[
        list[str] | None,
        typer.Option(
            "--input",
            help="Request tensor NAME:DATATYPE:JSON, repeatable, e.g. 'text:BYTES:[\"hi\"]'.",
        ),
    ] = None,
    requests: Annotated[
        Path | None,
        typer.Option("--requests", help="JSON-lines file of request bodies, used in turn."),
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", help="Send only the first N queries of the trace.")
    ] = None,
    timeout_s: Annotated[
        float, typer.Option("--timeout-s", help="Wait this long after the last send.")
    ] = 30.0,
    as_json: bool = JSON_OPTION,
) -> None:
    """Replay a trace open-loop against a running engine; print P50/P99, misses, errors, rate.

    Exits 1 when every query failed, 2 when nothing answers at URL.
    """
    from inferline.engine import replay, replay_summary
    from inferline.workload import load_trace

    if not slo_s > 0:
        raise ConfigError(f"must be positive, got {slo_s}", source="<argument>", field="--slo-s")
    if limit is not None and limit < 1:
        raise ConfigError(f"must be at least 1, got {limit}", source="<argument>", field="--limit")
    arrivals = load_trace(trace).arrival_s
    if limit is not None:
        arrivals = arrivals[:limit]
    bodies = _bodies(inputs or [], requests)
    if not as_json:
        duration_s = float(arrivals[-1] - arrivals[0])
        stderr.print(f"replaying {arrivals.size} queries over {duration_s:.1f} s to {url} …")
    result = replay(url, arrivals, bodies, slo_s=slo_s, model=model, timeout_s=timeout_s)
    if output is not None:
        result.write_csv(output)
    summary: dict[str, Any] = replay_summary(result)
    if output is not None:
        summary["output"] = str(output)
    if as_json:
        print_json(summary)
    else:
        _print_table(summary, trace, slo_s, output)
    if summary["sent"] and not summary["ok"]:
        first = min(result.errors.items(), default=(0, "no message"))
        stderr.print(
            f"[bold red]error:[/] all {summary['sent']} queries failed (answers by status: "
            f"{_status_counts(summary)}); query {first[0]}: {first[1]}",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(code=1)


def _status_counts(summary: dict[str, Any]) -> str:
    """Non-200 answers by status (0: no answer, -1: timed out)."""
    return ", ".join(f"{k}: {v}" for k, v in summary["status_counts"].items() if k != "200")


def _print_table(summary: dict[str, Any], trace: Path, slo_s: float, output: Path | None) -> None:
    table = Table(title=f"replay of {trace.name} (SLO {slo_s * 1000:.0f} ms)")
    for col in ("sent", "ok", "errors", "P50 ms", "P99 ms", "miss rate", "achieved q/s"):
        table.add_column(col, justify="right")

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value * 1000:.1f}"

    table.add_row(
        str(summary["sent"]),
        str(summary["ok"]),
        str(summary["errors"]),
        ms(summary["p50_s"]),
        ms(summary["p99_s"]),
        f"{summary['miss_rate']:.2%}",
        f"{summary['achieved_rate']:.1f}",
    )
    stdout.print(table)
    if summary["errors"]:
        stdout.print(f"non-200 answers by status: {_status_counts(summary)}")
    if output is not None:
        stdout.print(f"per-query results → {output}")
