"""The benchmark package's pure parts: renderers, the seed summary, stdout for ``--json``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from rich.console import Console, RenderableType

from inferline.bench.tuner import MARGIN_POLICY, OPT_IN_POLICY, seed_outcome, tables

ROOT = Path(__file__).resolve().parents[2]


def text_of(renderables: list[RenderableType]) -> str:
    console = Console(record=True, width=240)
    for item in renderables:
        console.print(item)
    return console.export_text()


def row(scenario: str, policy: str, misses: int, cost: float = 1.0) -> dict[str, Any]:
    return {
        "pipeline": "p", "scenario": scenario, "policy": policy, "slo_s": 0.3,
        "miss_rate": misses / 1000, "misses": misses, "misses_after_warmup": 0,
        "cost_dollars": cost,
    }  # fmt: skip


def check(scenario: str, policy: str, ten_x: bool, cheaper: bool, **extra: Any) -> dict[str, Any]:
    return {
        "pipeline": "p", "scenario": scenario, "policy": policy, "cg_policy": "cg-autoscale",
        "inferline_miss_le_1pct": True, "cg_over_inferline_misses": 40.0,
        "ten_x_fewer_misses": ten_x, "cost_no_more": cheaper, **extra,
    }  # fmt: skip


def test_tuner_table_renders_an_equal_cost_run_that_was_not_measured() -> None:
    """The opt-in tuner's equal-cost cell when CG's cheapest run fit its budget: neither a
    ratio nor a cheapest cost (None, None). The CLI's second table renderer crashed on it
    (TypeError: unsupported format string passed to NoneType.__format__)."""
    unmeasured = {
        "cg_at_il_cost_over_inferline_misses": None,
        "ten_x_fewer_at_equal_cost": None,
        "cg_cheapest_cost_dollars": None,
    }
    rows = [row("s", "inferline", 1), row("s", OPT_IN_POLICY, 1), row("s", "cg-autoscale", 40)]
    figures = {
        "rows": rows,
        "targets": [check("s", "inferline", True, True)],
        "targets_opt_in": [check("s", OPT_IN_POLICY, True, True, **unmeasured)],
        "targets_margin": [],
        "plots": [],
        "wall_s": 1.25,
        "out_dir": "/somewhere",
    }
    text = text_of(tables(figures))
    assert "Issue 6 targets: inferline+opt-in vs cg-autoscale" in text
    assert "not run" in text
    assert "0.10% / 1.000" in text  # the rows: miss rate / cost per policy
    assert "0 PNG, files in /somewhere, wall 1.2 s" in text


def test_seed_outcome_counts_the_cases_that_meet_the_bar() -> None:
    """Two scenarios: the default tuner meets the bar in one and costs more in the other."""
    rows = [
        row(s, p, m)
        for s in ("a", "b")
        for p, m in (("inferline", 1), (OPT_IN_POLICY, 9), (MARGIN_POLICY, 0), ("cg-autoscale", 40))
    ]
    figures = {
        "rows": rows,
        "targets": [check("a", "inferline", True, True), check("b", "inferline", True, False)],
        "targets_opt_in": [check("a", OPT_IN_POLICY, False, True)],
        "targets_margin": [check("a", MARGIN_POLICY, True, True)],
    }
    got = seed_outcome(figures)
    assert list(got) == ["inferline", OPT_IN_POLICY, MARGIN_POLICY]
    assert (got["inferline"]["met"], got["inferline"]["cases"]) == (1, 2)
    assert got["inferline"]["failed"] == [
        {
            "pipeline": "p",
            "scenario": "b",
            "misses": 1,
            "cg_misses": 40,
            "cost_no_more": False,
            "miss_le_1pct": True,
        }
    ]
    assert got[OPT_IN_POLICY]["met"] == 0 and got[OPT_IN_POLICY]["failed"][0]["misses"] == 9
    assert got[MARGIN_POLICY] == {"met": 1, "cases": 1, "all_miss_le_1pct": True, "failed": []}


def test_seed_summary_renders_as_markdown() -> None:
    summary = {
        "seeds": [0],
        "plan_margin": 0.3,
        "wall_s": 3.0,
        "per_seed": [{"seed": 0, "policies": {"inferline": {
            "met": 1, "cases": 2, "all_miss_le_1pct": True,
            "failed": [{"pipeline": "p", "scenario": "b", "misses": 1, "cg_misses": 40,
                        "cost_no_more": False, "miss_le_1pct": True}],
        }}}],
    }  # fmt: skip
    text = text_of(tables(summary))
    assert "1 of 2" in text and "seed 0 p b 1/40 (costs more)" in text


def test_ray_tables_draw_the_committed_figures() -> None:
    """The renderer on a full run's figures (benchmarks/results/ray/ray.json): no Ray needed."""
    from inferline.bench import ray

    figures = json.loads((ROOT / "benchmarks" / "results" / "ray" / "ray.json").read_text())
    text = text_of(list(ray.tables(figures)))
    for label in ("Estimator", "embedded engine", "Ray backend", "Ray Serve app"):
        assert label in text
    assert "InferLine tuner" in text and "Ray Serve autoscaler" in text
    assert f"wall time {figures['wall_s']:.0f} s" in text


def test_json_output_keeps_third_party_output_off_stdout() -> None:
    """Python prints and a child process writing to file descriptor 1 inside the block go to
    stderr; the JSON printed after it is all that stdout holds."""
    program = (
        "import os, subprocess, sys\n"
        "from inferline.cli._common import print_json, stdout_to_stderr\n"
        "with stdout_to_stderr():\n"
        "    print('a library prints')\n"
        "    os.write(1, b'a C library writes\\n')\n"
        "    child = [sys.executable, '-c', 'print(\"a child process logs\")']\n"
        "    subprocess.run(child, check=True)\n"
        "print_json({'answer': 42})\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True
    )
    assert json.loads(done.stdout) == {"answer": 42}
    for line in ("a library prints", "a C library writes", "a child process logs"):
        assert line in done.stderr
