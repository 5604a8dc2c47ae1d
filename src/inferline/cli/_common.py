"""Shared command-line plumbing: JSON output, readable errors, exit codes."""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from functools import wraps
from typing import Any, ParamSpec, TypeVar

import typer
from rich.console import Console

from inferline.errors import ConfigError, InferLineError

P = ParamSpec("P")
R = TypeVar("R")

stdout = Console()
stderr = Console(stderr=True)

JSON_OPTION = typer.Option(
    False, "--json", help="Print one JSON object on stdout instead of tables."
)


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def print_json(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(_clean(obj), sort_keys=False) + "\n")
    sys.stdout.flush()


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Send whatever is written to stdout inside the block to stderr: Python's ``print`` and
    file descriptor 1 alike, so also C libraries' and child processes' output (Ray's log
    lines). A ``--json`` command runs its work inside and prints its JSON after."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 1)
        os.close(saved)


def user_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn InferLineErrors into a one-paragraph message and the error's exit code."""

    @wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except InferLineError as exc:
            stderr.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(code=exc.exit_code) from None

    return wrapper


@contextlib.contextmanager
def as_options(flags: Mapping[str, str]) -> Iterator[None]:
    """Report a ConfigError about a field that an option filled (``flags``: field -> option)
    as that option's error, so the library's checks are the command's."""
    try:
        yield
    except ConfigError as exc:
        flag = flags.get(exc.field or "")
        if flag is None or exc.source is not None:
            raise
        raise type(exc)(exc.problem, source="<argument>", field=flag) from None
