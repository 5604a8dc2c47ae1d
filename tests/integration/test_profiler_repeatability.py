"""Profiling the same stage twice gives about the same medians (SPEC §4; docs/profiler.md).

The figure is printed (``pytest -s``); the assertion is loose because other jobs share
this machine's two cores. The issue's target (within 10 %) is reported in docs/profiler.md
from full-length runs.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from inferline.profiler import ProfileOptions, RepetitionPolicy, profile_bundle

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

DATA = Path(__file__).resolve().parents[1] / "data"


def test_profiling_a_stage_twice_gives_close_medians(tmp_path: Path) -> None:
    folder = tmp_path / "cascade"
    shutil.copytree(DATA / "cascade", folder)
    options = ProfileOptions(
        samples=60,
        max_batch=2,
        hardware=("cpu-1",),
        force=True,
        overhead=False,
        repetitions=RepetitionPolicy(min_reps=30, max_reps=30, min_time_s=0.0, warmup=3),
    )
    reports = [profile_bundle(folder, options) for _ in range(2)]
    first, second = (
        {(r.stage, p.batch_size): p.median_s for r in report.profiles for p in r.points}
        for report in reports
    )
    ratios = {key: second[key] / first[key] for key in first}
    probes = [t for report in reports for t in report.probe_s or ()]
    assert len(probes) == 4 and all(t > 0 for t in probes)
    print(f"\nmachine speed probe (ms): {', '.join(f'{t * 1e3:.2f}' for t in probes)}")
    for (stage, batch), ratio in sorted(ratios.items()):
        print(
            f"{stage} b={batch}: {first[(stage, batch)] * 1e3:.3f} ms then "
            f"{second[(stage, batch)] * 1e3:.3f} ms ({ratio - 1:+.1%})"
        )
    # the compute-bound stage is the one whose profile matters; the µs-scale stages are
    # dominated by process wake-ups and vary more
    # (bounds wide enough for a shared 2-core CI machine: a fresh clone's run beside a
    # profiling job at higher priority measured the large stage 2.5x faster the second time)
    assert 0.33 <= ratios[("large", 1)] <= 3.0
    assert all(0.25 <= r <= 4.0 for r in ratios.values())
