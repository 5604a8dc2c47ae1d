"""``inferline profile`` on real processes: files, cache reuse, errors, no leftover processes.

Uses the small numpy cascade in tests/data/cascade (copied to a temporary folder, since
profiling writes into the bundle), with few batch sizes and repetitions to stay quick.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from inferline import load_bundle, simulate
from inferline.pipeline import load_config
from inferline.profiler import (
    OverheadOptions,
    ProfileOptions,
    ProfilerError,
    RepetitionPolicy,
    profile_bundle,
)
from inferline.workload import gamma_trace

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

DATA = Path(__file__).resolve().parents[1] / "data"
QUICK = RepetitionPolicy(min_reps=5, max_reps=5, min_time_s=0.0, warmup=2)


def inferline(*args: str, timeout_s: float = 150.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from inferline.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def children() -> list[int]:
    """Live processes whose parent is this test process."""
    me = str(os.getpid())
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == me and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(int(entry.name))
    return found


@pytest.fixture
def cascade(tmp_path: Path) -> Path:
    folder = tmp_path / "cascade"
    shutil.copytree(DATA / "cascade", folder)
    return folder


def test_profile_writes_profiles_and_paths_then_reuses_them(cascade: Path) -> None:
    args = (
        "profile",
        str(cascade),
        "--max-batch",
        "4",
        "--samples",
        "120",
        "--reps",
        "5",
        "--min-time-s",
        "0",
        "--overhead-rate",
        "40",
        "--overhead-duration-s",
        "2",
        "--json",
    )
    first = inferline(*args)
    assert first.returncode == 0, first.stderr
    report: dict[str, Any] = json.loads(first.stdout)
    assert {(p["stage"], p["hardware"]) for p in report["profiles"]} == {
        (s, h) for s in ("featurize", "small", "large") for h in ("cpu-1", "cpu-2")
    }
    assert all(p["measured_batch_sizes"] == [1, 2, 4] for p in report["profiles"])
    edge = next(e for e in report["edges"] if e["to"] == "large")
    assert 0.3 < edge["probability"] < 0.7  # the real outputs decide: about half
    assert report["engine_overhead"]["per_query_s"] > 0

    bundle = load_bundle(cascade)  # pipeline.yaml names paths.yaml
    assert bundle.paths is not None and bundle.paths.samples == 120
    assert bundle.pipeline.edges[1].probability == pytest.approx(edge["probability"])
    assert bundle.profiles.overhead is not None
    large = bundle.profiles.get("large", "cpu-1")
    assert large.batch_sizes == (1, 2, 4) and large.points[0].reps == 5
    predict = large.points[0].predict_median_s
    assert predict is not None and large.points[0].median_s > predict > 0  # IPC is in
    plan = cascade / "plan.yaml"
    plan.write_text(
        yaml.safe_dump(
            {
                "stages": {
                    s: {"hardware": "cpu-1", "batch_size": 4, "replicas": 1}
                    for s in bundle.pipeline.stage_names
                }
            }
        )
    )
    result = simulate(
        bundle.pipeline, bundle.profiles, load_config(plan), gamma_trace(20, 1, 30, seed=0)
    )
    assert result.p50_s > 0

    started = time.monotonic()
    again = inferline(*args)
    assert again.returncode == 0, again.stderr
    second = json.loads(again.stdout)
    assert all(p["measured_batch_sizes"] == [] for p in second["profiles"])
    assert all(p["reused_batch_sizes"] == [1, 2, 4] for p in second["profiles"])
    assert second["paths_reused"] and second["engine_overhead"]["reused"]
    assert second["profiles"] == [
        dict(p, measured_batch_sizes=[], reused_batch_sizes=[1, 2, 4]) for p in report["profiles"]
    ]
    assert time.monotonic() - started < 30

    (cascade / "cascade_stages.py").write_text(
        (cascade / "cascade_stages.py").read_text() + "\n# changed\n"
    )
    changed = inferline(*args[:-1], "--hardware", "cpu-1", "--no-overhead", "--json")
    assert changed.returncode == 0, changed.stderr
    third = json.loads(changed.stdout)
    assert all(p["measured_batch_sizes"] == [1, 2, 4] for p in third["profiles"])
    assert "not asked for" in third["skipped_hardware"]["cpu-2"]


def test_profile_without_samples_is_a_clear_error(cascade: Path) -> None:
    spec = yaml.safe_load((cascade / "pipeline.yaml").read_text())
    del spec["samples"]
    (cascade / "pipeline.yaml").write_text(yaml.safe_dump(spec))
    done = inferline("profile", str(cascade))
    assert done.returncode == 2
    assert "samples" in done.stderr and "Traceback" not in done.stderr


BAD_STAGES = """
from inferline.engine import StageModel

class Source(StageModel):
    def predict(self, inputs):
        return [1 for _ in inputs]

class Raises(StageModel):
    def predict(self, inputs):
        raise ValueError("this model is broken")

class WrongCount(StageModel):
    def predict(self, inputs):
        return [0] * (len(inputs) + 1)

class BadSetup(StageModel):
    def setup(self):
        raise RuntimeError("weights not found")

    def predict(self, inputs):
        return inputs

