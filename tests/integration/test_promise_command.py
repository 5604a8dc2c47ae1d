"""``inferline bench promise`` as a user runs it, on the engine demo's text bundle (real
stages, real sample payloads, real engines on 127.0.0.1), with short settings: the
readable tables, ``--json`` alone on stdout, ``promise.json`` in ``-o``, and exit 3 when
a pipeline cannot fit the machine at all."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
INFERLINE = str(Path(sys.executable).parent / "inferline")
DEMO = str(ROOT / "examples" / "engine-demo" / "text")

pytestmark = pytest.mark.integration

SHORT = (
    "--duration-s", "2", "--repeats", "1", "--max-rate", "100",
    "--planning-duration-s", "3", "--warmup-s", "0.5", "--loads", "0.8",
    "--calibration-s", "3", "--priming-s", "2",
)  # fmt: skip


def promise(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [INFERLINE, "bench", "promise", DEMO, *SHORT, *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=240,
        env={**os.environ, "COLUMNS": "200"},
    )


def test_readable_output_has_capacity_the_promise_and_the_ramp(tmp_path: Path) -> None:
    done = promise("--ramp-s", "2", "--ramp-hold-s", "0.5", "-o", str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    text = " ".join(done.stdout.split())  # titles wrap at the console's width
    assert "does the promise hold?" in text and "text-demo" in text
    assert "the promise, served" in text and "0.8×" in text
    assert "the Tuner against the fixed plan" in text and "fixed" in text and "tuned" in text
    assert "PASS" in text or "FAIL" in text
    written = json.loads((tmp_path / "promise.json").read_text())
    bundle = written["bundles"][0]
    assert bundle["capacity_qps"] > 0 and bundle["slo_s"] > 0
    # planned from what the engine calibrated serving a first plan (the default)
    first = bundle["calibration"]
    assert first["measured_p99_s"] > 0 and first["measured_miss_rate"] is not None
    # the model plans are judged by, calibrated on that serve itself, against it
    assert first["calibrated_shared_p99_s"] > 0
    assert first["measured_over_calibrated"] == pytest.approx(
        first["measured_p99_s"] / first["calibrated_shared_p99_s"]
    )
    # plans are corrected by the tail bias (clamped to [1, 1.5]) measured on a second
    # serve, of a plan made from the calibrated profiles (the first serve's when none fits)
    from inferline.planner import tail_bias

    second = first["bias_serve"]
    if "measured_p99_s" in second:
        assert second["plan_threads"] <= bundle["pool_threads"]
        assert second["slo_s"] > 0 and second["measured_miss_rate"] is not None
        assert first["tail_bias"] == tail_bias(
            second["measured_p99_s"], second["calibrated_shared_p99_s"]
        )
        if second["measured_over_calibrated"] is not None:
            assert "a calibrated plan's" in text
    else:
        assert first["tail_bias"] == tail_bias(
            first["measured_p99_s"], first["calibrated_shared_p99_s"]
        )
    assert first["plan_threads"] <= bundle["pool_threads"]
    assert first["latency_vs_isolated"] and all(
        r > 0 for r in first["latency_vs_isolated"].values()
    )
    assert "calibrated serving" in text and "err uncal" in text
    level = bundle["levels"][0]
    # planned with the margin: the estimate keeps 15 % of the SLO as headroom
    assert "planned with margin 0.15" in text and written["settings"]["margin"] == 0.15
    assert level["planned_p99_s"] <= level["slo_s"] * (1 - 0.15) + 1e-12
    # … for the estimate × the tail bias; the error judged is the live estimate's: the
    # run's own CPU work on shared cores × the ratio the plan showed on its priming window
    assert level["tail_bias"] == first["tail_bias"]
    assert level["planned_corrected_p99_s"] <= level["slo_s"] * (1 - 0.15) + 1e-12
    run = level["runs"][0]
    assert run["corrected_p99_s"] == pytest.approx(
        run["calibrated_shared_p99_s"] * run["tail_bias"]
    )
    assert level["error_judged"] == "live" and "err live" in text
    assert run["live_ratio"] > 0 and run["measured_over_shared"] == pytest.approx(
        run["measured_p99_s"] / run["calibrated_shared_p99_s"]
    )
    assert run["live_p99_s"] == pytest.approx(run["calibrated_shared_p99_s"] * run["live_ratio"])
    assert level["isolated_p99_s"] > 0  # the bundle's own profiles' estimate, beside
    # every plan fitted the pool, and the engine never ran more threads than it allows
    assert level["plan_threads"] <= bundle["pool_threads"]
    assert level["max_threads"] <= bundle["pool_threads"] == written["machine"]["max_threads"]
    assert level["runs"][0]["measured"]["sent"] > 0
    assert level["estimated_p99_s"] > 0 and level["measured_p99_s"] > 0
    # planned again from what the engine calibrated; a different plan was served too
    again = level["replanned"]
    if again["feasible"]:
        assert "planned again from the profiles the engine calibrated" in text
        assert again["plan_threads"] <= bundle["pool_threads"]
        if not again["same_plan"]:
            assert again["runs"][0]["measured"]["sent"] > 0
    ramp = bundle["ramp"]
    assert ramp["fixed"]["policy"] is None and ramp["fixed"]["cost_usd"] > 0
    if not ramp["tuned"]["feasible"]:
        # a 3-s planning trace at the low rate is ~120 queries: its P99 is one query's,
        # and with the tail bias on top its plan can miss where the peak's fits
        assert "no plan fits" in text
        return
    assert ramp["tuned"]["policy"] and ramp["tuned"]["cost_usd"] > 0
    # the engine caps the Tuner at its own pool: 8 threads a core, as asked here
    assert ramp["tuned"]["max_threads"] <= bundle["pool_threads"]


def test_json_is_the_only_thing_on_stdout() -> None:
    done = promise("--no-ramp", "--no-replan", "--plan-from", "isolated", "--margin", "0", "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout)  # exactly one JSON object
    bundle = figures["bundles"][0]
    assert bundle["pipeline"] == "text-demo" and "ramp" not in bundle
    assert "calibration" not in bundle and figures["settings"]["plan_from"] == "isolated"
    assert figures["settings"]["margin"] == 0.0
    level = bundle["levels"][0]
    assert level["isolated_p99_s"] is None  # planned from those: no second estimate
    assert "replanned" not in level
    assert set(level) >= {"estimated_p99_s", "calibrated_p99_s", "measured_p99_s", "passed"}
    assert isinstance(figures["passed"], bool) and figures["written"] == []


def test_a_pipeline_that_cannot_fit_the_machine_exits_3_and_says_why() -> None:
    done = subprocess.run(
        [INFERLINE, "bench", "promise", DEMO, "--machine", "cores=1,fit=threads",
         "--no-ramp", "--json"],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert done.returncode == 3, done.stderr[-3000:]
    bundle = json.loads(done.stdout)["bundles"][0]
    assert (
        "infeasible on this machine" in bundle["infeasible"]
        and "fit=threads" in bundle["infeasible"]
    )


def test_profile_here_measures_a_copy_and_leaves_the_bundle_alone(tmp_path: Path) -> None:
    from inferline import load_bundle
    from inferline.bench.promise import profile_copy
    from inferline.profiler import ProfileOptions

    source = Path(DEMO)
    before = {p.name: p.read_bytes() for p in source.iterdir() if p.is_file()}
    options = ProfileOptions(force=True, max_batch=2, samples=8, overhead=False)
    copy, figures = profile_copy(source, tmp_path / "bundle", options)
    assert copy == tmp_path / "bundle" and (copy / "profiles.yaml").is_file()
    assert {p.name: p.read_bytes() for p in source.iterdir() if p.is_file()} == before
    assert (copy / "profiles.yaml").read_bytes() != before["profiles.yaml"]  # measured anew
    ratios = figures["latency_vs_bundle"]
    stages = load_bundle(copy).pipeline.stage_names
    assert ratios and all(key.split(" on ")[0] in stages for key in ratios)
    assert all(r > 0 for r in ratios.values()) and figures["wall_s"] > 0
