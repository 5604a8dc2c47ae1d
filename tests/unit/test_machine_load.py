"""Was the machine ours while we measured? Other processes' CPU and the steal."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from inferline.bench._machine_load import MachineLoadMeter, Readings, machine_share


def test_other_processes_are_what_the_host_spent_beyond_ours() -> None:
    readings = [
        Readings(0.0, busy_s=100.0, steal_s=5.0, owned_s={1: 10.0, 2: 3.0}),
        # replica 3 started mid-run (counts from zero); 2 exited before the end
        Readings(5.0, busy_s=104.0, steal_s=5.2, owned_s={1: 11.0, 2: 3.5, 3: 0.5}),
        Readings(10.0, busy_s=110.0, steal_s=6.0, owned_s={1: 12.0, 3: 2.0}),
    ]
    share = machine_share(readings, cores=2)
    assert share is not None
    assert share.own_cpu_s == pytest.approx(2.0 + 0.5 + 2.0)
    assert share.other_cpu_s == pytest.approx(10.0 - 4.5)
    assert share.other_cores == pytest.approx(0.55)
    assert share.steal_fraction == pytest.approx(1.0 / 20.0)
    assert share.disturbed()  # 0.55 cores of other processes
    assert not share.disturbed(other_cores_limit=1.0, steal_limit=0.06)
    assert share.disturbed(other_cores_limit=1.0, steal_limit=0.04)
    assert share.as_dict()["own_cores"] == pytest.approx(0.45)
    assert machine_share(readings[:1], cores=2) is None


@given(
    own=st.lists(st.floats(0.0, 5.0), min_size=1, max_size=4),
    other=st.floats(0.0, 5.0),
    wall=st.floats(0.5, 60.0),
)
def test_a_quiet_machine_is_never_disturbed_and_ours_is_never_counted_as_other(
    own: list[float], other: float, wall: float
) -> None:
    start = Readings(0.0, 50.0, 0.0, dict.fromkeys(range(len(own)), 1.0))
    end = Readings(wall, 50.0 + sum(own) + other, 0.0, {pid: 1.0 + x for pid, x in enumerate(own)})
    share = machine_share([start, end], cores=2)
    assert share is not None
    assert share.other_cpu_s == pytest.approx(other, abs=1e-9)
    assert share.disturbed(other_cores_limit=other / wall + 1e-6, steal_limit=0.0) is False


def test_the_meter_counts_the_cpu_of_the_owned_process_tree() -> None:
    """Real processes: a child of ours spins 0.3 s of CPU between two readings; the
    share counts it as ours, not as another job's."""
    spin = (
        "import sys, time\n"
        "sys.stdin.readline()\n"
        "t = time.process_time()\n"
        "while time.process_time() - t < 0.3: pass\n"
        "print('spun', flush=True)\n"
        "sys.stdin.readline()\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", spin], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        meter = MachineLoadMeter(child.pid)
        meter.read()
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "spun"
        meter.read()
    finally:
        child.stdin.close()
        child.wait(timeout=30)
        child.stdout.close()
    share = meter.share()
    assert share is not None and share.wall_s > 0 and share.cores >= 1
    assert child.pid in meter.readings[0].owned_s
    assert share.own_cpu_s >= 0.28
