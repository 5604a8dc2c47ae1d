"""``inferline bench engine``, ``replica-start`` and ``ray`` as a user runs them: real engines
(and a real Ray cluster) on 127.0.0.1, short settings; readable output and ``--json``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
INFERLINE = str(Path(sys.executable).parent / "inferline")

pytestmark = pytest.mark.integration


def bench(*args: str, timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [INFERLINE, "bench", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout_s,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    return done


ENGINE = (
    "engine", "--rates", "100", "--duration-s", "1", "--repeats", "1",
    "--overhead-duration-s", "1",
)  # fmt: skip


def test_engine_readable_and_json() -> None:
    text = bench(*ENGINE).stdout
    assert "engine benchmark: 2-stage no-op" in text and "per-stage overhead at 200 q/s" in text
    figures = json.loads(bench(*ENGINE, "--json").stdout)
    (rate,) = figures["rates"]
    assert rate["rate_qps"] == 100 and rate["errors"] == 0
    assert set(figures["overhead_at_rate"]["stages"]) == {"first", "second"}


REPLICA_START = (
    "replica-start", str(ROOT / "examples" / "engine-demo" / "text"), "--stage", "tokenize",
)  # fmt: skip


def test_replica_start_readable_and_json() -> None:
    text = bench(*REPLICA_START, "--repeats", "1").stdout
    assert "adding one 'tokenize' replica" in text and "forked" in text and "fresh" in text
    figures = json.loads(bench(*REPLICA_START, "--repeats", "1", "--json").stdout)
    assert [run["mode"] for run in figures["runs"]] == ["fresh", "forked"]
    assert all(len(run["activation_s"]) == 1 for run in figures["runs"])


def test_ray_json_is_the_only_thing_on_stdout(tmp_path: Path) -> None:
    """Ray (and Ray Serve) log lines go to stderr; stdout parses as one JSON object."""
    pytest.importorskip("ray")
    done = bench(
        "ray", "--json", "--duration-s", "4", "--step-s", "3,8,3", "-o", str(tmp_path),
        timeout_s=900,
    )  # fmt: skip
    figures = json.loads(done.stdout)
    same_plan = figures["same_plan"]
    assert {"engine", "ray", "ray_serve"} <= set(same_plan)
    assert same_plan["ray"]["errors"] == 0
    assert figures["written"] == [str(tmp_path / "ray.json"), str(tmp_path / "ray_autoscaling.png")]
    assert (tmp_path / "ray_autoscaling.png").stat().st_size > 1000
