"""``inferline bench``: the readable output and ``--json`` of each benchmark on a small input,
and where benchmarks write (only into ``-o/--out`` or a fresh temporary folder)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from inferline.cli import app

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "examples" / "reference"
runner = CliRunner()


def bench(*args: str) -> str:
    result = runner.invoke(app, ["bench", *args])
    assert result.exit_code == 0, result.output
    return result.stdout


ESTIMATOR = ("estimator", "--duration-s", "5", "--simpy-queries", "300", "--repeats", "1")


def test_estimator_readable_and_json() -> None:
    text = bench(*ESTIMATOR)
    assert "estimator benchmark" in text and "identical_to_simpy" in text
    assert "True" in text
    figures = json.loads(bench(*ESTIMATOR, "--json"))
    assert figures["identical_to_simpy"] is True and figures["simpy_queries"] == 300


PLANNER = (
    "planner", "--reference-dir", str(REFERENCE), "--pipelines", "image-processing",
    "--slos-s", "0.15", "--rates", "100", "--cvs", "1", "--duration-s", "30",
    "--exhaustive-max-s", "5",
)  # fmt: skip


def test_planner_readable_and_json(tmp_path: Path) -> None:
    text = bench(*PLANNER, "-o", str(tmp_path / "readable"))
    assert "InferLine planner against the baselines" in text
    assert "image-processing" in text and "never_costlier_than_cg_peak" in text
    figures = json.loads(bench(*PLANNER, "-o", str(tmp_path / "json"), "--json"))
    assert len(figures["cases"]) == 1 and figures["verdict"]["cases"] == 1
    assert sorted(Path(p).name for p in figures["written"]) == [
        "image-processing.png",
        "sweep.csv",
        "sweep.md",
    ]
    assert (tmp_path / "json" / "sweep.csv").is_file()


def test_planner_rejects_a_bad_number_list() -> None:
    result = runner.invoke(app, ["bench", *PLANNER, "--rates", "100,fast"])
    assert result.exit_code == 2 and "--rates" in result.stderr


TUNER = ("tuner", "--reference-dir", str(REFERENCE), "--pipelines", "image-processing")


def test_tuner_json_writes_into_out(tmp_path: Path) -> None:
    figures = json.loads(bench(*TUNER, "--after-s", "5", "-o", str(tmp_path), "--json"))
    assert figures["out_dir"] == str(tmp_path)
    assert {r["scenario"] for r in figures["rows"]} == {
        "ramp-10s", "ramp-30s", "ramp-60s", "burstiness", "azure",
    }  # fmt: skip
    assert (tmp_path / "tuner.md").is_file() and len(list(tmp_path.glob("*.png"))) == 5
    timed = [r for r in figures["rows"] if r["policy"] == "simulate"]
    assert len(timed) == 5 and all(r["decide_ms_mean"] > 0 for r in timed)


def git_status() -> str:
    done = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


def test_tuner_readable_without_out_writes_only_into_a_fresh_temporary_folder(
    tmp_path: Path,
) -> None:
    """As a user runs it, from another folder and without -o: the tables on stdout, the
    files in a new folder under the temporary directory, nothing in the checkout or cwd."""
    cwd, temp = tmp_path / "cwd", tmp_path / "temp"
    cwd.mkdir()
    temp.mkdir()
    before = git_status()
    env = {**os.environ, "TMPDIR": str(temp), "COLUMNS": "200"}
    done = subprocess.run(
        [str(Path(sys.executable).parent / "inferline"), "bench", *TUNER, "--after-s", "5"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Issue 6 targets: inferline vs cg-autoscale" in done.stdout
    assert "Wall time of one decision" in done.stdout
    assert "Traceback" not in done.stderr
    (written,) = temp.iterdir()
    assert written.name.startswith("inferline-bench-tuner-")
    assert str(written) in done.stderr  # announced where the files go
    assert (written / "tuner.md").is_file() and len(list(written.glob("*.png"))) == 5
    assert not any(cwd.iterdir())
    assert git_status() == before
