"""Was the machine ours while we measured? Other jobs' CPU and the hypervisor's steal.

A served P99 on a shared machine says as much about the neighbours as about the plan.
:class:`MachineLoadMeter` reads the host's CPU counters and those of the processes the
benchmark owns (itself and a process tree, e.g. an engine and its replicas) during a run;
:class:`MachineShare` is what it found: the cores other processes kept busy and the share
the hypervisor stole. A run over the limits is *disturbed*: the benchmark says so and runs
it again.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import psutil

__all__ = ["MachineLoadMeter", "MachineShare", "Readings"]

#: Other processes may keep this many cores busy on average before a run is disturbed.
OTHER_CORES_LIMIT = 0.25
#: ... and the hypervisor may steal this share of the machine's CPU time.
STEAL_LIMIT = 0.05


@dataclass(frozen=True)
class Readings:
    """Counters at one instant: the host's busy and stolen CPU seconds (every core) and
    the CPU seconds of each owned process alive then (pid -> user + system)."""

    t_s: float
    busy_s: float
    steal_s: float
    owned_s: dict[int, float]


@dataclass(frozen=True)
class MachineShare:
    """The machine during one run: ``own_cpu_s`` spent by the owned processes,
    ``other_cpu_s`` by every other one, ``steal_s`` taken by the hypervisor."""

    wall_s: float
    cores: int
    own_cpu_s: float
    other_cpu_s: float
    steal_s: float

    @property
    def other_cores(self) -> float:
        """Cores the other processes kept busy, on average."""
        return self.other_cpu_s / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def steal_fraction(self) -> float:
        """Share of the machine's CPU time the hypervisor took."""
        total = self.wall_s * self.cores
        return self.steal_s / total if total > 0 else 0.0

    def disturbed(
        self, other_cores_limit: float = OTHER_CORES_LIMIT, steal_limit: float = STEAL_LIMIT
    ) -> bool:
        return self.other_cores > other_cores_limit or self.steal_fraction > steal_limit

    def as_dict(self) -> dict[str, float]:
        return {
            "wall_s": self.wall_s,
            "own_cores": self.own_cpu_s / self.wall_s if self.wall_s > 0 else 0.0,
            "other_cores": self.other_cores,
            "steal_fraction": self.steal_fraction,
        }


def machine_share(readings: Iterable[Readings], cores: int) -> MachineShare | None:
    """What the readings of one run say (None: fewer than two). A process owned at any
    reading counts with the CPU it spent between its first and last reading; one that
    appeared mid-run counts from zero (it was started by an owned process)."""
    seq = list(readings)
    if len(seq) < 2:
        return None
    first, last = seq[0], seq[-1]
    seen_first: dict[int, float] = {}
    seen_last: dict[int, float] = {}
    for r in seq:
        for pid, cpu_s in r.owned_s.items():
            seen_first.setdefault(pid, cpu_s if r is first else 0.0)
            seen_last[pid] = cpu_s
    own = sum(max(0.0, seen_last[p] - seen_first[p]) for p in seen_last)
    busy = max(0.0, last.busy_s - first.busy_s)
    return MachineShare(
        wall_s=last.t_s - first.t_s,
        cores=cores,
        own_cpu_s=own,
        other_cpu_s=max(0.0, busy - own),
        steal_s=max(0.0, last.steal_s - first.steal_s),
    )


class MachineLoadMeter:
    """Reads the counters on demand (:meth:`read`); :meth:`share` sums a run up. Owned:
    this process and ``root_pid``'s process tree (looked up at every reading, so replicas
    started during the run count)."""

    def __init__(
        self, root_pid: int | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._root = root_pid
        self._clock = clock
        self._cores = psutil.cpu_count() or os.cpu_count() or 1
        self.readings: list[Readings] = []

    def _owned(self) -> list[psutil.Process]:
        procs = [psutil.Process()]
        if self._root is not None:
            try:
                root = psutil.Process(self._root)
                procs += [root, *root.children(recursive=True)]
            except psutil.Error:
                pass
        return procs

    def read(self) -> None:
        owned: dict[int, float] = {}
        for p in self._owned():
            try:
                t = p.cpu_times()
            except psutil.Error:  # gone between the listing and the reading
                continue
            owned[p.pid] = t.user + t.system
        host = psutil.cpu_times()
        idle = host.idle + getattr(host, "iowait", 0.0)
        steal = getattr(host, "steal", 0.0)
        busy = sum(host) - idle - steal - getattr(host, "guest", 0.0)
        busy -= getattr(host, "guest_nice", 0.0)
        self.readings.append(Readings(self._clock(), busy, steal, owned))

    def share(self) -> MachineShare | None:
        return machine_share(self.readings, self._cores)
