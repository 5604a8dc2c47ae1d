"""Live calibration on a real served engine: after traffic, /metrics has the estimated and
measured P99 gauges and a speed ratio per stage, and ``inferline calibrate`` writes a
profiles.yaml that loads.

The stages of tests/data/sleepy sleep (12 ms + 2 ms per query for ``model``), so their
times hardly depend on how busy this machine is; the profiles given to the engine claim
``model`` takes half that, and calibration must see it run about twice its profile.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner, Result

import inferline as il
from inferline.cli import app
from inferline.engine import replay
from inferline.engine.process import EngineProcess, start_engine
from inferline.pipeline import load_pipeline
from inferline.profiles import load_hardware, load_profiles

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

SLEEPY = Path(__file__).resolve().parents[1] / "data" / "sleepy"
sys.path.insert(0, str(SLEEPY))
from sleepy_stages import samples  # noqa: E402


def _point(b: int, predict_s: float) -> dict[str, Any]:
    return {
        "batch_size": b,
        "median_s": predict_s + 0.0004,
        "p99_s": predict_s * 1.2 + 0.0004,
        "predict_median_s": predict_s,
    }


def sleepy_bundle(folder: Path) -> Path:
    """tests/data/sleepy with hand-written profiles: ``fallback`` as it sleeps, ``model``
    at half its real time, ``parse`` about right."""
    shutil.copytree(SLEEPY, folder, ignore=shutil.ignore_patterns("__pycache__"))
    spec = yaml.safe_load((folder / "pipeline.yaml").read_text())
    spec.pop("paths", None)
    (folder / "pipeline.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    sizes = (1, 2, 4, 8)
    curves = {
        "parse": lambda b: 0.0002,  # really ~10 µs: far off, but by too little to warn
        "model": lambda b: (0.012 + 0.002 * b) / 2,
        "fallback": lambda b: 0.024 + 0.004 * b,
    }
    profiles = {
        "profiles": [
            {"stage": s, "hardware": "cpu-1", "points": [_point(b, f(b)) for b in sizes]}
            for s, f in curves.items()
        ]
    }
    (folder / "profiles.yaml").write_text(yaml.safe_dump(profiles, sort_keys=False))
    plan = {
        "stages": {
            "parse": {"hardware": "cpu-1", "batch_size": 4, "replicas": 1},
            "model": {"hardware": "cpu-1", "batch_size": 4, "replicas": 2},
            "fallback": {"hardware": "cpu-1", "batch_size": 4, "replicas": 1},
        }
    }
    (folder / "plan.yaml").write_text(yaml.safe_dump(plan, sort_keys=False))
    return folder


def calibrate(url: str, *options: str) -> Result:
    """``inferline calibrate URL OPTIONS`` (in this process; the engine is a real one)."""
    return CliRunner().invoke(app, ["calibrate", url, *options])


def _wait_for_estimate(engine: EngineProcess, queries: int, timeout_s: float) -> dict[str, Any]:
    """The calibration status once a refresh has seen all ``queries`` answered."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        section: dict[str, Any] = engine.status()["calibration"]
        if section["pipeline"].get("queries") == queries:
            return section
        time.sleep(0.2)
    raise AssertionError(f"no live estimate within {timeout_s} s:\n{engine.log()}")


