"""``inferline serve`` refuses, before binding or starting anything, to expose control to a
network without a token and to serve a plan beyond the machine (exit 2 for both).

Every case here would fail before a socket is bound: the plans are also oversized, so
even a broken exposure check stops at the capacity check instead of listening on a
non-loopback address.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from inferline.cli import app
from inferline.engine.testing import write_bundle

runner = CliRunner()


@pytest.fixture
def oversized(tmp_path: Path) -> tuple[Path, Path]:
    return write_bundle(
        tmp_path,
        "huge",
        {"a": "inferline.engine.testing:NoOp", "b": "inferline.engine.testing:NoOp"},
        [("a", "b")],
        {
            "a": {"hardware": "cpu-1", "batch_size": 4, "replicas": 1},
            "b": {"hardware": "cpu-1", "batch_size": 4, "replicas": 100_000},
        },
    )


def children() -> set[int]:
    """This process's child processes (a replica started by serve would be one)."""
    found: set[int] = set()
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        with contextlib.suppress(OSError):
            found |= {int(pid) for pid in (task / "children").read_text().split()}
    return found


def serve(bundle: tuple[Path, Path], *args: str, token: str = "") -> tuple[int, str]:
    pipeline, plan = bundle
    result = runner.invoke(
        app,
        ["serve", str(pipeline.parent), "--config", str(plan), "--port", "0", *args],
        env={"INFERLINE_CONTROL_TOKEN": token},
    )
    return result.exit_code, " ".join(result.stderr.split())


def test_a_non_loopback_host_without_a_token_is_refused(oversized: tuple[Path, Path]) -> None:
    code, err = serve(oversized, "--host", "0.0.0.0")
    assert code == 2, err
    assert "--host 0.0.0.0 would open the control API" in err
    assert "--control-token" in err and "--control-port" in err
    assert "Traceback" not in err


def test_a_non_loopback_control_host_without_a_token_is_refused(
    oversized: tuple[Path, Path],
) -> None:
    code, err = serve(oversized, "--control-port", "0", "--control-host", "0.0.0.0")
    assert code == 2 and "--control-host 0.0.0.0 is not a loopback address" in err, err


def test_bad_control_arguments_are_refused(oversized: tuple[Path, Path]) -> None:
    code, err = serve(oversized, "--control-token", "short")
    assert code == 2 and "at least 16" in err, err
    code, err = serve(oversized, token="short")
    assert code == 2 and "INFERLINE_CONTROL_TOKEN" in err, err
    code, err = serve(oversized, "--control-host", "127.0.0.2")
    assert code == 2 and "only applies with --control-port" in err, err


def test_a_plan_beyond_the_machine_exits_2_naming_stage_and_resource(
    oversized: tuple[Path, Path],
) -> None:
    before = children()
    code, err = serve(oversized)
    assert code == 2, err
    assert "stage 'b'" in err and "100001 replica threads" in err and "Traceback" not in err
    assert children() <= before  # refused before any replica was started
