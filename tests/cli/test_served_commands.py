"""Readable output of the commands that start processes: profile, validate, serve, replay.

On tests/data/sleepy (stages that sleep, so their times hold on a busy machine), with
quick settings. ``serve`` runs as a user runs it, in its own process; the others run in
this process (they start worker and engine processes themselves).
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from inferline.cli import app
from inferline.workload import gamma_trace, save_trace

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

SLEEPY = Path(__file__).resolve().parents[1] / "data" / "sleepy"
runner = CliRunner()


def invoke(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    assert "Traceback" not in result.stderr, result.stderr
    return result.exit_code, result.stdout, result.stderr


def test_profile_then_validate_print_their_tables(tmp_path: Path) -> None:
    bundle = tmp_path / "sleepy"
    shutil.copytree(SLEEPY, bundle)
    code, out, err = invoke(
        "profile",
        str(bundle),
        "--hardware",
        "cpu-1",
        "--max-batch",
        "2",
        "--samples",
        "30",
        "--reps",
        "5",
        "--min-time-s",
        "0",
        "--overhead-rate",
        "30",
        "--overhead-duration-s",
        "1",
    )
    assert code == 0, err
    assert "routing of 30 sample queries (seed 0)" in out
    assert re.search(r"parse → model │\s+1\.000 │\s+30 / 30", out)
    assert re.search(r"model → fallback │\s+0\.\d{3} │\s+\d+ / 30", out)
    assert "median batch latency, ms" in out
    for stage in ("parse", "model", "fallback"):
        assert re.search(rf"{stage}\s+│ cpu-1\s+│\s+1 │\s+[\d.]+\* │\s+[\d.]+\* │", out)
    assert "skipped hardware cpu-2: not asked for (--hardware)" in out
    assert re.search(r"engine overhead: \d+ µs per batch, [\d.]+ ms per query", out)
    assert "wrote" in out and (bundle / "profiles.yaml").exists()

    trace = tmp_path / "trace.csv"
    save_trace(gamma_trace(10.0, 1.0, 40.0, seed=2), trace)
    code, out, err = invoke(
        "validate",
        str(bundle),
        "--trace",
        str(trace),
        "--slo-s",
        "0.3",
        "--hardware",
        "cpu-1",
        "--utilisation",
        "0.3",
        "--duration-s",
        "4",
        "--warmup-s",
        "1",
        "--no-pin",
    )
    assert code == 0, err
    assert "plan for sleepy" in out
    for stage in ("parse", "model", "fallback"):
        assert re.search(rf"{stage} │\s+cpu-1 │\s+\d+ │\s+\d+ │", out)
    assert "estimated vs measured on the real engine (SLO 300 ms)" in " ".join(out.split())
    assert re.search(r"U=0", out)  # one run row at the asked utilisation


class Served:
    """``inferline serve`` in its own process; its stderr is read line by line."""

    def __init__(self, bundle: Path, plan: Path) -> None:
        self.process = subprocess.Popen(
            [
                *(sys.executable, "-c", "from inferline.cli import main; main()", "serve"),
                *(str(bundle), "--config", str(plan), "--port", "0", "--slo-s", "0.5"),
            ],
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.process.stderr is not None
        self.lines: list[str] = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = self.process.stderr.readline()
            if not line:
                break
            self.lines.append(line)
            match = re.search(r"on (http://127\.0\.0\.1:\d+)", line)
            if match:
                self.url = match.group(1)
                return
        self.process.kill()
        raise AssertionError("serve did not start:\n" + "".join(self.lines))

    def stop(self) -> tuple[int, str]:
        """SIGINT (Ctrl-C), then its exit code and everything it printed on stderr."""
        self.process.send_signal(signal.SIGINT)
        _, rest = self.process.communicate(timeout=60)
        return self.process.returncode, "".join(self.lines) + rest


def test_serve_and_replay_print_readable_output(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        yaml.safe_dump(
            {
                "stages": {
                    s: {"hardware": "cpu-1", "batch_size": 4, "replicas": 1}
                    for s in ("parse", "model", "fallback")
                }
            }
        )
    )
    trace = tmp_path / "trace.csv"
    save_trace(gamma_trace(20.0, 1.0, 0.5, seed=4), trace)
    sent = len(trace.read_text().split()) - 1
    served = Served(SLEEPY, plan)
    try:
        assert served.lines[-1].startswith(
            f"serving 'sleepy' (3 stages, 3 replicas) on {served.url}  (SLO 0.5 s;"
        )
        results = tmp_path / "results.csv"
        code, out, err = invoke(
            "replay",
            served.url,
            "--trace",
            str(trace),
            "--slo-s",
            "1",
            "--input",
            "x:FP64:[0.9]",
            "-o",
            str(results),
        )
        assert code == 0, err
        assert f"replaying {sent} queries" in err
        assert "replay of trace.csv (SLO 1000 ms)" in out
        assert re.search(rf"│\s+{sent} │\s+{sent} │\s+0 │\s+[\d.]+ │\s+[\d.]+ │\s+0\.00% │", out)
        assert "per-query results" in out and len(results.read_text().splitlines()) == sent + 1

        # Every query fails (the model wants FP64; the default body is FP32): exit 1.
        code, out, err = invoke("replay", served.url, "--trace", str(trace), "--slo-s", "1")
        assert code == 1
        assert re.search(rf"│\s+{sent} │\s+0 │\s+{sent} │\s+- │\s+- │\s+100\.00% │", out)
        assert f"non-200 answers by status: 400: {sent}" in out
        flat = " ".join(err.split())
        assert f"error: all {sent} queries failed (answers by status: 400: {sent})" in flat
        assert "the model expects FP64" in flat
        code, out, err = invoke(
            "replay", served.url, "--trace", str(trace), "--slo-s", "1", "--json"
        )
        assert code == 1 and json.loads(out)["ok"] == 0 and "all" in err
    finally:
        code, printed = served.stop()
    assert code == 0, printed
    assert "draining: waiting for in-flight queries, then stopping the replicas" in printed