def test_live_calibration_on_a_served_engine(tmp_path: Path) -> None:
    bundle = sleepy_bundle(tmp_path / "sleepy")
    # the model also profiled on two threads, which the plan does not serve it on
    spec = yaml.safe_load((bundle / "profiles.yaml").read_text())
    spec["profiles"].append(
        {
            "stage": "model",
            "hardware": "cpu-2",
            "points": [_point(b, (0.008 + 0.001 * b) / 2) for b in (1, 2, 4, 8)],
        }
    )
    (bundle / "profiles.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    rng = np.random.default_rng(3)
    # 40 q/s Poisson, 10 s: enough answers that the P99s compared below are not one query's
    arrivals = np.cumsum(rng.exponential(1 / 40.0, 400))
    bodies = [json.dumps(b).encode() for b in samples(64, 1)]
    with start_engine(
        bundle,
        bundle / "plan.yaml",
        "--slo-s",
        "0.5",
        "--calibration-interval-s",
        "0.5",
        "--drift-sustain-s",
        "0",
    ) as engine:
        result = replay(engine.url, arrivals, bodies, slo_s=0.5, model="sleepy")
        assert (np.asarray(result.status) == 200).all()
        # every answer says which stages it visited: the engine's real routing
        assert len(result.paths) == len(arrivals)
        for path in result.paths:
            assert path is not None and path.split("+")[0] == "parse"
            assert set(path.split("+")) <= {"parse", "model", "fallback"}
        section = _wait_for_estimate(engine, len(arrivals), timeout_s=15.0)
        _, metrics = engine.request("GET", "/metrics")
        human = calibrate(engine.url, "-o", str(tmp_path / "calibrated.yaml"))
        on_work = calibrate(engine.url, "--cpu-work", "-o", str(tmp_path / "work.yaml"))
        as_json = calibrate(engine.url, "--json")
        from_python = il.calibrate(engine.url)
        work_from_python = il.calibrate(engine.url, cpu_work=True)
        log = engine.log()
    ratios = {s: v["speed_ratio"] for s, v in section["stages"].items()}
    print(f"\nspeed ratios {ratios}; pipeline {section['pipeline']}")
    assert 1.5 < ratios["model"] < 3.0  # really ~2: it sleeps twice its profile
    assert 0.8 < ratios["fallback"] < 1.6
    assert section["stages"]["model"]["drifted"]
    assert "stage 'model' runs at" in log
    assert "stage 'fallback' runs at" not in log and "stage 'parse' runs at" not in log
    assert section["pipeline"]["queries"] == len(arrivals) == 400
    assert (
        section["pipeline"]["estimated_p99_s"] > section["pipeline"]["estimated_uncalibrated_p99_s"]
    )
    for gauge in (
        "inferline_estimated_p99_seconds ",
        "inferline_measured_p99_seconds ",
        "inferline_estimated_shared_p99_seconds ",
        'inferline_stage_speed_ratio{stage="model"} ',
        'inferline_stage_speed_drift_warnings_total{stage="model"} 1.0',
    ):
        assert gauge in metrics, metrics

    # the model sleeps: its CPU work is next to nothing, so the estimate on shared cores
    # runs far under the measured P99; 400 queries are too few for a tail bias
    shared = section["pipeline"]["estimated_shared_p99_s"]
    assert shared is not None and shared < section["pipeline"]["measured_p99_s"]
    assert section["pipeline"]["tail_bias"] is None and "inferline_tail_bias " not in metrics
    assert human.exit_code == 0, human.output
    assert "ratio" in human.stdout and "P99 measured" in human.stdout
    assert "on CPU work with the cores shared" in " ".join(human.stdout.split())
    assert "model" in human.stdout
    hardware = load_hardware(bundle / "hardware.yaml")
    calibrated = load_profiles(
        tmp_path / "calibrated.yaml", hardware, ("parse", "model", "fallback")
    )
    given = load_profiles(bundle / "profiles.yaml", hardware)
    # the model's calibrated batches of 4 take about what it sleeps (20 ms), not 10
    assert calibrated.get("model", "cpu-1").latency_s(4) > 1.5 * given.get(
        "model", "cpu-1"
    ).latency_s(4)
    # on the hardware it was not served on, at the speed it showed where it was served,
    # and two threads never faster than the one it was served on
    assert calibrated.get("model", "cpu-2").latency_s(4) > 1.5 * given.get(
        "model", "cpu-2"
    ).latency_s(4)
    assert calibrated.get("model", "cpu-2").latency_s(4) >= 0.99 * calibrated.get(
        "model", "cpu-1"
    ).latency_s(4)
    assert "calibrated speed where served" in (tmp_path / "calibrated.yaml").read_text()

    # the CPU work per batch: the stages sleep, so far less than they take served
    assert on_work.exit_code == 0, on_work.output
    assert "CPU work per batch" in (tmp_path / "work.yaml").read_text()
    work = load_profiles(tmp_path / "work.yaml", hardware, ("parse", "model", "fallback"))
    assert work.get("model", "cpu-1").latency_s(4) < 0.5 * calibrated.get(
        "model", "cpu-1"
    ).latency_s(4)
    assert work_from_python.get("model", "cpu-1").latency_s(4) < 0.5 * calibrated.get(
        "model", "cpu-1"
    ).latency_s(4)

    assert from_python.get("model", "cpu-1").latency_s(4) > 1.5 * given.get(
        "model", "cpu-1"
    ).latency_s(4)
    # re-planning starts from what the machine does: the slower model needs more capacity
    pipeline = load_pipeline(bundle / "pipeline.yaml")
    trace = il.gamma_trace(60.0, 1.0, 30.0, seed=2)
    before = il.plan(pipeline, given, trace, 0.15)
    after = il.plan(pipeline, calibrated, trace, 0.15)
    assert after.cost_per_hour >= before.cost_per_hour
    assert after.config.stages["model"].replicas >= before.config.stages["model"].replicas

    assert as_json.exit_code == 0, as_json.output
    report = json.loads(as_json.stdout)
    assert report["model"] == "sleepy"
    assert report["stages"]["model"]["ratio"] == pytest.approx(ratios["model"], rel=0.3)
    assert report["pipeline"]["measured_p99_s"] > 0


def test_profile_in_place_writes_the_served_speeds(tmp_path: Path) -> None:
    """``inferline profile --in-place`` on the sleepy bundle: the model's profile, given
    at half its real time, comes back at its real time, for the sizes the load produced
    and (scaled) for those it did not."""
    bundle = sleepy_bundle(tmp_path / "sleepy")
    out = tmp_path / "in-place.yaml"
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from inferline.cli import main; main()",
            "profile",
            str(bundle),
            "--in-place",
            "--rates-qps",
            "15,45",
            "--duration-s",
            "3",
            "-o",
            str(out),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    print(f"\nin place: {[(r['rate_qps'], r['p99_s']) for r in report['runs']]}")
    assert report["in_place"] and report["rates_qps"] == [15.0, 45.0]
    assert [r["errors"] for r in report["runs"]] == [0, 0]
    assert report["capacity_qps"] > 45.0
    model = report["stages"]["model"]
    assert 1.5 < model["ratio"] < 3.0
    assert {s["batch_size"] for s in model["batch_sizes"]} >= {1}
    hardware = load_hardware(bundle / "hardware.yaml")
    taken = load_profiles(out, hardware, ("parse", "model", "fallback"))
    given = load_profiles(bundle / "profiles.yaml", hardware)
    entry = taken.get("model", "cpu-1")
    assert "in-place" in entry.source and "15.0, 45.0 q/s" in entry.source
    assert "Taken in place" in out.read_text()
    # 180 answered queries, fewer than MIN_FRONTEND_QUERIES: the profiled per-query
    # overhead is kept, and the header does not claim a measured one
    assert taken.per_query_overhead_s == given.per_query_overhead_s
    assert "engine_overhead: the front-end" not in out.read_text()
    for b in (1, 8):  # 8 is beyond the plan's batches: the isolated point, scaled
        assert entry.latency_s(b) > 1.5 * given.get("model", "cpu-1").latency_s(b)
    assert taken.get("fallback", "cpu-1").latency_s(4) == pytest.approx(
        given.get("fallback", "cpu-1").latency_s(4), rel=0.35
    )
