"""``inferline bench fuzz`` and ``bench wire``: one JSON object with --json, a table without."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from inferline.cli import app

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

runner = CliRunner()


def test_bench_fuzz_json_and_readable() -> None:
    result = runner.invoke(
        app, ["bench", "fuzz", "--requests", "60", "--valid-after", "5", "--json"]
    )
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert figures["status_classes"]["5xx"] == 0 and figures["status_classes"]["dropped"] == 0
    assert sum(figures["status_classes"].values()) == 60
    assert figures["valid_after"] == {"sent": 5, "answered_200": 5} and figures["passed"]
    result = runner.invoke(app, ["bench", "fuzz", "--requests", "20", "--valid-after", "2"])
    assert result.exit_code == 0, result.output
    assert "malformed requests" in result.stdout and "PASS" in result.stdout


def test_bench_wire_json_and_readable() -> None:
    result = runner.invoke(app, ["bench", "wire", "--queries", "2", "--json"])
    assert result.exit_code == 0, result.output
    modes = json.loads(result.stdout)["modes"]
    assert modes["binary"]["request_bytes"] < modes["json"]["request_bytes"]
    assert modes["binary"]["request_bytes"] > 224 * 224 * 3 * 4
    result = runner.invoke(app, ["bench", "wire", "--queries", "2"])
    assert result.exit_code == 0, result.output
    assert "binary" in result.stdout and "server CPU" in result.stdout