def samples(n, seed):
    return [{"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [float(i)]}]}
            for i in range(n)]
"""


def bad_bundle(folder: Path, second_model: str) -> Path:
    folder.mkdir()
    (folder / "bad_stages.py").write_text(BAD_STAGES)
    (folder / "hardware.yaml").write_text(
        yaml.safe_dump({"hardware": [{"name": "cpu-1", "price_per_hour": 0.04}]})
    )
    (folder / "pipeline.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "bad",
                "samples": "bad_stages:samples",
                "stages": [
                    {"name": "source", "model": "bad_stages:Source"},
                    {"name": "culprit", "model": second_model},
                ],
                "edges": [{"from": "source", "to": "culprit"}],
            }
        )
    )
    return folder


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("bad_stages:Raises", "ValueError: this model is broken"),
        ("bad_stages:WrongCount", "predict returned 5 outputs for a batch of 4"),
        ("no_such_module:Model", "No module named 'no_such_module'"),
        ("bad_stages:Missing", "has no attribute 'Missing'"),
        ("bad_stages:BadSetup", "RuntimeError: weights not found"),
    ],
)
def test_a_broken_stage_is_named_and_leaves_no_process(
    tmp_path: Path, model: str, message: str
) -> None:
    folder = bad_bundle(tmp_path / "bad", model)
    before = set(children())
    options = ProfileOptions(
        samples=4, max_batch=2, repetitions=QUICK, overhead=False, sample_chunk=4
    )
    with pytest.raises(ProfilerError, match=message) as info:
        profile_bundle(folder, options)
    assert "stage 'culprit'" in str(info.value) and model in str(info.value)
    assert info.value.stage == "culprit" and info.value.exit_code == 2
    assert set(children()) <= before
    assert processes_mentioning(str(folder)) == []
    assert not (folder / "profiles.yaml").exists()


def test_the_command_line_prints_one_paragraph_and_exits_2(tmp_path: Path) -> None:
    folder = bad_bundle(tmp_path / "bad", "bad_stages:Raises")
    done = inferline("profile", str(folder), "--samples", "4", "--no-overhead")
    assert done.returncode == 2
    assert "stage 'culprit' (bad_stages:Raises)" in done.stderr
    assert "Traceback" not in done.stderr
    assert processes_mentioning(str(folder)) == []


def test_overhead_options_reach_the_measurement(cascade: Path) -> None:
    report = profile_bundle(
        cascade,
        ProfileOptions(
            samples=40,
            max_batch=1,
            hardware=("cpu-1",),
            repetitions=QUICK,
            overhead_options=OverheadOptions(rates_qps=(80.0, 30.0), duration_s=1.5, warmup_s=0.3),
        ),
    )
    overhead = report.overhead
    assert overhead is not None and not report.overhead_reused
    details = report.overhead_details
    assert [r["rate_qps"] for r in details["rates"]] == [30.0, 80.0]  # sorted
    assert 20 <= details["rates"][0]["queries"] <= 80
    assert [rate for rate, _ in overhead.per_query_by_rate] == [30.0, 80.0]
    assert overhead.per_query_percentiles_s == overhead.per_query_by_rate[0][1]
    assert overhead.per_query_percentiles_s[-1] >= overhead.per_query_s
    assert "30, 80 q/s" in overhead.source
    # the serve process's CPU per query: some work per query, well under a core per query
    cpu = [r["frontend_cpu_s_per_query"] for r in details["rates"]]
    assert all(c is not None and 1e-5 < c < 0.02 for c in cpu), cpu
    assert overhead.frontend_cpu_s_per_query is not None
    assert 1e-5 < overhead.frontend_cpu_s_per_query < 0.02


def test_a_changed_import_path_or_samples_function_is_profiled_again(tmp_path: Path) -> None:
    """The cache keys on what a stage's import path names, not only its module's source:
    pointing a stage at another class of the same module, or the bundle at another samples
    function, measures again (both were reused before)."""
    folder = tmp_path / "sleepy"
    shutil.copytree(DATA / "sleepy", folder)
    with (folder / "sleepy_stages.py").open("a") as f:
        f.write("\n\nclass FallbackTwin(Fallback):\n    pass\n")
    (folder / "more_samples.py").write_text(
        "from sleepy_stages import samples\n\n\n"
        "def shifted(n, seed):\n    return samples(n, seed + 1)\n"
    )
    options = ProfileOptions(
        samples=24, max_batch=2, hardware=("cpu-1",), repetitions=QUICK, overhead=False
    )

    def measured() -> dict[str, tuple[int, ...]]:
        report = profile_bundle(folder, options)
        return {r.stage: r.measured_sizes for r in report.profiles} | {
            "paths": () if report.paths_reused else (1,)
        }

    everything = {"parse": (1, 2), "model": (1, 2), "fallback": (1, 2), "paths": (1,)}
    assert measured() == everything
    assert set(measured().values()) == {()}  # unchanged: all reused

    edit_pipeline = yaml.safe_load((folder / "pipeline.yaml").read_text())
    edit_pipeline["stages"][2]["model"] = "sleepy_stages:FallbackTwin"
    (folder / "pipeline.yaml").write_text(yaml.safe_dump(edit_pipeline))
    assert measured() == {"parse": (), "model": (), "fallback": (1, 2), "paths": (1,)}

    edit_pipeline["samples"] = "more_samples:shifted"
    (folder / "pipeline.yaml").write_text(yaml.safe_dump(edit_pipeline))
    assert measured() == everything  # other inputs: other timings and paths
