"""Each report command's default, readable output (tables) on a small input.

The ``--json`` contracts are tested elsewhere; these run the table path a user sees and
check what it says, not only the exit code (a crash in a renderer got through that way).
Commands that start processes (profile, validate, serve, replay) are in
test_served_commands.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from inferline.cli import app
from inferline.pipeline import load_config
from inferline.planner import PLANNERS
from inferline.workload import bundled_trace_path, load_trace

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / "examples" / "reference" / "image-processing"
runner = CliRunner()


def readable(*args: str) -> str:
    """Run ``inferline ARGS`` without --json; its stdout, after checking it succeeded."""
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.stderr + result.stdout
    assert "Traceback" not in result.stderr and not result.stdout.lstrip().startswith("{")
    return result.stdout


def row(out: str, name: str) -> str:
    """The value cell of a two-column summary table's row ``name``."""
    match = re.search(rf"│ {name}\s+│ (\S+)", out)
    assert match is not None, f"no row {name!r} in\n{out}"
    return match.group(1)


@pytest.fixture(scope="module")
def traces(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("traces")
    paths = {k: folder / f"{k}.csv" for k in ("gamma", "ramp", "load", "plan", "eval")}
    out = readable(
        "trace",
        "gamma",
        "--rate",
        "100",
        "--cv",
        "1",
        "--duration-s",
        "10",
        "--seed",
        "1",
        "-o",
        str(paths["gamma"]),
    )
    assert 800 < int(row(out, "queries")) < 1200
    assert 80 < float(row(out, "mean_rate_qps")) < 120
    assert row(out, "output") == str(paths["gamma"]) and paths["gamma"].exists()
    out = readable(
        "trace",
        "ramp",
        "--from-rate",
        "50",
        "--to-rate",
        "150",
        "--transition-s",
        "5",
        "--before-s",
        "5",
        "--after-s",
        "5",
        "-o",
        str(paths["ramp"]),
    )
    assert 1300 < int(row(out, "queries")) < 1700  # 250 + 500 + 750 expected
    assert float(row(out, "duration_s")) == pytest.approx(15, abs=0.5)
    return paths


def test_trace_commands_print_their_summary(traces: dict[str, Path]) -> None:
    out = readable(
        "trace", "load", str(bundled_trace_path()), "--rate", "40", "-o", str(traces["load"])
    )
    assert float(row(out, "mean_rate_qps")) == pytest.approx(40, rel=0.01)
    assert float(row(out, "gap_cv")) > 5  # the real trace keeps its bursts
    out = readable(
        "trace",
        "split",
        str(traces["gamma"]),
        "--planning-out",
        str(traces["plan"]),
        "--evaluation-out",
        str(traces["eval"]),
    )
    queries = [int(q) for q in re.findall(r"│ queries\s+│ (\d+)", out)]
    assert len(queries) == 2 and queries[0] < queries[1]  # first 25 % / the rest
    assert sum(queries) == load_trace(traces["gamma"]).n_queries
    assert str(traces["plan"]) in out and str(traces["eval"]) in out
    out = readable("trace", "info", str(traces["gamma"]))
    assert int(row(out, "queries")) == load_trace(traces["gamma"]).n_queries
    assert "peak_rate_1s_qps" in out and "output" not in out


@pytest.mark.parametrize("planner", PLANNERS)
def test_plan_prints_the_plan_its_estimate_and_step_log(
    planner: str, traces: dict[str, Path], tmp_path: Path
) -> None:
    plan = tmp_path / "plan.yaml"
    out = readable(
        "plan",
        str(BUNDLE),
        "--trace",
        str(traces["gamma"]),
        "--slo-s",
        "0.15",
        "--planner",
        planner,
        "--max-seconds",
        "5",
        "-o",
        str(plan),
    )
    assert f"{planner} plan for image-processing on gamma.csv (SLO 150 ms)" in out
    assert "feasible" in out and "step log" in out
    config = load_config(plan)
    for name, stage in config.stages.items():  # the stages table shows the written plan
        assert re.search(rf"{name} │\s+{re.escape(stage.hardware)} │\s+{stage.batch_size} │", out)
    assert "plan written to" in out


def test_sweep_prints_its_table_and_writes_its_files(tmp_path: Path) -> None:
    out = readable(
        "sweep",
        str(BUNDLE),
        "-o",
        str(tmp_path),
        "--planners",
        "inferline,cg-mean",
        "--slo-s",
        "0.15",
        "--rate",
        "100",
        "--cv",
        "1",
        "--duration-s",
        "8",
    )
    flat = " ".join(out.split())
    assert "| pipeline | rate q/s | cv | SLO ms | planner | feasible |" in flat
    for planner in ("inferline", "cg-mean"):
        assert f"| image-processing | 100 | 1 | 150 | {planner} | yes |" in flat
    for name in ("sweep.csv", "sweep.md", "image-processing.png"):
        assert (tmp_path / name).stat().st_size > 0


def test_tune_sim_prints_totals_and_replicas_per_stage(traces: dict[str, Path]) -> None:
    out = readable(
        "tune-sim",
        str(BUNDLE),
        "--plan",
        str(BUNDLE / "configs" / "balanced.yaml"),
        "--trace",
        str(traces["ramp"]),
        "--slo-s",
        "0.15",
        "--policy",
        "queue-length",
    )
    assert "image-processing on ramp.csv, policy queue-length (SLO 150 ms)" in out
    queries = re.search(r"│\s+(\d+) │\s+[\d.]+ │\s+[\d.]+% │", out)
    assert queries is not None and int(queries.group(1)) == load_trace(traces["ramp"]).n_queries
    assert "replicas per stage" in out
    planned = load_config(BUNDLE / "configs" / "balanced.yaml")
    for name, stage in planned.stages.items():
        assert re.search(rf"{name} │\s+{stage.replicas} │\s+\d+ │\s+\d+ │\s+\d+ │", out)


def test_simulate_prints_the_summary_and_per_stage_tables(traces: dict[str, Path]) -> None:
    config = BUNDLE / "configs" / "balanced.yaml"
    out = readable(
        "simulate",
        str(BUNDLE),
        "--config",
        str(config),
        "--trace",
        str(traces["gamma"]),
        "--slo-s",
        "0.15",
    )
    assert "image-processing on gamma.csv (SLO 150 ms)" in out
    total = re.search(r"│\s+(\d+) │\s+([\d.]+) │\s+([\d.]+) │\s+([\d.]+) │", out)
    assert total is not None and int(total.group(1)) == load_trace(traces["gamma"]).n_queries
    p50, p95, p99 = (float(total.group(k)) for k in (2, 3, 4))
    assert 0 < p50 <= p95 <= p99
    for name, stage in load_config(config).stages.items():
        assert re.search(rf"{name} │\s+{re.escape(stage.hardware)} │\s+{stage.batch_size} │", out)


def test_simulate_on_a_machine_shares_its_cores_and_says_so(traces: dict[str, Path]) -> None:
    def p99(*extra: str) -> tuple[float, str]:
        out = readable(
            "simulate",
            str(BUNDLE),
            "--config",
            str(BUNDLE / "configs" / "balanced.yaml"),
            "--trace",
            str(traces["gamma"]),
            "--slo-s",
            "0.15",
            *extra,
        )
        row = re.search(r"│\s+\d+ │\s+[\d.]+ │\s+[\d.]+ │\s+([\d.]+) │", out)
        assert row is not None, out
        return float(row.group(1)), out

    alone, _ = p99()
    shared, out = p99("--machine", "cores=1")
    assert "shared cores of cores=1" in " ".join(out.split())
    assert shared > alone  # the same replicas on one core wait for it


def test_simulate_on_a_machine_notes_a_replica_as_wide_as_it(
    traces: dict[str, Path], tmp_path: Path
) -> None:
    tabular = ROOT / "examples" / "tabular-triage"
    config = tmp_path / "wide.yaml"
    stages = {
        name: {"hardware": "cpu-2" if name == "mc_mlp" else "cpu-1", "batch_size": 1, "replicas": 1}
        for name in ("features", "risk", "mc_mlp", "explain", "combine")
    }
    config.write_text(yaml.safe_dump({"stages": stages}))

    def simulate(*extra: str) -> str:
        out = readable(
            "simulate",
            str(tabular),
            "--config",
            str(config),
            "--trace",
            str(traces["gamma"]),
            "--slo-s",
            "0.1",
            *extra,
        )
        return " ".join(out.split())

    line = simulate("--machine", "cores=2")
    assert (
        "note: 'mc_mlp' runs 2-thread replicas on 2 cores; plans for this machine give a "
        "replica at most 1 thread(s)." in line
    )
    assert "note" not in simulate("--machine", "cores=4")  # three whole cores left
    assert "note" not in simulate()
