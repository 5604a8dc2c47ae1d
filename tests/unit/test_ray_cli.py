"""``inferline serve --backend ray``: argument errors are one paragraph and exit 2, before any
cluster is contacted; an unreachable address too."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from inferline.cli import app

ROOT = Path(__file__).resolve().parents[2]
TEXT = ROOT / "examples" / "engine-demo" / "text"
runner = CliRunner()


def serve(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["serve", str(TEXT), "--config", str(TEXT / "plan.yaml"), *args])
    return result.exit_code, " ".join(result.stderr.split())


@pytest.mark.parametrize(
    ("args", "field", "words"),
    [
        (["--backend", "kubernetes"], "--backend", "use 'engine' or 'ray'"),
        (["--address", "127.0.0.1:6379"], "--address", "only applies with --backend ray"),
        (["--num-cpus", "4"], "--num-cpus", "only applies with --backend ray"),
        (["--placement", "pack"], "--placement", "only applies with --backend ray"),
        (["--backend", "ray", "--placement", "random"], "--placement", "'spread' or 'pack'"),
        (["--backend", "ray", "--num-cpus", "0"], "--num-cpus", "at least 1"),
        (
            ["--backend", "ray", "--num-cpus", "4", "--address", "h:1"],
            "--num-cpus",
            "sizes a local cluster",
        ),
    ],
)
def test_bad_arguments_exit_2_naming_the_option(args: list[str], field: str, words: str) -> None:
    code, message = serve(*args)
    assert code == 2, message
    assert field in message and words in message, message


def test_an_unreachable_address_exits_2_at_once() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, never listening: refused
        port = sock.getsockname()[1]
        code, message = serve("--backend", "ray", "--address", f"127.0.0.1:{port}")
    assert code == 2, message
    assert f"cannot reach the Ray cluster at 127.0.0.1:{port}" in message, message
