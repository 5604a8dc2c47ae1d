"""The command line: contracts later tooling relies on, and one-paragraph errors (exit 2)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from inferline.cli import app

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def trace_file(tmp_path: Path) -> Path:
    path = tmp_path / "trace.csv"
    code, out, err = run(
        "trace",
        "gamma",
        "--rate",
        "150",
        "--cv",
        "2",
        "--duration-s",
        "20",
        "--seed",
        "3",
        "-o",
        str(path),
        "--json",
    )
    assert code == 0, err
    info = json.loads(out)
    assert info["queries"] > 2000 and abs(info["mean_rate_qps"] - 150) < 20
    return path


def test_simulate_json_contract(reference_bundle: Path, trace_file: Path) -> None:
    config = reference_bundle / "configs" / "balanced.yaml"
    code, out, err = run(
        "simulate",
        str(reference_bundle),
        "--config",
        str(config),
        "--trace",
        str(trace_file),
        "--slo-s",
        "0.15",
        "--json",
    )
    assert code == 0, err
    summary = json.loads(out)
    for key in ("queries", "p50_s", "p95_s", "p99_s", "miss_rate", "cost_per_hour", "stages"):
        assert key in summary
    assert set(summary["stages"]) == {"preprocess", "alexnet"}
    for stats in summary["stages"].values():
        assert {"utilization", "mean_queue_s", "mean_batch_size"} <= set(stats)
        assert 0 < stats["utilization"] < 1
    assert summary["p50_s"] <= summary["p95_s"] <= summary["p99_s"]


def test_trace_load_rescales_the_bundled_real_trace(tmp_path: Path) -> None:
    from inferline.workload import bundled_trace_path

    out_path = tmp_path / "real.csv"
    code, out, err = run(
        "trace", "load", str(bundled_trace_path()), "--rate", "100", "-o", str(out_path), "--json"
    )
    assert code == 0, err
    info = json.loads(out)
    assert info["mean_rate_qps"] == pytest.approx(100, rel=0.01)
    assert info["gap_cv"] > 5  # the real trace stays bursty


def copy_bundle(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def edit_yaml(path: Path, change: object) -> None:
    data = yaml.safe_load(path.read_text())
    change(data)  # type: ignore[operator]
    path.write_text(yaml.safe_dump(data))


def assert_user_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    flat = " ".join(err.split())
    for needle in needles:
        assert needle in flat, f"{needle!r} not in {flat!r}"


def test_cyclic_pipeline(tmp_path: Path, reference_bundle: Path, trace_file: Path) -> None:
    bundle = copy_bundle(reference_bundle, tmp_path / "b")
    edit_yaml(
        bundle / "pipeline.yaml",
        lambda d: d["edges"].append({"from": "alexnet", "to": "preprocess"}),
    )
    code, _, err = run(
        "simulate",
        str(bundle),
        "--config",
        str(bundle / "configs/balanced.yaml"),
        "--trace",
        str(trace_file),
        "--slo-s",
        "0.1",
    )
    assert_user_error(code, err, "pipeline.yaml", "field 'edges'", "cycle")


def test_unknown_stage_and_bad_probability(
    tmp_path: Path, reference_bundle: Path, trace_file: Path
) -> None:
    bundle = copy_bundle(reference_bundle, tmp_path / "b")
    edit_yaml(bundle / "pipeline.yaml", lambda d: d["edges"][0].update({"to": "resnet"}))
    code, _, err = run(
        "simulate",
        str(bundle),
        "--config",
        str(bundle / "configs/balanced.yaml"),
        "--trace",
        str(trace_file),
        "--slo-s",
        "0.1",
    )
    assert_user_error(code, err, "field 'edges[0].to'", "unknown stage 'resnet'")
    edit_yaml(
        bundle / "pipeline.yaml",
        lambda d: d["edges"][0].update({"to": "alexnet", "probability": 1.3}),
    )
    code, _, err = run(
        "simulate",
        str(bundle),
        "--config",
        str(bundle / "configs/balanced.yaml"),
        "--trace",
        str(trace_file),
        "--slo-s",
        "0.1",
    )
    assert_user_error(code, err, "field 'edges[0].probability'", "1.3")


def test_missing_profile_for_configured_hardware(
    tmp_path: Path, reference_bundle: Path, trace_file: Path
) -> None:
    config = tmp_path / "plan.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "stages": {
                    "preprocess": {"hardware": "v100", "batch_size": 1, "replicas": 1},
                    "alexnet": {"hardware": "k80", "batch_size": 1, "replicas": 1},
                }
            }
        )
    )
    code, _, err = run(
        "simulate",
        str(reference_bundle),
        "--config",
        str(config),
        "--trace",
        str(trace_file),
        "--slo-s",
        "0.1",
    )
    assert_user_error(
        code,
        err,
        "plan.yaml",
        "stages.preprocess.hardware",
        "no profile for stage 'preprocess' on hardware 'v100'",
    )


@pytest.mark.parametrize(
    ("content", "needles"),
    [
        ("arrival_s\n0.5\n0.2\n", ("trace.csv",)),
        ("arrival_s\n", ("trace.csv",)),
        ("", ("trace.csv",)),
    ],
)
def test_bad_trace_files(
    tmp_path: Path, reference_bundle: Path, content: str, needles: tuple[str, ...]
) -> None:
    trace = tmp_path / "trace.csv"
    trace.write_text(content)
    code, _, err = run(
        "simulate",
        str(reference_bundle),
        "--config",
        str(reference_bundle / "configs/balanced.yaml"),
        "--trace",
        str(trace),
        "--slo-s",
        "0.1",
    )
    assert_user_error(code, err, *needles)


def test_unreadable_csv(tmp_path: Path) -> None:
    csv = tmp_path / "log.csv"
    csv.write_text("TIMESTAMP,x\nnot-a-date,1\n")
    code, _, err = run("trace", "load", str(csv), "--rate", "10", "-o", str(tmp_path / "o.csv"))
    assert_user_error(code, err, "log.csv")
    code, _, err = run(
        "trace", "load", str(tmp_path / "absent.csv"), "--rate", "10", "-o", str(tmp_path / "o.csv")
    )
    assert_user_error(code, err, "absent.csv")


def test_bad_arguments(tmp_path: Path) -> None:
    code, _, err = run(
        "trace",
        "gamma",
        "--rate",
        "-5",
        "--cv",
        "1",
        "--duration-s",
        "1",
        "-o",
        str(tmp_path / "t.csv"),
    )
    assert_user_error(code, err, "--rate", "must be positive")


def test_real_process_error_has_no_traceback(tmp_path: Path) -> None:
    """The installed entry point, as a user runs it."""
    exe = Path(sys.executable).parent / "inferline"
    done = subprocess.run(
        [
            str(exe),
            "simulate",
            str(tmp_path),
            "--config",
            "x.yaml",
            "--trace",
            "t.csv",
            "--slo-s",
            "0.1",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and "pipeline.yaml" in done.stderr


def test_a_misspelt_plan_stage_is_named_with_the_file_and_the_known_stages(
    tmp_path: Path, reference_bundle: Path, trace_file: Path
) -> None:
    plan = tmp_path / "misspelt.yaml"
    stages = yaml.safe_load((reference_bundle / "configs/balanced.yaml").read_text())["stages"]
    stages["alexnett"] = stages.pop("alexnet")
    plan.write_text(yaml.safe_dump({"stages": stages}))
    needles = (
        f"{plan}, field 'stages.alexnett'",
        "unknown stage 'alexnett' (did you mean 'alexnet'?)",
        "the pipeline has preprocess, alexnet",
    )
    common = ("--trace", str(trace_file), "--slo-s", "0.15")
    code, _, err = run("simulate", str(reference_bundle), "--config", str(plan), *common)
    assert_user_error(code, err, *needles)
    code, _, err = run("tune-sim", str(reference_bundle), "--plan", str(plan), *common)
    assert_user_error(code, err, *needles)  # was a KeyError traceback


def test_serve_names_the_plan_file_it_cannot_use(tmp_path: Path) -> None:
    bundle = ROOT / "tests" / "data" / "sleepy"
    plan = tmp_path / "serve-plan.yaml"
    plan.write_text(
        yaml.safe_dump(
            {
                "stages": {
                    name: {"hardware": "cpu-1", "batch_size": 1, "replicas": 1}
                    for name in ("parse", "modle", "fallback")
                }
            }
        )
    )
    code, _, err = run("serve", str(bundle), "--config", str(plan), "--port", "0")
    assert_user_error(
        code, err, f"{plan}, field 'stages.modle'", "unknown stage 'modle' (did you mean 'model'?)"
    )
    assert "<plan>" not in err


def test_replay_against_no_server_is_a_usage_error_naming_the_url(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nothing listens on: bound, then closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    trace = tmp_path / "t.csv"
    trace.write_text("arrival_s\n0.0\n0.1\n")
    for extra in ((), ("--model", "m")):  # asking for the model first, or sending at once
        code, _, err = run("replay", url, "--trace", str(trace), "--slo-s", "1", *extra)
        assert_user_error(code, err, f"the server at {url} is not reachable", "refused")
        assert "--model" not in err
